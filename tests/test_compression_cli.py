"""`pixelmodels compress` and `decompress`: datasets, image files and arrays of codes with conditions, the
outputs (PNG folder, .npz), the printed figures, and the refusals (nothing written)."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
from pixelmodels.app.cli import main
from pixelmodels.app.inputs import read_inputs

from test_priors_cli import TINY, write_two_level
from test_score import data, export  # noqa: F401 (data: a fixture)

pytest.importorskip("constriction")


def figures(text):
    """The printed line's (images, file bits/dim, bytes, NLL bits/dim)."""
    m = re.search(r"(\d+) images?: ([\d.]+) bits/dim in the file \(([\d,]+) bytes\), model NLL ([\d.]+) bits/dim "
                  r"\([+-][\d.]+%\), [\d.]+ images/s", text)
    assert m, text
    return int(m[1]), float(m[2]), int(m[3].replace(",", "")), float(m[4])


@pytest.mark.parametrize("n_bits", [8, 3])
def test_a_dataset_round_trips_through_a_png_folder_and_an_npz(tmp_path, data, capsys, n_bits):
    model_dir, model = export(tmp_path, n_classes=10, n_bits=n_bits)
    stream, folder, npz = tmp_path / "a.pmc", tmp_path / "decoded", tmp_path / "decoded.npz"
    assert main(["compress", str(model_dir), "--dataset", "fashion-mnist", "--data-dir", str(data), "--limit", "5",
                 "--chunk-size", "2", "-o", str(stream)]) == 0
    n, bpd, n_bytes, nll = figures(capsys.readouterr().out)
    test = pixelmodels.load_dataset("fashion-mnist", "test", root=data, n_bits=n_bits)
    x, y = test.images[:5], test.labels[:5]
    with torch.no_grad():
        direct = model.bits_per_dim(x, y).double().mean().item()
    assert n == 5 and n_bytes == stream.stat().st_size and abs(bpd - 8 * n_bytes / x.numel()) < 1e-4
    assert abs(nll - direct) < 1e-4
    assert pixelmodels.decompress(model, stream.read_bytes())[0].equal(x)

    assert main(["decompress", str(model_dir), str(stream), "-o", str(folder)]) == 0
    assert figures(capsys.readouterr().out)[:3] == (n, bpd, n_bytes)
    assert sorted(p.name for p in folder.iterdir()) == [f"{k:06d}.png" for k in range(5)] + ["labels.csv"]
    assert (folder / "labels.csv").read_text().splitlines()[1:] == \
        [f"{k:06d}.png,{v}" for k, v in enumerate(y.tolist())]
    # the PNG files read back (as score and compress read files) to the same images
    again = read_inputs([folder], model.image_shape, n_bits)
    assert again.images.equal(x)

    assert main(["decompress", str(model_dir), str(stream), "-o", str(npz)]) == 0
    arrays = np.load(npz)
    assert (arrays["images"] == x.numpy().transpose(0, 2, 3, 1)).all() and (arrays["labels"] == y.numpy()).all()


def test_image_files_with_a_label(tmp_path, capsys):
    model_dir, model = export(tmp_path, n_classes=3)
    files = tmp_path / "files"
    files.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for k, image in enumerate(pixels):
        Image.fromarray(image).save(files / f"{k}.png")
    stream = tmp_path / "f.pmc"
    assert main(["compress", str(model_dir), str(files), "--label", "2", "-o", str(stream)]) == 0
    assert figures(capsys.readouterr().out)[0] == 3
    images, labels = pixelmodels.decompress(model, stream.read_bytes())
    assert (images[:, 0].numpy() == pixels).all() and labels.tolist() == [2, 2, 2]


def test_codes_with_a_map_of_codes_as_condition(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    data, run = write_two_level(tmp_path / "levels", form="npz"), tmp_path / "run"
    assert main(["train", "--model", "gated-pixelcnn", "--dataset", "arrays", "--data-dir", str(data), *TINY,
                 "--out", str(run)]) == 0
    stream, out = tmp_path / "codes.pmc", tmp_path / "codes.npz"
    assert main(["compress", str(run), "--limit", "4", "-o", str(stream)]) == 0
    capsys.readouterr()
    assert main(["decompress", str(run), str(stream), "-o", str(tmp_path / "codes")]) == 2
    assert "code maps are written as an .npz" in capsys.readouterr().err
    # the condition comes from the run's dataset (its first 4 maps), or from --cond
    assert main(["decompress", str(run), str(stream), "-o", str(out)]) == 0
    test = pixelmodels.load_dataset("arrays", "test", root=data)
    assert (np.load(out)["codes"] == test.images[:4, 0].numpy()).all()
    np.save(tmp_path / "top.npy", test.cond[:4].numpy())
    assert main(["decompress", str(run), str(stream), "--cond", str(tmp_path / "top.npy"), "-o", str(out),
                 "--overwrite"]) == 0
    np.save(tmp_path / "other.npy", (test.cond[:4].numpy() + 1) % 9)
    capsys.readouterr()
    assert main(["decompress", str(run), str(stream), "--cond", str(tmp_path / "other.npy"), "-o",
                 str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cond: differs from the condition the stream was compressed with" in err
    assert not (tmp_path / "x.npz").exists()


def test_refusals_write_nothing(tmp_path, data, capsys):
    model_dir, model = export(tmp_path, n_classes=10)
    other_dir, _ = export(tmp_path, name="other", n_classes=10, preset="small")
    stream = tmp_path / "a.pmc"
    assert main(["compress", str(model_dir), "--dataset", "fashion-mnist", "--data-dir", str(data), "--limit", "3",
                 "-o", str(stream)]) == 0
    before = stream.read_bytes()
    cases = [
        (["compress", str(model_dir), "--dataset", "fashion-mnist", "--data-dir", str(data), "-o", str(stream)],
         "exists; give --overwrite"),
        (["decompress", str(other_dir), str(stream), "-o", str(tmp_path / "o.npz")], "written with another model"),
        (["decompress", str(model_dir), str(tmp_path / "none.pmc"), "-o", str(tmp_path / "o.npz")], "no such file"),
        (["decompress", str(model_dir), str(data / "t10k-images-idx3-ubyte.gz"), "-o", str(tmp_path / "o.npz")],
         "not a pixelmodels compressed stream"),
        (["compress", str(model_dir), str(tmp_path / "missing"), "--label", "1", "-o", str(tmp_path / "b.pmc")],
         "no such image file or folder"),
        (["compress", str(model_dir), "--dataset", "fashion-mnist", "--data-dir", str(data), "--chunk-size", "0",
          "-o", str(tmp_path / "b.pmc")], "--chunk-size"),
    ]
    (tmp_path / "cut.pmc").write_bytes(before[:-5])
    cases.append((["decompress", str(model_dir), str(tmp_path / "cut.pmc"), "-o", str(tmp_path / "o")], "truncated"))
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if ": error: " in line]  # after the line saying what it read
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, (argv, err)
    assert stream.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pmc", "cut.pmc", "fmnist", "model", "other"]
