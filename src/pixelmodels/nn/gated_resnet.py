"""The gated residual block of PixelCNN++ [1] and PixelSNAIL [2], beside its cached versions.

``GatedResNet`` is the block; ``GatedResNetStep`` computes it one position at a time and
``GatedResNetRow`` one row at a time, from the same modules' frozen weights, for the
cached samplers (``pixelmodels.models.pixelcnnpp_cache``, ``pixelsnail_cache``).

[1]: Salimans et al. 2017, "PixelCNN++", https://arxiv.org/abs/1701.05517
[2]: Chen et al. 2017, "PixelSNAIL", https://arxiv.org/abs/1712.09763
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pixelmodels.nn.conditioning import Condition, Conditioning, FrozenBias
from pixelmodels.nn import fast
from pixelmodels.nn.fast import StepMatrix
from pixelmodels.nn.incremental import PaddedBuffer, conv_row, frozen, frozen_pointwise
from pixelmodels.nn.shifted import NIN, concat_elu


class GatedResNet(nn.Module):
    """The gated residual block of PixelCNN++: x + a * sigmoid(b), with [a, b] from two convolutions.

    h = conv1(concat_elu(x)) (+ a 1x1 convolution of concat_elu(aux)); [a, b] = conv2(dropout(concat_elu(h)))
    plus the condition's bias. ``aux`` is another stream or a skip connection, or a tuple of them (their
    concatenation along channels); ``conditioning`` is the model's ``Conditioning`` (None: unconditional).
    ``conv`` builds both convolutions (a shifted convolution class, or ``NIN`` for 1x1). The block owns
    its residual connection.
    """

    def __init__(self, n: int, conv: type, n_aux: int = 0, conditioning: Conditioning | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.conv1 = conv(2 * n, n)
        self.aux = NIN(2 * n_aux, n) if n_aux else None
        self.dropout = dropout
        self.conv2 = conv(2 * n, 2 * n, init_scale=0.1)
        self.class_bias = (Conditioning() if conditioning is None else conditioning).bias(2 * n)

    def forward(self, x, aux=None, c: Condition | None = None):
        h = self.conv1(concat_elu(x))  # (B, n, H, W)
        if self.aux is not None:
            h = h + self.aux(concat_elu(torch.cat(aux, dim=1) if isinstance(aux, (tuple, list)) else aux))
        h = fast.dropout(concat_elu(h), self.dropout, self.training)
        a, b = self.class_bias.add(self.conv2(h), c).chunk(2, dim=1)  # (B, n, H, W) each
        return x + a * torch.sigmoid(b)


def _tap_matrix(weight: torch.Tensor) -> torch.Tensor:
    """One kernel row (out, in, kw) -> the (kw * in, out) matrix a window (B, kw, in), flattened, multiplies."""
    return weight.permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()


def _row_windows(row: torch.Tensor, width: int, kw: int) -> torch.Tensor:
    """The (B * width, kw * C) windows of a (B, width + kw - 1, C) contiguous padded row, one per output column."""
    b, padded, c = row.shape
    return row.as_strided((b, width, kw * c), (padded * c, c, 1)).reshape(b * width, kw * c)


class GatedResNetStep:
    """A ``GatedResNet`` of 1x1 or down-right-shifted 2 x kw convolutions, one position at a time.

    ``at(i, j, x, aux, row_aux)`` gives the block's output (n, F) at (i, j); positions come in raster
    order (of the block's own resolution). Each convolution is split by kernel row: the taps on the row
    above read values final since that row ended, so at the first position of row i they are applied to
    the whole row at once, one (n * W, kw * in) matrix product, together with the biases (the
    convolutions', the aux layer's and the frozen conditioning bias ``bias``, read at row i); the step then
    multiplies only the current row's taps, a contiguous window of channels-last row buffers of concat_elu
    of the input and of the hidden activation. ``row_aux`` (n, A, W): the first A channels of the aux
    input, known for the whole row (PixelCNN++'s u stream), likewise applied per row; ``aux`` the rest,
    per position. Dropout is left out (eval-mode computation).
    """

    def __init__(self, block: nn.Module, bias: FrozenBias, n: int, width: int, row_aux: int = 0):
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
    """A ``GatedResNet`` computed one row at a time (PixelCNN++'s u stream).

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
