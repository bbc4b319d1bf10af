"""Restarts as torchrun makes them: ``--resume auto``, checkpoints by the clock, and a clean end of every worker.

The process tests run real ``torchrun`` launchers with two gloo workers on the CPU. Each worker runs through
``faults.py --report`` (beside this file), which injects the faults (a SIGKILL, a pause for SIGTERM) on one
worker and on the first attempt only, and writes every worker's exit status and the threads it had left.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from pixelmodels.app.cli import main
from pixelmodels.distributed import World, start_number
from pixelmodels.training import Trainer

from formats import write_mnist

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")

FAULTY = str(Path(__file__).with_name("faults.py"))  # python faults.py --report DIR SPEC ARGS (see there)


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


def test_every_worker_of_a_start_gets_its_number_whatever_an_earlier_start_left():
    """``distributed.start_number`` over a real TCPStore, three workers in threads: a name that a killed worker of
    an earlier start left in the store is answered and never read, the late worker of this start still gets this
    start's number, and the next start gets the next."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30))
    store.add("pixelmodels/starts", 3)  # three earlier starts
    store.set("pixelmodels/worker1", "left-by-a-killed-worker")

    def start(delays):
        numbers = {}

        def worker(rank):
            time.sleep(delays[rank])
            client = dist.TCPStore("127.0.0.1", store.port, is_master=False, timeout=timedelta(seconds=30))
            numbers[rank] = start_number(client, World(rank, 3))

        threads = [threading.Thread(target=worker, args=(rank,)) for rank in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        return numbers

    assert start({0: 0.0, 1: 0.5, 2: 0.0}) == {0: 4, 1: 4, 2: 4}  # rank 1 writes its name after rank 0 answered
    assert store.get("pixelmodels/start/left-by-a-killed-worker") == b"4"  # the stale name's answer: unread
    assert start({0: 0.3, 1: 0.0, 2: 0.0}) == {0: 5, 1: 5, 2: 5}


# -- real processes ------------------------------------------------------------
# Weights to 1e-6 across processes need fp32 (``--precision auto`` may pick bf16, which rounds each rank's gradients).
DETERMINISTIC = ("--deterministic", "--precision", "fp32", "--checkpoint-every-steps", "2", "--resume", "auto")


def torchrun(report, spec, command, launcher=("--standalone", "--nproc_per_node=2"), wait=True):
    """``torchrun LAUNCHER faults.py --report REPORT SPEC COMMAND``: the finished process, or the running one."""
    report.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, FAULTY, "--report", str(report), spec, *command]
    if not wait:
        return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def launchers():
    """The launchers a test started without waiting; any still running at its end gets SIGTERM (torchrun then
    stops its workers, which run in their own sessions and would outlive a SIGKILLed launcher)."""
    started = []
    yield started
    for launcher in started:
        if launcher.poll() is None:
            launcher.terminate()
            launcher.wait(timeout=60)


def ends(report):
    """``(rank, restart count, exit status, threads left)`` of each worker that ``faults.py --report`` ran, in
    the order of (rank, count); the threads are None for a worker that never returned from ``pixelmodels``."""
    found = []
    for path in report.glob("rank*.exit"):
        rank, attempt, _ = path.name.split(".")[:3]
        threads = path.with_suffix(".threads")
        found.append((int(rank[4:]), int(attempt[7:]), int(path.read_text()),
                      threads.read_text().split() if threads.exists() else None))
    return sorted(found, key=lambda end: end[:2])


