"""Cached sampling of the masked-convolution models (pixelcnn, gated-pixelcnn): deeper nets, odd shapes.

The generic tests in test_sampling.py run the tiny presets on 8x8 images with
the not-yet-sampled sub-pixels at 0; here the future holds fresh garbage at
every step (so a cache that reads it, or keeps a stale value, fails), the
known pixels of a completion are scattered, and the default widths are held
to the float32 tolerance.
"""

import itertools

import pytest
import torch

from pixelmodels import create_model

from cachecheck import assert_cache_matches_full_pass, perturbed

MODELS = ["pixelcnn", "gated-pixelcnn"]
DEEPER = {  # tiny widths, more layers and wider kernels
    "pixelcnn": {"n_blocks": 4, "kernel_size": 5},
    "gated-pixelcnn": {"n_layers": 5, "kernel_size": 5, "input_kernel_size": 7},
}


@pytest.mark.parametrize("name,likelihood", list(itertools.product(MODELS, ["categorical", "logistic-mixture"])))
def test_cache_matches_a_full_pass_with_garbage_in_the_future(name, likelihood):
    c, (h, w), n = 3, (7, 5), 2
    model = perturbed(name, c, 4, (h, w), likelihood=likelihood, **DEEPER[name]).double()
    y = torch.tensor([3, 1])
    assert_cache_matches_full_pass(model, y, torch.randint(0, 8, (n, c, h, w)))


@pytest.mark.parametrize("name", MODELS)
def test_cache_of_the_default_preset_is_within_float32_tolerance(name):
    torch.manual_seed(0)  # a fresh model at its own init, class biases made nonzero
    model = create_model(name, image_shape=(1, 3, 4), n_bits=8, n_classes=10).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "embedding" in key:
                p.normal_(0, 0.1)
    y, x = torch.tensor([9, 0]), torch.randint(0, 256, (2, 1, 3, 4))
    cache = model.sampling_cache(2, y)
    with torch.no_grad():
        full = model(x, y)
        for i, j in itertools.product(range(3), range(4)):
            torch.testing.assert_close(cache.step(x, i, j), full[:, :, i, j], atol=1e-5, rtol=1e-5)
