"""The fused pieces of the shifted-convolution blocks against the plain chains they replace."""

import math

import pytest
import torch

from pixelmodels.nn.shifted import (DownRightShiftedConv2d, DownShiftedConv2d, GatedResNet, _uniform_threshold,
                                    concat_elu, dropout_mask)


@pytest.mark.parametrize("p", [0.5, 0.1, 1 / 3, 0.7, 0.9, 0.3 + 1e-9, 1 - 1e-9])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (1, 1, 1, 1), (2, 8, 28, 28)])
def test_dropout_mask_is_torch_rands_mask_and_leaves_the_generator_where_rand_does(p, shape):
    torch.manual_seed(7)
    plain = (torch.rand(shape) >= p).float() * (1.0 / (1.0 - p))
    after_plain = torch.rand(5)
    torch.manual_seed(7)
    mask = dropout_mask(shape, p, torch.device("cpu"), torch.float32)
    after_mask = torch.rand(5)
    assert mask.dtype == torch.float32 and mask.shape == shape
    assert torch.equal(mask, plain)
    assert torch.equal(after_mask, after_plain)
    if math.prod(shape) > 1000:  # the mask really is random at that rate
        assert abs(float((mask > 0).float().mean()) - (1 - p)) < 0.02


@pytest.mark.parametrize("p", [0.5, 0.25, 0.1, 1 / 3, 0.7, 0.9, 2.0 ** -24, 3 * 2.0 ** -24, 1 - 2.0 ** -24, 0.999999999])
def test_uniform_threshold_splits_the_uniforms_as_the_float32_comparison_does(p):
    """The mask keeps draw k (uniform k / 2^24) exactly when k >= the threshold: checked at the two draws
    either side of it (a random test would meet them once in 2^24 draws)."""
    k = _uniform_threshold(p)
    below_and_at = torch.tensor([k - 1, k], dtype=torch.float64).div(2 ** 24).float()  # exact in float32
    assert (below_and_at >= p).tolist() == [False, True]  # k = 2^24 (p rounds to 1): no draw reaches it


def test_dropout_mask_in_float64_and_at_p_1():
    torch.manual_seed(3)
    plain = (torch.rand(4, 6) >= 0.25).double() * (1.0 / 0.75)
    torch.manual_seed(3)
    mask = dropout_mask((4, 6), 0.25, "cpu", torch.float64)
    assert mask.dtype == torch.float64 and torch.equal(mask, plain.float().double())
    state = torch.get_rng_state()
    assert torch.equal(dropout_mask((2, 3), 1.0, "cpu", torch.float32), torch.zeros(2, 3))
    assert torch.equal(torch.get_rng_state(), state)  # p = 1 draws nothing


@pytest.mark.parametrize("conv", [DownShiftedConv2d, DownRightShiftedConv2d])
@pytest.mark.parametrize("with_aux", [False, True])
def test_gated_resnet_training_step_equals_the_plain_chain(conv, with_aux):
    """Forward and gradients of the fused block (concat_elu + dropout + padding in one autograd step) against
    concat_elu -> F.pad -> conv, dropout from ``torch.rand`` >= p, in float64."""
    torch.manual_seed(0)
    block = GatedResNet(3, conv, n_aux=2 if with_aux else 0, dropout=0.5, weight_norm=True).double().train()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    aux = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True) if with_aux else None

    def plain():
        h = block.conv1(concat_elu(x))
        if aux is not None:
            h = h + block.aux(concat_elu(aux))
        keep = (torch.rand(h.shape[0], 2 * h.shape[1], *h.shape[2:]) >= 0.5).double() * 2.0
        a, b = block.conv2(concat_elu(h) * keep).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)

    inputs = [x] + ([aux] if with_aux else []) + list(block.parameters())
    torch.manual_seed(11)
    out_plain = plain()
    grads_plain = torch.autograd.grad(out_plain.square().sum(), inputs)
    torch.manual_seed(11)
    out = block(x, aux)
    grads = torch.autograd.grad(out.square().sum(), inputs)
    assert torch.allclose(out, out_plain, rtol=0, atol=1e-12)
    assert float((out - x).detach().abs().max()) > 0  # the block did something
    for g, g_plain in zip(grads, grads_plain):
        assert torch.allclose(g, g_plain, rtol=1e-10, atol=1e-12)
