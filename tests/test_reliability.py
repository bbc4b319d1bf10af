"""Crash-proof training: SIGKILL at any moment and resume, SIGTERM saves, non-finite losses are skipped.

The kills go through the fault injection of ``faults.py`` (beside this file) and, once, through
a timer at a random moment. Every run is a separate process with one thread and deterministic algorithms,
so an interrupted and resumed run must end with bitwise the weights of an uninterrupted one.
"""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixelmodels.app.cli import main

import faults
from formats import write_mnist

FAULTY = str(Path(__file__).with_name("faults.py"))  # python faults.py SPEC ARGS: pixelmodels ARGS with SPEC
STEPS = 8


def env():
    return dict(os.environ, PIXELMODELS_NO_DOWNLOAD="1", OMP_NUM_THREADS="1")


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "fmnist"
    write_mnist(folder, "train", n=20, seed=1)  # 3 batches of 8 an epoch: checkpoints fall mid-epoch too
    write_mnist(folder, "test", n=6, seed=2)
    return folder


def args(data, out, *extra):
    return ["train", "--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist", "--data-dir",
            str(data), "--batch-size", "8", "--epochs", "10", "--max-steps", str(STEPS), "--n-samples", "0",
            "--no-progress", "--lr", "0.01", "--ema", "0.9", "--device", "cpu", "--deterministic",
            "--checkpoint-every-steps", "2", "--out", str(out), *extra]


def cli(argv, faults=None, **kw):
    command = ["-m", "pixelmodels"] if faults is None else [FAULTY, faults]
    return subprocess.run([sys.executable, *command, *argv], env=env(), capture_output=True, text=True,
                          timeout=300, **kw)


def weights(out):
    state = torch.load(out / "training_state.pt", weights_only=True)
    return state["step"], state["model"], state["ema"]


def assert_same(a, b):
    assert a[0] == b[0]
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key
        assert torch.equal(a[2][key], b[2][key]), key


def finish(out):
    """Resume until done, as a user would after a crash."""
    done = cli(["train", "--resume", str(out), "--no-progress"])
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def reference(tmp_path, data):
    out = tmp_path / "straight"
    done = cli(args(data, out))
    assert done.returncode == 0, done.stderr[-2000:]
    return weights(out)


@pytest.mark.parametrize("fault, saved_step", [
    ("kill@step:5", 4),   # between checkpoints: steps 5 is lost and redone
    ("kill@save:2", 2),   # half way through writing the checkpoint of step 4: the one of step 2 survives
])
def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path, data, reference, fault, saved_step):
    out = tmp_path / "killed"
    done = cli(args(data, out), faults=fault)
    assert done.returncode == -signal.SIGKILL
    assert weights(out)[0] == saved_step
    finish(out)
    assert_same(weights(out), reference)


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path, data, reference):
    rng = random.Random(7)
    for trial in range(3):
        out = tmp_path / f"random{trial}"
        fault = rng.choice([f"kill@step:{rng.randint(1, STEPS - 1)}", f"kill@save:{rng.randint(1, 3)}"])
        assert cli(args(data, out), faults=fault).returncode == -signal.SIGKILL, fault
        if (out / "training_state.pt").exists():
            finish(out)
        else:  # killed before the first checkpoint: nothing to resume, start again
            assert cli(args(data, out, "--overwrite")).returncode == 0
        assert_same(weights(out), reference)


@pytest.mark.slow
def test_sigkill_from_outside_at_a_random_time(tmp_path, data, reference):
    out = tmp_path / "timer"
    proc = subprocess.Popen([sys.executable, "-m", "pixelmodels", *args(data, out)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(3).uniform(2.0, 6.0))
    proc.kill()
    proc.wait()
    if (out / "training_state.pt").exists():
        finish(out)
    else:
        assert cli(args(data, out, "--overwrite")).returncode == 0
    assert_same(weights(out), reference)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, data):
    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "pixelmodels",
                             *args(data, out, "--max-steps", "100000", "--checkpoint-every-steps", "100000",
                                   "--log-every", "1")],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received: checkpoint saved at step" in err and "--resume" in err
    assert "Traceback" not in err
    step = weights(out)[0]
    assert step >= 1
    done = cli(["train", "--resume", str(out), "--max-steps", str(step + 2), "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert weights(out)[0] == step + 2


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_non_finite_losses_are_skipped_and_counted(tmp_path, data, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    faults.install("nan@2,3", monkeypatch.setattr)
    out = tmp_path / "nan"
    assert main(args(data, out, "--max-steps", "4", "--max-bad-steps", "3")) == 0
    log = records(out)
    bad = [r for r in log if "bad_step" in r]
    assert [r["bad_step"] for r in bad] == [1, 2] and all(r["step"] == 1 for r in bad)
    assert weights(out)[0] == 4  # four real updates, from six batches


def test_a_skipped_step_changes_no_weight(tmp_path, data, monkeypatch):
    from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from pixelmodels.app.runs import build_trainer as Trainer

    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    run = RunConfig(ModelConfig("gated-pixelcnn", (1, 1, 1), preset="tiny"),
                    DataConfig("fashion-mnist", str(data)), TrainConfig(batch_size=4, device="cpu"))
    trainer = Trainer(run, tmp_path / "t")
    trainer.out.mkdir()
    x, y, _ = trainer.batch(next(trainer.batches(0)))
    faults.install("nan@1", monkeypatch.setattr)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    ema = [p.detach().clone() for p in trainer.ema.model.parameters()]
    adam = trainer.opt.state_dict()
    assert math.isnan(trainer.train_step(x, y))
    assert trainer.step == 0 and trainer.bad_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ema, trainer.ema.model.parameters()))
    assert trainer.opt.state_dict()["state"] == adam["state"] == {}
    trainer.train_step(x, y)  # a finite step resets the count and updates
    assert trainer.step == 1 and trainer.bad_steps == 0
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_too_many_bad_steps_stop_with_a_message_and_keep_the_last_checkpoint(tmp_path, data):
    out = tmp_path / "stop"
    done = cli(args(data, out, "--max-bad-steps", "3"), faults="nan@3,4,5")
    assert done.returncode == 2
    assert "training stopped: the loss was not finite in 3 steps in a row (--max-bad-steps 3) at step 2" in done.stderr
    assert "Traceback" not in done.stderr
    assert weights(out)[0] == 2  # the checkpoint of step 2, intact and loadable
    finish(out)
