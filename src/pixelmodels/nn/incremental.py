"""Pieces for computing a network one position at a time (the cached sampler).

A layer's *input* is kept in a zero-padded buffer that is written position by
position (or row by row) as sampling proceeds; the layer's output at one
position is then one small convolution over the window of that buffer that the
full convolution would have used. Effective weights (masks applied, weight
norm resolved) are computed once per sampling call with ``frozen``.

Shared by the caches of every family (``pixelmodels.models.*_cache``): the
buffer (``PaddedBuffer``), the rewrite of the previous pixel for channel-masked
networks (``PreviousPixel``) and the 1x1 output layers (``OutputStack``). The gated
residual block's own step and row versions live beside it, in ``pixelmodels.nn.gated_resnet``;
conditioning biases come frozen from ``pixelmodels.nn.conditioning.FrozenBias``.
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
    """Output (B, out) of a convolution whose (B, in, kh, kw) input window is given: one matrix product."""
    return F.linear(window.reshape(window.shape[0], -1), weight.reshape(weight.shape[0], -1), bias)


def conv_row(band: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1) -> torch.Tensor:
    """Output row (B, out, W_out) of a convolution over its (B, in, kh, padded width) input band."""
    return F.conv2d(band, weight, bias, stride=stride)[:, :, 0]


def frozen_pointwise(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A 1x1 convolution's effective (out, in) matrix and bias, for ``F.linear`` on (B, in) feature vectors."""
    weight, bias = frozen(layer)
    return weight[:, :, 0, 0], bias


def conv_transpose_row(row: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_row: int,
                       left: int = 0) -> torch.Tensor:
    """Output row ``out_row`` (B, out, 2 W) of a stride-2 transposed convolution with a kernel of height 2.

    The layer is the shifted up-sampling of ``pixelmodels.nn.shifted``: output
    padding 1, cropped to rows [0, 2 H) and columns [left, left + 2 W). Output row
    R then gets kernel row R % 2 applied to input row R // 2 only; ``row`` is that
    input row (B, in, W). ``weight`` is (in, out, 2, kw), as for ``F.conv_transpose2d``.
    """
    a = out_row % 2
    out = F.conv_transpose2d(row[:, :, None], weight[:, :, a: a + 1], bias, stride=(1, 2), output_padding=(0, 1))
    return out[:, :, 0, left: left + 2 * row.shape[-1]]


def channels_last(buffer: PaddedBuffer) -> PaddedBuffer:
    """Store ``buffer`` channels-last (same values), so a window flattens with its features contiguous."""
    buffer.data = buffer.data.contiguous(memory_format=torch.channels_last)
    return buffer


def flat_taps(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) -> (out, L) for ``conv_at_flat``: taps in (kh, kw, in) order.

    Trailing columns that are zero for every output (the masked taps after the
    centre of a causal kernel) are dropped: they add exact zeros.
    """
    flat = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    used = flat.ne(0).any(0).nonzero()
    return flat[:, : int(used[-1]) + 1 if len(used) else 0].contiguous()


def conv_at_flat(window: torch.Tensor, flat: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv_at`` with the weight given as ``flat_taps(weight)``: (B, in, kh, kw) window -> (B, out).

    One matrix product; fastest on a ``channels_last`` buffer.
    """
    cols = window.permute(0, 2, 3, 1).reshape(window.shape[0], -1)[:, : flat.shape[1]]
    return F.linear(cols, flat, bias)


class PreviousPixel:
    """The image input of a channel-masked cache, which is stepped once per channel at each position.

    The pixel stepped last is final only once the steps move on: ``update(x, i, j)``
    writes it again, scaled, into the image ``buffer`` then (the current pixel is
    written by the layer that reads it).
    """

    def __init__(self, buffer: PaddedBuffer, scale):
        self.buffer, self.scale = buffer, scale
        self.position: tuple[int, int] | None = None

    def update(self, x: torch.Tensor, i: int, j: int) -> None:
        if self.position is not None and self.position != (i, j):
            pi, pj = self.position
            self.buffer.write(pi, pj, self.scale(x[:, :, pi, pj]))
        self.position = (i, j)


class OutputStack:
    """The output layers ReLU, 1x1, ReLU, 1x1 of PixelCNN, Gated PixelCNN and the PixelRNNs at one position."""

    def __init__(self, hidden: nn.Module, out: nn.Module):
        self.hidden, self.out = frozen_pointwise(hidden), frozen_pointwise(out)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """Features (n, F) -> parameters (n, head.n_params)."""
        return F.linear(F.relu(F.linear(F.relu(h), *self.hidden)), *self.out)