def assert_clean(report, code=0, output="", failed=()):
    """Workers of ranks 0 and 1 exited with ``code``, by no signal, and ended their process group's threads;
    the others are exactly the ``failed`` ``(rank, count, status)``, a status None for any."""
    found = ends(report)
    done = [end for end in found if end[2] == code]
    assert sorted(rank for rank, *_ in done) == [0, 1], (found, output[-3000:])
    for rank, _, _, threads in done:
        assert threads is not None and not [t for t in threads if "gloo" in t], (rank, threads)
    others = [end[:3] for end in found if end[2] != code]
    assert len(others) == len(failed), (found, output[-3000:])
    for end, expected in zip(others, failed):
        assert all(e is None or e == x for x, e in zip(end, expected)), (found, output[-3000:])


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


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The data of these tests and the weights of 8 deterministic steps of one process, global batch 8."""
    folder = tmp_path_factory.mktemp("one")
    write_mnist(folder / "fmnist", "train", n=24, seed=1)
    write_mnist(folder / "fmnist", "test", n=8, seed=2)
    command = [sys.executable, "-m", "pixelmodels", *args(folder / "fmnist", folder / "run", 8, *DETERMINISTIC)]
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "fmnist", state(folder / "run")


def assert_same_weights(reference, out):
    got = state(out)
    assert got["step"] == reference["step"] == 8
    for key in ("model", "ema"):
        for name, tensor in reference[key].items():
            assert torch.allclose(tensor, got[key][name], atol=1e-6, rtol=0), (key, name)


def test_two_processes_end_cleanly_every_time(tmp_path, data):
    """The 2-process gloo path of issue 33, several times: every worker exits 0, by no signal, with no gloo
    thread left (the threads that aborted a worker at exit). The second run also saves on rank 0's clock after
    every step, which both workers must agree on; the third stops on an error on both workers (exit 2), which
    ends the process group as cleanly."""
    runs = [("", []), ("", ["--checkpoint-every-minutes", "1e-9"]), ("nan@2", ["--max-bad-steps", "1"])]
    for attempt, (spec, extra) in enumerate(runs):
        report = tmp_path / f"report{attempt}"
        done = torchrun(report, spec, args(data, tmp_path / f"run{attempt}", 3, "--seed", "5", *extra))
        output = done.stdout + done.stderr
        assert done.returncode == (1 if spec else 0), output[-3000:]
        assert_clean(report, code=2 if spec else 0, output=output)
    assert output.count("training stopped: the loss was not finite in 1 step") == 2


def test_a_worker_killed_under_torchrun_restarts_to_the_uninterrupted_weights(tmp_path, one_process):
    """``torchrun --max-restarts 1``: worker 1 is SIGKILLed after step 5 (the checkpoint of step 4 is written, the
    next is due at step 6); torchrun restarts both, ``--resume auto`` continues from step 4, both restarted
    workers end cleanly, and the run ends with the weights of one uninterrupted process."""
    data, reference = one_process
    out, report = tmp_path / "killed", tmp_path / "report"
    done = torchrun(report, "rank@1;kill@step:5", args(data, out, 8, *DETERMINISTIC),
                    ("--standalone", "--nproc_per_node=2", "--max-restarts", "1"))
    assert f"failed (exitcode: -{signal.SIGKILL}) local_rank: 1" in done.stderr, done.stderr[-3000:]
    assert "from step 4" in done.stderr  # the restarted workers continued from the checkpoint
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 0's first worker is stopped by torchrun (its status depends on where the stop found it).
    assert_clean(report, output=done.stderr, failed=[(0, 0, None), (1, 0, -signal.SIGKILL)])
    assert [attempt for _, attempt, status, _ in ends(report) if status == 0] == [1, 1]
    assert_same_weights(reference, out)
    assert_whole(out)


def test_sigterm_to_the_launcher_saves_and_the_same_command_completes(tmp_path, one_process, launchers):
    """SIGTERM to torchrun after step 5 (rank 0 waits there for it): both workers save and exit 143; the same
    command run again continues from step 5 and ends with the weights of one uninterrupted process."""
    data, reference = one_process
    out, command = tmp_path / "run", args(data, tmp_path / "run", 8, *DETERMINISTIC)
    launcher = torchrun(tmp_path / "stopped", "rank@0;pause@step:5", command, wait=False)
    launchers.append(launcher)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "stopped").glob("rank0.*.paused")) and launcher.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((tmp_path / "stopped").glob("rank0.*.paused")), launcher.communicate()[1][-3000:]
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    assert "Received 15 death signal, shutting down workers" in err, err[-3000:]
    assert_clean(tmp_path / "stopped", code=128 + signal.SIGTERM, output=err)
    assert f"SIGTERM received: checkpoint saved at step 5 in {out}" in err
    assert state(out)["step"] == 5
    assert_whole(out)
    done = torchrun(tmp_path / "again", "", command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "from step 5" in done.stderr
    assert_clean(tmp_path / "again", output=done.stderr)
    assert_same_weights(reference, out)
    assert_whole(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["plain", "worker-killed"])
def test_two_nodes_give_the_weights_of_one_process(tmp_path, one_process, launchers, kill):
    """The README's multi-node command on two "nodes" of this machine: two launchers, ``--nnodes=2
    --nproc_per_node=1`` with c10d rendezvous on 127.0.0.1, one worker each, global batch 8 (4 a worker); their
    weights are those of one process with batch 8. With ``--max-restarts 1`` and the worker of rank 1 SIGKILLed
    after step 5, its node restarts it (restart count 1) and the other node restarts its own with count 0: both
    must still meet in one start of the store (``distributed.start_number``) and continue from step 4."""
    data, reference = one_process
    launcher = ("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                "--rdzv-id=two-nodes", *(("--max-restarts", "1") if kill else ()))
    out, report = tmp_path / "run", tmp_path / "report"
    nodes = [torchrun(report, "rank@1;kill@step:5" if kill else "", args(data, out, 8, *DETERMINISTIC), launcher,
                      wait=False) for _ in range(2)]
    launchers.extend(nodes)
    err = "".join(node.communicate(timeout=300)[1] for node in nodes)
    assert [node.returncode for node in nodes] == [0, 0], err[-3000:]
    assert "over 2 processes" in err
    if kill:
        assert "from step 4" in err
        # The first worker of rank 0 is stopped by its node (its status depends on where the stop found it).
        assert_clean(report, output=err, failed=[(0, 0, None), (1, 0, -signal.SIGKILL)])
        assert sorted(attempt for _, attempt, status, _ in ends(report) if status == 0) == [0, 1]
    else:
        assert_clean(report, output=err)
    assert_same_weights(reference, out)
