"""The command line over code maps and conditions: --dataset arrays, --n-codes, --cond, --temperature."""

import numpy as np
import pytest

from pixelmodels import load
from pixelmodels.cli import main

TINY = ["--preset", "tiny", "--batch-size", "4", "--n-samples", "0", "--no-progress", "--max-steps", "2",
        "--eval-limit", "4"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)


def write_codes(folder, k=300, cond_shape=(5,), n=(10, 6)):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, count in zip(("train", "test"), n):
        np.savez(folder / f"{split}.npz", x=rng.integers(0, k, (count, 5, 6)).astype(np.int16),
                 y=rng.integers(0, 3, count), n_classes=3, cond=rng.normal(size=(count, *cond_shape)).astype(np.float32))
    return folder


def test_a_prior_over_codes_end_to_end(tmp_path, capsys):
    data, run = write_codes(tmp_path / "codes"), tmp_path / "run"
    assert main(["train", "--model", "gated-pixelcnn", "--dataset", "arrays", "--data-dir", str(data),
                 "--n-codes", "300", "--conditional", *TINY, "--out", str(run)]) == 0
    model = load(run)
    assert model.n_codes == 300 and model.n_bits is None and model.cond_shape == (5,) and model.n_classes == 3
    assert main(["evaluate", str(run), "--limit", "4"]) == 0
    assert "test bits/dim" in capsys.readouterr().out
    np.save(tmp_path / "cond.npy", np.ones((2, 5), np.float32))
    assert main(["generate", str(run), "--cond", str(tmp_path / "cond.npy"), "--class", "1", "--n", "3",
                 "--temperature", "0.7", "--out", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (6, 5, 6) and codes.dtype == np.int64 and 0 <= codes.min() and codes.max() < 300
    assert not list(tmp_path.glob("*.png"))  # code maps, no image grid
    assert main(["complete", str(run), "--n", "2", "--rows", "2", "--out", str(tmp_path / "c.npz")]) == 0
    done = np.load(tmp_path / "c.npz")
    assert (done["completions"][:, :2] == done["originals"][:, :2]).all()
    capsys.readouterr()
    assert main(["score", str(run), "--dataset", "arrays", "--data-dir", str(data), "--limit", "3"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith("source,index,label,bits_per_dim") and len(rows) == 4


def test_generate_refuses_a_condition_of_another_shape(tmp_path, capsys):
    data, run = write_codes(tmp_path / "codes", k=20), tmp_path / "run"
    assert main(["train", "--model", "pixelcnn", "--dataset", "arrays", "--data-dir", str(data),
                 "--n-codes", "20", *TINY, "--out", str(run)]) == 0
    np.save(tmp_path / "bad.npy", np.ones((2, 4), np.float32))
    capsys.readouterr()
    assert main(["generate", str(run), "--cond", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected shape (N, 5) or (5,)" in err and "found (2, 4)" in err
    assert main(["generate", str(run)]) == 2
    assert "give --cond FILE.npy" in capsys.readouterr().err
    assert main(["generate", str(run), "--cond", str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_images_with_a_spatial_condition(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "maps"
    data.mkdir()
    for split in ("train", "test"):
        np.save(data / f"{split}_x.npy", rng.integers(0, 256, (8, 7, 7)).astype(np.uint8))
        np.save(data / f"{split}_cond.npy", rng.random((8, 1, 3, 3)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", "--model", "pixelcnnpp", "--dataset", "arrays", "--data-dir", str(data), *TINY,
                 "--out", str(run)]) == 0
    model = load(run)
    assert model.n_bits == 8 and model.cond_shape == (1, 3, 3) and model.image_shape == (1, 7, 7)
    np.save(tmp_path / "c.npy", np.zeros((1, 3, 3), np.float32))
    assert main(["generate", str(run), "--cond", str(tmp_path / "c.npy"), "--n", "2",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").exists() and np.load(tmp_path / "g.npz")["images"].shape == (2, 7, 7, 1)
