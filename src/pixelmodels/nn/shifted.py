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

[1]: Salimans et al. 2017, "PixelCNN++", https://arxiv.org/abs/1701.05517
[2]: Chen et al. 2017, "PixelSNAIL", https://arxiv.org/abs/1712.09763
"""

from __future__ import annotations

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


class DownShiftedConv2d(nn.Module):
    def __init__(self, c_in, c_out, kernel=(2, 3), stride=1, weight_norm=True, init_scale=1.0):
        super().__init__()
        kh, kw = kernel
        self.pad = (kw // 2, kw // 2, kh - 1, 0)
        self.conv = maybe_weight_norm(nn.Conv2d(c_in, c_out, kernel, stride=stride), weight_norm, init_scale)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class DownRightShiftedConv2d(nn.Module):
    def __init__(self, c_in, c_out, kernel=(2, 2), stride=1, weight_norm=True, init_scale=1.0):
        super().__init__()
        kh, kw = kernel
        self.pad = (kw - 1, 0, kh - 1, 0)
        self.conv = maybe_weight_norm(nn.Conv2d(c_in, c_out, kernel, stride=stride), weight_norm, init_scale)

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


class NIN(nn.Module):
    """A 1x1 convolution ("network in network") with optional weight norm."""

    def __init__(self, c_in, c_out, weight_norm=True, init_scale=1.0):
        super().__init__()
        self.conv = maybe_weight_norm(nn.Conv2d(c_in, c_out, 1), weight_norm, init_scale)

    def forward(self, x):
        return self.conv(x)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of [x, -x] along channels: keeps both signs' information (doubles the channels).

    The ELU runs in place on the concatenation, so autograd keeps one (B, 2C, H, W) tensor (its output,
    which the ELU's backward uses) instead of two.
    """
    return F.elu(torch.cat([x, -x], dim=1), inplace=True)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (as ``F.dropout``): zero each element with probability p, scale the rest by 1/(1-p).

    The keep mask comes from ``torch.rand`` (float32, whatever x's dtype), about twice as fast on the
    CPU as ``F.dropout``'s ``bernoulli_``, forward and backward together.
    """
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class GatedResNet(nn.Module):
    """The gated residual block of PixelCNN++: x + a * sigmoid(b), with [a, b] from two convolutions.

    ``aux`` (another stream or a skip connection) enters through a 1x1 convolution,
    the condition as the model's conditioning bias on the gate's input (``conditioning``:
    the model's ``Conditioning``; None: unconditional). The block owns its residual connection.
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
        h = self.conv1(concat_elu(x))
        if self.aux is not None:
            h = h + self.aux(concat_elu(aux))
        h = self.class_bias.add(self.conv2(dropout(concat_elu(h), self.dropout, self.training)), c)
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)
