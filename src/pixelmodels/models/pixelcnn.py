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

from pixelmodels.models.base import AutoregressiveModel
from pixelmodels.nn import ClassBias, MaskedConv2d
from pixelmodels.nn.incremental import (PaddedBuffer, channels_last, conv_at_flat, flat_taps, frozen,
                                        frozen_pointwise)


@dataclass
class PixelCNNOptions:
    """Hyperparameters of ``pixelcnn``.

    Args:
        n_channels: h; the residual stream has 2h features.
        n_blocks: residual blocks.
        kernel_size: the masked convolution inside each block.
        input_kernel_size: the first (mask-A) convolution.
        n_out_channels: features of the hidden 1x1 output layer.
        likelihood: "categorical" or "logistic-mixture" (channel-masked means and mixture weights).
        n_mixtures: components of the logistic mixture.
    """

    n_channels: int = 128
    n_blocks: int = 15
    kernel_size: int = 3
    input_kernel_size: int = 7
    n_out_channels: int = 1024
    likelihood: str = "categorical"
    n_mixtures: int = 10


PRESETS = {
    "tiny": dict(n_channels=6, n_blocks=2, n_out_channels=12),
    "small": dict(n_channels=32, n_blocks=5, n_out_channels=256),
    "default": dict(),
}


class ResidualBlock(nn.Module):
    """ReLU-1x1-ReLU-kxk(mask B)-ReLU-1x1, plus a class bias; adds its own skip."""

    def __init__(self, h: int, kernel_size: int, n_groups: int, n_classes: int | None):
        super().__init__()
        self.reduce = MaskedConv2d(2 * h, h, 1, "B", n_groups)
        self.conv = MaskedConv2d(h, h, kernel_size, "B", n_groups)
        self.expand = MaskedConv2d(h, 2 * h, 1, "B", n_groups)
        self.class_bias = ClassBias(n_classes, h)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.reduce(F.relu(x))
        h = self.conv(F.relu(h)) + self.class_bias(y)
        return x + self.expand(F.relu(h))


class PixelCNN(AutoregressiveModel):
    """PixelCNN of [1] with residual blocks and a categorical head."""

    def __init__(self, config, options: PixelCNNOptions):
        super().__init__(config, options)
        c = config.image_shape[0]
        h = options.n_channels
        self.input_conv = MaskedConv2d(c, 2 * h, options.input_kernel_size, "A", c)
        self.blocks = nn.ModuleList(
            ResidualBlock(h, options.kernel_size, c, config.n_classes) for _ in range(options.n_blocks)
        )
        self.out_hidden = MaskedConv2d(2 * h, options.n_out_channels, 1, "B", c)
        self.out = MaskedConv2d(options.n_out_channels, self.head.n_params, 1, "B", c,
                                out_groups=self.head.param_groups())

    @property
    def receptive_rows(self) -> int:
        o = self.options  # each masked k x k convolution reaches k//2 rows up
        return o.input_kernel_size // 2 + o.n_blocks * (o.kernel_size // 2)

    def network(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.input_conv(x)  # (B, 2h, H, W)
        for block in self.blocks:
            h = block(h, y)
        return self.out(F.relu(self.out_hidden(F.relu(h))))  # (B, C*K, H, W)

    def sampling_cache(self, n: int, y: torch.Tensor | None) -> PixelCNNCache:
        """The cached sampler's state for ``n`` images with labels ``y``; see ``PixelCNNCache``."""
        return PixelCNNCache(self, n, y)


def _class_bias(layer: ClassBias, y: torch.Tensor | None) -> torch.Tensor | float:
    """The per-image bias (n, F) a ``ClassBias`` adds at every position, or 0.0."""
    bias = layer(y)
    return bias if isinstance(bias, float) else bias[:, :, 0, 0]


class PixelCNNCache:
    """Fast exact generation for ``PixelCNN`` (Ramachandran et al. 2017, https://arxiv.org/abs/1704.06001).

    Schedule: every masked k x k convolution keeps its input in a zero-padded
    buffer. At step (i, j) (once per channel pass: the activations at (i, j)
    change as the pixel's channels are sampled) the network is evaluated at
    (i, j) only, layer by layer: the scaled pixel x[:, :, i, j] is written into
    the first layer's buffer (and the previous pixel again, whose last channel
    was sampled after its last step), each masked k x k layer writes its input at
    (i, j) and convolves the (k//2 + 1) x k window ending there (rows above were
    written when their pixels were stepped; the masked taps right of (i, j) are
    dropped from the flattened weight),
    and the 1x1 layers act on the (n, F) feature vector. Effective weights are
    frozen once, here.
    """

    def __init__(self, model: PixelCNN, n: int, y: torch.Tensor | None):
        self.model = model
        p = next(model.parameters())
        _, h, w = model.image_shape

        def masked(layer: MaskedConv2d) -> tuple[PaddedBuffer, tuple[int, int], torch.Tensor, torch.Tensor]:
            weight, bias = frozen(layer)
            buffer = PaddedBuffer(n, layer.in_channels, h, w, layer.pad, device=p.device, dtype=p.dtype)
            return channels_last(buffer), weight.shape[2:], flat_taps(weight), bias

        self.input = masked(model.input_conv)
        self.blocks = [
            (frozen_pointwise(b.reduce), *masked(b.conv), _class_bias(b.class_bias, y), frozen_pointwise(b.expand))
            for b in model.blocks
        ]
        self.out_hidden, self.out = frozen_pointwise(model.out_hidden), frozen_pointwise(model.out)
        self.previous: tuple[int, int] | None = None  # the position stepped last

    @staticmethod
    def _masked_at(buffer: PaddedBuffer, kernel, flat: torch.Tensor, bias, value: torch.Tensor, i: int, j: int):
        """Write a layer's input (n, F) at (i, j), return its output (n, out) there."""
        buffer.write(i, j, value)
        return conv_at_flat(buffer.window(i, j, *kernel), flat, bias)

    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, head.n_params) at (i, j) of the partial integer image x (n, C, H, W)."""
        if self.previous is not None and self.previous != (i, j):  # its last channel is final only now
            self.input[0].write(*self.previous, self.model.scale(x[:, :, self.previous[0], self.previous[1]]))
        self.previous = (i, j)
        h = self._masked_at(*self.input, self.model.scale(x[:, :, i, j]), i, j)  # (n, 2h)
        for reduce, buffer, kernel, flat, bias, class_bias, expand in self.blocks:
            t = F.linear(F.relu(h), *reduce)  # (n, h)
            t = self._masked_at(buffer, kernel, flat, bias, F.relu(t), i, j) + class_bias
            h = h + F.linear(F.relu(t), *expand)
        return F.linear(F.relu(F.linear(F.relu(h), *self.out_hidden)), *self.out)  # (n, C*K)
