"""PixelCNN [1]: a stack of masked convolutions with residual blocks.

Architecture (Table 1 and Figure 5 of [1]): a 7x7 mask-A convolution to 2h
features; residual blocks of ReLU, 1x1 (2h -> h), ReLU, 3x3 mask B (h -> h),
ReLU, 1x1 (h -> 2h), added to the block's input; then ReLU, 1x1 mask B,
ReLU, 1x1 mask B to a 2**n_bits-way softmax per sub-pixel. For RGB the
features are split into three groups by ``pixelmodels.nn.channel_groups`` so
R sees nothing of its own pixel, G sees R and B sees R and G.

NOTE: stacked 3x3 masked convolutions have the known *blind spot*: the
receptive field never reaches the pixels up and to the right of the current
one beyond a growing triangle. The Gated PixelCNN (``gated-pixelcnn``) fixes it.

Default preset: [1] gives h = 128 (2h = 256 features) and 15 residual blocks
for CIFAR-10 but not the width of the output layers; we use 1024, as in the
Gated PixelCNN of [2]. Class conditioning (not in [1]) adds a learned
per-class bias inside every block, as in [2].

[1]: van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
     https://arxiv.org/abs/1601.06759
[2]: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
     Decoders", https://arxiv.org/abs/1606.05328
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.models.base import AutoregressiveModel, ModelOptions
from pixelmodels.models.registry import register_model
from pixelmodels.nn import MaskedConv2d
from pixelmodels.nn.conditioning import Condition, Conditioning
from pixelmodels.settings import MAX_FEATURES, MAX_KERNEL, MAX_LAYERS, setting


@dataclass
class PixelCNNOptions(ModelOptions):
    """Hyperparameters of ``pixelcnn`` (each field's help and range beside it)."""

    n_channels: int = setting(128, "h; the residual stream has 2h features", ge=1, le=MAX_FEATURES)
    n_blocks: int = setting(15, "residual blocks", ge=1, le=MAX_LAYERS)
    kernel_size: int = setting(3, "the masked convolution inside each block", ge=1, le=MAX_KERNEL, odd=True)
    input_kernel_size: int = setting(7, "the first (mask-A) convolution", ge=1, le=MAX_KERNEL, odd=True)
    n_out_channels: int = setting(1024, "features of the hidden 1x1 output layer", ge=1, le=MAX_FEATURES)


PRESETS = {
    "tiny": dict(n_channels=6, n_blocks=2, n_out_channels=12),
    "small": dict(n_channels=32, n_blocks=5, n_out_channels=256),
    "default": dict(),
}


class ResidualBlock(nn.Module):
    """ReLU-1x1-ReLU-kxk(mask B)-ReLU-1x1, plus a class bias; adds its own skip."""

    def __init__(self, h: int, kernel_size: int, n_groups: int, conditioning: Conditioning):
        super().__init__()
        self.reduce = MaskedConv2d(2 * h, h, 1, "B", n_groups)
        self.conv = MaskedConv2d(h, h, kernel_size, "B", n_groups)
        self.expand = MaskedConv2d(h, 2 * h, 1, "B", n_groups)
        self.class_bias = conditioning.bias(h)

    def forward(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        h = self.reduce(F.relu(x))
        h = self.class_bias.add(self.conv(F.relu(h)), c)
        return x + self.expand(F.relu(h))


class PixelCNN(AutoregressiveModel):
    """PixelCNN of [1] with residual blocks and a categorical head."""

    def __init__(self, config, options: PixelCNNOptions):
        super().__init__(config, options)
        c = config.image_shape[0]
        h = options.n_channels
        self.input_conv = MaskedConv2d(self.input_channels, 2 * h, options.input_kernel_size, "A", c)
        self.blocks = nn.ModuleList(
            ResidualBlock(h, options.kernel_size, c, self.conditioning) for _ in range(options.n_blocks)
        )
        self.out_hidden = MaskedConv2d(2 * h, options.n_out_channels, 1, "B", c)
        self.out = MaskedConv2d(options.n_out_channels, self.head.n_params, 1, "B", c,
                                out_groups=self.head.param_groups())

    @property
    def receptive_rows(self) -> int:
        o = self.options  # each masked k x k convolution reaches k//2 rows up
        return o.input_kernel_size // 2 + o.n_blocks * (o.kernel_size // 2)

    def network(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        h = self.input_conv(x)  # (B, 2h, H, W)
        for block in self.blocks:
            h = block(h, c)
        return self.out(F.relu(self.out_hidden(F.relu(h))))  # (B, C*K, H, W)


register_model("pixelcnn", PixelCNN, PixelCNNOptions, PRESETS)
