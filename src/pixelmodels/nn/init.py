"""Weight normalization (Salimans & Kingma 2016 [1]) for any model, and its data-dependent initialization.

``weight_norm(model)`` reparametrizes every convolution of a network as w = g v / |v| (per
output feature, so a mask that multiplies the normalized weight still zeroes the future).
``data_dependent_init`` then runs one forward pass on a real batch, layer by layer in the
order the network uses them: each layer's output is standardized per channel to mean 0 and
standard deviation ``layer.init_scale`` (1 unless the layer says otherwise) by setting its
gain ``g`` and bias, and the standardized output is what the following layers see. This is
the initialization of the PixelCNN++ reference code [2]. A layer with ``init_scale = None``
(one applied again and again inside a recurrence) keeps its initial weights.

[1]: https://arxiv.org/abs/1602.07868
[2]: https://github.com/openai/pixel-cnn
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def weight_norm(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> nn.Module:
    """Weight-normalize every convolution of ``module`` (outside the modules ``skip``) over all dims but the
    output one."""
    skipped = {m for s in skip for m in s.modules()}
    for layer in [m for m in module.modules() if isinstance(m, CONVOLUTIONS) and m not in skipped]:
        layer.init_scale = getattr(layer, "init_scale", 1.0)  # for data_dependent_init
        _weight_norm(layer, dim=1 if isinstance(layer, nn.ConvTranspose2d) else 0)
    return module


def weight_normed_layers(model: nn.Module) -> list[nn.Module]:
    """Every layer with a ``weight_norm`` parametrization."""
    return [m for m in model.modules() if hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight")]


@torch.no_grad()
def data_dependent_init(model: nn.Module, *inputs, eps: float = 1e-8) -> int:
    """Initialize every weight-normalized layer of ``model`` from ``model(*inputs)``; returns the count.

    Each layer is standardized at its first call. Runs in eval mode (no dropout), restores the
    previous mode afterwards.
    """
    layers = [m for m in weight_normed_layers(model) if m.init_scale is not None]
    handles = {}

    def standardize(layer, _inputs, out):
        handles.pop(layer).remove()  # the first call only
        channels = [d for d in range(out.dim()) if d != 1]
        mean, std = out.mean(dim=channels), out.std(dim=channels)
        scale = layer.init_scale / (std + eps)
        g = layer.parametrizations.weight.original0
        g.mul_(scale.view_as(g))
        shape = (1, -1) + (1,) * (out.dim() - 2)
        if layer.bias is not None:
            layer.bias.copy_((layer.bias - mean) * scale)
            return (out - mean.view(shape)) * scale.view(shape)
        return out * scale.view(shape)

    for layer in layers:
        handles[layer] = layer.register_forward_hook(standardize)
    was_training = model.training
    try:
        model.eval()
        model(*inputs)
    finally:
        for h in handles.values():
            h.remove()
        model.train(was_training)
    return len(layers)
