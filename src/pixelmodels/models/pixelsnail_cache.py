"""Fast exact generation for PixelSNAIL: the network at one position per step [1].

``PixelSNAILCache.step(x, i, j)`` returns the parameters at position
t = i * W + j, computing only what that position needs:

* pixel t-1 is final now: its [scaled x, 1] goes into the zero-padded input
  buffer (padding is 0 in the ones channel too, as the network's zero padding);
* the input stage: at j = 0 the down-shifted 1x3 convolution of row i-1
  (complete now) is computed once for the whole row; at (i, j) its column j is
  added to the right-shifted 2x1 convolution of pixels (i-1..i, j-1);
* the key and value of position t-1 in every block (``_KeysValues``): their inputs (x, each
  block's input and its stream at t-1, kept from the previous step, and the background) are
  final, and no block's key at t-1 depends on another block's step at t, so all blocks'
  key/value layers run together, one batched product (``torch.bmm``) per layer over the
  blocks, into the pre-allocated K/V caches;
* each block at (i, j): every gated residual layer convolves (2x2) concat_elu of
  its input and of its hidden map, the taps on row i - 1 once per row for the
  whole row, the two on row i at (i, j) (``pixelmodels.nn.gated_resnet.GatedResNetStep``); then
  the query of (i, j) attends to keys 0..t-1 (the output is zero at t = 0); the block's output
  layer mixes the result into the stream at (i, j), for the next block;
* ELU and the output 1x1 convolution at (i, j).

Nothing at position t or later of x is read. Effective weights (weight norm
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
from pixelmodels.models.base import SamplingCache, register_cache
from pixelmodels.models.pixelsnail import PixelSNAIL
from pixelmodels.nn.conditioning import Condition, FrozenBias
from pixelmodels.nn.gated_resnet import GatedResNetStep
from pixelmodels.nn.incremental import PaddedBuffer, conv_row, frozen, frozen_pointwise
from pixelmodels.nn.shifted import concat_elu, with_ones


def _flat(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A convolution's effective weight as an (out, in * kh * kw) matrix and its bias, for ``F.linear``."""
    weight, bias = frozen(layer)
    return weight.reshape(weight.shape[0], -1), bias


class _KeysValues:
    """The key and value of position t-1 in every ``AttentionBlock`` at once, and the caches they go to.

    A block's keys and values come from a gated residual layer of 1x1 convolutions (``kv_in``) over
    [x, the block's input, its stream, the background] at t-1, then the attention's key/value
    projection. At step t those inputs are final in every block, so the blocks are computed together:
    the features of all blocks stacked, (blocks, features, n), each layer one batched product
    (``torch.bmm``, (blocks, out, in) weights) instead of one small product per block.
    """

    def __init__(self, blocks, c: Condition | None, n: int, size: tuple[int, int], channels: int, features: int):
        attention = blocks[0].attention
        self.heads, self.key_size, self.value_size = attention.n_heads, attention.key_size, attention.value_size
        self.channels, self.features = channels, features  # image channels C, stream features F

        def stacked(layers):  # (blocks, out, in) weights and (blocks, out, 1) biases (zero where none)
            weights, biases = zip(*(frozen_pointwise(layer) for layer in layers))
            w = torch.stack(weights)
            b = torch.stack([torch.zeros_like(w[0, :, 0]) if b is None else b for b in biases])
            return w, b[:, :, None]

        self.conv1 = stacked([block.kv_in.conv1 for block in blocks])
        self.conv2 = stacked([block.kv_in.conv2 for block in blocks])
        self.projection = stacked([block.attention.key_value for block in blocks])
        biases = [block.kv_in.class_bias.frozen(c, size).bias for block in blocks]  # (n, 2F', h, w) or None
        self.condition = FrozenBias(None if biases[0] is None else torch.cat(biases))  # (blocks * n, 2F', h, w)
        w1 = self.conv1[0]
        self.inputs = w1.new_zeros(len(blocks), w1.shape[1], n)  # [x, block input, stream, background] at t-1
        t = size[0] * size[1]
        self.keys = w1.new_zeros(len(blocks), n, self.heads, t, self.key_size)
        self.values = w1.new_zeros(len(blocks), n, self.heads, t, self.value_size)
        self.width = size[1]

    def keep(self, k: int, block_in: torch.Tensor, ul: torch.Tensor) -> None:
        """Block k's input and stream (n, F) at the current position: inputs of its key and value at the next."""
        c, f = self.channels, self.features
        self.inputs[k, c: c + f] = block_in.t()
        self.inputs[k, c + f: c + 2 * f] = ul.t()

    def write(self, t: int, x_before: torch.Tensor, background_before: torch.Tensor) -> None:
        """Every block's key and value of position t (its pixel x_before (n, C), background (n, 2)) into the caches."""
        c, f = self.channels, self.features
        x = self.inputs
        x[:, :c] = x_before.t()
        x[:, c + 2 * f:] = background_before.t()
        # products, then their biases added (a bias broadcast along n, copied into baddbmm's output, costs
        # as much as the product here)
        h = torch.bmm(self.conv1[0], concat_elu(x)).add_(self.conv1[1])  # (blocks, F', n)
        h = torch.bmm(self.conv2[0], concat_elu(h)).add_(self.conv2[1])  # (blocks, 2F', n)
        blocks, n, heads = h.shape[0], h.shape[2], self.heads
        condition = self.condition.at(*divmod(t, self.width))  # (blocks * n, 2F') or 0.0
        if torch.is_tensor(condition):
            h = h + condition.view(blocks, n, -1).transpose(1, 2)
        a, b = h.chunk(2, dim=1)
        kv = torch.bmm(self.projection[0], torch.addcmul(x, a, torch.sigmoid(b))).add_(self.projection[1])
        k, v = kv.split([heads * self.key_size, heads * self.value_size], dim=1)
        self.keys[:, :, :, t] = k.view(blocks, heads, self.key_size, n).permute(0, 3, 1, 2)
        self.values[:, :, :, t] = v.view(blocks, heads, self.value_size, n).permute(0, 3, 1, 2)


