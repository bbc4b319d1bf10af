"""Checkpoints: malicious pickles are refused without running, corrupt or mismatched
weights are named, and a failed write leaves the previous file intact."""

import dataclasses
import errno
import json
import os
import pathlib
import pickle
import re

import numpy as np
import pytest
import torch

import pixelmodels
from pixelmodels import checkpoint as ckpt
from pixelmodels.app.cli import main
from pixelmodels.data import load_dataset
from pixelmodels.errors import DatasetError, PixelModelsError

from formats import cifar_batch_bytes, tar_bytes, write_mnist

TINY_RUN = ["--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist", "--batch-size", "4",
            "--n-samples", "0", "--no-progress", "--max-steps", "1", "--eval-limit", "4"]


class Touch:
    """Unpickling this with a plain unpickler creates ``path``."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


class System(Touch):
    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


def P(path) -> str:
    return re.escape(str(path))


def tiny_model(**kwargs):
    options = dict(name="gated-pixelcnn", image_shape=(1, 8, 8), n_bits=2, preset="tiny")
    options.update(kwargs)
    return pixelmodels.create_model(options.pop("name"), **options)


@pytest.fixture
def data(tmp_path, monkeypatch):
    folder = tmp_path / "fmnist"
    write_mnist(folder, "train", n=8, seed=1)
    write_mnist(folder, "test", n=4, seed=2)
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    return folder


# --- malicious pickles ----------------------------------------------------------------


@pytest.mark.parametrize("payload", [Touch, System])
def test_malicious_training_state_is_refused(tmp_path, payload):
    victim = tmp_path / "pwned"
    path = tmp_path / "training_state.pt"
    torch.save({"model": {}, "step": payload(victim)}, path)
    with pytest.raises(PixelModelsError, match=rf"{P(path)}: refused to load: expected a training state of tensors"):
        ckpt.load_state(path)
    assert not victim.exists()
    torch.load(path, weights_only=False)  # the payload is real: a plain load runs it
    assert victim.exists()


def test_resume_refuses_a_malicious_training_state(tmp_path, data, capsys):
    run, victim = tmp_path / "run", tmp_path / "pwned"
    assert main(["train", *TINY_RUN, "--data-dir", str(data), "--out", str(run)]) == 0
    state = run / "training_state.pt"
    torch.save({"model": {}, "ema": {}, "step": Touch(victim)}, state)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{state}: refused to load" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not victim.exists()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_training_state_of_another_kind_is_named(tmp_path):
    path = tmp_path / "training_state.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(PixelModelsError, match=rf"{P(path)}: expected a training state, a dict with keys .* found list"):
        ckpt.load_state(path)
    torch.save({"model": {}, "step": 3}, path)
    with pytest.raises(PixelModelsError, match=rf"{P(path)}: expected a training state.* found a dict without \['ema'"):
        ckpt.load_state(path)
    path.write_bytes(b"")
    with pytest.raises(PixelModelsError, match=rf"{P(path)}: refused to load"):
        ckpt.load_state(path)


@pytest.mark.parametrize("payload", [Touch, System])
def test_malicious_cifar_batch_in_a_tarball_is_refused(tmp_path, payload):
    victim = tmp_path / "pwned"
    evil = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [payload(victim)]}, protocol=4)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(tar_bytes({"cifar-10-batches-py/test_batch": evil}))
    name = "pathlib.Path.touch" if payload is Touch else r"(os|posix)\.system"
    with pytest.raises(DatasetError, match=rf"{P(tarball)}:cifar-10-batches-py/test_batch: refusing to load this "
                                           rf"pickle: it refers to {name}"):
        load_dataset("cifar10", "test", root=tarball, download=False)
    assert not victim.exists()
    assert load_dataset("cifar10", "test", root=_good_tarball(tmp_path), download=False).images.shape == (2, 3, 32, 32)


def _good_tarball(tmp_path):
    good = tmp_path / "good" / "cifar-10-python.tar.gz"
    good.parent.mkdir()
    good.write_bytes(tar_bytes({"cifar-10-batches-py/test_batch": cifar_batch_bytes(2)}))
    return good


# --- weights: corrupt, or of another model --------------------------------------------


def test_truncated_weights_are_named(tmp_path):
    folder = pixelmodels.save_pretrained(tiny_model(), tmp_path / "exported")
    weights = folder / "model.safetensors"
    for cut in (10, weights.stat().st_size // 2, weights.stat().st_size - 1):
        weights.write_bytes(weights.read_bytes()[:cut])
        with pytest.raises(PixelModelsError, match=rf"{P(weights)}: expected a safetensors file, could not read it"):
            pixelmodels.load(folder)
        pixelmodels.save_pretrained(tiny_model(), folder)
    weights.unlink()
    with pytest.raises(PixelModelsError, match=rf"{P(weights)}: no such file"):
        pixelmodels.load(folder)


def first_mismatch(model, weights: dict) -> str:
    """The first tensor of ``model``'s state dict that ``weights`` lacks or has in another shape."""
    for name, tensor in model.state_dict().items():
        if name not in weights or weights[name].shape != tensor.shape:
            return name
    raise AssertionError("no mismatch")


