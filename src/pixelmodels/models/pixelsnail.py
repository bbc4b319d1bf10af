"""PixelSNAIL [1]: gated residual convolutions interleaved with causal self-attention.

The input stage is the first layer of PixelCNN++'s down-right stream: a
down-shifted 1x3 and a right-shifted 2x1 convolution of the image (with a
channel of ones, so the network can tell zero padding from black), so position
(i, j) sees only pixels strictly before it in raster order. Then ``n_blocks``
blocks, each

* ``n_res_layers`` gated residual layers over down-right-shifted 2x2
  convolutions (concat_elu, dropout, a per-class bias in every layer when
  class-conditional): the residual stream ``ul``;
* a causal multi-head attention layer (``pixelmodels.nn.CausalSelfAttention``):
  keys and values from a gated residual layer of 1x1 convolutions over
  [image, the block's input, ul, background], queries from one over [ul, background], where the
  background is the position, two channels i/H - 0.5 and j/W - 0.5. Pixel
  (i, j) attends to every earlier pixel and to nothing else; the first pixel's
  attention output is exactly zero (see ``pixelmodels.nn.attention``);
* a gated residual layer of 1x1 convolutions over ul with the attention output
  as its auxiliary input, whose output is the next block's input.

Then ELU and a 1x1 convolution to the head's parameters. Thanks to attention the
receptive field is every earlier pixel from the first block on. The layers are
weight-normalized with the data-dependent initialization of [3]
(``initialize_from_data``). ``pixelsnail_cache`` is the fast exact sampler
(one position per step, keys and values cached). The
network conditions on whole pixels, so either head models the channels within
a pixel itself (logistic mixture by default).

Presets: ``default`` is the reference's CIFAR-10 model [2] (256 filters, 12
blocks of 5 residual layers, one head, keys of 16 and values of 128 features,
10 mixtures, dropout 0.5), with its training settings (Adam betas (0.95,
0.9995), learning rate 1e-3 decaying by 0.999995 per step, EMA 0.9995).

NOTE: where we deviate from the reference code [2]: its keys and values see
the image, the stream and the background; ours also see the block's input, as
the paper's figure has it. Its attention has one
head and multiplies the exponentials by a 0/1 mask with 1e-6 added to the
softmax's denominator; ours has ``n_heads`` and is exact (the first row is
zero by construction). The background is computed from the model's image size,
not the input's, so running the network on the first rows of an image (as the
sampler does, ``receptive_rows = H - 1``) gives the same values there.

[1]: Chen et al. 2017, "PixelSNAIL: An Improved Autoregressive Generative Model",
     https://arxiv.org/abs/1712.09763
[2]: https://github.com/neocxi/pixelsnail-public
[3]: Salimans & Kingma 2016, "Weight Normalization", https://arxiv.org/abs/1602.07868
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from pixelmodels.models.base import AutoregressiveModel, ModelOptions
from pixelmodels.models.pixelcnnpp import REFERENCE_OPTIONS, REFERENCE_TRAINING
from pixelmodels.models.registry import register_model
from pixelmodels.nn import (
    NIN,
    CausalSelfAttention,
    DownRightShiftedConv2d,
    DownShiftedConv2d,
    GatedResNet,
    down_shift,
    right_shift,
    with_ones,
)
from pixelmodels.nn.conditioning import Condition, Conditioning
from pixelmodels.settings import MAX_FEATURES, MAX_HEADS, MAX_LAYERS, setting

@dataclass
class PixelSNAILOptions(ModelOptions):
    """Hyperparameters of ``pixelsnail`` (each field's help and range beside it)."""

    n_filters: int = setting(256, "features of the residual stream", ge=1, le=MAX_FEATURES)
    n_blocks: int = setting(12, "attention blocks", ge=1, le=MAX_LAYERS)
    n_res_layers: int = setting(5, "gated residual layers before the attention of each block", ge=0, le=MAX_LAYERS)
    n_heads: int = setting(1, "attention heads", ge=1, le=MAX_HEADS)
    key_size: int = setting(16, "query/key features per head", ge=1, le=MAX_FEATURES)
    value_size: int = setting(128, "value features per head (the attention output has n_heads * value_size)",
                              ge=1, le=MAX_FEATURES)
    dropout: float = setting(0.5, "dropout probability inside the gated residual layers", ge=0, lt=1,
                             noun="a probability")
    attn_dropout: float = setting(0.0, "dropout probability on the attention weights", ge=0, lt=1,
                                  noun="a probability")
    checkpoint_activations: bool = setting(False, "in training (gradients on), keep only each block's input and "
                                           "recompute the block's activations during the backward pass "
                                           "(torch.utils.checkpoint, non-reentrant): about one block's "
                                           "activations in memory instead of all of them, for a third more "
                                           "compute")


PRESETS = {
    "tiny": dict(n_filters=4, n_blocks=2, n_res_layers=1, n_heads=2, key_size=4, value_size=4, n_mixtures=2,
                 dropout=0.5, attn_dropout=0.1),
    "small": dict(n_filters=64, n_blocks=2, n_res_layers=2, n_heads=1, key_size=16, value_size=32, n_mixtures=5,
                  dropout=0.0),
    "default": dict(),
}


class AttentionBlock(nn.Module):
    """Gated residual layers, then causal attention over [image, block input, stream, position], mixed back in."""

    def __init__(self, c: int, options: PixelSNAILOptions, conditioning: Conditioning):
        super().__init__()
        o, n = options, options.n_filters

        def gated(width, conv, n_aux=0):
            return GatedResNet(width, conv, n_aux, conditioning, o.dropout)

        self.res = nn.ModuleList(gated(n, DownRightShiftedConv2d) for _ in range(o.n_res_layers))
        self.kv_in = gated(c + 2 * n + 2, NIN)
        self.q_in = gated(n + 2, NIN)
        self.attention = CausalSelfAttention(n + 2, c + 2 * n + 2, o.n_heads, o.key_size, o.value_size,
                                             o.attn_dropout)
        self.out = gated(n, NIN, o.n_heads * o.value_size)

    def forward(self, block_in, x, background, c: Condition | None = None):
        ul = block_in
        for layer in self.res:
            ul = layer(ul, c=c)
        kv = self.kv_in(torch.cat([x, block_in, ul, background], dim=1), c=c)  # (B, C+2n+2, H, W)
        q = self.q_in(torch.cat([ul, background], dim=1), c=c)  # (B, n+2, H, W)
        return self.out(ul, self.attention(q, kv), c=c)  # (B, n, H, W)


class PixelSNAIL(AutoregressiveModel):
    """PixelSNAIL of [1]; any image size, C = 1 or 3."""

    channel_masked = False

    def __init__(self, config, options: PixelSNAILOptions):
        super().__init__(config, options)
        c, n = self.input_channels, options.n_filters
        self.in_above = DownShiftedConv2d(c + 1, n, (1, 3))
        self.in_left = DownRightShiftedConv2d(c + 1, n, (2, 1))
        self.blocks = nn.ModuleList(AttentionBlock(c, options, self.conditioning) for _ in range(options.n_blocks))
        self.out = NIN(n, self.head.n_params)

    @property
    def receptive_rows(self) -> int:
        """Every row above: attention reaches the whole past (rows below are never needed)."""
        return self.image_shape[1] - 1

    def head_features(self) -> int:
        return self.options.n_filters

    def background(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, h, w): i/H - 0.5 and j/W - 0.5, with H, W the model's image size (x may be its first rows)."""
        b, _, h, w = x.shape
        _, height, width = self.image_shape
        rows = (torch.arange(h, device=x.device, dtype=x.dtype) / height - 0.5)[:, None].expand(h, w)
        cols = (torch.arange(w, device=x.device, dtype=x.dtype) / width - 0.5)[None, :].expand(h, w)
        return torch.stack([rows, cols])[None].expand(b, 2, h, w)

    def network(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        background = self.background(x)
        x_pad = with_ones(x)  # (B, C+1, H, W)
        ul = down_shift(self.in_above(x_pad)) + right_shift(self.in_left(x_pad))  # strictly earlier pixels
        recompute = self.options.checkpoint_activations and torch.is_grad_enabled()
        for block in self.blocks:  # recomputation draws the same dropout masks (the RNG state is kept)
            if recompute:
                ul = checkpoint(block, ul, x, background, c, use_reentrant=False)
            else:
                ul = block(ul, x, background, c)
        return self.out(F.elu(ul))  # (B, head.n_params, H, W)


register_model("pixelsnail", PixelSNAIL, PixelSNAILOptions, PRESETS, REFERENCE_OPTIONS, REFERENCE_TRAINING)
