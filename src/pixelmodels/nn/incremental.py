"""Pieces for computing a network one position at a time (the cached sampler).

A layer's *input* is kept in a zero-padded buffer that is written position by
position (or row by row) as sampling proceeds; the layer's output at one
position is then one small convolution over the window of that buffer that the
full convolution would have used. Effective weights (masks applied, weight
norm resolved) are computed once per sampling call with ``frozen``.

Shared by the caches of every family (``pixelmodels.models.*_cache``): the
buffer (``PaddedBuffer``, whole or the last few rows only), the rewrite of the
previous pixel for channel-masked networks (``PreviousPixel``), the 1x1 output
layers (``OutputStack``) and the gated residual block of PixelCNN++ and
PixelSNAIL one position or one row at a time (``GatedResNetStep``).
Conditioning biases come frozen from ``pixelmodels.nn.conditioning.FrozenBias``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.nn.conditioning import FrozenBias
from pixelmodels.nn.shifted import concat_elu


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

    With ``keep_rows=k`` only the last k padded rows are stored: writing a row below
    them moves them up (the rows that fall off are never read again, since the
    writes go in raster order), so a k-row kernel's buffer costs k rows, not H.
    """

    def __init__(self, batch: int, channels: int, height: int, width: int, pad: tuple[int, int, int, int],
                 device=None, dtype=torch.float32, keep_rows: int | None = None):
        left, right, top, bottom = pad
        self.left, self.top = left, top
        rows = top + height + bottom if keep_rows is None else keep_rows
        self.first = 0  # the padded row held in data row 0
        self.data = torch.zeros(batch, channels, rows, left + width + right, device=device, dtype=dtype)

    def _row(self, padded_row: int) -> int:
        """The data row of a padded row being written, moving the kept rows up when it lies below them."""
        shift = padded_row - (self.first + self.data.shape[2] - 1)
        if shift > 0:
            kept = self.data.shape[2] - shift
            if kept > 0:
                self.data[:, :, :kept] = self.data[:, :, shift:].clone()
            self.data[:, :, max(kept, 0):] = 0
            self.first += shift
        return padded_row - self.first

    def write(self, i: int, j: int, value: torch.Tensor) -> None:
        """Store (B, C) at position (i, j)."""
        self.data[:, :, self._row(self.top + i), self.left + j] = value

    def write_row(self, i: int, value: torch.Tensor) -> None:
        """Store (B, C, W) as row i."""
        self.data[:, :, self._row(self.top + i), self.left: self.left + value.shape[-1]] = value

    def window(self, i: int, j: int, kh: int, kw: int, stride: int = 1) -> torch.Tensor:
        r = stride * i - self.first
        return self.data[:, :, r: r + kh, stride * j: stride * j + kw]

    def rows(self, i: int, kh: int, stride: int = 1) -> torch.Tensor:
        """The (B, C, kh, left + W + right) band a convolution reads for its output row i."""
        r = stride * i - self.first
        return self.data[:, :, r: r + kh]


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


def conv_transpose_at(value: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, i: int,
                      j: int) -> torch.Tensor:
    """Output (B, out) at (i, j) of a stride-2 transposed convolution with a 2x2 kernel, left/top aligned.

    Output (i, j) gets kernel tap (i % 2, j % 2) applied to input (i // 2, j // 2)
    only; ``value`` is that input (B, in). ``weight`` is (in, out, 2, 2).
    """
    out = value @ weight[:, :, i % 2, j % 2]
    return out if bias is None else out + bias


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


class GatedResNetStep:
    """A ``pixelmodels.nn.shifted.GatedResNet`` computed one position (``at``) or one row (``row``) at a time.

    A block of kh x kw shifted convolutions keeps buffers of concat_elu of its input and of its
    hidden activation (``keep_rows``: see ``PaddedBuffer``); a block of 1x1 convolutions needs none.
    ``bias`` is the block's frozen conditioning bias. Dropout is left out (eval-mode computation).
    """

    def __init__(self, block: nn.Module, bias: FrozenBias, n: int, height: int, width: int,
                 keep_rows: int | None = None):
        self.conv1, self.conv2 = frozen(block.conv1), frozen(block.conv2)
        self.aux = None if block.aux is None else frozen(block.aux)
        self.bias = bias
        w = self.conv1[0]
        self.kh, self.kw = w.shape[2:]
        self.pointwise = (self.kh, self.kw) == (1, 1)
        if not self.pointwise:
            self.x_buf = PaddedBuffer(n, w.shape[1], height, width, block.conv1.pad, w.device, w.dtype, keep_rows)
            self.h_buf = PaddedBuffer(n, 2 * w.shape[0], height, width, block.conv2.pad, w.device, w.dtype,
                                      keep_rows)

    @staticmethod
    def _gate(x: torch.Tensor, h: torch.Tensor, bias: torch.Tensor | float) -> torch.Tensor:
        a, b = (h + bias if torch.is_tensor(bias) else h).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)

    def at(self, i: int, j: int, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output (n, F) at (i, j) from its input x (n, F) and aux there."""
        if self.pointwise:
            h = conv_at(concat_elu(x)[:, :, None, None], *self.conv1)
        else:
            self.x_buf.write(i, j, concat_elu(x))
            h = conv_at(self.x_buf.window(i, j, self.kh, self.kw), *self.conv1)
        if self.aux is not None:
            h = h + conv_at(concat_elu(aux)[:, :, None, None], *self.aux)
        if self.pointwise:
            h = conv_at(concat_elu(h)[:, :, None, None], *self.conv2)
        else:
            self.h_buf.write(i, j, concat_elu(h))
            h = conv_at(self.h_buf.window(i, j, self.kh, self.kw), *self.conv2)
        return self._gate(x, h, self.bias.at(i, j))

    def row(self, i: int, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output row i (n, F, W) from its input row x and aux row (n, F_aux, W)."""
        self.x_buf.write_row(i, concat_elu(x))
        h = conv_row(self.x_buf.rows(i, self.kh), *self.conv1)
        if self.aux is not None:
            h = h + conv_row(concat_elu(aux)[:, :, None], *self.aux)
        self.h_buf.write_row(i, concat_elu(h))
        h = conv_row(self.h_buf.rows(i, self.kh), *self.conv2)
        return self._gate(x, h, self.bias.row(i))
