"""Pieces for computing a network one position at a time (the cached sampler).

A layer's *input* is kept in a zero-padded buffer that is written position by
position (or row by row) as sampling proceeds; the layer's output at one
position is then one small convolution over the window of that buffer that the
full convolution would have used. Effective weights (masks applied, weight
norm resolved) are computed once per sampling call with ``frozen``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def frozen(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (weight, bias) a convolution layer actually applies, detached.

    Handles ``MaskedConv2d`` (weight * mask), weight-normalized layers (the
    parametrization is evaluated once) and wrappers holding a ``.conv``.
    """
    conv = layer.conv if hasattr(layer, "conv") and isinstance(layer.conv, nn.Module) else layer
    weight = conv.weight.detach()
    if hasattr(conv, "mask"):
        weight = weight * conv.mask
    return weight, None if conv.bias is None else conv.bias.detach()


class PaddedBuffer:
    """A layer's input, (B, C, top + H + bottom, left + W + right), zero where not yet written or padding.

    ``pad`` is (left, right, top, bottom), as for ``F.pad``. ``window(i, j, kh, kw, stride)``
    returns the (B, C, kh, kw) patch a stride-``stride`` convolution with that
    padding reads for its output position (i, j).
    """

    def __init__(self, batch: int, channels: int, height: int, width: int, pad: tuple[int, int, int, int],
                 device=None, dtype=torch.float32):
        left, right, top, bottom = pad
        self.left, self.top = left, top
        self.data = torch.zeros(batch, channels, top + height + bottom, left + width + right, device=device,
                                dtype=dtype)

    def write(self, i: int, j: int, value: torch.Tensor) -> None:
        """Store (B, C) at position (i, j)."""
        self.data[:, :, self.top + i, self.left + j] = value

    def write_row(self, i: int, value: torch.Tensor) -> None:
        """Store (B, C, W) as row i."""
        self.data[:, :, self.top + i, self.left: self.left + value.shape[-1]] = value

    def window(self, i: int, j: int, kh: int, kw: int, stride: int = 1) -> torch.Tensor:
        return self.data[:, :, stride * i: stride * i + kh, stride * j: stride * j + kw]

    def rows(self, i: int, kh: int, stride: int = 1) -> torch.Tensor:
        """The (B, C, kh, left + W + right) band a convolution reads for its output row i."""
        return self.data[:, :, stride * i: stride * i + kh]


def conv_at(window: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Output (B, out) of a convolution whose (B, in, kh, kw) input window is given."""
    out = torch.einsum("bchw,ochw->bo", window, weight)
    return out if bias is None else out + bias


def conv_row(band: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1) -> torch.Tensor:
    """Output row (B, out, W_out) of a convolution over its (B, in, kh, padded width) input band."""
    return F.conv2d(band, weight, bias, stride=stride)[:, :, 0]
