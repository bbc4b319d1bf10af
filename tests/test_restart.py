"""Restarts as torchrun makes them: ``--resume auto``, checkpoints by the clock, and a clean end of every worker.

The process tests run real ``torchrun`` launchers with two gloo workers on the CPU; the kill goes through the
fault injection of ``faults.py`` (beside this file), on one worker and on the first attempt only.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixelmodels.app.cli import main
from pixelmodels.training import Trainer

from formats import write_mnist

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")

FAULTY = str(Path(__file__).with_name("faults.py"))  # python faults.py SPEC ARGS: pixelmodels ARGS with SPEC


def env():
    return dict(os.environ, PIXELMODELS_NO_DOWNLOAD="1", OMP_NUM_THREADS="1")


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "fmnist"
    write_mnist(folder, "train", n=24, seed=1)  # 3 global batches of 8 an epoch, 4 images a worker
    write_mnist(folder, "test", n=8, seed=2)
    return folder


def args(data, out, steps, *extra):
    return ["train", "--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist", "--data-dir",
            str(data), "--batch-size", "8", "--max-steps", str(steps), "--n-samples", "0", "--no-progress",
            "--lr", "0.01", "--ema", "0.9", "--device", "cpu", "--eval-every", "1000", "--out", str(out), *extra]


def torchrun(command, *launcher):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *launcher, *command]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)


def state(out):
    return torch.load(out / "training_state.pt", weights_only=True)


# -- --resume auto -----------------------------------------------------------
def test_resume_auto_starts_then_continues_the_same_run(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    out = tmp_path / "missing" / "run"
    assert main(args(data, out, 2, "--resume", "auto")) == 0
    assert state(out)["step"] == 2
    assert main(args(data, out, 4, "--resume", "auto")) == 0
    assert "from step 2" in capsys.readouterr().err
    assert state(out)["step"] == 4
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4
    assert len((out / "command.txt").read_text().splitlines()) == 2
    # A plain run still refuses the run in --out.
    assert main(args(data, out, 4)) == 2
    assert "already holds a run; use --resume" in capsys.readouterr().err


def test_resume_auto_starts_in_an_empty_folder_and_over_a_start_without_checkpoint(tmp_path, data, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    out = tmp_path / "run"
    out.mkdir()
    assert main(args(data, out, 1, "--resume", "auto")) == 0
    (out / "training_state.pt").unlink()  # as a run killed before its first checkpoint leaves it
    assert main(args(data, out, 2, "--resume", "auto")) == 0
    assert state(out)["step"] == 2
    assert len((out / "command.txt").read_text().splitlines()) == 1  # started again, not continued


def test_resume_auto_refuses_another_run_in_one_line(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    out = tmp_path / "run"
    assert main(args(data, out, 1)) == 0
    capsys.readouterr()
    assert main(args(data, out, 2, "--resume", "auto", "--lr", "0.02", "--n-layers", "4")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--resume auto: --out {out} holds another run" in err
    assert "train.lr (there 0.01, asked 0.02)" in err and "model.options.n_layers" in err
    assert "max_steps" not in err  # a resume may change the limits
    assert state(out)["step"] == 1
    assert main(["train", "--model", "gated-pixelcnn", "--resume", "auto"]) == 2
    assert "--resume auto: expected --out DIR" in capsys.readouterr().err


def test_checkpoint_every_minutes_saves_on_the_clock(tmp_path, data, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    saves, save = [], Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda self: (saves.append(self.step), save(self))[1])
    assert main(args(data, tmp_path / "often", 2, "--checkpoint-every-minutes", "1e-9")) == 0
    assert saves == [1, 2, 2]  # after each step, and the final one
    saves.clear()
    assert main(args(data, tmp_path / "rarely", 2, "--checkpoint-every-minutes", "60")) == 0
    assert saves == [2]
    assert main(args(data, tmp_path / "bad", 2, "--checkpoint-every-minutes", "0")) == 2


# -- real processes ------------------------------------------------------------
def test_two_processes_end_cleanly_every_time(tmp_path, data):
    """The 2-process gloo path of issue 33 several times: every worker exits 0, none by a signal. The last run
    also saves on rank 0's clock after every step, which both workers must agree on."""
    for attempt in range(3):
        clock = ["--checkpoint-every-minutes", "1e-9"] if attempt == 2 else []
        done = torchrun(["-m", "pixelmodels", *args(data, tmp_path / f"run{attempt}", 3, "--seed", "5", *clock)])
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-3000:]
        assert "SIGABRT" not in output and "Signal 6" not in output and "exitcode" not in output, output[-3000:]


def assert_whole(out):
    """Every file a reader finds in ``out`` loads: no torn checkpoint, log or config."""
    for path in out.rglob("*"):
        if path.suffix == ".pt":
            torch.load(path, weights_only=True)
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_worker_killed_under_torchrun_restarts_to_the_uninterrupted_weights(tmp_path, data):
    """``torchrun --max-restarts 1``: worker 1 is SIGKILLed after step 5 (the checkpoint of step 4 is written, the
    next is due at step 6); torchrun restarts both, ``--resume auto`` continues from step 4, and the run ends
    with the weights of an uninterrupted one."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    extra = ("--deterministic", "--checkpoint-every-steps", "2", "--resume", "auto")
    done = torchrun(["-m", "pixelmodels", *args(data, straight, 8, *extra)])
    assert done.returncode == 0, done.stderr[-3000:]
    done = torchrun([FAULTY, "rank@1;kill@step:5", *args(data, killed, 8, *extra)], "--max-restarts", "1")
    assert f"failed (exitcode: -{signal.SIGKILL}) local_rank: 1" in done.stderr, done.stderr[-3000:]
    assert "from step 4" in done.stderr  # the restarted workers continued from the checkpoint
    # Known, open (issue 33): now and then a worker aborts at exit, after its work, in gloo's teardown.
    teardown_abort = done.returncode != 0 and "terminate called without an active exception" in done.stderr
    assert done.returncode == 0 or teardown_abort, done.stderr[-3000:]
    a, b = state(straight), state(killed)
    assert a["step"] == b["step"] == 8
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor, b[key][name], atol=1e-6, rtol=0), (key, name)
    assert_whole(killed)
    if teardown_abort:
        pytest.xfail("the run ended with the right weights, then a worker aborted in gloo's teardown at exit")
