"""PixelCNN++'s cached sampler: the transposed-convolution pieces and larger, deeper nets than the generic tests."""

import itertools

import pytest
import torch

from pixelmodels import create_model
from pixelmodels.nn import DownShiftedConvTranspose2d
from pixelmodels.nn.fast import StepMatrix
from pixelmodels.nn.incremental import conv_transpose_row, frozen


def randomized(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer


def test_transposed_row_reads_one_input_row_and_matches_the_module():
    layer = randomized(DownShiftedConvTranspose2d(3, 5))
    x = torch.randn(2, 3, 4, 6)
    full = layer(x)  # (2, 5, 8, 12)
    weight, bias = frozen(layer)
    for r in range(8):
        row = conv_transpose_row(x[:, :, r // 2], weight, bias, r, layer.left)
        torch.testing.assert_close(row, full[:, :, r], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape,likelihood,n_classes,transpose_at", [
    ((3, 16, 16), "logistic-mixture", 3, StepMatrix.TRANSPOSE_AT),
    ((1, 12, 8), "categorical", None, StepMatrix.TRANSPOSE_AT),
    ((1, 12, 8), "categorical", None, 0),  # every step product in the large weights' layout
])
def test_cached_params_equal_the_full_pass_with_two_blocks_and_garbage_ahead(shape, likelihood, n_classes,
                                                                            transpose_at, monkeypatch):
    """Every step matches a full pass; pixels at and after (i, j) are fresh noise, which the cache must not read."""
    monkeypatch.setattr(StepMatrix, "TRANSPOSE_AT", transpose_at)
    torch.manual_seed(0)
    model = create_model("pixelcnnpp", image_shape=shape, n_bits=2, n_classes=n_classes, preset="tiny",
                         n_blocks=2, likelihood=likelihood)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # also gives the zero-initialized class biases a value
    model.eval()
    n, (c, h, w) = 2, shape
    y = torch.tensor([2, 0]) if n_classes else None
    x = torch.randint(0, 4, (n, c, h, w))
    ahead = torch.ones(h, w, dtype=torch.bool)
    with torch.no_grad():
        cache = model.sampling_cache(n, y)
        for i, j in itertools.product(range(h), range(w)):
            x[:, :, ahead] = torch.randint(0, 4, (n, c, int(ahead.sum())))
            torch.testing.assert_close(cache.step(x, i, j), model(x, y)[:, :, i, j], atol=1e-5, rtol=1e-5)
            ahead[i, j] = False
