"""The fused pieces of the shifted-convolution blocks against the plain chains they replace."""

import math

import pytest
import torch

import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.nn import MaskedConv2d
from pixelmodels.nn.shifted import (Conv2d, DownRightShiftedConv2d, DownShiftedConv2d, GatedResNet, _uniform_threshold,
                                    concat_elu, conv2d, dropout_mask)


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


def _grads(fn, x, w, b, g):
    inputs = [t for t in (x, w, b) if t is not None]
    out = fn(x, w, b)
    return out, torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("shape", [(16, 8, 7, 9, 3, 5), (2, 6, 5, 5, 2, 3), (1, 3, 4, 6, 2, 4), (3, 5, 6, 4, 4, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_weight_gradient_by_a_forward_convolution_equals_oneDNNs(shape, bias):
    """The weight gradient as a forward convolution (images and channels swapped) against F.conv2d's backward:
    the same sums in another order, so equal to float32 rounding; the input and bias gradients too."""
    n, c, h, w, kh, kw = shape
    torch.manual_seed(0)
    x = torch.randn(n, c, h + kh - 1, w + kw - 1, requires_grad=True)
    weight = torch.randn(2 * c, c, kh, kw, requires_grad=True)
    b = torch.randn(2 * c, requires_grad=True) if bias else None
    g = torch.randn(n, 2 * c, h, w)
    out, grads = _grads(conv2d, x, weight, b, g)
    assert type(out.grad_fn).__name__ == "_Conv2dWeightGradByForwardBackward"  # the fast path was taken
    ref, ref_grads = _grads(F.conv2d, x, weight, b, g)
    assert torch.equal(out, ref)
    for got, want in zip(grads, ref_grads):
        assert got.shape == want.shape and got.is_contiguous()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4 * float(want.abs().max()))
    x64, w64 = x.detach().double(), weight.detach().double()  # and against float64: a wrong sum is far off
    (exact,) = torch.autograd.grad(F.conv2d(x64, w64.requires_grad_()), w64, g.double())
    assert torch.allclose(grads[1].double(), exact, rtol=1e-4, atol=1e-4)


def test_conv2d_leaves_the_other_cases_to_torch():
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    for weight in (torch.randn(4, 3, 2, 2, requires_grad=True), torch.randn(4, 3, 1, 3, requires_grad=True)):
        assert type(conv2d(x, weight).grad_fn).__name__ == "ConvolutionBackward0"  # 2x2, one row over 3 inputs
    wide = torch.randn(4, 3, 2, 3, requires_grad=True)
    assert type(conv2d(x.double(), wide.double()).grad_fn).__name__ == "ConvolutionBackward0"  # float64
    one_row = torch.randn(4, 16, 1, 3, requires_grad=True)  # one row over 16 channels: the forward path
    assert type(conv2d(torch.randn(2, 16, 3, 5), one_row).grad_fn).__name__ == "_Conv2dWeightGradByForwardBackward"
    with torch.no_grad():
        assert conv2d(x, wide).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv2d(x, wide).dtype == torch.bfloat16
    assert type(conv2d(x, wide.detach()).grad_fn).__name__ == "ConvolutionBackward0"  # no weight gradient


def test_conv2d_module_keeps_nn_conv2ds_parameters_and_strided_calls():
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 5, (2, 3), stride=2)
    ours = Conv2d(3, 5, (2, 3), stride=2)
    ours.load_state_dict(plain.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 8, 9)
    assert torch.equal(ours(x), plain(x)) and type(ours(x).grad_fn).__name__ == "ConvolutionBackward0"
    unstrided = Conv2d(3, 5, (2, 3))
    assert type(unstrided(x).grad_fn).__name__ == "_Conv2dWeightGradByForwardBackward"
    masked = MaskedConv2d(3, 6, 5, "B", 3)
    assert type(masked(x).grad_fn).__name__ == "_Conv2dWeightGradByForwardBackward"
