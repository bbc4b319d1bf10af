"""Data-dependent initialization of weight-normalized layers (Salimans & Kingma 2016 [1]).

One forward pass on a real batch, layer by layer in the order the network uses
them: each weight-normalized layer's output is standardized per channel to mean
0 and standard deviation ``layer.init_scale`` by setting its gain ``g`` and bias,
and the standardized output is what the following layers see. This is the
initialization of the PixelCNN++ reference code [2].

[1]: https://arxiv.org/abs/1602.07868
[2]: https://github.com/openai/pixel-cnn
"""

from __future__ import annotations

import torch
import torch.nn as nn


def weight_normed_layers(model: nn.Module) -> list[nn.Module]:
    """Every layer with a ``weight_norm`` parametrization."""
    return [m for m in model.modules() if hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight")]


@torch.no_grad()
def data_dependent_init(model: nn.Module, *inputs, eps: float = 1e-8) -> int:
    """Initialize every weight-normalized layer of ``model`` from ``model(*inputs)``; returns the count.

    Runs in eval mode (no dropout), restores the previous mode afterwards.
    """
    layers = weight_normed_layers(model)

    def standardize(layer, _inputs, out):
        mean = out.mean(dim=(0, 2, 3))
        scale = getattr(layer, "init_scale", 1.0) / (out.std(dim=(0, 2, 3)) + eps)
        g = layer.parametrizations.weight.original0
        g.mul_(scale.view_as(g))
        layer.bias.copy_((layer.bias - mean) * scale)
        return (out - mean[None, :, None, None]) * scale[None, :, None, None]

    handles = [layer.register_forward_hook(standardize) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return len(layers)
