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
PixelSNAIL one position (``GatedResNetStep``) or one row (``GatedResNetRow``) at a time.
Conditioning biases come frozen from ``pixelmodels.nn.conditioning.FrozenBias``.

``Reads`` is what a cache's step reads (frozen weights, cached activations) and computes,
averaged over the positions of an image: every cache's ``reads()`` returns one, for the
sampling benchmark's memory-bandwidth and compute limits (``benchmarks/sampling.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.nn.conditioning import FrozenBias
from pixelmodels.nn.shifted import concat_elu


@dataclass
class Reads:
    """Per cache step, averaged over an image's positions: bytes of frozen weights and of cached activations
    read, and floating-point operations (a multiply-add is 2). Work done once per row or once per
    ``every`` positions counts as its share."""

    weights: float = 0.0
    activations: float = 0.0
    flops: float = 0.0

    def __add__(self, other: Reads) -> Reads:
        return Reads(self.weights + other.weights, self.activations + other.activations, self.flops + other.flops)

    def __mul__(self, share: float) -> Reads:
        """The same work done on a ``share`` of the steps."""
        return Reads(self.weights * share, self.activations * share, self.flops * share)

    @staticmethod
    def matrix(weight: torch.Tensor | None, vectors: int, every: float = 1.0) -> Reads:
        """A weight (any shape, as many multiply-adds per input vector as elements) applied to ``vectors``
        vectors once every ``every`` steps (e.g. once per row: every = W, vectors = n * W)."""
        if weight is None:
            return Reads()
        return Reads(weight.numel() * weight.element_size() / every, 0.0, 2.0 * vectors * weight.numel() / every)

    @staticmethod
    def biases(*biases: torch.Tensor | None, every: float = 1.0) -> Reads:
        return Reads(sum(b.numel() * b.element_size() for b in biases if b is not None) / every)

    @staticmethod
    def cached(t: torch.Tensor | tuple | int, dtype_bytes: int = 4, every: float = 1.0) -> Reads:
        """Cached activations of shape ``t`` (a tensor, or a number of elements) read once every ``every`` steps."""
        count = t.numel() if torch.is_tensor(t) else t
        size = t.element_size() if torch.is_tensor(t) else dtype_bytes
        return Reads(0.0, count * size / every)


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

    def reads(self, n: int) -> Reads:
        return sum((Reads.matrix(w, n) + Reads.biases(b) for w, b in (self.hidden, self.out)), Reads())

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """Features (n, F) -> parameters (n, head.n_params)."""
        return F.linear(F.relu(F.linear(F.relu(h), *self.hidden)), *self.out)


def _tap_matrix(weight: torch.Tensor) -> torch.Tensor:
    """One kernel row (out, in, kw) -> the (kw * in, out) matrix a window (B, kw, in), flattened, multiplies."""
    return weight.permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()


