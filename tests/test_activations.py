"""The CPU tanh gate of ``pixelmodels.nn.activations`` against ``torch.tanh`` and the plain chain."""

import pytest
import torch

from pixelmodels.nn.activations import _tanh_values, tanh_gate


def tanh(x):
    """The tanh half of the gate as it trains (sigmoid(40) is 1 in float32 and float64)."""
    flat = x.reshape(x.shape[0], -1)
    return tanh_gate(torch.cat([flat, torch.full_like(flat, 40.0)], dim=1)).view(x.shape)


def _plain_gate(x):
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def test_tanh_is_within_two_float32_steps_of_torch_tanh():
    x = torch.cat([torch.randn(100_000) * 3, torch.linspace(-20, 20, 10_001), torch.tensor([0.0, 1e-30, -1e-8])])
    err = (_tanh_values(x) - torch.tanh(x)).abs()
    assert err.max() <= 2.5e-7
    assert _tanh_values(torch.tensor([30.0, -30.0])).tolist() == [1.0, -1.0]


def test_tanh_in_float64_and_its_gradient():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(tanh(x), torch.tanh(x), rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(tanh, (x,))
    (g,) = torch.autograd.grad(tanh(x).sum(), x)
    assert torch.allclose(g, 1 - torch.tanh(x.detach()) ** 2, rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 6, 5, 4), (3, 8), (1, 2, 1, 1)])
def test_tanh_gate_equals_the_plain_chain_values_and_gradients(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape[0], shape[1] // 2, *shape[2:], dtype=torch.float64)
    fused = tanh_gate(x)
    (gx,) = torch.autograd.grad(fused, x, g)
    x_plain = x.detach().requires_grad_()
    plain = _plain_gate(x_plain)
    (gx_plain,) = torch.autograd.grad(plain, x_plain, g)
    assert torch.allclose(fused, plain, rtol=0, atol=1e-14)
    assert torch.allclose(gx, gx_plain, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(tanh_gate, (x,))


def test_tanh_gate_without_autograd_is_the_plain_chain_and_the_trained_one_stays_close():
    """Sampling and evaluation (no autograd) use torch.tanh: both sampling paths alike, the fewest operations
    at a step's few rows; training's sigmoid form stays within float32 rounding of it."""
    x = torch.randn(4, 10, 3, 3)
    with torch.no_grad():
        quiet = tanh_gate(x)
    trained = tanh_gate(x.clone().requires_grad_())
    assert torch.equal(quiet, _plain_gate(x))
    assert type(trained.grad_fn).__name__ == "_TanhGateBackward"
    assert (quiet - trained.detach()).abs().max() <= 2.5e-7
    assert quiet.shape == (4, 5, 3, 3)


def test_a_gated_pixelcnn_trains_through_the_fused_gate():
    from pixelmodels import create_model

    torch.manual_seed(0)
    model = create_model("gated-pixelcnn", image_shape=(1, 6, 6), n_bits=2, preset="tiny")
    x = torch.randint(0, 4, (2, 1, 6, 6))
    out = model.network(model.scale(x), None)
    seen, todo = set(), [out.grad_fn]
    while todo:  # the autograd graph's node types
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(f for f, _ in node.next_functions)
    assert "_TanhGateBackward" in {type(node).__name__ for node in seen}
    model.log_prob(x).sum().backward()
    grads = [p.grad for p in model.layers[0].parameters() if p.requires_grad]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
