"""Fault injection for the reliability tests: NaN losses and SIGKILLs at chosen points of training.

Never set in normal use. ``runs.build_trainer`` reads ``PIXELMODELS_FAULTS`` and hands the
``Faults`` to the Trainer, which calls the three hooks; ``Faults()`` (the Trainer's default) does nothing.
"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import torch

from pixelmodels.errors import PixelModelsError

ENV = "PIXELMODELS_FAULTS"


class Faults:
    """Test hooks from a spec such as ``PIXELMODELS_FAULTS``'s.

    ``nan@3,4`` makes the loss of the 3rd and 4th step attempts of this process NaN;
    ``kill@step:7`` SIGKILLs the process right after optimizer step 7;
    ``kill@save:2`` SIGKILLs it in the middle of writing the 2nd checkpoint of this process.
    Items are separated by ``;``.
    """

    def __init__(self, spec: str = ""):
        self.nan_attempts: set[int] = set()
        self.kill_step = self.kill_save = None
        self.attempts = self.saves = 0
        for item in filter(None, (part.strip() for part in spec.split(";"))):
            kind, _, arg = item.partition("@")
            if kind == "nan":
                self.nan_attempts = {int(a) for a in arg.split(",")}
            elif kind == "kill" and arg.startswith("step:"):
                self.kill_step = int(arg[5:])
            elif kind == "kill" and arg.startswith("save:"):
                self.kill_save = int(arg[5:])
            else:
                raise PixelModelsError(f"{ENV}: unknown test hook {item!r}")

    @classmethod
    def from_env(cls) -> "Faults":
        return cls(os.environ.get(ENV, ""))

    def poison(self, loss: torch.Tensor) -> torch.Tensor:
        """Called once per step attempt with its loss; NaN for the attempts ``nan@`` names."""
        self.attempts += 1
        return loss * float("nan") if self.attempts in self.nan_attempts else loss

    def after_step(self, step: int) -> None:
        """Called after every batch with the optimizer step count."""
        if self.kill_step == step:
            self.die()

    def mid_save(self, path: Path, state: dict) -> None:
        """Called before the training state is written to ``path``; for ``kill@save`` it writes half of
        the state's temporary file and dies there."""
        self.saves += 1
        if self.kill_save == self.saves:
            buf = io.BytesIO()
            torch.save(state, buf)
            with open(path.parent / f".{path.name}.killed.tmp", "wb") as f:
                f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
                f.flush()
                self.die()

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)
