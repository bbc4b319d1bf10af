"""The CPU speed code of ``pixelmodels.nn.fast`` against the plain PyTorch it replaces, kernel by kernel and
model by model, in float32 (where it runs) with the switch on and off."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from pixelmodels import create_model, list_models
from pixelmodels.nn import GatedResNet, MaskedConv2d, fast
from pixelmodels.nn.fast import Conv2d, StepMatrix, conv2d, fast_kernels

FAST = "ViewBackward0"  # the batched product, viewed as (B, out, H, W)
PLAIN = "ConvolutionBackward0"


def _grads(fn, x, w, b, g):
    inputs = [t for t in (x, w, b) if t is not None]
    out = fn(x, w, b)
    return out, torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("bias", [True, False])
def test_a_1x1_convolution_as_a_matrix_product_equals_the_plain_one(bias):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 7, requires_grad=True)
    weight = torch.randn(4, 6, 1, 1, requires_grad=True)
    b = torch.randn(4, requires_grad=True) if bias else None
    g = torch.randn(3, 4, 5, 7)
    with fast_kernels(True):
        out, grads = _grads(conv2d, x, weight, b, g)
    assert type(out.grad_fn).__name__ == FAST
    ref, ref_grads = _grads(F.conv2d, x, weight, b, g)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    with fast_kernels(False):
        assert type(conv2d(x, weight, b).grad_fn).__name__ == PLAIN


def test_conv2d_takes_the_plain_path_outside_cpu_training_or_with_the_switch_off():
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    one = torch.randn(4, 3, 1, 1, requires_grad=True)
    with fast_kernels(True):
        assert type(conv2d(x, torch.randn(4, 3, 2, 3, requires_grad=True)).grad_fn).__name__ == PLAIN  # not 1x1
        with torch.no_grad():
            assert torch.equal(conv2d(x, one), F.conv2d(x, one))  # evaluation, sampling
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert type(conv2d(x, one).grad_fn).__name__ == PLAIN
        assert type(conv2d(x, one.detach()).grad_fn).__name__ == PLAIN  # no weight gradient
        assert type(conv2d(x, one).grad_fn).__name__ == FAST
        assert type(MaskedConv2d(3, 6, 1, "B", 3)(x).grad_fn).__name__ == FAST
        assert type(Conv2d(3, 6, 1)(x).grad_fn).__name__ == FAST
        assert type(Conv2d(3, 6, 1, stride=2)(x).grad_fn).__name__ == PLAIN
    with fast_kernels(False):
        assert type(conv2d(x, one).grad_fn).__name__ == PLAIN
        assert not fast.fast_kernels_enabled()


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9])
def test_dropout_is_the_inverted_dropout_of_a_rand_mask(p):
    x = torch.randn(4, 6, 5, 5, requires_grad=True)
    torch.manual_seed(3)
    want = x * (torch.rand(x.shape) >= p).float() / (1 - p)
    torch.manual_seed(3)
    with fast_kernels(True):
        got = fast.dropout(x, p, training=True)
        assert torch.equal(fast.dropout(x, p, training=False), x)
    torch.testing.assert_close(got, want)
    assert 0 < float((got == 0).float().mean()) < 1 and torch.autograd.grad(got.sum(), x)[0].abs().max() > 0
    with fast_kernels(False):
        torch.manual_seed(3)
        assert torch.equal(fast.dropout(x, p, training=True), (torch.manual_seed(3), F.dropout(x, p))[1])


def test_the_switch_is_restored_after_the_block():
    before = fast.fast_kernels_enabled()
    with pytest.raises(RuntimeError):
        with fast_kernels(not before):
            assert fast.fast_kernels_enabled() is (not before)
            raise RuntimeError
    assert fast.fast_kernels_enabled() is before


@pytest.mark.parametrize("rows", [1, 16, 33])
def test_step_matrix_in_either_layout_is_the_product(rows, monkeypatch):
    torch.manual_seed(0)
    weight, x, bias = torch.randn(40, 24), torch.randn(rows, 40), torch.randn(rows, 24)
    want = (bias.double() + x.double() @ weight.double()).float()
    monkeypatch.setattr(StepMatrix, "TRANSPOSE_AT", 0)
    for on in (True, False):
        with fast_kernels(on):
            m = StepMatrix(weight, rows)
        assert m.transposed == (on and rows <= StepMatrix.TRANSPOSE_ROWS)
        torch.testing.assert_close(m.addmm(bias, x), want, rtol=1e-5, atol=1e-5)


# -- every model in float32, the switch on and off ------------------------------------------------------

H = W = 6


def tiny(name, c, likelihood):
    torch.manual_seed(0)
    model = create_model(name, image_shape=(c, H, W), n_bits=3, n_classes=3, preset="tiny", likelihood=likelihood)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


MODELS = list(itertools.product(list_models(), [1, 3], ["categorical", "logistic-mixture"]))


@pytest.mark.parametrize("name,c,likelihood", MODELS)
def test_float32_training_gradients_and_causality_with_the_switch_on_equal_the_plain_ones(name, c, likelihood):
    """The loss's parameter gradients with the kernels on equal those of plain PyTorch, and the input gradient
    of one position's parameters reaches no sub-pixel at or after it (the Jacobian check, in float32)."""
    model = tiny(name, c, likelihood).train()
    for block in model.modules():  # the kernels' dropout draws other masks than F.dropout (tested above)
        if isinstance(block, GatedResNet):
            block.dropout = 0.0
    x, y = torch.randint(0, 8, (2, c, H, W)), torch.tensor([2, 0])
    grads = {}
    for on in (True, False):
        with fast_kernels(on):
            torch.manual_seed(1)  # the same dropout masks
            loss = model.bits_per_dim(x, y).mean()
            grads[on] = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    for got, want in zip(grads[True], grads[False]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with fast_kernels(True):
        i, j = 3, 2
        xs = model.embed(x).requires_grad_(True)
        torch.manual_seed(1)
        params = model.network(xs, model.condition(y))
        (grad,) = torch.autograd.grad(params[1, :, i, j].sum(), xs)
    future = torch.zeros(H, W, dtype=torch.bool)
    future.view(-1)[i * W + j + 1:] = True
    assert grad[0].abs().max() == 0  # another image of the batch
    assert grad[1][:, future].abs().max() == 0
    if not model.channel_masked:
        assert grad[1][:, i, j].abs().max() == 0  # the pixel itself: the head models its channels


@pytest.mark.parametrize("name", list_models())
def test_float32_cached_steps_with_the_switch_on_equal_the_full_pass(name, monkeypatch):
    """Every cached step with every step product in the kernels' layout equals the full pass, in float32."""
    monkeypatch.setattr(StepMatrix, "TRANSPOSE_AT", 0)
    model = tiny(name, 3, "logistic-mixture").eval()
    n, y = 2, torch.tensor([1, 2])
    final = torch.randint(0, 8, (n, 3, H, W))
    with fast_kernels(True), torch.no_grad():
        cache = model.sampling_cache(n, y)
        for i, j in itertools.product(range(H), range(W)):
            for ch in range(model.steps_per_position):
                x = torch.randint(0, 8, final.shape)
                x[:, :, :i], x[:, :, i, :j], x[:, :ch, i, j] = final[:, :, :i], final[:, :, i, :j], final[:, :ch, i, j]
                torch.testing.assert_close(cache.step(x, i, j), model(x, y)[:, :, i, j], atol=1e-4, rtol=1e-4)
