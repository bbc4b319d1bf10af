"""Bad input on the command line: a non-zero exit, one paragraph naming the flag or file
with what was expected and what was found, no traceback (unless --debug), and nothing
written to the output directory. tests/test_cli.py has the first few cases; these extend them."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
from pixelmodels.app.cli import main
from pixelmodels.errors import PixelModelsError

from formats import write_mnist

TINY = ["--preset", "tiny", "--batch-size", "4", "--n-samples", "0", "--no-progress", "--max-steps", "1",
        "--eval-limit", "4"]


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fmnist")
    write_mnist(folder, "train", n=8, seed=1)
    write_mnist(folder, "test", n=4, seed=2)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 32x32 PNG images with no class subfolders."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, fmnist):
    run = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", "--model", "gated-pixelcnn", "--dataset", "fashion-mnist", "--data-dir", str(fmnist),
                 "--conditional", *TINY, "--out", str(run)]) == 0
    return run


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    monkeypatch.setenv("PIXELMODELS_DATA", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a default --out (runs/...) would land here


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes ({} when the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv, capsys, *words) -> str:
    """Run the CLI, expect exit 2 and one error line on stderr holding every one of ``words`` (after what a
    run that started said: what it read, its start line)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    err = err.split("\r")[-1].strip()  # after a progress bar's last redraw
    assert sum(": error: " in line for line in err.splitlines()) == 1, err
    started = argv[0] == "train" and err.count("\n") == 1 and " on " in err.splitlines()[0]
    assert len(err.splitlines()) == 1 or started, err
    err = err.splitlines()[-1]
    assert err.startswith(f"pixelmodels {argv[0]}: error: "), err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    return err


def nothing_written(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "runs").exists()


# --- train: bad flags --------------------------------------------------------------------


def test_unknown_model(tmp_path, fmnist, capsys):
    refused(["train", "--model", "pixelgan", "--dataset", "fashion-mnist", "--data-dir", str(fmnist),
             "--out", str(tmp_path / "out")], capsys, "--model", "'pixelgan'", "expected one of", "gated-pixelcnn")
    nothing_written(tmp_path)


def test_a_new_run_needs_a_model(tmp_path, fmnist, capsys):
    refused(["train", "--dataset", "fashion-mnist", "--data-dir", str(fmnist), *TINY, "--out", str(tmp_path / "out")],
            capsys, "--model: required for a new run", "expected one of", "gated-pixelcnn")
    nothing_written(tmp_path)


def test_a_resumed_run_keeps_its_model_and_data(tmp_path, conditional_run, capsys):
    before = snapshot(conditional_run)
    for change in (["--n-bits", "4"], ["--preset", "small"], ["--model", "pixelcnn"], ["--n-channels", "8"]):
        refused(["train", "--resume", str(conditional_run), *change], capsys,
                f"--resume: {conditional_run} is a gated-pixelcnn run", "only training flags")
    assert snapshot(conditional_run) == before


def test_unknown_dataset(tmp_path, capsys):
    refused(["train", "--model", "pixelcnn", "--dataset", "imagenet", *TINY, "--out", str(tmp_path / "out")],
            capsys, "unknown dataset 'imagenet'", "known datasets", "fashion-mnist")
    nothing_written(tmp_path)


@pytest.mark.parametrize("n_bits", ["0", "9"])
def test_n_bits_outside_1_to_8(tmp_path, fmnist, capsys, n_bits):
    refused(["train", "--model", "pixelcnn", "--dataset", "fashion-mnist", "--data-dir", str(fmnist), *TINY,
             "--n-bits", n_bits, "--out", str(tmp_path / "out")], capsys, "--n-bits", "1 to 8", f"found {n_bits}")
    nothing_written(tmp_path)


def test_data_the_model_cannot_take(tmp_path, capsys):
    """Issue 14 lifted PixelCNN++'s old limit (sides divisible by 4: it pads now, see test_priors.py);
    what no model takes is a likelihood of intensities over unordered codes."""
    codes = tmp_path / "codes"
    codes.mkdir()
    for split in ("train", "test"):
        np.savez(codes / f"{split}.npz", x=np.zeros((4, 5, 5), np.int64))
    refused(["train", "--model", "pixelcnnpp", "--dataset", "arrays", "--data-dir", str(codes), "--n-codes", "16",
             "--likelihood", "logistic-mixture", *TINY, "--out", str(tmp_path / "out")],
            capsys, "--likelihood", "logistic-mixture is for ordinal intensities", "16 unordered codes")
    nothing_written(tmp_path)