class _Block:
    """An ``AttentionBlock`` at one position; its keys and values are block ``k`` of a ``_KeysValues``."""

    def __init__(self, block: nn.Module, c: Condition | None, n: int, size: tuple[int, int], kv: _KeysValues,
                 k: int):
        self.heads, self.key_size, self.value_size = kv.heads, kv.key_size, kv.value_size

        def step(layer):
            return GatedResNetStep(layer, layer.class_bias.frozen(c, size), n, size[1])

        self.res = [step(layer) for layer in block.res]  # 2x2 kernels: the row above applied once per row
        self.q_in, self.out = step(block.q_in), step(block.out)
        self.query = _flat(block.attention.query)
        self.kv, self.k = kv, k
        self.keys, self.values = kv.keys[k], kv.values[k]  # (n, heads, H*W, key_size / value_size)
        self.width = size[1]

    def at(self, block_in: torch.Tensor, t: int, background: torch.Tensor) -> torch.Tensor:
        """The block's output (n, F) at position t, its keys and values up to t-1 in place."""
        n, heads = block_in.shape[0], self.heads
        i, j = divmod(t, self.width)
        ul = block_in
        for layer in self.res:
            ul = layer.at(i, j, ul)
        self.kv.keep(self.k, block_in, ul)
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
        self.keys_values = _KeysValues(model.blocks, c, n, (h, w), channels, model.options.n_filters)
        self.blocks = [_Block(block, c, n, (h, w), self.keys_values, k) for k, block in enumerate(model.blocks)]
        self.out = _flat(model.out)
        background = model.background(like.new_zeros(1, 1, h, w))  # (1, 2, H, W)
        self.background = background[0].flatten(1).T  # (H*W, 2)
        self.t = 0  # the next position

    @torch.no_grad()
    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, head.n_params) at (i, j) of the partial integer image x (n, C, H, W)."""
        w = self.size[1]
        t = i * w + j
        if t != self.t:
            raise PixelModelsError(f"sampling cache: expected position {divmod(self.t, w)}, found ({i}, {j}); "
                                   "step every position once, in raster order")
        self.t += 1
        n = self.n
        if t > 0:  # pixel t-1 is final: into the input buffer, and every block's key and value of t-1
            pi, pj = divmod(t - 1, w)
            x_before = self.model.embed(x[:, :, pi, pj])  # (n, C)
            self.pixels.write(pi, pj, with_ones(x_before))
            self.keys_values.write(t - 1, x_before, self.background[t - 1].expand(n, 2))
        if j == 0 and i > 0:
            self.above_row = conv_row(self.pixels.rows(i, 1), *self.above)  # row i-1, down-shifted
        ul = self.above_row[:, :, j]
        if j > 0:
            ul = ul + F.linear(self.pixels.window(i, j, 2, 1).reshape(n, -1), *self.left)  # right-shifted
        background = self.background[t].expand(n, 2)
        for block in self.blocks:
            ul = block.at(ul, t, background)
        return F.linear(F.elu(ul), *self.out)  # (n, head.n_params)


register_cache(PixelSNAIL, PixelSNAILCache)
