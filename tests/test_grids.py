"""What the commands write for people to look at: small images enlarged by nearest neighbour, the exact
arrays beside them, and conditions read from .npy files."""

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
from pixelmodels.app.inputs import read_cond
from pixelmodels.app.cli import main
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import display_scale, make_grid, save_grid


def test_display_scale_brings_small_images_near_64_pixels():
    assert [display_scale(s, s) for s in (5, 8, 16, 28, 32, 48, 64, 200)] == [13, 8, 4, 2, 2, 1, 1, 1]
    assert display_scale(7, 16) == 4  # the longer side


def test_save_grid_enlarges_by_nearest_neighbour(tmp_path):
    images = torch.randint(0, 4, (5, 3, 16, 16), dtype=torch.uint8)
    grid = make_grid(images, 2, nrow=5)
    png = np.asarray(Image.open(save_grid(images, tmp_path / "g.png", 2, nrow=5)))
    assert png.shape == (grid.shape[0] * 4, grid.shape[1] * 4, 3)
    for dy in range(4):
        for dx in range(4):
            assert np.array_equal(png[dy::4, dx::4], grid)
    assert Image.open(save_grid(images, tmp_path / "one.png", 2, nrow=5, scale=1)).size == grid.shape[1::-1]


def test_generate_writes_a_readable_grid_of_small_images_and_the_exact_arrays(tmp_path):
    torch.manual_seed(3)
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(3, 16, 16), n_bits=3, preset="tiny").eval()
    folder = pixelmodels.save_pretrained(model, tmp_path / "model")
    out = tmp_path / "g.png"
    assert main(["generate", str(folder), "--n", "4", "--out", str(out)]) == 0
    images = np.load(out.with_suffix(".npz"))["images"]
    assert images.shape == (4, 16, 16, 3)
    png = np.asarray(Image.open(out))
    assert png.shape == (2 * 18 * 4 + 8, 2 * 18 * 4 + 8, 3)  # 2 x 2 cells of 16 + 2 pixels, 4x
    assert np.array_equal(png[::4, ::4], make_grid(torch.from_numpy(images).permute(0, 3, 1, 2), 3))


class Model:
    cond_shape = (2, 3)


@pytest.mark.parametrize("array,words", [
    (np.ones((2, 3)), None),
    (np.ones((4, 2, 3)), None),
    (np.ones((4, 3, 2)), "expected shape (N, 2, 3) or (2, 3) (the model's cond_shape), found (4, 3, 2)"),
    (np.array([[[np.nan] * 3] * 2]), "expected finite values, found NaN or inf"),
    (np.array(["a", "b"]), "expected a numeric array, found <U1"),
])
def test_read_cond(tmp_path, array, words):
    path = tmp_path / "c.npy"
    np.save(path, array)
    if words is None:
        cond = read_cond(path, Model())
        assert cond.dtype == torch.float32 and cond.shape == (len(array) if array.ndim == 3 else 1, 2, 3)
    else:
        with pytest.raises(PixelModelsError) as e:
            read_cond(path, Model())
        assert str(e.value) == f"--cond: {path}: {words}"


def test_read_cond_needs_a_file_exactly_for_a_model_with_a_condition(tmp_path):
    with pytest.raises(PixelModelsError, match=r"--cond: the model is conditional on cond_shape \(2, 3\); give"):
        read_cond(None, Model())
    with pytest.raises(PixelModelsError, match="--cond: this model takes no condition; found x.npy"):
        read_cond("x.npy", type("Plain", (), {"cond_shape": None})())
    assert read_cond(None, type("Plain", (), {"cond_shape": None})()) is None
    with pytest.raises(PixelModelsError, match="no such file"):
        read_cond(tmp_path / "missing.npy", Model())
