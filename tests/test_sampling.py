"""Sampling: the library's sampler against a naive full-forward loop fed the same noise."""

import itertools

import pytest
import torch

import pixelmodels
from pixelmodels import create_model, list_models

from cachecheck import perturbed

CASES = list(itertools.product(list_models(), ["categorical", "logistic-mixture"], [1, 3], [None, 3]))


def naive_sample(model, n, y, generator):
    """One full forward pass of the whole image per sub-pixel; the definition of the model's sampling."""
    c, h, w = model.image_shape
    x = torch.zeros(n, c, h, w, dtype=torch.long)
    with torch.no_grad():
        for i, j in itertools.product(range(h), range(w)):
            noise = model.head.noise(n, generator)
            for ch in range(c if model.channel_masked else 1):
                values = model.head.sample(model(x, y)[:, :, i, j], noise)
                if model.channel_masked:
                    x[:, ch, i, j] = values[:, ch]
                else:
                    x[:, :, i, j] = values
    return x.to(torch.uint8)


def trained_like(name, c, n_classes, h=8, w=8, likelihood="categorical"):
    model = create_model(name, image_shape=(c, h, w), n_bits=2, n_classes=n_classes, preset="tiny",
                         likelihood=likelihood)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # far from uniform, so samples carry the model's structure
    return model.eval()


@pytest.mark.parametrize("name,likelihood,c,n_classes", CASES)
def test_sampler_matches_the_naive_loop(name, likelihood, c, n_classes):
    model = trained_like(name, c, n_classes, likelihood=likelihood)
    y = torch.tensor([0, 2, 1, 2]) if n_classes else None
    a = pixelmodels.sample(model, 4, y, generator=torch.Generator().manual_seed(3))
    b = naive_sample(model, 4, y, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == (4, c, 8, 8)
    assert torch.equal(a, b)
    assert a.max() <= 3 and len(a.unique()) > 1


@pytest.mark.parametrize("name", [m for m in list_models() if m != "pixelcnnpp"])  # its reach is unbounded here
def test_receptive_rows_bounds_the_dependence(name):
    model = create_model(name, image_shape=(1, 24, 5), n_bits=3, preset="tiny").double()
    reach, i = model.receptive_rows, 23
    x = model.embed(torch.randint(0, 8, (1, 1, 24, 5))).requires_grad_(True)
    (g,) = torch.autograd.grad(model.network(x, None)[0, :, i].sum(), x)
    rows = g[0, 0].abs().sum(1) > 0
    assert not rows[: i - reach].any() and rows[i - reach]  # a bound, and a tight one


def test_complete_keeps_the_known_pixels():
    model = trained_like("gated-pixelcnn", 3, None)
    x = torch.randint(0, 4, (5, 3, 8, 8), dtype=torch.uint8)
    known = torch.zeros(8, 8, dtype=torch.bool)
    known[:4] = True
    known[4, :2] = True  # a raster-order prefix
    out = pixelmodels.complete(model, x, known, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, known], x[:, :, known])
    assert not torch.equal(out[:, :, ~known], x[:, :, ~known])


def test_same_generator_same_samples_other_generator_other_samples():
    model = trained_like("pixelcnn", 1, None)
    a = pixelmodels.sample(model, 3, generator=torch.Generator().manual_seed(1))
    b = pixelmodels.sample(model, 3, generator=torch.Generator().manual_seed(1))
    c = pixelmodels.sample(model, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def with_cache(name, c, n_classes, likelihood):
    model = trained_like(name, c, n_classes, likelihood=likelihood)
    assert model.cache_class is not None, f"{name} has no cached sampling path"
    return model


@pytest.mark.parametrize("name,likelihood,c,n_classes", CASES)
def test_cached_params_equal_a_full_forward_pass_at_every_step(name, likelihood, c, n_classes):
    model = with_cache(name, c, n_classes, likelihood)
    n, (_, h, w) = 3, model.image_shape
    y = torch.tensor([2, 0, 1]) if n_classes else None
    x = torch.zeros(n, c, h, w, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cache = model.sampling_cache(n, y)
        for i, j in itertools.product(range(h), range(w)):
            noise = model.head.noise(n, gen)
            for ch in range(c if model.channel_masked else 1):
                cached = cache.step(x, i, j)
                full = model(x, y)[:, :, i, j]
                torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
                values = model.head.sample(full, noise)
                if model.channel_masked:
                    x[:, ch, i, j] = values[:, ch]
                else:
                    x[:, :, i, j] = values
    assert len(x.unique()) > 1


@pytest.mark.parametrize("name,likelihood,c,n_classes", CASES)
def test_cached_and_reference_samples_are_identical(name, likelihood, c, n_classes):
    model = with_cache(name, c, n_classes, likelihood)
    y = torch.tensor([1, 2, 0, 2]) if n_classes else None
    a = pixelmodels.sample(model, 4, y, generator=torch.Generator().manual_seed(7), cached=True)
    b = pixelmodels.sample(model, 4, y, generator=torch.Generator().manual_seed(7), cached=False)
    assert torch.equal(a, b)
    x = torch.randint(0, 4, (4, c) + tuple(model.image_shape[1:]), dtype=torch.uint8)
    known = torch.zeros(model.image_shape[1:], dtype=torch.bool)
    known[:3] = True
    known[3, :5] = True
    ca = pixelmodels.complete(model, x, known, y, generator=torch.Generator().manual_seed(8), cached=True)
    cb = pixelmodels.complete(model, x, known, y, generator=torch.Generator().manual_seed(8), cached=False)
    assert torch.equal(ca, cb) and torch.equal(ca[:, :, known], x[:, :, known])


def test_batch_size_splits_the_draw_into_consecutive_chunks():
    model = trained_like("gated-pixelcnn", 1, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    whole = pixelmodels.sample(model, 5, y, generator=torch.Generator().manual_seed(2), batch_size=2)
    gen = torch.Generator().manual_seed(2)
    parts = [pixelmodels.sample(model, len(c), c, generator=gen) for c in (y[:2], y[2:4], y[4:])]
    assert whole.shape == (5, 1, 8, 8) and torch.equal(whole, torch.cat(parts))


@pytest.mark.parametrize("name", list_models())
def test_cached_completion_of_a_scattered_mask_equals_the_reference(name):
    model = perturbed(name, 3, None, (8, 8))
    x = torch.randint(0, 8, (3, 3, 8, 8), dtype=torch.uint8)
    known = torch.rand(8, 8, generator=torch.Generator().manual_seed(1)) < 0.5  # not a raster-order prefix
    a = pixelmodels.complete(model, x, known, generator=torch.Generator().manual_seed(4), cached=True)
    b = pixelmodels.complete(model, x, known, generator=torch.Generator().manual_seed(4), cached=False)
    assert torch.equal(a, b) and torch.equal(a[:, :, known], x[:, :, known])
    assert not torch.equal(a[:, :, ~known], x[:, :, ~known])
