"""The command line over code maps and conditions: --dataset arrays, --n-codes, --cond, --temperature."""

import numpy as np
import pytest

from pixelmodels import list_models, load
from pixelmodels.app.cli import main

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


def write_two_level(folder, top=(3, 3), k_top=9, k=20, n=(10, 6), form="npy"):
    """A bottom level of codes (5, 6) over a top level of codes ``top``: the arrays of a VQ-VAE-2 bottom prior."""
    rng = np.random.default_rng(2)
    folder.mkdir()
    for split, count in zip(("train", "test"), n):
        x, cond = rng.integers(0, k, (count, 5, 6)).astype(np.int16), rng.integers(0, k_top, (count, *top))
        if form == "npz":
            np.savez(folder / f"{split}.npz", x=x, cond=cond.astype(np.uint16), n_codes=k, cond_codes=k_top)
        else:
            np.save(folder / f"{split}_x.npy", x)
            np.save(folder / f"{split}_cond.npy", cond.astype(np.int32))
    return folder


@pytest.mark.parametrize("name,form", [(name, "npy") for name in list_models()] + [("pixelsnail", "npz")])
def test_a_bottom_prior_conditioned_on_top_codes_end_to_end(tmp_path, capsys, name, form):
    data, run = write_two_level(tmp_path / "levels", form=form), tmp_path / "run"
    given = [] if form == "npz" else ["--n-codes", "20", "--cond-codes", "9"]  # an .npz declares them
    assert main(["train", "--model", name, "--dataset", "arrays", "--data-dir", str(data), *given, *TINY,
                 "--out", str(run)]) == 0
    model = load(run)
    assert model.n_codes == 20 and model.cond_codes == 9 and model.cond_shape == (3, 3)
    assert main(["evaluate", str(run), "--limit", "4"]) == 0
    assert "test bits/dim" in capsys.readouterr().out
    top = np.random.default_rng(3).integers(0, 9, (2, 3, 3))
    np.save(tmp_path / "top.npy", top)
    assert main(["generate", str(run), "--cond", str(tmp_path / "top.npy"), "--n", "3",
                 "--out", str(tmp_path / "bottom.npy")]) == 0
    bottom = np.load(tmp_path / "bottom.npy")
    assert bottom.shape == (6, 5, 6) and 0 <= bottom.min() and bottom.max() < 20
    np.save(tmp_path / "one.npy", top[0])  # one map for all
    assert main(["generate", str(run), "--cond", str(tmp_path / "one.npy"), "--n", "2",
                 "--out", str(tmp_path / "b1.npy")]) == 0
    assert np.load(tmp_path / "b1.npy").shape == (2, 5, 6)
    assert main(["complete", str(run), "--n", "2", "--rows", "2", "--out", str(tmp_path / "c.npz")]) == 0
    done = np.load(tmp_path / "c.npz")
    assert (done["completions"][:, :2] == done["originals"][:, :2]).all()
    capsys.readouterr()
    assert main(["score", str(run), "--dataset", "arrays", "--data-dir", str(data), "--limit", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    for bad, message in [(np.full((1, 3, 3), 9), "expected codes 0..8, found 9 at index (0, 0, 0)"),
                         (np.zeros((1, 3, 3), np.float32), "expected integer codes 0..8"),
                         (np.zeros((1, 4, 4), np.int64), "expected shape (N, 3, 3) or (3, 3)")]:
        np.save(tmp_path / "bad.npy", bad)
        assert main(["generate", str(run), "--cond", str(tmp_path / "bad.npy")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_arrays_refuse_top_codes_out_of_range_or_without_cond_codes(tmp_path):
    from pixelmodels import load_dataset
    from pixelmodels.errors import DatasetError

    data = write_two_level(tmp_path / "levels")
    ds = load_dataset("arrays", "test", root=data, n_codes=20, cond_codes=9)
    assert ds.cond.shape == (6, 3, 3) and not ds.cond.is_floating_point() and ds.cond_codes == 9
    with pytest.raises(DatasetError, match=r"test_cond.npy: expected codes 0..3, found \d+ at index \(\d+, \d, \d\) "
                                           r"\(--cond-codes 4\)"):
        load_dataset("arrays", "test", root=data, n_codes=20, cond_codes=4)
    with pytest.raises(DatasetError, match=r"integer maps \(6, 3, 3\) as a condition are codes: give --cond-codes K"):
        load_dataset("arrays", "test", root=data, n_codes=20)
    np.save(data / "test_cond.npy", np.zeros((6, 2, 3, 3), np.int32))
    with pytest.raises(DatasetError, match=r"expected integer code maps \(6, h, w\)"):
        load_dataset("arrays", "test", root=data, n_codes=20, cond_codes=9)
    with pytest.raises(DatasetError, match=r"--cond-codes applies to the arrays dataset only"):
        load_dataset("mnist", "test", cond_codes=9)
