"""Fault injection for the reliability tests: NaN losses and SIGKILLs at chosen points of training.

``install(spec)`` patches the library in this process; run as a script, ``python tests/faults.py SPEC
ARGS...`` installs SPEC and runs ``pixelmodels ARGS...``. A spec is items separated by ``;``:

* ``nan@3,4``: the losses of the 3rd and 4th step attempts of this process are NaN;
* ``kill@step:7``: SIGKILL right after optimizer step 7;
* ``kill@save:2``: SIGKILL in the middle of writing the 2nd training state of this process;
* ``rank@1``: the other items apply to the torchrun worker of RANK 1 only.

Under torchrun no fault applies to a restarted worker (``TORCHELASTIC_RESTART_COUNT`` above 0): it runs clean.
"""

from __future__ import annotations

import io
import os
import signal
import sys

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


if __name__ == "__main__":
    from pixelmodels.app.cli import main

    install(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
