"""Shared checks of the cached sampling paths against a full forward pass."""

import itertools

import torch

from pixelmodels import create_model


def perturbed(name, c, n_classes, shape, likelihood="categorical", seed=0, **overrides):
    """A tiny model far from its initialization (class biases nonzero too), in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, image_shape=(c,) + tuple(shape), n_bits=3, n_classes=n_classes, preset="tiny",
                         likelihood=likelihood, **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def assert_cache_matches_full_pass(model, y, final, atol=1e-10):
    """Step the cache over ``final`` (n, C, H, W); before each step, every sub-pixel the step may not
    read is replaced by fresh random values, so a cache that reads ahead fails."""
    n, c, h, w = final.shape
    cache = model.sampling_cache(n, y)
    with torch.no_grad():
        for i, j in itertools.product(range(h), range(w)):
            for ch in range(c if model.channel_masked else 1):
                x = torch.randint(0, 2**model.n_bits, final.shape)
                x[:, :, :i] = final[:, :, :i]
                x[:, :, i, :j] = final[:, :, i, :j]
                x[:, :ch, i, j] = final[:, :ch, i, j]
                torch.testing.assert_close(cache.step(x, i, j), model(x, y)[:, :, i, j], atol=atol, rtol=atol)
