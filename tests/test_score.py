"""Scoring: pixelmodels.score and `pixelmodels score` on datasets, folders and files, heat maps, errors."""

import csv
import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
import pixelmodels.ood
import pixelmodels.pretrained
from pixelmodels.app import reports
from pixelmodels.app.cli import main
from pixelmodels.data.folder import load_image

from formats import write_mnist


@pytest.fixture
def data(tmp_path, monkeypatch):
    folder = tmp_path / "fmnist"
    write_mnist(folder, "train", n=4, seed=1)
    write_mnist(folder, "test", n=7, seed=2)
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    return folder


def export(tmp_path, name="model", **kw):
    """A tiny untrained gated PixelCNN saved with save_pretrained (random weights score images differently)."""
    kw = {"image_shape": (1, 28, 28), "preset": "tiny", **kw}
    torch.manual_seed(1)
    model = pixelmodels.create_model("gated-pixelcnn", **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return pixelmodels.save_pretrained(model, tmp_path / name), model


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text() if hasattr(path, "read_text") else path)))


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_library_score_matches_bits_per_dim_and_sums_pixels():
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 6, 5), n_classes=3, preset="tiny").eval()
    x = torch.randint(0, 256, (7, 1, 6, 5), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    result = pixelmodels.score(model, x, y, batch_size=3, per_pixel=True)
    with torch.no_grad():
        assert torch.allclose(result.bits_per_dim, model.bits_per_dim(x, y), rtol=1e-6, atol=0)
        per_pixel = -model.log_prob(x, y, per_pixel=True)
    assert result.pixel_nll.shape == (7, 6, 5)
    assert torch.allclose(result.pixel_nll, per_pixel, rtol=1e-6, atol=1e-6)
    assert torch.allclose(result.pixel_nll.sum((1, 2)), result.nll, rtol=1e-6)
    assert torch.allclose(result.nll, result.bits_per_dim * np.log(2) * 30, rtol=1e-6)
    assert pixelmodels.score(model, x, 2).pixel_nll is None
    with torch.no_grad():
        assert torch.allclose(pixelmodels.score(model, x, 2).bits_per_dim, model.bits_per_dim(x, 2), rtol=1e-6)


@pytest.mark.parametrize("images,message", [
    (torch.zeros(2, 3, 6, 5, dtype=torch.uint8), "(1, 6, 5) (grayscale 6x5), found a tensor of shape (2, 3, 6, 5)"),
    (torch.zeros(2, 1, 6, 5), "integer images"),
    (torch.full((2, 1, 6, 5), 8), "3-bit values 0..7, found values 8..8"),
])
def test_library_score_refuses_what_the_model_does_not_take(images, message):
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 6, 5), n_bits=3, preset="tiny")
    with pytest.raises(pixelmodels.PixelModelsError) as err:
        pixelmodels.score(model, images)
    assert message in str(err.value)


def test_heat_colors_ramp():
    ramp = reports.heat_colors(np.array([-1.0, 0.0, 1 / 3, 2 / 3, 1.0, 5.0]))
    assert ramp.tolist() == [[0, 0, 0], [0, 0, 0], [255, 0, 0], [255, 255, 0], [255, 255, 255], [255, 255, 255]]
    assert reports.heat_colors(np.array([1 / 6]))[0].tolist() == [128, 0, 0]


def test_score_dataset_csv_and_heatmaps(tmp_path, data, capsys):
    model_dir, model = export(tmp_path, n_classes=10)
    out, maps = tmp_path / "scores.csv", tmp_path / "maps"
    argv = ["score", str(model_dir), "--dataset", "fashion-mnist", "--data-dir", str(data), "--limit", "5",
            "--batch-size", "2", "--out", str(out), "--heatmap", str(maps)]
    assert main(argv) == 0
    test = pixelmodels.load_dataset("fashion-mnist", "test", root=data)
    x, y = test.images[:5], test.labels[:5]
    with torch.no_grad():
        direct = model.bits_per_dim(x, y)
        per_pixel = -model.log_prob(x, y, per_pixel=True)
    rows = read_csv(out)
    assert list(rows[0]) == ["source", "index", "label", "bits_per_dim", "nll_nats"]
    assert [r["source"] for r in rows] == ["fashion-mnist:test"] * 5
    assert [int(r["index"]) for r in rows] == list(range(5))
    assert [int(r["label"]) for r in rows] == y.tolist()
    assert np.allclose([float(r["bits_per_dim"]) for r in rows], direct.numpy(), rtol=1e-5, atol=0)
    assert np.allclose([float(r["nll_nats"]) for r in rows], per_pixel.sum((1, 2)).numpy(), rtol=1e-5, atol=0)
    assert f"scored 5 images: mean bits/dim {direct.double().mean():.4f}" in capsys.readouterr().out

    files = sorted(p.name for p in maps.iterdir())
    assert files == [f"fashion-mnist-test-{i:05d}.png" for i in range(5)]
    g, side = reports.GAP, 56  # 28 x 28 pixels enlarged twice, for viewing
    for i in range(5):
        image = Image.open(maps / files[i])
        assert image.height == side + 2 * g and image.mode == "RGB"  # the image, its map and the scale side by side
        figure = np.asarray(image)
        assert np.array_equal(figure[g:g + side:2, g:g + side:2, 0], x[i, 0].numpy())  # the image
        expected = reports.heatmap(per_pixel[i].numpy(), max_bits=8)
        heat = figure[g:g + side, 2 * g + side:2 * g + 2 * side]  # its map, beside it
        for dy, dx in [(0, 0), (1, 1)]:
            assert np.abs(heat[dy::2, dx::2].astype(int) - expected).max() <= 1

    before = out.read_bytes()
    assert main(argv) == 2  # refuses to replace the results
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main(argv + ["--overwrite", "--limit", "2"]) == 0
    assert len(read_csv(out)) == 2


