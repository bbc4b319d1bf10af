"""Gated PixelCNN [1]: vertical and horizontal stacks, gated activations, no blind spot.

Each layer (Figure 2 of [1]):

* the vertical stack convolves a (k//2 + 1) x k window: the rows above and the
  current row, in full width. Its pre-activation, shifted down one row so that
  row i only sees rows < i, is mapped by a 1x1 convolution into the horizontal
  stack;
* the horizontal stack convolves a 1 x (k//2 + 1) window of the current row up to
  the current pixel, masked by channel group at the centre (mask A in the first
  layer, B after), adds the vertical contribution, and has a residual 1x1
  connection (from the second layer on; the first layer's input is the image);
* both stacks use the gate tanh(a) * sigmoid(b), and class conditioning adds a
  learned per-class bias to both gates in every layer.

The vertical stack sees every row above in full width and the horizontal stack
every pixel to the left, so nothing before the pixel is missed once the stack
is deep enough (no blind spot). RGB channels are masked as in PixelCNN
(``pixelmodels.nn.channel_groups``); the vertical stack needs no channel mask
since it only reaches the horizontal stack from rows above.

Default preset: [1] does not list its CIFAR-10 widths in full; we use 15 layers
(PixelCNN's depth in [2]), 128 features, 5x5 kernels after a 7x7 input layer
and 1024 output features.

[1]: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
     Decoders", https://arxiv.org/abs/1606.05328
[2]: van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
     https://arxiv.org/abs/1601.06759
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.models.base import AutoregressiveModel
from pixelmodels.nn import ClassBias, DownShiftedConv2d, MaskedConv2d, channel_groups, down_shift
from pixelmodels.nn.incremental import (PaddedBuffer, channels_last, conv_at_flat, conv_row, flat_taps, frozen,
                                        frozen_pointwise)
from pixelmodels.nn.shifted import maybe_weight_norm


@dataclass
class GatedPixelCNNOptions:
    """Hyperparameters of ``gated-pixelcnn``.

    Args:
        n_channels: features of each stack.
        n_layers: gated layers (the first takes the image).
        kernel_size: k of the layers after the first.
        input_kernel_size: k of the first layer.
        n_out_channels: features of the hidden 1x1 output layer.
        likelihood: "categorical" or "logistic-mixture" (channel-masked means and mixture weights).
        n_mixtures: components of the logistic mixture.
        weight_norm: weight-normalize every convolution (per output feature, so every mask and thus
            causality is kept; what ``main.py --norm_layer True`` gets instead of batch normalization).
    """

    n_channels: int = 128
    n_layers: int = 15
    kernel_size: int = 5
    input_kernel_size: int = 7
    n_out_channels: int = 1024
    likelihood: str = "categorical"
    n_mixtures: int = 10
    weight_norm: bool = False


PRESETS = {
    "tiny": dict(n_channels=6, n_layers=3, kernel_size=3, input_kernel_size=3, n_out_channels=12),
    "small": dict(n_channels=32, n_layers=5, kernel_size=5, input_kernel_size=7, n_out_channels=128),
    "default": dict(),
}


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(first half) * sigmoid(second half) over the feature dimension."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks; owns the horizontal residual connection."""

    def __init__(self, in_ch: int, n: int, k: int, n_groups: int, n_classes: int | None, first: bool):
        super().__init__()
        groups = channel_groups(n, n_groups)
        gate_groups = torch.cat([groups, groups])  # tanh half and sigmoid half
        in_groups = channel_groups(in_ch, n_groups)
        self.v_conv = DownShiftedConv2d(in_ch, 2 * n, (k // 2 + 1, k), weight_norm=False)
        self.v_to_h = nn.Conv2d(2 * n, 2 * n, 1)
        self.h_conv = MaskedConv2d(in_ch, 2 * n, k, "A" if first else "B", n_groups,
                                   out_groups=gate_groups, in_groups=in_groups, shape="row")
        self.h_out = MaskedConv2d(n, n, 1, "B", n_groups)
        self.v_class = ClassBias(n_classes, 2 * n)
        self.h_class = ClassBias(n_classes, 2 * n)
        self.residual = not first

    def forward(self, v, h, y):
        v_pre = self.v_class.add(self.v_conv(v), y)  # (B, 2n, H, W), rows <= i
        h_pre = self.h_class.add(self.h_conv(h) + self.v_to_h(down_shift(v_pre)), y)
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), (h + h_new if self.residual else h_new)


class GatedPixelCNN(AutoregressiveModel):
    """Gated PixelCNN of [1] with class conditioning in every layer."""

    def __init__(self, config, options: GatedPixelCNNOptions):
        super().__init__(config, options)
        c = config.image_shape[0]
        n = options.n_channels
        self.layers = nn.ModuleList(
            GatedLayer(c if i == 0 else n, n, options.input_kernel_size if i == 0 else options.kernel_size,
                       c, config.n_classes, first=i == 0)
            for i in range(options.n_layers)
        )
        self.out_hidden = MaskedConv2d(n, options.n_out_channels, 1, "B", c)
        self.out = MaskedConv2d(options.n_out_channels, self.head.n_params, 1, "B", c,
                                out_groups=self.head.param_groups())
        if options.weight_norm:  # the mask multiplies the normalized weight, so it still zeroes the future
            for conv in [m for m in self.modules() if isinstance(m, nn.Conv2d)]:
                maybe_weight_norm(conv, True)

    @property
    def receptive_rows(self) -> int:
        o = self.options  # each vertical layer reaches k//2 rows up; the link shifts one more
        return o.input_kernel_size // 2 + (o.n_layers - 1) * (o.kernel_size // 2) + 1

    def network(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        v = h = x  # (B, C, H, W)
        for layer in self.layers:
            v, h = layer(v, h, y)  # (B, n, H, W) each
        return self.out(F.relu(self.out_hidden(F.relu(h))))  # (B, C*K, H, W)

    def sampling_cache(self, n: int, y: torch.Tensor | None) -> GatedPixelCNNCache:
        """The cached sampler's state for ``n`` images with labels ``y``; see ``GatedPixelCNNCache``."""
        return GatedPixelCNNCache(self, n, y)


def _class_bias(layer: ClassBias, y: torch.Tensor | None, row: bool) -> torch.Tensor | float:
    """A ``ClassBias`` at every position: (n, F, 1) for a row, (n, F) for a pixel, or 0.0."""
    bias = layer(y)
    return bias if isinstance(bias, float) else bias[:, :, 0] if row else bias[:, :, 0, 0]


class _LayerCache:
    """One ``GatedLayer``'s frozen weights, input buffers and the vertical link of the current row."""

    def __init__(self, layer: GatedLayer, n: int, h: int, w: int, y: torch.Tensor | None, dtype, device):
        self.v_conv = frozen(layer.v_conv)
        weight, bias = frozen(layer.h_conv)
        self.h_conv, self.h_width = (flat_taps(weight), bias), weight.shape[3]
        self.v_to_h = frozen(layer.v_to_h)
        self.h_out = frozen_pointwise(layer.h_out)
        self.v_class, self.h_class = _class_bias(layer.v_class, y, True), _class_bias(layer.h_class, y, False)
        self.residual = layer.residual
        in_ch = layer.h_conv.in_channels
        self.v_in = PaddedBuffer(n, in_ch, h, w, layer.v_conv.pad, device=device, dtype=dtype)  # rows <= r
        self.h_in = channels_last(PaddedBuffer(n, in_ch, h, w, layer.h_conv.pad, device=device, dtype=dtype))
        # link for row 0: v_to_h of the zero row that down_shift puts there, i.e. its bias
        self.link = self.v_to_h[1][None, :, None].expand(n, -1, w)  # (n, 2n, W)

    def vertical_row(self, r: int) -> torch.Tensor:
        """Vertical output row r (n, n, W) from the buffered input rows <= r; sets the link for row r + 1."""
        kh = self.v_conv[0].shape[2]
        v_pre = conv_row(self.v_in.rows(r, kh), *self.v_conv) + self.v_class  # (n, 2n, W)
        self.link = conv_row(v_pre[:, :, None], *self.v_to_h)
        return gate(v_pre)

    def horizontal_at(self, h: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Write the horizontal input (n, F) at (i, j); return the layer's horizontal output (n, n) there."""
        self.h_in.write(i, j, h)
        h_pre = conv_at_flat(self.h_in.window(i, j, 1, self.h_width), *self.h_conv)  # (n, 2n)
        h_pre = h_pre + self.link[:, :, j] + self.h_class
        h_new = F.linear(gate(h_pre), *self.h_out)
        return h + h_new if self.residual else h_new


class GatedPixelCNNCache:
    """Fast exact generation for ``GatedPixelCNN`` (Ramachandran et al. 2017, https://arxiv.org/abs/1704.06001).

    Schedule: the vertical stack's row r depends on rows <= r only and reaches
    the horizontal stack as the link v_to_h(v_pre) of row r + 1. So at the first
    step of row i the whole vertical stack is computed for row i - 1, layer by
    layer, from per-layer buffers of its input rows (the first layer's is the
    image row i - 1, complete by then), and each layer keeps its link for row i
    (row 0's link is v_to_h of zeros: its bias). At each step (i, j), once per
    channel pass, the horizontal stack is computed at (i, j) only: each layer
    writes its input at (i, j) into a buffer and convolves the 1 x (k//2 + 1)
    window ending there, adds the link and the class bias, gates, applies the
    masked 1x1 and the residual; then the 1x1 output layers. The previous
    pixel is written again into the first layer's buffer, since its last
    channel was sampled after its last step. Effective weights are frozen once,
    here.
    """

    def __init__(self, model: GatedPixelCNN, n: int, y: torch.Tensor | None):
        self.model = model
        p = next(model.parameters())
        _, h, w = model.image_shape
        self.layers = [_LayerCache(layer, n, h, w, y, p.dtype, p.device) for layer in model.layers]
        self.out_hidden, self.out = frozen_pointwise(model.out_hidden), frozen_pointwise(model.out)
        self.rows_done = 0  # vertical rows computed so far
        self.previous: tuple[int, int] | None = None  # the position stepped last

    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, head.n_params) at (i, j) of the partial integer image x (n, C, H, W)."""
        scale = self.model.scale
        while self.rows_done < i:  # rows above are final: run the vertical stack on the next one
            r = self.rows_done
            v = scale(x[:, :, r])  # (n, C, W)
            for layer in self.layers:
                layer.v_in.write_row(r, v)
                v = layer.vertical_row(r)
            self.rows_done += 1
        first = self.layers[0].h_in
        if self.previous is not None and self.previous != (i, j):
            first.write(*self.previous, scale(x[:, :, self.previous[0], self.previous[1]]))
        self.previous = (i, j)
        h = scale(x[:, :, i, j])  # (n, C)
        for layer in self.layers:
            h = layer.horizontal_at(h, i, j)
        return F.linear(F.relu(F.linear(F.relu(h), *self.out_hidden)), *self.out)  # (n, C*K)