class StepMatrix:
    """A weight that multiplies the n rows of one sampling step, ``x (n, in) -> x @ W + bias (n, out)``.

    At a few rows (batch 16) the product is small and its speed depends on the layout: for weights of
    at least ``TRANSPOSE_AT`` elements it is computed as (W^T x^T)^T, the weight stored (out, in), which
    MKL ran 1.2-1.8x faster with 2 threads and 1.0-1.3x with one on the 2-core AMD EPYC of BENCHMARKS.md
    (``benchmarks/step_products.py``); smaller weights stay (in, out), faster there with one thread.
    Only up to ``TRANSPOSE_ROWS`` rows: whole PixelCNN++ and PixelSNAIL steps (``benchmarks/step_layout.py``)
    were 18-19% faster transposed at 16 rows, even at 32, and mostly slower from 64 rows on (up to 1.23x at
    64, 1.08-1.14x at 128 and 256), where the transposed outputs, their concatenations and the biases
    copied into them transposed cost more than the layout gains.
    """

    TRANSPOSE_AT = 2**18  # elements (1 MiB of float32)
    TRANSPOSE_ROWS = 32

    def __init__(self, weight: torch.Tensor, rows: int | None = None):
        """``weight``: (in, out); ``rows``: the rows n of every ``x`` (None: a few)."""
        self.shape = tuple(weight.shape)
        self.transposed = weight.numel() >= self.TRANSPOSE_AT and (rows is None or rows <= self.TRANSPOSE_ROWS)
        self.weight = weight.t().contiguous() if self.transposed else weight

    def addmm(self, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``bias + x @ W``: bias (n, out) (a view), x (n, in) -> (n, out) (a transposed view when large)."""
        if self.transposed:
            return torch.addmm(bias.t(), self.weight, x.t()).t()
        return torch.addmm(bias, x, self.weight)


def _row_windows(row: torch.Tensor, width: int, kw: int) -> torch.Tensor:
    """The (B * width, kw * C) windows of a (B, width + kw - 1, C) contiguous padded row, one per output column."""
    b, padded, c = row.shape
    return row.as_strided((b, width, kw * c), (padded * c, c, 1)).reshape(b * width, kw * c)


class GatedResNetStep:
    """A ``pixelmodels.nn.shifted.GatedResNet`` of 1x1 or down-right-shifted 2 x kw convolutions, one position at a time.

    ``at(i, j, x, aux, row_aux)`` gives the block's output (n, F) at (i, j); positions come in raster
    order (of the block's own resolution). Each convolution is split by kernel row: the taps on the row
    above read values final since that row ended, so at the first position of row i they are applied to
    the whole row at once, one (n * W, kw * in) matrix product, together with the biases (the
    convolutions', the aux layer's and the frozen conditioning bias ``bias``, read at row i); the step then
    multiplies only the current row's taps, a contiguous window of channels-last row buffers of concat_elu
    of the input and of the hidden activation. ``row_aux`` (n, A, W): the first A channels of the aux
    input, known for the whole row (PixelCNN++'s u stream), likewise applied per row; ``aux`` the rest,
    per position. Dropout is left out (eval-mode computation).
    ``reads()`` counts both kinds of work per position.
    """

    def __init__(self, block: nn.Module, bias: FrozenBias, n: int, height: int, width: int, row_aux: int = 0):
        (w1, b1), (w2, b2) = frozen(block.conv1), frozen(block.conv2)
        self.bias, self.n, self.width = bias, n, width
        self.kh, self.kw = w1.shape[2:]
        self.pointwise = (self.kh, self.kw) == (1, 1)
        if not self.pointwise and (self.kh != 2 or tuple(block.conv1.pad) != (self.kw - 1, 0, 1, 0)):
            raise ValueError(f"GatedResNetStep: expected 1x1 or down-right-shifted 2 x kw kernels, found "
                             f"{self.kh}x{self.kw} with padding {block.conv1.pad}")
        self.here = [StepMatrix(_tap_matrix(w[:, :, -1]), n) for w in (w1, w2)]  # (kw * in, out): the current row's taps
        self.above = [None if self.pointwise else _tap_matrix(w[:, :, 0]) for w in (w1, w2)]  # the row above
        self.biases = (b1, b2)
        self.aux_row = self.aux_here = self.aux_bias = None
        if block.aux is not None:
            wa, self.aux_bias = frozen_pointwise(block.aux)  # (out, 2 * n_aux): columns [aux, -aux]
            half = wa.shape[1] // 2
            row_cols = [*range(row_aux), *range(half, half + row_aux)]  # concat_elu of the row part
            here_cols = [*range(row_aux, half), *range(half + row_aux, 2 * half)]
            self.aux_row = wa[:, row_cols].t().contiguous() if row_aux else None
            self.aux_here = wa[:, here_cols].t().contiguous() if row_aux < half else None
        features = [w.shape[1] for w in (w1, w2)]  # concat_elu widths of the input and the hidden activation
        self.rows = [None if self.pointwise else w1.new_zeros(2, n, width + self.kw - 1, f) for f in features]
        self.row = -1  # the row whose per-row part is computed
        self.row_part: list[torch.Tensor] = []  # per convolution: (n, W, out), biases and the row above

    def reads(self) -> Reads:
        """What one ``at`` reads and computes, the per-row part as its share of the row's positions."""
        n, w = self.n, self.width
        here = sum((Reads.matrix(m, n) for m in (*(h.weight for h in self.here), self.aux_here)), Reads())
        row = sum((Reads.matrix(m, n * w, every=w) for m in (*self.above, self.aux_row)), Reads())
        windows = [Reads.cached(m.shape[0] * n) for m in self.here]  # the current row's windows
        if not self.pointwise:  # the row above's windows, once per row
            windows += [Reads.cached(buffers[0], every=w) for buffers in self.rows]
        return here + row + sum(windows, Reads()) + Reads.biases(*self.biases, self.aux_bias, every=w)

    def _start_row(self, i: int, row_aux: torch.Tensor | None) -> None:
        """The per-row part of row i: the row-above taps over row i - 1 (final now), the biases, row_aux."""
        if i != self.row + 1:
            raise ValueError(f"GatedResNetStep: expected row {self.row + 1}, found {i}")
        self.row, n, w = i, self.n, self.width
        parts = []
        for k, (above, bias, buffers) in enumerate(zip(self.above, self.biases, self.rows)):
            out = self.here[k].shape[1]  # (in, out) whatever its storage
            part = self.here[k].weight.new_zeros(n, w, out) if bias is None else bias.expand(n, w, out).clone()
            if buffers is not None:
                buffers[0].copy_(buffers[1])  # the row above is final; the current row starts empty (zero)
                buffers[1].zero_()
                if i > 0:  # row 0's row above is padding: zero
                    part.view(n * w, out).addmm_(_row_windows(buffers[0], w, self.kw), above)
            parts.append(part)
        if self.aux_bias is not None:
            parts[0] += self.aux_bias
        if self.aux_row is not None:
            cols = concat_elu(row_aux).transpose(1, 2).reshape(n * w, -1)  # (n * W, 2A)
            parts[0].view(n * w, -1).addmm_(cols, self.aux_row)
        cond = self.bias.row(i)  # (n, 2F, W) or (n, 2F, 1), or 0.0
        if torch.is_tensor(cond):
            parts[1] += cond.transpose(1, 2)
        self.row_part = parts

    def _conv(self, k: int, j: int, value: torch.Tensor) -> torch.Tensor:
        """Convolution k (0: conv1, 1: conv2) at column j of the current row, whose input there is ``value``."""
        if self.pointwise:
            return self.here[k].addmm(self.row_part[k][:, j], value)
        buffer = self.rows[k][1]
        buffer[:, j + self.kw - 1] = value
        return self.here[k].addmm(self.row_part[k][:, j], buffer[:, j: j + self.kw].reshape(self.n, -1))

    def at(self, i: int, j: int, x: torch.Tensor, aux: torch.Tensor | None = None,
           row_aux: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output (n, F) at (i, j) from its input x (n, F), the position's aux and the row's row_aux."""
        if i != self.row:
            self._start_row(i, row_aux)
        h = self._conv(0, j, concat_elu(x))
        if self.aux_here is not None:
            h = torch.addmm(h, concat_elu(aux), self.aux_here)
        a, b = self._conv(1, j, concat_elu(h)).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class GatedResNetRow:
    """A ``pixelmodels.nn.shifted.GatedResNet`` computed one row at a time (PixelCNN++'s u stream).

    The block keeps buffers of concat_elu of its input and of its hidden activation (whole
    height); ``bias`` is its frozen conditioning bias. Dropout is left out (eval-mode computation).
    """

    def __init__(self, block: nn.Module, bias: FrozenBias, n: int, height: int, width: int):
        self.conv1, self.conv2 = frozen(block.conv1), frozen(block.conv2)
        self.aux = None if block.aux is None else frozen(block.aux)
        self.bias = bias
        w = self.conv1[0]
        self.kh = w.shape[2]
        self.x_buf = PaddedBuffer(n, w.shape[1], height, width, block.conv1.pad, w.device, w.dtype)
        self.h_buf = PaddedBuffer(n, 2 * w.shape[0], height, width, block.conv2.pad, w.device, w.dtype)

    def reads(self, every: float) -> Reads:
        """What one ``row`` reads and computes, done once every ``every`` steps."""
        n, width = self.x_buf.data.shape[0], self.x_buf.data.shape[3] - self.conv1[0].shape[3] + 1
        mats = sum((Reads.matrix(w, n * width) for w, _ in filter(None, (self.conv1, self.conv2, self.aux))),
                   Reads())
        bands = Reads.cached(self.x_buf.rows(0, self.kh)) + Reads.cached(self.h_buf.rows(0, self.kh))
        return (mats + bands + Reads.biases(self.conv1[1], self.conv2[1], self.aux and self.aux[1])) * (1 / every)

    def row(self, i: int, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output row i (n, F, W) from its input row x and aux row (n, F_aux, W)."""
        self.x_buf.write_row(i, concat_elu(x))
        h = conv_row(self.x_buf.rows(i, self.kh), *self.conv1)
        if self.aux is not None:
            h = h + conv_row(concat_elu(aux)[:, :, None], *self.aux)
        self.h_buf.write_row(i, concat_elu(h))
        h = conv_row(self.h_buf.rows(i, self.kh), *self.conv2)
        bias = self.bias.row(i)
        a, b = (h + bias if torch.is_tensor(bias) else h).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)
