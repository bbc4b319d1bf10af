"""The CPU tanh and tanh gate of ``pixelmodels.nn.activations`` against ``torch.tanh`` and the plain chain."""

import pytest
import torch

from pixelmodels.nn.activations import tanh, tanh_gate


def _plain_gate(x):
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def test_tanh_is_within_two_float32_steps_of_torch_tanh():
    x = torch.cat([torch.randn(100_000) * 3, torch.linspace(-20, 20, 10_001), torch.tensor([0.0, 1e-30, -1e-8])])
    err = (tanh(x) - torch.tanh(x)).abs()
    assert err.max() <= 2.5e-7
    assert tanh(torch.tensor([30.0, -30.0])).tolist() == [1.0, -1.0]


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


def test_tanh_gate_without_autograd_gives_the_same_values_and_float32_stays_close():
    x = torch.randn(4, 10, 3, 3)
    with torch.no_grad():
        quiet = tanh_gate(x)
    assert torch.equal(quiet, tanh_gate(x.clone().requires_grad_()).detach())
    assert (quiet - _plain_gate(x)).abs().max() <= 2.5e-7
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
