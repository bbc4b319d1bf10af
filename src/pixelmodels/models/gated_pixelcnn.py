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

from pixelmodels.models.base import AutoregressiveModel, ModelOptions
from pixelmodels.models.registry import register_model
from pixelmodels.nn import DownShiftedConv2d, MaskedConv2d, channel_groups, down_shift
from pixelmodels.nn.conditioning import Condition, Conditioning
from pixelmodels.nn.fast import Conv2d
from pixelmodels.settings import MAX_FEATURES, MAX_KERNEL, MAX_LAYERS, setting


@dataclass
class GatedPixelCNNOptions(ModelOptions):
    """Hyperparameters of ``gated-pixelcnn`` (each field's help and range beside it)."""

    n_channels: int = setting(128, "features of each stack", ge=1, le=MAX_FEATURES)
    n_layers: int = setting(15, "gated layers (the first takes the image)", ge=1, le=MAX_LAYERS)
    kernel_size: int = setting(5, "k of the layers after the first", ge=1, le=MAX_KERNEL, odd=True)
    input_kernel_size: int = setting(7, "k of the first layer", ge=1, le=MAX_KERNEL, odd=True)
    n_out_channels: int = setting(1024, "features of the hidden 1x1 output layer", ge=1, le=MAX_FEATURES)


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

    def __init__(self, in_ch: int, n: int, k: int, n_groups: int, conditioning: Conditioning, first: bool):
        super().__init__()
        groups = channel_groups(n, n_groups)
        gate_groups = torch.cat([groups, groups])  # tanh half and sigmoid half
        in_groups = channel_groups(in_ch, n_groups)
        self.v_conv = DownShiftedConv2d(in_ch, 2 * n, (k // 2 + 1, k))
        self.v_to_h = Conv2d(2 * n, 2 * n, 1)
        self.h_conv = MaskedConv2d(in_ch, 2 * n, k, "A" if first else "B", n_groups,
                                   out_groups=gate_groups, in_groups=in_groups, shape="row")
        self.h_out = MaskedConv2d(n, n, 1, "B", n_groups)
        self.v_class = conditioning.bias(2 * n)
        self.h_class = conditioning.bias(2 * n)
        self.residual = not first

    def forward(self, v, h, c: Condition | None):
        """The next (v, h)."""
        v_pre = self.v_class.add(self.v_conv(v), c)  # (B, 2n, H, W), rows <= i
        h_pre = self.h_class.add(self.h_conv(h) + self.v_to_h(down_shift(v_pre)), c)
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), (h + h_new if self.residual else h_new)


class GatedPixelCNN(AutoregressiveModel):
    """Gated PixelCNN of [1] with class conditioning in every layer."""

    def __init__(self, config, options: GatedPixelCNNOptions):
        super().__init__(config, options)
        c = config.image_shape[0]
        n = options.n_channels
        self.layers = nn.ModuleList(
            GatedLayer(self.input_channels if i == 0 else n, n,
                       options.input_kernel_size if i == 0 else options.kernel_size,
                       c, self.conditioning, first=i == 0)
            for i in range(options.n_layers)
        )
        self.out_hidden = MaskedConv2d(n, options.n_out_channels, 1, "B", c)
        self.out = MaskedConv2d(options.n_out_channels, self.head.n_params, 1, "B", c,
                                out_groups=self.head.param_groups())

    @property
    def receptive_rows(self) -> int:
        o = self.options  # each vertical layer reaches k//2 rows up; the link shifts one more
        return o.input_kernel_size // 2 + (o.n_layers - 1) * (o.kernel_size // 2) + 1

    def network(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        v = h = x  # (B, C, H, W)
        for layer in self.layers:
            v, h = layer(v, h, c)  # (B, n, H, W) each
        return self.out(F.relu(self.out_hidden(F.relu(h))))  # (B, C*K, H, W)


register_model("gated-pixelcnn", GatedPixelCNN, GatedPixelCNNOptions, PRESETS)