def test_score_defaults_to_the_runs_dataset_and_writes_csv_to_stdout(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist",
                 "--data-dir", str(data), "--batch-size", "4", "--max-steps", "1", "--n-samples", "0",
                 "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["score", str(run)]) == 0
    captured = capsys.readouterr()
    rows = read_csv(captured.out)
    assert len(rows) == 7 and rows[6]["index"] == "6"
    model, test = pixelmodels.load(run), pixelmodels.load_dataset("fashion-mnist", "test", root=data)
    with torch.no_grad():
        direct = model.bits_per_dim(test.images)
    assert np.allclose([float(r["bits_per_dim"]) for r in rows], direct.numpy(), rtol=1e-5, atol=0)
    assert "scored 7 images" in captured.err


def test_score_folders_and_files(tmp_path, capsys):
    model_dir, model = export(tmp_path)
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    folder = tmp_path / "pictures"
    paths = [write_png(folder / "a" / "x.png", arrays[0]), write_png(folder / "b" / "x.png", arrays[1]),
             write_png(folder / "c.png", arrays[2])]
    single = write_png(tmp_path / "single.png", arrays[3])
    out, maps = tmp_path / "s.csv", tmp_path / "maps"
    assert main(["score", str(model_dir), str(folder), str(single), "--out", str(out), "--heatmap", str(maps)]) == 0
    rows = read_csv(out)
    assert [r["source"] for r in rows] == [str(p) for p in paths + [single]]
    assert all(r["index"] == "" and r["label"] == "" for r in rows)
    with torch.no_grad():
        direct = model.bits_per_dim(torch.from_numpy(arrays[:, None]))
    assert np.allclose([float(r["bits_per_dim"]) for r in rows], direct.numpy(), rtol=1e-5, atol=0)
    names = sorted(p.name for p in maps.iterdir())
    assert len(names) == 4 and all(Image.open(maps / n).height == 56 + 2 * reports.GAP for n in names)  # a/x, b/x apart

    (folder / "z.png").write_bytes(b"not a png")  # after the limit: never read
    assert main(["score", str(model_dir), str(folder), str(single), "--limit", "2", "--out", str(out),
                 "--overwrite"]) == 0  # the first files, in sorted order
    assert [r["source"] for r in read_csv(out)] == [str(p) for p in paths[:2]]


def test_files_are_quantized_to_the_models_bits(tmp_path):
    model_dir, model = export(tmp_path, n_bits=3)
    array = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    path = write_png(tmp_path / "img.png", array)
    assert main(["score", str(model_dir), str(path), "--out", str(tmp_path / "s.csv")]) == 0
    with torch.no_grad():
        direct = model.bits_per_dim(torch.from_numpy(array >> 5)[None, None]).item()
    assert float(read_csv(tmp_path / "s.csv")[0]["bits_per_dim"]) == pytest.approx(direct, rel=1e-5)


def test_wrong_shape_is_an_error_unless_resize(tmp_path, capsys):
    model_dir, model = export(tmp_path)
    path = write_png(tmp_path / "rgb.png", np.random.default_rng(2).integers(0, 256, (32, 40, 3), dtype=np.uint8))
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "(1, 28, 28) (grayscale 28x28)" in err and "(3, 32, 40) (RGB 32x40)" in err
    assert "--resize" in err and "Traceback" not in err and not out.exists()

    assert main(["score", str(model_dir), str(path), "--resize", "--out", str(out)]) == 0
    x = torch.from_numpy(np.array(load_image(path, 28, 1)))[None]  # the folder dataset's crop and resize
    with torch.no_grad():
        direct = model.bits_per_dim(x).item()
    assert float(read_csv(out)[0]["bits_per_dim"]) == pytest.approx(direct, rel=1e-5)


def test_dataset_of_another_shape_is_an_error(tmp_path, data, capsys):
    model_dir, _ = export(tmp_path, image_shape=(3, 28, 28))
    assert main(["score", str(model_dir), "--dataset", "fashion-mnist", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "(3, 28, 28) (RGB 28x28)" in err and "(1, 28, 28) (grayscale 28x28)" in err


def test_conditional_model_needs_labels_for_files(tmp_path, capsys):
    model_dir, model = export(tmp_path, n_classes=10)
    array = np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8)
    path = write_png(tmp_path / "img.png", array)
    assert main(["evaluate", str(model_dir), str(path)]) == 2  # score takes the marginal instead (below)
    err = capsys.readouterr().err
    assert "--label" in err and "conditional on 10 classes" in err
    assert main(["score", str(model_dir), str(path), "--label", "10"]) == 2
    assert "expected a class 0..9, found 10" in capsys.readouterr().err
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(path), "--label", "4", "--out", str(out)]) == 0
    with torch.no_grad():
        direct = model.bits_per_dim(torch.from_numpy(array)[None, None], 4).item()
    row = read_csv(out)[0]
    assert row["label"] == "4" and float(row["bits_per_dim"]) == pytest.approx(direct, rel=1e-5)

    plain_dir, _ = export(tmp_path, "plain")
    assert main(["score", str(plain_dir), str(path), "--label", "4"]) == 2
    assert "--label: this model is not conditional" in capsys.readouterr().err


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A registry of shipped models holding one tiny model, 'tiny-fmnist'."""
    root = tmp_path / "shipped"
    model_dir, model = export(root, "tiny-fmnist", n_classes=10)
    (model_dir / "metadata.json").write_text(json.dumps({"dataset": "fashion-mnist"}))
    monkeypatch.setattr(pixelmodels.pretrained, "ROOT", root)
    return model


def test_pretrained_flag(tmp_path, data, shipped, capsys, monkeypatch):
    assert pixelmodels.list_pretrained() == ["tiny-fmnist"]
    out = tmp_path / "s.csv"
    assert main(["score", "--pretrained", "tiny-fmnist", "--data-dir", str(data), "--out", str(out)]) == 0
    test = pixelmodels.load_dataset("fashion-mnist", "test", root=data)
    with torch.no_grad():
        direct = shipped.bits_per_dim(test.images, test.labels)
    rows = read_csv(out)
    assert np.allclose([float(r["bits_per_dim"]) for r in rows], direct.numpy(), rtol=1e-5, atol=0)

    capsys.readouterr()
    assert main(["evaluate", "--pretrained", "tiny-fmnist", "--data-dir", str(data)]) == 0
    assert f"test bits/dim: {direct.double().mean():.4f}" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--pretrained", "tiny-fmnist", "--n", "2", "--class", "1"]) == 0
    assert np.load(tmp_path / "generated.npz")["images"].shape == (2, 28, 28, 1)
    assert main(["complete", "--pretrained", "tiny-fmnist", "--data-dir", str(data), "--n", "1", "--rows", "26"]) == 0
    done = np.load(tmp_path / "completions.npz")
    assert np.array_equal(done["completions"][:, :26], test.images[:1, 0, :26].numpy()[..., None])

    assert main(["score", "--pretrained", "nope", "--data-dir", str(data)]) == 2
    assert "unknown pretrained model 'nope'; known: tiny-fmnist" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "--pretrained", "tiny-fmnist"]) == 2
    assert "found both" in capsys.readouterr().err
    with pytest.raises(pixelmodels.PixelModelsError, match="known: tiny-fmnist"):
        pixelmodels.load_pretrained("fashion")


def test_unreadable_and_missing_inputs_are_named(tmp_path, capsys):
    model_dir, _ = export(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, message in [(bad, "expected a readable PNG or JPEG image"), (empty, "found none"),
                          (tmp_path / "nope.png", "no such image file or folder")]:
        assert main(["score", str(model_dir), str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err and "Traceback" not in err


def test_a_conditional_model_without_labels_scores_the_marginal(tmp_path, data, capsys):
    model_dir, model = export(tmp_path, n_classes=10)
    arrays = np.random.default_rng(4).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "x.npy", arrays)
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    assert ("the model is conditional on 10 classes and no labels were given: scoring the marginal likelihood "
            "log sum_y p(x|y) p(y), p(y) uniform (10 passes an image)") in capsys.readouterr().err
    x = torch.from_numpy(arrays[:, None])
    with torch.no_grad():  # the explicit sum over the classes, p(y) = 1/10
        per_class = torch.stack([model.log_prob(x, torch.full((2,), y)) for y in range(10)]).double()
    marginal = -(torch.logsumexp(per_class, 0) - np.log(10)) / (np.log(2) * 784)
    rows = read_csv(out)
    assert [r["label"] for r in rows] == ["", ""]
    assert np.allclose([float(r["bits_per_dim"]) for r in rows], marginal.numpy(), atol=2e-6, rtol=0)

    # a labelled dataset keeps its labels; only the images without labels take the marginal
    assert main(["score", str(model_dir), str(tmp_path / "x.npy"), "--dataset", "fashion-mnist", "--data-dir",
                 str(data), "--out", str(out), "--overwrite"]) == 0
    assert ("the model is conditional on 10 classes and 2 of 9 images have no labels: scoring their marginal "
            "likelihood") in capsys.readouterr().err
    test = pixelmodels.load_dataset("fashion-mnist", "test", root=data)
    rows = read_csv(out)
    assert [r["source"] for r in rows] == ["fashion-mnist:test"] * 7 + [str(tmp_path / "x.npy")] * 2
    assert [r["label"] for r in rows] == [str(y) for y in test.labels.tolist()] + ["", ""]
    with torch.no_grad():
        labelled = model.bits_per_dim(test.images, test.labels)
    assert np.allclose([float(r["bits_per_dim"]) for r in rows[:7]], labelled.numpy(), atol=2e-6, rtol=0)
    assert np.allclose([float(r["bits_per_dim"]) for r in rows[7:]], marginal.numpy(), atol=2e-6, rtol=0)


def test_background_ratio_is_two_score_runs_subtracted_and_complexity_columns(tmp_path, data, capsys):
    model_dir, model = export(tmp_path, "model")
    with torch.no_grad():  # another model of the same data
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    background_dir = pixelmodels.save_pretrained(model, tmp_path / "background")
    files = {name: tmp_path / f"{name}.csv" for name in ("model", "background", "both")}
    common = ["--dataset", "fashion-mnist", "--data-dir", str(data), "--limit", "5"]
    assert main(["score", str(model_dir), *common, "--out", str(files["model"])]) == 0
    assert main(["score", str(background_dir), *common, "--out", str(files["background"])]) == 0
    assert main(["score", str(model_dir), *common, "--background", str(background_dir), "--complexity", "png",
                 "--out", str(files["both"])]) == 0
    alone, under, both = (read_csv(files[k]) for k in ("model", "background", "both"))
    assert list(both[0]) == ["source", "index", "label", "bits_per_dim", "nll_nats", "background_bits_per_dim",
                             "likelihood_ratio", "complexity_png", "complexity_score_png"]

    def value(rows, key):
        return np.array([float(r[key]) for r in rows])

    assert np.array_equal(value(both, "bits_per_dim"), value(alone, "bits_per_dim"))
    assert np.array_equal(value(both, "background_bits_per_dim"), value(under, "bits_per_dim"))
    assert np.allclose(value(both, "likelihood_ratio"), value(under, "bits_per_dim") - value(alone, "bits_per_dim"),
                       atol=1.5e-6, rtol=0)
    assert np.abs(value(both, "likelihood_ratio")).max() > 1e-3  # two different models
    images = pixelmodels.load_dataset("fashion-mnist", "test", root=data).images[:5]
    assert np.allclose(value(both, "complexity_png"), pixelmodels.ood.complexity(images, "png").numpy(), atol=1e-6)
    assert np.allclose(value(both, "complexity_score_png"),
                       value(both, "bits_per_dim") - value(both, "complexity_png"), atol=1.5e-6, rtol=0)


def test_score_refuses_a_background_of_other_data_and_a_codec_not_installed(tmp_path, capsys, monkeypatch):
    model_dir, _ = export(tmp_path, "model")
    other_dir, _ = export(tmp_path, "other", n_bits=4)
    path = write_png(tmp_path / "img.png", np.zeros((28, 28), np.uint8))
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(path), "--background", str(other_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"pixelmodels score: error: --background {other_dir}: the model takes 8-bit "
                                    "images (1, 28, 28), the background model takes 4-bit images (1, 28, 28); a "
                                    "likelihood ratio needs models of the same data")
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    assert main(["score", str(model_dir), str(path), "--complexity", "webp", "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pixelmodels score: error: --complexity: the webp codec needs imagecodecs, which is not installed; "
        "pip install 'pixelmodels[codecs]' (png needs nothing)")
    assert not out.exists()
