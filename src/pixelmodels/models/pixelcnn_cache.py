"""The cached sampling path of PixelCNN [1]: the network at one position per step.

Schedule: every masked k x k convolution keeps its input in a zero-padded
buffer. At step (i, j) (once per channel pass: the activations at (i, j)
change as the pixel's channels are sampled) the network is evaluated at
(i, j) only, layer by layer: the scaled pixel x[:, :, i, j] is written into
the first layer's buffer (and the previous pixel again, whose last channel
was sampled after its last step), each masked k x k layer writes its input at
(i, j) and convolves the (k//2 + 1) x k window ending there (rows above were
written when their pixels were stepped; the masked taps right of (i, j) are
dropped from the flattened weight), and the 1x1 layers act on the (n, F)
feature vector. Effective weights and conditioning biases are frozen once, here.

[1]: Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
     Models", https://arxiv.org/abs/1704.06001
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelmodels.models.base import SamplingCache, register_cache
from pixelmodels.models.pixelcnn import PixelCNN
from pixelmodels.nn import MaskedConv2d
from pixelmodels.nn.conditioning import Condition
from pixelmodels.nn.incremental import (OutputStack, PaddedBuffer, PreviousPixel, channels_last, conv_at_flat,
                                        flat_taps, frozen, frozen_pointwise)


class _MaskedAt:
    """A masked k x k convolution at one position, from a channels-last buffer of its input."""

    def __init__(self, layer: MaskedConv2d, n: int, height: int, width: int):
        weight, self.bias = frozen(layer)
        self.kernel, self.flat = weight.shape[2:], flat_taps(weight)
        self.buffer = channels_last(PaddedBuffer(n, layer.in_channels, height, width, layer.pad,
                                                 device=weight.device, dtype=weight.dtype))

    def __call__(self, value: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Write the layer's input (n, F) at (i, j), return its output (n, out) there."""
        self.buffer.write(i, j, value)
        return conv_at_flat(self.buffer.window(i, j, *self.kernel), self.flat, self.bias)


class PixelCNNCache(SamplingCache):
    """Fast exact generation for ``PixelCNN``; see the module docstring for the schedule."""

    def __init__(self, model: PixelCNN, n: int, c: Condition | None):
        super().__init__(model, n, c)
        _, h, w = model.image_shape
        self.input = _MaskedAt(model.input_conv, n, h, w)
        self.image = PreviousPixel(self.input.buffer, model.embed)
        self.blocks = [(frozen_pointwise(b.reduce), _MaskedAt(b.conv, n, h, w), b.class_bias.frozen(c, (h, w)),
                        frozen_pointwise(b.expand)) for b in model.blocks]
        self.output = OutputStack(model.out_hidden, model.out)

    @torch.no_grad()
    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, head.n_params) at (i, j) of the partial integer image x (n, C, H, W)."""
        self.image.update(x, i, j)
        h = self.input(self.model.embed(x[:, :, i, j]), i, j)  # (n, 2h)
        for reduce, conv, bias, expand in self.blocks:
            t = F.linear(F.relu(h), *reduce)  # (n, h)
            t = conv(F.relu(t), i, j) + bias.at(i, j)
            h = h + F.linear(F.relu(t), *expand)
        return self.output(h)  # (n, C*K)


register_cache(PixelCNN, PixelCNNCache)
