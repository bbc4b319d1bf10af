"""Fault injection for the reliability tests: NaN losses and SIGKILLs at chosen points of training.

``install(spec)`` patches the library in this process; run as a script, ``python tests/faults.py SPEC
ARGS...`` installs SPEC and runs ``pixelmodels ARGS...``, and ``python tests/faults.py --report DIR SPEC ARGS...``
runs that in a child process and writes what a test checks of each worker into DIR (:func:`report`). A spec is
items separated by ``;`` (an empty spec is no fault):

* ``nan@3,4``: the losses of the 3rd and 4th step attempts of this process are NaN;
* ``kill@step:7``: SIGKILL right after optimizer step 7;
* ``kill@save:2``: SIGKILL in the middle of writing the 2nd training state of this process;
* ``pause@step:5``: after optimizer step 5, wait for SIGTERM or SIGINT (with ``--report``, first write
  ``rank{RANK}.attempt{N}.{pid}.paused`` there: the moment to send it);
* ``rank@1``: the other items apply to the torchrun worker of RANK 1 only.

Under torchrun no fault applies to a restarted worker (``TORCHELASTIC_RESTART_COUNT`` above 0): it runs clean.
On several nodes, a node restarts its workers for another node's failure with its count unchanged: a fault
meant for the failed node's rank should name that rank (``rank@R``), so that it does not apply again.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from pixelmodels import checkpoint
from pixelmodels.app.session import RunCallbacks
from pixelmodels.training import Trainer


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str, patch=None) -> None:
    """Patch the Trainer, the run's callbacks and the checkpoint writer for ``spec``; ``patch(obj, name, value)``
    sets an attribute (pytest's ``monkeypatch.setattr``; default: ``setattr`` for the life of the process)."""
    patch = patch or setattr
    items = [part.strip() for part in spec.split(";") if part.strip()]
    ranks = [item.partition("@")[2] for item in items if item.startswith("rank@")]
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) or ranks and os.environ.get("RANK", "0") not in ranks:
        return
    for item in items:
        kind, _, arg = item.partition("@")
        if kind == "rank":
            continue
        if kind == "nan":
            poison_attempts(patch, {int(a) for a in arg.split(",")})
        elif kind == "kill" and arg.startswith("step:"):
            kill_after_step(patch, int(arg[5:]))
        elif kind == "kill" and arg.startswith("save:"):
            kill_mid_save(patch, int(arg[5:]))
        elif kind == "pause" and arg.startswith("step:"):
            pause_after_step(patch, int(arg[5:]))
        else:
            raise ValueError(f"unknown fault {item!r}")


def poison_attempts(patch, attempts: set[int]) -> None:
    """The loss of the given step attempts (1-based) is NaN: the head's NLL is, for that step."""
    train_step, count = Trainer.train_step, [0]

    def poisoned(self, *args, **kwargs):
        count[0] += 1
        if count[0] not in attempts:
            return train_step(self, *args, **kwargs)
        head, nll = self.model.head, self.model.head.nll
        head.nll = lambda *a: nll(*a) * float("nan")
        try:
            return train_step(self, *args, **kwargs)
        finally:
            del head.nll

    patch(Trainer, "train_step", poisoned)


def kill_after_step(patch, step: int) -> None:
    """SIGKILL once the optimizer step count reaches ``step`` (asked after every batch, as for a signal)."""
    should_stop = RunCallbacks.should_stop

    def checked(self, trainer):
        if trainer.step == step:
            die()
        return should_stop(self, trainer)

    patch(RunCallbacks, "should_stop", checked)


def pause_after_step(patch, step: int) -> None:
    """Once the optimizer step count reaches ``step``, wait for a signal (the run's handlers note it) and let
    the run stop on it; ``FAULTS_REPORT.paused`` says that the wait began."""
    should_stop = RunCallbacks.should_stop

    def paused(self, trainer):
        if trainer.step == step and self.signal is None:
            if os.environ.get("FAULTS_REPORT"):
                Path(os.environ["FAULTS_REPORT"] + ".paused").touch()
            while self.signal is None:
                time.sleep(0.02)
        return should_stop(self, trainer)

    patch(RunCallbacks, "should_stop", paused)


def kill_mid_save(patch, save: int) -> None:
    """At the ``save``-th training state written, write half of its temporary file and SIGKILL."""
    save_state, count = checkpoint.save_state, [0]

    def half_then_die(path, state):
        count[0] += 1
        if count[0] != save:
            return save_state(path, state)
        buf = io.BytesIO()
        torch.save(state, buf)
        with open(path.parent / f".{path.name}.killed.tmp", "wb") as f:
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            die()

    patch(checkpoint, "save_state", half_then_die)


def native_threads() -> list[str]:
    """The names of this process's threads other than the main one (Linux; empty elsewhere)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    return sorted((task / "comm").read_text().strip() for task in tasks.iterdir() if task.name != str(os.getpid()))


def report(folder: Path, argv: list[str]) -> int:
    """Run ``python faults.py ARGV`` as a child and write ``rank{RANK}.attempt{N}.{pid}.exit``: the child's exit
    status as the parent sees it (negative: the signal that ended it, even one in the interpreter's teardown),
    beside the child's ``.threads`` (its threads once ``pixelmodels`` returned). This process then ends as the
    child did, so that torchrun sees the same. A signal torchrun sends reaches the child: it goes to the
    process group. ``N`` is the node's restart count: on several nodes, a node restarts its workers when another
    node's failed, with its own count unchanged."""
    name = (f"rank{os.environ.get('RANK', '0')}.attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
            f".{os.getpid()}")
    child = subprocess.Popen([sys.executable, __file__, *argv], env=dict(os.environ, FAULTS_REPORT=str(folder / name)))
    for s in (signal.SIGTERM, signal.SIGINT):  # after the start: the child keeps its own dispositions
        signal.signal(s, signal.SIG_IGN)
    code = child.wait()
    (folder / f"{name}.exit").write_text(str(code))
    if code < 0:  # the same signal, with its default action (SIGKILL has no other)
        if code != -signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        sys.exit(report(Path(sys.argv[2]), sys.argv[3:]))
    from pixelmodels.app.cli import main

    install(sys.argv[1])
    code = main(sys.argv[2:])
    if os.environ.get("FAULTS_REPORT"):
        Path(os.environ["FAULTS_REPORT"] + ".threads").write_text("\n".join(native_threads()))
    sys.exit(code)
