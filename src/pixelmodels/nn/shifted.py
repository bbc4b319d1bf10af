"""Shifted convolutions of PixelCNN++ [1] (also used by PixelSNAIL [2]).

Instead of masking a kernel, pad the input so the kernel only covers the past:

* ``DownShiftedConv2d`` (kh x kw, default 2x3): output (i, j) sees rows i-kh+1..i,
  columns j-kw//2..j+kw//2 (the current row in full width: follow with
  ``down_shift`` on a stream's first layer);
* ``DownRightShiftedConv2d`` (kh x kw, default 2x2): rows i-kh+1..i, columns
  j-kw+1..j;
* their transposed (stride-2) versions, cropped so the up-sampled map keeps the
  same relation to the past.

Each wraps its convolution as ``.conv``; ``init_scale`` is the standard deviation the
data-dependent initialization gives its output when the model is weight-normalized
(``pixelmodels.nn.init``).

[1]: Salimans et al. 2017, "PixelCNN++", https://arxiv.org/abs/1701.05517
[2]: Chen et al. 2017, "PixelSNAIL", https://arxiv.org/abs/1712.09763
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.nn.fast import Conv2d


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): row i takes row i-1's values; row 0 is zero."""
    return F.pad(x[:, :, :-1, :], (0, 0, 1, 0))


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): column j takes column j-1's values; column 0 is zero."""
    return F.pad(x[:, :, :, :-1], (1, 0, 0, 0))


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C + 1, ...): a channel of ones, so a network can tell zero padding from black."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of [x, -x] along channels: keeps both signs' information (doubles the channels). The ELU runs
    in place on the concatenation, so one (B, 2C, ...) tensor is made and kept for the backward, not two."""
    return F.elu(torch.cat([x, -x], dim=1), inplace=True)


def _shifted(c_in, c_out, kernel, stride, init_scale) -> nn.Conv2d:
    conv = Conv2d(c_in, c_out, kernel, stride=stride)  # the input is padded by the caller
    conv.init_scale = init_scale
    return conv


class DownShiftedConv2d(nn.Module):
    def __init__(self, c_in, c_out, kernel=(2, 3), stride=1, init_scale=1.0):
        super().__init__()
        kh, kw = kernel
        self.pad = (kw // 2, kw // 2, kh - 1, 0)  # left, right, top, bottom
        self.conv = _shifted(c_in, c_out, kernel, stride, init_scale)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class DownRightShiftedConv2d(nn.Module):
    def __init__(self, c_in, c_out, kernel=(2, 2), stride=1, init_scale=1.0):
        super().__init__()
        kh, kw = kernel
        self.pad = (kw - 1, 0, kh - 1, 0)
        self.conv = _shifted(c_in, c_out, kernel, stride, init_scale)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class _ShiftedConvTranspose2d(nn.Module):
    """Stride-2 up-sampling, cropped to (2H, 2W): centred columns (down-shifted) or left-aligned (down-right)."""

    def __init__(self, c_in, c_out, kernel, centered: bool):
        super().__init__()
        self.kernel = kernel
        self.left = kernel[1] // 2 if centered else 0
        self.conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, output_padding=1)

    def forward(self, x):
        kh, kw = self.kernel
        y = self.conv(x)
        return y[:, :, : y.shape[2] - kh + 1, self.left: y.shape[3] - (kw - 1 - self.left)]


class DownShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """Transposed counterpart of ``DownShiftedConv2d`` (2x3 kernel)."""

    def __init__(self, c_in, c_out, kernel=(2, 3)):
        super().__init__(c_in, c_out, kernel, True)


class DownRightShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """Transposed counterpart of ``DownRightShiftedConv2d`` (2x2 kernel)."""

    def __init__(self, c_in, c_out, kernel=(2, 2)):
        super().__init__(c_in, c_out, kernel, False)


class NIN(nn.Module):
    """A 1x1 convolution ("network in network")."""

    def __init__(self, c_in, c_out, init_scale=1.0):
        super().__init__()
        self.conv = Conv2d(c_in, c_out, 1)
        self.conv.init_scale = init_scale

    def forward(self, x):
        return self.conv(x)
