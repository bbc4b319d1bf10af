"""PixelSNAIL's cached sampler: equal to a full forward pass on deeper, wider, non-square settings,
blind to pixels not yet final, and refusing steps out of raster order."""

import pytest
import torch

from pixelmodels import create_model
from pixelmodels.errors import PixelModelsError
from pixelmodels.nn.fast import StepMatrix


def perturbed(image_shape, n_classes=None, preset="small", **overrides):
    model = create_model("pixelsnail", image_shape=image_shape, n_bits=3, n_classes=n_classes, preset=preset,
                         **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def check_every_step(model, n, y, steps=None):
    """Step the cache through every position of images whose unsampled pixels are re-randomized at each
    step; at the given positions (all if None) compare with the full forward pass."""
    c, h, w = model.image_shape
    x = torch.randint(0, 8, (n, c, h, w))
    cache = model.sampling_cache(n, y)
    with torch.no_grad():
        for t in range(h * w):
            i, j = divmod(t, w)
            future = x.flatten(2)[:, :, t:]
            future.copy_(torch.randint(0, 8, future.shape))  # pixels >= t are arbitrary: the cache may not read them
            params = cache.step(x, i, j)
            if steps is None or t in steps:
                torch.testing.assert_close(params, model(x, y)[:, :, i, j], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [
    {},  # one head, keys of 16, values of 32 features (the CPU path pads q, k to 32)
    {"n_heads": 3, "key_size": 5, "value_size": 7},
    {"n_heads": 2, "key_size": 8, "value_size": 3, "likelihood": "categorical"},
])
def test_cached_params_equal_the_full_pass_small_preset(overrides):
    model = perturbed((3, 7, 9), n_classes=4, **overrides)
    check_every_step(model, 2, torch.tensor([3, 1]))


def test_cached_params_equal_the_full_pass_with_every_step_product_transposed(monkeypatch):
    """The layout the default preset's large weights use (``StepMatrix``), forced on the small ones."""
    monkeypatch.setattr(StepMatrix, "TRANSPOSE_AT", 0)
    model = perturbed((3, 5, 6), n_classes=4, n_heads=2, key_size=8, value_size=3)
    check_every_step(model, 2, torch.tensor([3, 1]))


def test_cached_params_equal_the_full_pass_deep():
    model = perturbed((3, 5, 6), n_classes=2, preset="default", n_filters=24)  # 12 blocks of 5 residual layers
    check_every_step(model, 2, torch.tensor([1, 0]))


@pytest.mark.slow
def test_cached_params_equal_the_full_pass_default_preset():
    model = perturbed((1, 4, 5), preset="default")  # 256 filters: long sums in every convolution
    check_every_step(model, 2, None, steps={0, 1, 4, 5, 6, 12, 19})


def test_steps_out_of_raster_order_are_refused():
    model = perturbed((1, 3, 3), preset="tiny")
    cache = model.sampling_cache(1, None)
    x = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    cache.step(x, 0, 0)
    with pytest.raises(PixelModelsError, match=r"expected position \(0, 1\), found \(0, 2\)"):
        cache.step(x, 0, 2)
