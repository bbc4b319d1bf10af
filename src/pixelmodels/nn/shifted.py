"""Shifted convolutions of PixelCNN++ [1] (also used by PixelSNAIL [2]).

Instead of masking a kernel, pad the input so the kernel only covers the past:

* ``DownShiftedConv2d`` (kh x kw, default 2x3): output (i, j) sees rows i-kh+1..i,
  columns j-kw//2..j+kw//2 (the current row in full width: follow with
  ``down_shift`` on a stream's first layer);
* ``DownRightShiftedConv2d`` (kh x kw, default 2x2): rows i-kh+1..i, columns
  j-kw+1..j;
* their transposed (stride-2) versions, cropped so the up-sampled map keeps the
  same relation to the past.

Layers are weight-normalized (``torch.nn.utils.parametrizations.weight_norm``)
when ``weight_norm=True``; see ``pixelmodels.nn.init`` for the data-dependent
initialization.

Training speed (issue 15): ``GatedResNet`` runs concat_elu, dropout and the shifted
convolution's zero padding as one autograd step (``concat_elu_padded``: both ELUs
written into one buffer, no concatenation or negation copies, the mask and the
padding applied in one pass, the backward on whole channels); 1x1 convolutions are
batched matrix products (``Conv1x1``: on the CPU, oneDNN's backward of a 1x1
convolution costs several forwards); the weight gradient of kernels of 2 x 3 and more
(and of 1 x 3 over 16 channels or more) is a forward convolution (``conv2d``, ``Conv2d``:
oneDNN's backward-weights kernel is slower). The values are those of the plain chain up
to float32 rounding (the same dropout masks for the same seed); the caches read the
same modules and weights.

[1]: Salimans et al. 2017, "PixelCNN++", https://arxiv.org/abs/1701.05517
[2]: Chen et al. 2017, "PixelSNAIL", https://arxiv.org/abs/1712.09763
"""

from __future__ import annotations

import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from pixelmodels.nn.conditioning import Condition, Conditioning


def maybe_weight_norm(layer: nn.Module, enabled: bool, init_scale: float = 1.0) -> nn.Module:
    """Weight-normalize ``layer`` (over every dim but the output one) and remember its init scale."""
    layer.init_scale = init_scale
    if not enabled:
        return layer
    dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    return _weight_norm(layer, dim=dim)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): row i takes row i-1's values; row 0 is zero (one contiguous copy)."""
    return F.pad(x[:, :, :-1, :], (0, 0, 1, 0))


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): column j takes column j-1's values; column 0 is zero (one contiguous copy)."""
    return F.pad(x[:, :, :, :-1], (1, 0, 0, 0))


