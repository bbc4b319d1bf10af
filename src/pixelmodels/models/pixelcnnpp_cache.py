"""The cached sampling path of PixelCNN++: each activation computed once, when its inputs are final [1].

Level l is the 1/2**l resolution (l = 0, 1, 2) of the network's size (H and W
rounded up to multiples of 4; the sampler steps the real positions only, and no
real position reads the stream at a padded one, whose input is zero).
The step at image position (i, j) (pixels strictly before (i, j) final) does:

* at j == 0, the u (down-shifted) stream, one row per level: u row r of level l
  depends only on image rows < 2**l r and never on ul, so row i at level 0,
  row i / 2 at level 1 (i even) and row i / 4 at level 2 (i % 4 == 0) are
  computed once, in the network's order: the input convolution, the up-pass
  blocks and the stride-2 down-sampling (levels 0 -> 1 -> 2), then the
  down-pass blocks and the transposed up-sampling (2 -> 1 -> 0), whose output
  row r reads its input row r // 2 only;
* at every step, the ul (down-right-shifted) stream at one position per level:
  ul (r, c) of level l depends only on pixels strictly before (2**l r, 2**l c),
  so level 0 at every step, level 1 at (i / 2, j / 2) when i and j are even,
  level 2 at (i / 4, j / 4) when both are multiples of 4, again up 0 -> 1 -> 2
  then down 2 -> 1 -> 0; a transposed up-sampled ul (r, c) reads its input
  (r // 2, c // 2) only. The aux inputs (u at the same position, the up-pass
  skips) come from the current u rows and this step's up pass; the output head
  reads the level-0 result.

Every convolution reads a buffer of its input: the image buffer holds
[scaled x, ones] at real positions and zeros in the padding (as ``F.pad`` of
the full pass); a gated block buffers the concat_elu of its input and of its
hidden activation: a u block whole rows (``pixelmodels.nn.gated_resnet.GatedResNetRow``),
a ul block two channels-last rows (``GatedResNetStep``), whose row-above taps,
biases and the u part of its aux input are applied once per row, for the whole
row, the current row's taps at each position. Dropout is left out: the cache
computes the eval-mode network.

[1]: Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
     Models", https://arxiv.org/abs/1704.06001
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelmodels.models.base import SamplingCache, register_cache
from pixelmodels.models.pixelcnnpp import PixelCNNPP
from pixelmodels.nn.conditioning import Condition
from pixelmodels.nn.gated_resnet import GatedResNetRow, GatedResNetStep
from pixelmodels.nn.shifted import with_ones
from pixelmodels.nn.incremental import (
    PaddedBuffer,
    channels_last,
    conv_at,
    conv_at_flat,
    conv_row,
    conv_transpose_row,
    flat_taps,
    frozen,
)


class PixelCNNPPCache(SamplingCache):
    """Activations of a ``PixelCNNPP`` for n images; ``step(x, i, j)`` -> params (n, P) at (i, j)."""

    def __init__(self, model: PixelCNNPP, n: int, c: Condition | None):
        super().__init__(model, n, c)
        channels, (height, width) = model.input_channels, model.network_size  # padded to multiples of 4
        f = model.options.n_filters
        w = frozen(model.u_in)[0]
        self.features, self.width = f, width
        sizes = [(height >> level, width >> level) for level in range(3)]

        def blocks(modules, level, rows=False):
            if rows:
                return [GatedResNetRow(b, b.class_bias.frozen(c, sizes[level]), n, *sizes[level]) for b in modules]
            # the ul blocks' aux input starts with u, known for the whole row: applied once per row
            return [GatedResNetStep(b, b.class_bias.frozen(c, sizes[level]), n, sizes[level][1], row_aux=f)
                    for b in modules]

        def buffer(depth, level, pad):
            return PaddedBuffer(n, depth, *sizes[level], pad, w.device, w.dtype)

        # per level (0: full resolution); the model lists the down pass from 1/4 up
        self.up_u = [blocks(model.up_u[level], level, rows=True) for level in range(3)]
        self.up_ul = [blocks(model.up_ul[level], level) for level in range(3)]
        self.dn_u = [blocks(model.dn_u[2 - level], level, rows=True) for level in range(3)]
        self.dn_ul = [blocks(model.dn_ul[2 - level], level) for level in range(3)]
        self.image = buffer(channels + 1, 0, (1, 1, 1, 0))  # [scaled x, ones]; serves all three input convs
        self.u_in, self.ul_above, self.ul_left = frozen(model.u_in), frozen(model.ul_in_above), frozen(model.ul_in_left)
        self.down_u = [frozen(m) for m in model.down_u]  # level -> level + 1
        self.down_ul = [(flat_taps(weight), bias) for weight, bias in map(frozen, model.down_ul)]
        self.down_u_in = [buffer(f, level, m.pad) for level, m in enumerate(model.down_u)]
        self.down_ul_in = [channels_last(buffer(f, level, m.pad)) for level, m in enumerate(model.down_ul)]
        self.up_u_sample = [(*frozen(model.up_sample_u[1 - level]), model.up_sample_u[1 - level].left)
                            for level in range(2)]  # level + 1 -> level
        self.up_ul_sample = []  # level + 1 -> level: the (in, out) matrix of each of the 2x2 taps, and the bias
        for level in range(2):
            weight, bias = frozen(model.up_sample_ul[1 - level])  # (in, out, 2, 2)
            self.up_ul_sample.append((weight.permute(2, 3, 0, 1).contiguous(), bias))
        self.out = frozen(model.out)
        self.ul_above_row = None  # (n, F, W): the ul input's part from the row above, for the current row
        self.u_up = [None] * 3  # per level: the current u row's up-pass values [input, block 1, ...]
        self.u_dn = [None] * 3  # per level: the current u row's down-pass block outputs
        self.ul_dn = [None] + [torch.zeros(n, f, *sizes[level], device=w.device, dtype=w.dtype)
                               for level in (1, 2)]  # down-pass outputs of levels 1, 2 (up-sampling inputs)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Integer pixels (n, C, ...) -> the network input [scaled x, ones] (n, C + 1, ...)."""
        return with_ones(self.model.embed(x))

    @torch.no_grad()
    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, P) at (i, j); reads only the pixels of x before (i, j)."""
        if j == 0:
            if i > 0:
                self.image.write_row(i - 1, self._pixels(x[:, :, i - 1]))
            self._u_rows(i)
        else:
            self.image.write(i, j - 1, self._pixels(x[:, :, i, j - 1]))
        ul = self._ul_positions(i, j)
        return conv_at(F.elu(ul)[:, :, None, None], *self.out)

    def _u_rows(self, i: int) -> None:
        """The u stream at image row i: its rows at every level whose row starts here."""
        levels = [level for level in range(3) if i % (1 << level) == 0]
        if i == 0:  # down_shift: zeros above the image
            u = self.image.data.new_zeros(self.n, self.features, self.width)
            self.ul_above_row = u
        else:
            u = conv_row(self.image.rows(i - 1, 2), *self.u_in)
            self.ul_above_row = conv_row(self.image.rows(i, 1), *self.ul_above)
        for level in levels:  # up pass
            r = i >> level
            if level > 0:
                u = conv_row(self.down_u_in[level - 1].rows(r, 2, stride=2), *self.down_u[level - 1], stride=2)
            values = [u]
            for block in self.up_u[level]:
                u = block.row(r, u)
                values.append(u)
            if level < 2:
                self.down_u_in[level].write_row(r, u)
            self.u_up[level] = values
        for level in reversed(levels):  # down pass
            r, values = i >> level, self.u_up[level]
            if level == 2:
                u, skips = values[-1], values[-2::-1]
            else:
                weight, bias, left = self.up_u_sample[level]
                u, skips = conv_transpose_row(self.u_dn[level + 1][-1], weight, bias, r, left), values[::-1]
            outs = []
            for block, skip in zip(self.dn_u[level], skips, strict=True):
                u = block.row(r, u, skip)
                outs.append(u)
            self.u_dn[level] = outs

    def _ul_positions(self, i: int, j: int) -> torch.Tensor:
        """The ul stream at every level's position that step (i, j) completes; returns level 0's output."""
        levels = [level for level in range(3) if i % (1 << level) == 0 and j % (1 << level) == 0]
        left = conv_at(self.image.window(i, j, 2, 1), *self.ul_left) if j > 0 else 0.0  # right_shift
        ul = self.ul_above_row[:, :, j] + left
        up = {}
        for level in levels:  # up pass
            r, c = i >> level, j >> level
            if level > 0:
                ul = conv_at_flat(self.down_ul_in[level - 1].window(r, c, 2, 2, stride=2), *self.down_ul[level - 1])
            values = [ul]
            for block, u in zip(self.up_ul[level], self.u_up[level][1:], strict=True):
                ul = block.at(r, c, ul, row_aux=u)
                values.append(ul)
            if level < 2:
                self.down_ul_in[level].write(r, c, ul)
            up[level] = values
        for level in reversed(levels):  # down pass
            r, c, values = i >> level, j >> level, up[level]
            if level == 2:
                ul, skips = values[-1], values[-2::-1]
            else:
                below = self.ul_dn[level + 1][:, :, r // 2, c // 2]  # output (r, c) reads tap (r % 2, c % 2) only
                taps, bias = self.up_ul_sample[level]
                ul, skips = torch.addmm(bias, below, taps[r % 2, c % 2]), values[::-1]
            for block, u, skip in zip(self.dn_ul[level], self.u_dn[level], skips, strict=True):
                ul = block.at(r, c, ul, skip, row_aux=u)  # aux: [u, skip]
            if level > 0:
                self.ul_dn[level][:, :, r, c] = ul
        return ul


register_cache(PixelCNNPP, PixelCNNPPCache)