@pytest.mark.parametrize("config_change, words", [
    (dict(name="pixelcnn"), "is missing; the checkpoint is of another model"),
    (dict(n_channels=8), "has shape"),
    (dict(n_bits=3), "has shape"),
    (dict(image_shape=(3, 8, 8)), "has shape"),
])
def test_config_and_weights_mismatch_names_the_first_tensor(tmp_path, config_change, words):
    folder = pixelmodels.save_pretrained(tiny_model(), tmp_path / "exported")
    other = tiny_model(**config_change)
    config = json.loads((folder / "config.json").read_text())
    config["model"] = json.loads(json.dumps(dataclasses.asdict(other.config)))
    (folder / "config.json").write_text(json.dumps(config))
    weights = ckpt.load_weights(folder / "model.safetensors")
    name = first_mismatch(other, weights)
    with pytest.raises(PixelModelsError, match=rf"{P(folder / 'model.safetensors')}: tensor {re.escape(repr(name))} {words}"):
        pixelmodels.load(folder)


def test_weights_with_an_extra_tensor_are_named(tmp_path):
    model = tiny_model()
    folder = pixelmodels.save_pretrained(model, tmp_path / "exported")
    ckpt.save_weights(folder / "model.safetensors", {**model.state_dict(), "zzz.extra": torch.zeros(1)})
    with pytest.raises(PixelModelsError, match=r"unexpected tensor 'zzz.extra'; the checkpoint is of another model"):
        pixelmodels.load(folder)


# --- atomic writes --------------------------------------------------------------------


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDiskFile:
    """A file whose writes fail after ``room`` bytes, like a disk that fills up."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(data[: self.room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = tmp_path / "out" / "config.json"
    ckpt.atomic_write(path, b"old contents")
    if where == "fsync":
        monkeypatch.setattr(ckpt.os, "fsync", disk_full)
    else:
        real_fdopen = os.fdopen
        monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: FullDiskFile(real_fdopen(fd, mode), room=4))
    with pytest.raises(PixelModelsError, match=rf"{P(path)}: could not write: the disk is full \(No space left on device\); "
                                               r"the previous file, if any, is unchanged") as error:
        ckpt.atomic_write(path, b"new contents, longer")
    assert isinstance(error.value.__cause__, OSError)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]  # no temporary file left


def test_atomic_write_other_failures_are_named(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"

    def no_permission(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(ckpt.os, "open", no_permission)  # creating the temporary file
    with pytest.raises(PixelModelsError, match=rf"{P(path)}: could not write \(Permission denied\)"):
        ckpt.atomic_write(path, b"x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_save_pretrained_on_a_full_disk_keeps_the_loadable_model(tmp_path, monkeypatch):
    first, second = tiny_model(), tiny_model()
    torch.nn.init.constant_(next(second.parameters()), 0.5)
    folder = pixelmodels.save_pretrained(first, tmp_path / "exported")
    before = (folder / "model.safetensors").read_bytes()
    monkeypatch.setattr(ckpt.os, "fsync", disk_full)
    with pytest.raises(PixelModelsError, match=r"model.safetensors: could not write: the disk is full"):
        pixelmodels.save_pretrained(second, folder)
    monkeypatch.undo()
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = pixelmodels.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), first.state_dict().values()))


def test_atomic_write_gives_files_the_mode_of_a_normal_write(tmp_path):
    from pixelmodels.checkpoint import atomic_write

    atomic_write(tmp_path / "a.bin", b"x")
    (tmp_path / "b.bin").write_bytes(b"x")
    assert (tmp_path / "a.bin").stat().st_mode == (tmp_path / "b.bin").stat().st_mode
