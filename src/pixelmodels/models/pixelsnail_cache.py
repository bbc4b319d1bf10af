"""Fast exact generation for PixelSNAIL: the network at one position per step [1].

``PixelSNAILCache.step(x, i, j)`` returns the parameters at position
t = i * W + j, computing only what that position needs:

* pixel t-1 is final now: its [scaled x, 1] goes into the zero-padded input
  buffer (padding is 0 in the ones channel too, as the network's zero padding);
* the input stage: at j = 0 the down-shifted 1x3 convolution of row i-1
  (complete now) is computed once for the whole row; at (i, j) its column j is
  added to the right-shifted 2x1 convolution of pixels (i-1..i, j-1);
* each block at (i, j): every gated residual layer convolves (2x2) concat_elu of
  its input and of its hidden map, the taps on row i - 1 once per row for the
  whole row, the two on row i at (i, j) (``pixelmodels.nn.incremental.GatedResNetStep``); then the key
  and value of position t-1 (from x, the block's input and its stream at t-1,
  kept from the previous step, and the background)
  are written into the block's pre-allocated K/V cache, and the query of (i, j)
  attends to keys 0..t-1 (the output is zero at t = 0); the block's output
  layer mixes the result into the stream at (i, j), for the next block;
* ELU and the output 1x1 convolution at (i, j).

Nothing at position t or later of x is read. ``reads()`` counts what a step
reads (weights, the cached keys and values) and computes, for the benchmark. Effective weights (weight norm
resolved) are frozen once, in the constructor; dropout is off (eval-mode
computation whatever the model's mode).

[1]: Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
     Models", https://arxiv.org/abs/1704.06001
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.errors import PixelModelsError
from pixelmodels.models.base import SamplingCache
from pixelmodels.models.pixelsnail import PixelSNAIL
from pixelmodels.nn.conditioning import Condition
from pixelmodels.nn.incremental import GatedResNetStep, PaddedBuffer, Reads, conv_row, frozen


def _flat(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A convolution's effective weight as an (out, in * kh * kw) matrix and its bias, for ``F.linear``."""
    weight, bias = frozen(layer)
    return weight.reshape(weight.shape[0], -1), bias


class _Block:
    """An ``AttentionBlock`` at one position, with the keys and values of the positions before it."""

    def __init__(self, block: nn.Module, c: Condition | None, n: int, size: tuple[int, int]):
        attention = block.attention
        self.heads, self.key_size, self.value_size = attention.n_heads, attention.key_size, attention.value_size

        def step(layer):
            return GatedResNetStep(layer, layer.class_bias.frozen(c, size), n, *size)

        self.res = [step(layer) for layer in block.res]  # 2x2 kernels: the row above applied once per row
        self.kv_in, self.q_in, self.out = step(block.kv_in), step(block.q_in), step(block.out)
        self.query, self.key_value = _flat(attention.query), _flat(attention.key_value)
        like = self.query[0]
        t = size[0] * size[1]
        self.keys = like.new_zeros(n, self.heads, t, self.key_size)  # (n, heads, H*W, key_size)
        self.values = like.new_zeros(n, self.heads, t, self.value_size)  # (n, heads, H*W, value_size)
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (block input, stream) at t-1
        self.width = size[1]

    def reads(self) -> Reads:
        """Per step, averaged over the positions: the layers' weights, and the keys and values up to t."""
        n, t = self.keys.shape[0], self.keys.shape[2]
        layers = sum((layer.reads() for layer in (*self.res, self.kv_in, self.q_in, self.out)), Reads())
        projections = Reads.matrix(self.query[0], n) + Reads.matrix(self.key_value[0], n)
        before = (t - 1) / 2  # keys and values read at step t: t of them, on average (T - 1) / 2
        per_key = n * self.heads * (self.key_size + self.value_size)
        attention = Reads(0.0, per_key * before * self.keys.element_size(), 2.0 * per_key * before)
        return layers + projections + attention

    def at(self, block_in: torch.Tensor, t: int, x_before: torch.Tensor | None,
           background: torch.Tensor, background_before: torch.Tensor | None) -> torch.Tensor:
        """The block's output (n, F) at position t; x_before: the scaled pixel t-1 (n, C)."""
        n, heads = block_in.shape[0], self.heads
        (i, j), before = divmod(t, self.width), divmod(t - 1, self.width)
        ul = block_in
        for layer in self.res:
            ul = layer.at(i, j, ul)
        if t > 0:  # pixel t-1 is final: its key and value join the cache
            kv = self.kv_in.at(*before, torch.cat([x_before, *self.previous, background_before], dim=1))
            k, v = F.linear(kv, *self.key_value).split([heads * self.key_size, heads * self.value_size], dim=1)
            self.keys[:, :, t - 1] = k.view(n, heads, self.key_size)
            self.values[:, :, t - 1] = v.view(n, heads, self.value_size)
        self.previous = (block_in, ul)
        if t == 0:  # attends to nothing
            attended = ul.new_zeros(n, heads * self.value_size)
        else:
            q = self.q_in.at(i, j, torch.cat([ul, background], dim=1))
            q = F.linear(q, *self.query).view(n, heads, 1, -1)
            scores = q @ self.keys[:, :, :t].transpose(-2, -1) * self.key_size**-0.5  # (n, heads, 1, t)
            attended = (torch.softmax(scores, dim=-1) @ self.values[:, :, :t]).reshape(n, -1)
        return self.out.at(i, j, ul, attended)


