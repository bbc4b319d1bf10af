"""A training session: what a run says, shows and writes around ``Trainer.fit``.

The start line (what runs and which limit stops it), the progress bar, TensorBoard, the sample grids,
``command.txt`` and the signal handlers (:class:`RunCallbacks`), and :func:`run_training`, which runs a
Trainer inside them.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
from pathlib import Path

from tqdm.auto import tqdm

from pixelmodels import devices
from pixelmodels.app.samples import sample_grid
from pixelmodels.config import TrainConfig
from pixelmodels.data.datasets import describe_data
from pixelmodels.errors import TrainingInterrupted
from pixelmodels.imageio import make_grid, save_grid
from pixelmodels.settings import MAX_COUNT
from pixelmodels.training import Callbacks, Trainer


def stop_rule(train: TrainConfig, n_train: int) -> str:
    """Which limit of a resolved ``train`` ends training over ``n_train`` images, in words: the one set
    (``--epochs``, ``--max-steps``, ``--max-minutes``), or, when several are, the first reached."""
    limited = train.epochs < MAX_COUNT  # else --max-steps or --max-minutes bounds the training
    batches = math.ceil(n_train / train.batch_size) * train.epochs
    epochs = f"{train.epochs:,} epoch{'s' * (train.epochs != 1)}, {batches:,} batch{'es' * (batches != 1)}"
    minutes = None if train.max_minutes is None else \
        f"{train.max_minutes:g} minute{'s' * (train.max_minutes != 1)} (--max-minutes, evaluation included)"
    if sum((limited, train.max_steps is not None, minutes is not None)) < 2:
        return (f"training runs {minutes}" if minutes else f"training runs to step {train.max_steps:,} (--max-steps)"
                if train.max_steps is not None else f"training runs {epochs} (--epochs)")
    if limited and (train.max_steps is None or batches < train.max_steps):
        line = f"training stops after {epochs} (--epochs" + \
            ("" if train.max_steps is None else f"; --max-steps is {train.max_steps:,}") + ")"
    else:
        line = (f"training stops after {train.max_steps:,} step{'s' * (train.max_steps != 1)} "
                f"(--max-steps{f'; --epochs {train.epochs:,} is {batches:,} batches' if limited else ''})")
    return line + ("" if minutes is None else f", or after {minutes} if that comes first")


def start_line(trainer: Trainer, auto_precision: bool = False) -> str:
    """What a training session runs, in one line: the model, its preset and size; the data and how much of it;
    device, precision (with ``auto_precision``, the precision ``--precision auto`` chose, and why) and batch;
    where it starts; which limit stops it (:func:`stop_rule`)."""
    run, t, train_set, test_set = trainer.run, trainer.run.train, trainer.train_set, trainer.test_set
    classes = f", conditional on {run.model.n_classes} classes" if run.model.n_classes else ""
    evaluated = f" ({t.eval_limit:,} evaluated)" if t.eval_limit and t.eval_limit < len(test_set) else ""
    processes = f" over {trainer.world.size} processes" if trainer.world.distributed else ""
    start = f", from step {trainer.step:,} (epoch {trainer.epoch + 1:,})" if trainer.step or trainer.epoch else ""
    precision = t.precision if not auto_precision else \
        f"{t.precision} (--precision auto: {devices.auto_precision(trainer.device)[1]})"
    return (f"{run.model.name} (preset {run.model.preset}{classes}, {trainer.model.n_parameters():,} parameters) "
            f"on {run.data.dataset}: {len(train_set):,} train and {len(test_set):,}{evaluated} test "
            f"{describe_data(train_set)}; {trainer.device}, {precision}, batch {t.batch_size}{processes}{start}; "
            f"{stop_rule(t, len(train_set))}")


class RunCallbacks(Callbacks):
    """What a training run shows and writes besides the Trainer's metrics and checkpoints.

    On the main process: a progress bar (``progress``; None: on a terminal only), TensorBoard scalars and sample
    images (where tensorboard is installed), and at each evaluation a grid of ``n_samples`` samples of the EMA
    weights (default: the run's ``--n-samples``; per class, rounded up, for a conditional model; 0: none),
    ``nrow`` per row (default: a row per class, else about square), written to ``grid`` in the run directory.
    On every process: SIGTERM or SIGINT stops training with a checkpoint. :meth:`session` opens and closes them.
    """

    def __init__(self, progress: bool | None = None, n_samples: int | None = None, nrow: int | None = None,
                 grid: str = "samples/step_{step:07d}.png"):
        self.progress, self.n_samples, self.nrow, self.grid = progress, n_samples, nrow, grid
        self.signal: int | None = None
        self.writer = self.bar = self.train_bpd = self.test_bpd = self.rate = None

    @contextlib.contextmanager
    def session(self, trainer: Trainer, command: list[str] | None = None):
        """Around ``trainer.fit(self)``: append ``command`` to ``command.txt``, open TensorBoard and the progress
        bar (main process), install the signal handlers (main thread); close and restore them after."""
        if trainer.world.main:
            trainer.out.mkdir(parents=True, exist_ok=True)
            if command is not None:
                with open(trainer.out / "command.txt", "a") as f:
                    f.write(" ".join(command) + "\n")
            self.writer, self.bar = tensorboard(trainer.out / "tensorboard"), progress_bar(trainer, self.progress)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            for opened in (self.bar, self.writer):
                if opened is not None:
                    opened.close()
            self.bar = self.writer = None

    def on_signal(self, signum, frame) -> None:
        """SIGTERM and SIGINT set a flag; training saves a checkpoint at the end of the step and stops."""
        self.signal = signum

    def should_stop(self, trainer: Trainer) -> bool:
        return self.signal is not None

    def on_step(self, trainer: Trainer, bpd: float, images: int, seconds: float) -> None:
        if self.bar is None:
            return
        if math.isfinite(bpd):
            self.train_bpd = bpd if self.train_bpd is None else 0.98 * self.train_bpd + 0.02 * bpd
        rate = images / max(seconds, 1e-9)
        self.rate = rate if self.rate is None else 0.9 * self.rate + 0.1 * rate
        test = "" if self.test_bpd is None else f", test {self.test_bpd:.3f}"
        loss = "-" if self.train_bpd is None else f"{self.train_bpd:.3f}"
        self.bar.set_postfix_str(f"loss {loss} bits/dim{test}, {self.rate:,.0f} images/s", refresh=False)
        self.bar.update(trainer.step - self.bar.n)

    def on_record(self, trainer: Trainer, record: dict) -> None:
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def on_evaluate(self, trainer: Trainer, record: dict) -> None:
        self.test_bpd = record["test_bpd"]
        self.write_grid(trainer)

    def write_grid(self, trainer: Trainer) -> Path | None:
        """A grid of samples of ``trainer``'s EMA weights at its step, also to TensorBoard; its path, or None
        (no samples, or code maps: a grid is of images)."""
        model, t = trainer.ema.model, trainer.run.train
        n = t.n_samples if self.n_samples is None else self.n_samples
        if not n or model.n_codes:
            return None
        images, nrow = sample_grid(model, n, t.seed, cond=trainer.test_set.cond)
        nrow = nrow or self.nrow
        path = save_grid(images, trainer.out / self.grid.format(step=trainer.step), model.n_bits, nrow)
        if self.writer is not None:
            self.writer.add_image("samples", make_grid(images, model.n_bits, nrow), trainer.step, dataformats="HWC")
        return path


def tensorboard(folder: Path):
    """A TensorBoard writer into ``folder``, or None where tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def progress_bar(trainer: Trainer, progress: bool | None):
    """A bar of ``trainer``'s optimizer steps, to the first limit of steps or epochs (no total under
    ``--max-minutes`` alone); None when ``progress`` is False, or None and stderr is no terminal."""
    t = trainer.run.train
    batches = math.ceil(len(trainer.train_set) / t.batch_size) * t.epochs if t.epochs < MAX_COUNT else None
    bar = tqdm(total=min(filter(None, (batches, t.max_steps)), default=None), initial=trainer.step, unit="step",
               desc="training", dynamic_ncols=True, leave=False, disable=None if progress is None else not progress)
    return None if bar.disable else bar


def run_training(trainer: Trainer, callbacks: RunCallbacks | None = None, command: list[str] | None = None) -> dict:
    """``trainer.fit`` with ``callbacks`` (default :class:`RunCallbacks`) in their session, ``command`` appended to
    ``command.txt``; returns the last evaluation record. Stopped by SIGTERM or SIGINT: ``TrainingInterrupted``
    (exit code 128 + the signal's number), saying how to continue."""
    callbacks = callbacks or RunCallbacks()
    with callbacks.session(trainer, command):
        record = trainer.fit(callbacks)
    if record is None:
        signum = callbacks.signal or signal.SIGTERM
        raise TrainingInterrupted(f"{signal.Signals(signum).name} received: checkpoint saved at step {trainer.step} "
                                  f"in {trainer.out}; continue with --resume {trainer.out}", signum)
    budget = trainer.budget
    if budget.seconds and budget.eval_seconds and budget.elapsed() > 1.05 * budget.seconds and trainer.world.main:
        print(f"note: training took {budget.elapsed() / 60:.1f} minutes of --max-minutes {budget.seconds / 60:g}: "
              f"one evaluation (test bits/dim and sample grid) took {budget.eval_seconds:.0f} s; --eval-limit and "
              "--n-samples shorten it", file=sys.stderr)
    return record