def test_pixelcnnpp_takes_an_image_size_not_divisible_by_4(tmp_path, photos):
    assert main(["train", "--model", "pixelcnnpp", "--dataset", "folder", "--data-dir", str(photos),
                 "--image-size", "30", *TINY, "--out", str(tmp_path / "out")]) == 0
    assert pixelmodels.load(tmp_path / "out").image_shape == (3, 30, 30)


def test_conditional_on_a_dataset_without_labels(tmp_path, photos, capsys):
    refused(["train", "--model", "gated-pixelcnn", "--dataset", "folder", "--data-dir", str(photos),
             "--image-size", "8", "--conditional", *TINY, "--out", str(tmp_path / "out")],
            capsys, "--conditional", "'folder'", "no class labels")
    nothing_written(tmp_path)


def test_debug_shows_the_traceback(tmp_path, fmnist):
    with pytest.raises(PixelModelsError, match="--n-bits"):
        main(["train", "--model", "pixelcnn", "--dataset", "fashion-mnist", "--data-dir", str(fmnist), *TINY,
              "--n-bits", "0", "--out", str(tmp_path / "out"), "--debug"])
    nothing_written(tmp_path)


# --- a class label outside the model's classes -------------------------------------------


def test_generate_class_outside_the_model_classes(tmp_path, conditional_run, capsys):
    before = snapshot(conditional_run)
    out = tmp_path / "out" / "samples.png"
    refused(["generate", str(conditional_run), "--n", "1", "--class", "10", "--out", str(out)],
            capsys, "0..9", "10")
    assert not out.exists() and not out.with_suffix(".npz").exists()
    assert snapshot(conditional_run) == before


def test_generate_class_outside_names_the_flag(tmp_path, conditional_run, capsys):
    refused(["generate", str(conditional_run), "--n", "1", "--class", "-1", "--out", str(tmp_path / "x.png")],
            capsys, "--class", "0..9", "-1")


# --- missing run directories -------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["evaluate", "{missing}"],
    ["generate", "{missing}", "--out", "{out}/g.png"],
    ["complete", "{missing}", "--out", "{out}/c.png"],
    ["train", "--resume", "{missing}", "--max-steps", "2"],
])
def test_missing_run_directory(tmp_path, capsys, argv):
    missing = tmp_path / "no-such-run"
    argv = [a.format(missing=missing, out=tmp_path / "out") for a in argv]
    refused(argv, capsys, str(missing))
    assert not missing.exists()
    nothing_written(tmp_path)


# --- an output directory that holds another run ------------------------------------------


def test_out_holding_another_run_is_refused(tmp_path, fmnist, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "pixelcnn", "--dataset", "fashion-mnist", "--data-dir", str(fmnist),
                 *TINY, "--out", str(run)]) == 0
    before = snapshot(run)
    refused(["train", "--model", "gated-pixelcnn", "--dataset", "fashion-mnist", "--data-dir", str(fmnist),
             *TINY, "--out", str(run)], capsys, f"--out: {run} already holds a run", "--resume", "--overwrite")
    assert snapshot(run) == before
    assert pixelmodels.load(run).config.name == "pixelcnn"


# --- the disk fills up during a checkpoint save ------------------------------------------


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, fmnist, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--model", "gated-pixelcnn", "--dataset", "fashion-mnist", "--data-dir", str(fmnist),
                 *TINY, "--epochs", "3", "--out", str(run)]) == 0  # step 1 of 2 in epoch 0, checkpointed
    weights, state = (run / "model.safetensors").read_bytes(), (run / "training_state.pt").read_bytes()
    real_fsync = os.fsync

    def fsync(fd):  # the checkpoint's files no longer fit; small files (config, logs) still do
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if name.startswith((".model.safetensors.", ".training_state.pt.")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    refused(["train", "--resume", str(run), "--max-steps", "3", "--no-progress"], capsys,
            str(run / "model.safetensors"), "the disk is full", "previous file")
    monkeypatch.undo()
    assert (run / "model.safetensors").read_bytes() == weights
    assert (run / "training_state.pt").read_bytes() == state
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(run / "training_state.pt", weights_only=True)["step"] == 1
    pixelmodels.load(run)
    assert main(["train", "--resume", str(run), "--max-steps", "2", "--no-progress"]) == 0  # space again: resumes
    assert torch.load(run / "training_state.pt", weights_only=True)["step"] == 2


def test_unwritable_output_is_one_line(tmp_path, conditional_run, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused(["generate", str(conditional_run), "--n", "1", "--class", "3", "--out", str(blocker / "x.png")],
            capsys, str(blocker))