class PixelSNAILCache(SamplingCache):
    """The cached sampler's state for ``n`` images of a ``PixelSNAIL`` (see the module docstring).

    ``step`` must be called once per position, in raster order.
    """

    def __init__(self, model: PixelSNAIL, n: int, c: Condition | None):
        super().__init__(model, n, c)
        like = next(model.parameters()).detach()
        channels, (h, w) = model.input_channels, model.image_shape[1:]
        self.size = (h, w)
        self.pixels = PaddedBuffer(n, channels + 1, h, w, (1, 1, 1, 0), device=like.device, dtype=like.dtype)
        self.above = frozen(model.in_above)  # 1x3, applied to row i-1 at the start of row i
        self.above_row = like.new_zeros(n, model.options.n_filters, w)  # (n, F, W)
        self.left = _flat(model.in_left)  # 2x1 over (i-1..i, j-1)
        self.blocks = [_Block(block, c, n, (h, w)) for block in model.blocks]
        self.out = _flat(model.out)
        background = model.background(like.new_zeros(1, 1, h, w))  # (1, 2, H, W)
        self.background = background[0].flatten(1).T  # (H*W, 2)
        self.t = 0  # the next position

    def reads(self) -> Reads:
        """What a step reads and computes, averaged over the positions (``Reads``)."""
        n, w = self.n, self.size[1]
        inputs = Reads.matrix(self.above[0], n * w, every=w) + Reads.matrix(self.left[0], n)
        return inputs + sum((b.reads() for b in self.blocks), Reads()) + Reads.matrix(self.out[0], n)

    @torch.no_grad()
    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, head.n_params) at (i, j) of the partial integer image x (n, C, H, W)."""
        w = self.size[1]
        t = i * w + j
        if t != self.t:
            raise PixelModelsError(f"sampling cache: expected position {divmod(self.t, w)}, found ({i}, {j}); "
                                   "step every position once, in raster order")
        self.t += 1
        n, x_before, background_before = self.n, None, None
        if t > 0:
            pi, pj = divmod(t - 1, w)
            x_before = self.model.embed(x[:, :, pi, pj])  # (n, C)
            self.pixels.write(pi, pj, torch.cat([x_before, torch.ones_like(x_before[:, :1])], dim=1))
            background_before = self.background[t - 1].expand(n, 2)
        if j == 0 and i > 0:
            self.above_row = conv_row(self.pixels.rows(i, 1), *self.above)  # row i-1, down-shifted
        ul = self.above_row[:, :, j]
        if j > 0:
            ul = ul + F.linear(self.pixels.window(i, j, 2, 1).reshape(n, -1), *self.left)  # right-shifted
        background = self.background[t].expand(n, 2)
        for block in self.blocks:
            ul = block.at(ul, t, x_before, background, background_before)
        return F.linear(F.elu(ul), *self.out)  # (n, head.n_params)