def weight_grad_by_forward(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The weight gradient (out, in, kh, kw) of a stride-1 unpadded convolution of x (B, in, H + kh - 1,
    W + kw - 1) whose output gradient is ``grad`` (B, out, H, W), as one forward convolution.

    dW[o, c, i, j] = sum over (n, h, w) of grad[n, o, h, w] * x[n, c, h + i, w + j]: x with its channels as
    the batch and its images as the channels, convolved with the gradient (likewise swapped) as the kernel.
    """
    return F.conv2d(x.transpose(0, 1).contiguous(), grad.transpose(0, 1).contiguous()).transpose(0, 1).contiguous()


class _Conv2dWeightGradByForward(torch.autograd.Function):
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding) whose weight gradient is a forward convolution."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(grad, x, weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1,
                                                     (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            gw = weight_grad_by_forward(x, grad)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb


WEIGHT_GRAD_BY_FORWARD_AT = (2, 3)  # kernels at least this high and this wide (see conv2d)
WEIGHT_GRAD_BY_FORWARD_ROW_CHANNELS = 16  # and one-row kernels this wide with at least this many inputs


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` of stride 1 without padding (the shifted and masked convolutions pad
    their input themselves), with a faster weight gradient on the CPU.

    oneDNN's backward-weights kernel is its slowest. On the AMD EPYC of BENCHMARKS.md the same gradient,
    computed as a forward convolution of the input (its images and channels swapped) with the output
    gradient as the kernel, took 1.2-1.8x less time for the gated PixelCNN's 3x5 and 1x3 kernels and
    PixelCNN++'s 2x3 ones at batch 16 (even at batch 64), but up to 2x more for one-row kernels over one
    or two input channels and up to 1.3x more for 2x2 kernels. So that path is taken in training on the
    CPU, in float32 without autocast, for kernels at least ``WEIGHT_GRAD_BY_FORWARD_AT`` (rows, columns)
    in size, and for one-row kernels that wide over at least ``WEIGHT_GRAD_BY_FORWARD_ROW_CHANNELS`` input
    channels; the input gradient stays oneDNN's, and everything else is ``F.conv2d``. The gradient holds
    the same sums in another order (float32 rounding).
    """
    rows, columns = WEIGHT_GRAD_BY_FORWARD_AT
    rows_or_channels = weight.shape[-2] >= rows or weight.shape[1] >= WEIGHT_GRAD_BY_FORWARD_ROW_CHANNELS
    if (rows_or_channels and weight.shape[-1] >= columns and torch.is_grad_enabled()
            and weight.requires_grad and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and x.dim() == 4 and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        return _Conv2dWeightGradByForward.apply(x, weight, bias)
    return F.conv2d(x, weight, bias)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (the same parameters and state-dict keys) that runs stride-1 unpadded calls through
    ``conv2d``."""

    def _conv_forward(self, x, weight, bias):
        if (self.stride == (1, 1) and self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros"):
            return conv2d(x, weight, bias)
        return super()._conv_forward(x, weight, bias)


class DownShiftedConv2d(nn.Module):
    def __init__(self, c_in, c_out, kernel=(2, 3), stride=1, weight_norm=True, init_scale=1.0):
        super().__init__()
        kh, kw = kernel
        self.pad = (kw // 2, kw // 2, kh - 1, 0)
        self.conv = maybe_weight_norm(Conv2d(c_in, c_out, kernel, stride=stride), weight_norm, init_scale)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class DownRightShiftedConv2d(nn.Module):
    def __init__(self, c_in, c_out, kernel=(2, 2), stride=1, weight_norm=True, init_scale=1.0):
        super().__init__()
        kh, kw = kernel
        self.pad = (kw - 1, 0, kh - 1, 0)
        self.conv = maybe_weight_norm(Conv2d(c_in, c_out, kernel, stride=stride), weight_norm, init_scale)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class _ShiftedConvTranspose2d(nn.Module):
    """Stride-2 up-sampling, cropped to (2H, 2W): centred columns (down-shifted) or left-aligned (down-right)."""

    def __init__(self, c_in, c_out, kernel, centered: bool, weight_norm=True, init_scale=1.0):
        super().__init__()
        self.kernel = kernel
        self.left = kernel[1] // 2 if centered else 0
        self.conv = maybe_weight_norm(nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, output_padding=1),
                                      weight_norm, init_scale)

    def forward(self, x):
        kh, kw = self.kernel
        y = self.conv(x)
        return y[:, :, : y.shape[2] - kh + 1, self.left: y.shape[3] - (kw - 1 - self.left)]


class DownShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """Transposed counterpart of ``DownShiftedConv2d`` (2x3 kernel)."""

    def __init__(self, c_in, c_out, kernel=(2, 3), weight_norm=True, init_scale=1.0):
        super().__init__(c_in, c_out, kernel, True, weight_norm, init_scale)


class DownRightShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """Transposed counterpart of ``DownRightShiftedConv2d`` (2x2 kernel)."""

    def __init__(self, c_in, c_out, kernel=(2, 2), weight_norm=True, init_scale=1.0):
        super().__init__(c_in, c_out, kernel, False, weight_norm, init_scale)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for a 1x1 ``weight`` (out, in, 1, 1), as one batched matrix product."""
    b, c, h, w = x.shape
    x3 = x.reshape(b, c, h * w)  # (B, in, HW)
    w3 = weight.reshape(1, weight.shape[0], c).expand(b, -1, -1)  # (B, out, in), no copy
    if bias is None:
        out = torch.bmm(w3, x3)
    else:
        out = torch.baddbmm(bias.reshape(1, -1, 1), w3, x3)  # (B, out, HW)
    return out.view(b, -1, h, w)


class Conv1x1(nn.Conv2d):
    """``nn.Conv2d(c_in, c_out, 1)`` (the same parameters, initialization and state-dict keys) computed as a
    batched matrix product: on the CPU oneDNN's backward of a 1x1 convolution costs several forwards."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__(c_in, c_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(x, self.weight, self.bias)


class NIN(nn.Module):
    """A 1x1 convolution ("network in network") with optional weight norm."""

    def __init__(self, c_in, c_out, weight_norm=True, init_scale=1.0):
        super().__init__()
        self.conv = maybe_weight_norm(Conv1x1(c_in, c_out), weight_norm, init_scale)

    def forward(self, x):
        return self.conv(x)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of [x, -x] along channels: keeps both signs' information (doubles the channels).

    The ELU runs in place on the concatenation, so autograd keeps one (B, 2C, H, W) tensor (its output,
    which the ELU's backward uses) instead of two.
    """
    return F.elu(torch.cat([x, -x], dim=1), inplace=True)


def dropout_mask(shape, p: float, device, dtype) -> torch.Tensor:
    """The scaled keep mask of inverted dropout (as ``F.dropout``): 1/(1-p) where ``torch.rand(shape) >= p``
    (probability 1 - p), else 0; multiply by it to apply dropout (p = 1 draws no random numbers: all zeros).

    The uniforms are ``torch.rand``'s, whatever ``dtype``: the same masks for the same seed as the plain
    ``torch.rand(shape) >= p``, and the generator left in the same state. On the CPU they are drawn as
    integers: ``torch.rand`` makes each float32 from one 32-bit draw of the generator as k / 2^24 (k its
    low 24 bits), and ``random_(0, 2^24)`` returns the same k from the same draw, 1.4x faster (``rand``
    is one serial loop, a tenth of PixelCNN++'s training step). k / 2^24 >= p holds exactly when
    k >= ceil(p' * 2^24), p' being p rounded to float32 as the comparison with a float32 tensor rounds it.
    """
    if p == 1.0:
        return torch.zeros(shape, device=device, dtype=dtype)
    scale = 1.0 / (1.0 - p)
    if torch.device(device).type == "cpu" and not torch.compiler.is_compiling():  # inductor draws its own
        draws = torch.empty(shape, dtype=torch.int32).random_(0, _UNIFORM_STEPS)
        keep = draws.ge_(_uniform_threshold(p)).to(torch.float32).mul_(scale)  # exactly 0 or float32(1/(1-p))
    else:
        keep = torch.rand(shape, device=device).ge_(p).mul_(scale)
    return keep if keep.dtype == dtype else keep.to(dtype)


_UNIFORM_STEPS = 2 ** 24  # float32 uniforms on the CPU are multiples of 2^-24 (24 significant bits)


def _uniform_threshold(p: float) -> int:
    """The least k with float32(k / 2^24) >= p as a float32 tensor compares it (p rounded to float32)."""
    return math.ceil(struct.unpack("f", struct.pack("f", p))[0] * _UNIFORM_STEPS)


class _ConcatEluPadded(torch.autograd.Function):
    """Forward: [ELU(xs), ELU(-xs)] along channels, times ``keep``, zero-padded; see ``concat_elu_padded``."""

    @staticmethod
    def forward(ctx, pad, keep, *xs):
        dtype = xs[0].dtype
        for x in xs[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
        xs = [x.to(dtype) for x in xs]
        b, _, h, w = xs[0].shape
        n = sum(x.shape[1] for x in xs)
        # ELU's output (kept for its backward) in a buffer of its own: the vectorized ELU is 3x slower
        # written into the padded rows (W of every W + left + right) than into whole channels
        y = xs[0].new_empty(b, 2 * n, h, w)
        start = 0
        for x in xs:
            c = x.shape[1]
            torch.ops.aten.elu.out(x, 1.0, 1, 1, out=y[:, start:start + c])
            torch.ops.aten.elu_(torch.neg(x, out=y[:, n + start:n + start + c]))
            start += c
        ctx.pad, ctx.sizes = pad, [x.shape[1] for x in xs]
        ctx.save_for_backward(y, keep)
        if not any(pad):
            return y if keep is None else y * keep
        left, right, top, bottom = pad
        out = y.new_zeros(b, 2 * n, top + h + bottom, left + w + right)  # one memset: faster than the borders
        inner = out[:, :, top:top + h, left:left + w]
        if keep is None:
            inner.copy_(y)
        else:
            torch.mul(y, keep, out=inner)
        return out

    @staticmethod
    def backward(ctx, grad):
        left, right, top, bottom = ctx.pad
        y, keep = ctx.saved_tensors
        h, w = y.shape[2:]
        grad = grad[:, :, top:top + h, left:left + w]
        if keep is not None:
            grad = grad * keep
        elif not grad.is_contiguous():  # the padded rows' view: the ELU's backward is 10x slower on it
            grad = grad.contiguous()
        dy = torch.ops.aten.elu_backward(grad, 1.0, 1, 1, True, y)  # (B, 2n, H, W)
        n = dy.shape[1] // 2
        dx = dy[:, :n] - dy[:, n:]  # d/dx of ELU(x) and of ELU(-x)
        return (None, None, *dx.split(ctx.sizes, dim=1))


def concat_elu_padded(xs, pad=(0, 0, 0, 0), keep: torch.Tensor | None = None) -> torch.Tensor:
    """``F.pad(concat_elu(torch.cat(xs, 1)) * keep, pad)`` in one step: the values of that chain, one buffer.

    Args:
        xs: tensors (B, C_i, H, W) (a list: their concatenation along channels).
        pad: (left, right, top, bottom) zeros around the result, as ``F.pad``.
        keep: a dropout mask (B, 2 * sum C_i, H, W) (``dropout_mask``), or None.

    Returns:
        (B, 2 * sum C_i, top + H + bottom, left + W + right). The backward keeps ELU's output (and the
        mask), as autograd does for the plain chain, and none of its intermediate copies. Under
        ``torch.compile`` the plain chain is traced instead (inductor fuses it; its ``out=`` writes into
        views would break the graph).
    """
    if torch.compiler.is_compiling():
        y = concat_elu(xs[0] if len(xs) == 1 else torch.cat(list(xs), dim=1))
        return F.pad(y if keep is None else y * keep, tuple(pad))
    return _ConcatEluPadded.apply(tuple(pad), keep, *xs)


def _pad_of(layer: nn.Module) -> tuple[int, int, int, int]:
    return getattr(layer, "pad", (0, 0, 0, 0))


class GatedResNet(nn.Module):
    """The gated residual block of PixelCNN++: x + a * sigmoid(b), with [a, b] from two convolutions.

    ``aux`` (another stream or a skip connection, or a tuple of them: their concatenation along
    channels) enters through a 1x1 convolution, the condition as the model's conditioning bias on
    the gate's input (``conditioning``: the model's ``Conditioning``; None: unconditional). The block
    owns its residual connection.
    """

    def __init__(self, n: int, conv: type, n_aux: int = 0, conditioning: Conditioning | None = None,
                 dropout: float = 0.0, weight_norm: bool = True):
        super().__init__()
        self.conv1 = conv(2 * n, n, weight_norm=weight_norm)
        self.aux = NIN(2 * n_aux, n, weight_norm=weight_norm) if n_aux else None
        self.dropout = dropout
        self.conv2 = conv(2 * n, 2 * n, weight_norm=weight_norm, init_scale=0.1)
        self.class_bias = (Conditioning() if conditioning is None else conditioning).bias(2 * n)

    def forward(self, x, aux=None, c: Condition | None = None):
        # each convolution's module (``.conv``) runs on its input padded by concat_elu_padded, as its
        # wrapper's F.pad would (the hooks of the data-dependent initialization see the same calls)
        h = self.conv1.conv(concat_elu_padded([x], _pad_of(self.conv1)))
        if self.aux is not None:
            h = h.add_(self.aux.conv(concat_elu_padded(list(aux) if isinstance(aux, (tuple, list)) else [aux])))
        keep = None
        if self.training and self.dropout > 0.0:
            keep = dropout_mask((h.shape[0], 2 * h.shape[1], *h.shape[2:]), self.dropout, h.device, h.dtype)
        h = self.class_bias.add(self.conv2.conv(concat_elu_padded([h], _pad_of(self.conv2), keep)), c)
        a, b = h.chunk(2, dim=1)
        return torch.addcmul(x, a, torch.sigmoid(b))  # x + a * sigmoid(b)
