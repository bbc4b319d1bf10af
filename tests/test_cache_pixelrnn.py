"""Cached sampling of PixelRNN (row-lstm, diagonal-bilstm): deeper stacks, wide and tall images.

The generic tests in test_sampling.py run the tiny presets on 8x8 images with
the not-yet-sampled sub-pixels at 0; here the future holds fresh garbage at
every step, so a cache that reads it (or keeps a stale value) fails.
"""

import itertools

import pytest
import torch


from cachecheck import assert_cache_matches_full_pass, perturbed

MODELS = ["row-lstm", "diagonal-bilstm"]


SHAPES = [
    ((10, 12), dict(n_layers=3)),  # wider than tall; 1x1 projections (12 -> 6 state units)
    ((7, 4), dict(n_layers=2, n_channels=9, n_state=9, likelihood="logistic-mixture")),  # taller; no projection
]


@pytest.mark.parametrize("name,shape,overrides", [(name, *case) for name in MODELS for case in SHAPES])
def test_cache_matches_a_full_pass_with_garbage_in_the_future(name, shape, overrides):
    c, (h, w), n = 3, shape, 2
    model = perturbed(name, c, 4, shape, **overrides).double()
    y = torch.tensor([3, 1])
    assert_cache_matches_full_pass(model, y, torch.randint(0, 8, (n, c, h, w)))


def test_diagonal_bilstm_cache_uses_the_image_path_of_the_reverse_direction():
    """The pixel (i - 1, W - 1) reaches (i, 0) only through ``image_to_reverse``: the cache must see it too."""
    model = perturbed("diagonal-bilstm", 1, None, (4, 10), n_layers=1).double()
    x = torch.randint(0, 8, (2, 1, 4, 10))
    other = x.clone()
    other[:, :, 1, 9] = (x[:, :, 1, 9] + 3) % 8
    params = []
    for image in (x, other):
        cache = model.sampling_cache(2, None)
        with torch.no_grad():
            for i, j in itertools.product(range(3), range(10)):
                cache.step(image, i, j)
            params.append(cache.step(image, 2, 0))
        torch.testing.assert_close(params[-1], model(image)[:, :, 2, 0], atol=1e-10, rtol=1e-10)
    assert not torch.allclose(params[0], params[1])
