"""The cached sampling path of the Gated PixelCNN [1]: a vertical row, then a horizontal position per step.

Schedule: the vertical stack's row r depends on rows <= r only and reaches
the horizontal stack as the link v_to_h(v_pre) of row r + 1. So at the first
step of row i the whole vertical stack is computed for row i - 1, layer by
layer, from per-layer buffers of its input rows (the first layer's is the
image row i - 1, complete by then), and each layer keeps its link for row i
(row 0's link is v_to_h of zeros: its bias). At each step (i, j), once per
channel pass, the horizontal stack is computed at (i, j) only: each layer
writes its input at (i, j) into a buffer and convolves the 1 x (k//2 + 1)
window ending there, adds the link and the conditioning bias, gates, applies
the masked 1x1 and the residual; then the 1x1 output layers. The previous
pixel is written again into the first layer's buffer, since its last
channel was sampled after its last step. Effective weights and conditioning
biases are frozen once, here.

[1]: Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
     Models", https://arxiv.org/abs/1704.06001
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelmodels.models.base import SamplingCache, register_cache
from pixelmodels.models.gated_pixelcnn import GatedLayer, GatedPixelCNN, gate
from pixelmodels.nn.conditioning import Condition
from pixelmodels.nn.incremental import (OutputStack, PaddedBuffer, PreviousPixel, channels_last, conv_at_flat,
                                        conv_row, flat_taps, frozen, frozen_pointwise)


class _LayerCache:
    """One ``GatedLayer``'s frozen weights, input buffers and the vertical link of the current row."""

    def __init__(self, layer: GatedLayer, n: int, h: int, w: int, c: Condition | None, dtype, device):
        self.v_conv = frozen(layer.v_conv)
        weight, bias = frozen(layer.h_conv)
        self.h_conv, self.h_width = (flat_taps(weight), bias), weight.shape[3]
        self.v_to_h = frozen(layer.v_to_h)
        self.h_out = frozen_pointwise(layer.h_out)
        self.v_bias, self.h_bias = layer.v_class.frozen(c, (h, w)), layer.h_class.frozen(c, (h, w))
        self.residual = layer.residual
        in_ch = layer.h_conv.in_channels
        self.v_in = PaddedBuffer(n, in_ch, h, w, layer.v_conv.pad, device=device, dtype=dtype)  # rows <= r
        self.h_in = channels_last(PaddedBuffer(n, in_ch, h, w, layer.h_conv.pad, device=device, dtype=dtype))
        # link for row 0: v_to_h of the zero row that down_shift puts there, i.e. its bias
        self.link = self.v_to_h[1][None, :, None].expand(n, -1, w)  # (n, 2n, W)

    def vertical_row(self, r: int) -> torch.Tensor:
        """Vertical output row r (n, n, W) from the buffered input rows <= r; sets the link for row r + 1."""
        kh = self.v_conv[0].shape[2]
        v_pre = conv_row(self.v_in.rows(r, kh), *self.v_conv) + self.v_bias.row(r)  # (n, 2n, W)
        self.link = conv_row(v_pre[:, :, None], *self.v_to_h)
        return gate(v_pre)

    def horizontal_at(self, h: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Write the horizontal input (n, F) at (i, j); return the layer's horizontal output (n, n) there."""
        self.h_in.write(i, j, h)
        h_pre = conv_at_flat(self.h_in.window(i, j, 1, self.h_width), *self.h_conv)  # (n, 2n)
        h_pre = h_pre + self.link[:, :, j] + self.h_bias.at(i, j)
        h_new = F.linear(gate(h_pre), *self.h_out)
        return h + h_new if self.residual else h_new


class GatedPixelCNNCache(SamplingCache):
    """Fast exact generation for ``GatedPixelCNN``; see the module docstring for the schedule."""

    def __init__(self, model: GatedPixelCNN, n: int, c: Condition | None):
        super().__init__(model, n, c)
        p = next(model.parameters())
        _, h, w = model.image_shape
        self.layers = [_LayerCache(layer, n, h, w, c, p.dtype, p.device) for layer in model.layers]
        self.image = PreviousPixel(self.layers[0].h_in, model.embed)
        self.output = OutputStack(model.out_hidden, model.out)
        self.rows_done = 0  # vertical rows computed so far

    @torch.no_grad()
    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, head.n_params) at (i, j) of the partial integer image x (n, C, H, W)."""
        embed = self.model.embed
        while self.rows_done < i:  # rows above are final: run the vertical stack on the next one
            r = self.rows_done
            v = embed(x[:, :, r])  # (n, C, W)
            for layer in self.layers:
                layer.v_in.write_row(r, v)
                v = layer.vertical_row(r)
            self.rows_done += 1
        self.image.update(x, i, j)
        h = embed(x[:, :, i, j])  # (n, C)
        for layer in self.layers:
            h = layer.horizontal_at(h, i, j)
        return self.output(h)  # (n, C*K)


register_cache(GatedPixelCNN, GatedPixelCNNCache)
