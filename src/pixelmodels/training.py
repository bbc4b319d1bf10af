"""The training loop: optimizer, polyak (EMA) weights, the learning-rate schedule, mixed precision,
DistributedDataParallel, periodic evaluation and sample grids, logs and resumable checkpoints.

The loop is handed built objects; ``runs.build_trainer`` sets up the process, loads the data and builds
the model. The data order of epoch e is a permutation drawn from a generator seeded with (seed, e), so a
run resumed from a checkpoint taken in the middle of an epoch skips exactly the batches it already trained on.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import signal
import threading
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pixelmodels import checkpoint as ckpt
from pixelmodels import distributed
from pixelmodels.config import RunConfig, TrainConfig
from pixelmodels.settings import MAX_COUNT
from pixelmodels.distributed import World, all_reduce_sum, shard
from pixelmodels.errors import PixelModelsError, TrainingInterrupted
from pixelmodels.devices import autocast, resolve_precision
from pixelmodels.evaluation import evaluate, sample_grid
from pixelmodels.imageio import make_grid, save_grid
from pixelmodels.likelihoods import bits_per_dim


def lr_factor(train: TrainConfig, step: int) -> float:
    """The learning rate of ``step`` (0-based) over ``--lr``: a linear warm-up over ``warmup_steps`` (the first
    step at 1 / warmup_steps), then ``lr_decay ** n`` after n steps (exponential), or half a cosine, or a
    line, from 1 at the end of the warm-up to 0 at ``decay_steps`` (default ``max_steps``)."""
    warm = train.warmup_steps
    factor = min(1.0, (step + 1) / warm) if warm else 1.0
    if train.lr_schedule == "exponential":
        return factor * train.lr_decay ** step
    end = train.decay_steps or train.max_steps
    progress = min(1.0, max(0, step - warm) / max(1, end - warm))
    return factor * (0.5 * (1 + math.cos(math.pi * progress)) if train.lr_schedule == "cosine" else 1 - progress)


def lr_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig):
    """The schedule of ``train``: ``ExponentialLR`` for a plain exponential decay (as runs always had, so their
    checkpoints resume as they were), else ``LambdaLR`` over :func:`lr_factor`."""
    if train.lr_schedule == "exponential" and not train.warmup_steps:
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=train.lr_decay)
    if train.lr_schedule != "exponential" and not (train.decay_steps or train.max_steps):
        raise PixelModelsError(f"--lr-schedule {train.lr_schedule}: the learning rate decays to 0 at --decay-steps "
                               "(default --max-steps); give either")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, train))


class EMA:
    """Polyak average of a model's weights: ``ema = d * ema + (1 - d) * weights``.

    ``d`` is ``decay``; with ``warmup``, ``min(decay, (1 + n) / (10 + n))`` after n updates (TensorFlow's
    ExponentialMovingAverage ``num_updates`` rule), so the average forgets the initial weights within a few
    hundred steps. It starts from the initial weights, not from zero. Buffers are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(list(self.model.parameters()), params, 1.0 - self.current_decay())
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.updates += 1


class Trainer:
    """Trains ``model`` into the run directory ``out``; usually ``runs.build_trainer(run, out).fit()``.

    ``run`` is resolved (``run.model`` is ``model.config``; ``runs.resolve_train_config`` filled ``run.train``).
    Under ``torchrun`` every rank builds a Trainer:
    ``batch_size`` is the global batch, each rank trains on its part of it through DistributedDataParallel,
    and only rank 0 writes anything.
    """

    def __init__(self, run: RunConfig, model, train_set, test_set, out: str | Path, *, world: World = World(),
                 device: torch.device | None = None, resume: bool = False, progress: bool | None = None):
        self.out, self.world, self.progress = Path(out), world, progress
        self.device = device or next(model.parameters()).device
        t = dataclasses.replace(run.train, precision=resolve_precision(run.train.precision, self.device))
        self.run = run = dataclasses.replace(run, train=t)  # config.json records the precision that ran
        self.model, self.train_set, self.test_set = model, train_set, test_set
        self.channels_last = self.device.type == "cuda" if t.channels_last is None else t.channels_last
        if not resume:  # every rank initializes on the same whole first batch
            self.model.initialize_from_data(*self._batch(next(self.batches(0)), whole=True))
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = (torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=t.adam_betas) if t.optimizer == "adam"
                    else torch.optim.RMSprop(self.model.parameters(), lr=t.lr))
        self.sched = lr_scheduler(self.opt, t)
        self.scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
        self.ema = EMA(self.model, t.ema, warmup=t.ema_warmup)
        self.step = self.epoch = self.batch_in_epoch = self.bad_steps = 0
        if resume:
            counters = ckpt.restore_training_state(self.out / ckpt.STATE, self.model, self.ema.model, self.opt,
                                                   self.sched, scaler=self.scaler, device=self.device)
            self.step, self.epoch, self.batch_in_epoch, self.ema.updates = (counters[k] for k in ckpt.COUNTERS)
        self.net = self.model if not self.world.distributed else DistributedDataParallel(
            self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.eval_forward = self.ema.model
        if t.compile:
            self.net, self.eval_forward = torch.compile(self.net), torch.compile(self.ema.model)
        self.writer = None  # opened by fit(): constructing a Trainer writes nothing
        self.stop_signal = None

    def save(self) -> None:
        """Write config, EMA weights and the full training state, each atomically (rank 0 only)."""
        if not self.world.main:
            return
        counters = dict(zip(ckpt.COUNTERS, (self.step, self.epoch, self.batch_in_epoch, self.ema.updates)))
        state = ckpt.training_state(self.model, self.ema.model, self.opt, self.sched, counters, scaler=self.scaler,
                                    device=self.device)
        ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
        ckpt.save_weights(self.out / ckpt.WEIGHTS, self.ema.model.state_dict())
        ckpt.save_state(self.out / ckpt.STATE, state)

    # -- logging ------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append ``record`` to metrics.jsonl as strict JSON (a non-finite number is written null)."""
        if not self.world.main:
            return
        strict = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(strict, allow_nan=False) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    # -- the loop -----------------------------------------------------------
    def batches(self, epoch: int):
        """Index tensors of the global batches of ``epoch``, in the order fixed by (seed, epoch)."""
        t = self.run.train
        gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.train_set), generator=gen)
        return iter(perm.split(t.batch_size))

    def _batch(self, idx: torch.Tensor, whole: bool = False):
        """(x, y, cond) of this rank's part of a global batch (of all of it when ``whole``); y and cond are
        None when the model takes no labels or no condition."""
        idx = idx if whole else shard(idx, self.world)
        idx = idx.to(self.train_set.images.device)
        x = self.train_set.images[idx].to(self.device, non_blocking=True)
        if self.channels_last and not whole:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.train_set.labels[idx].to(self.device) if self.model.n_classes else None
        cond = self.train_set.cond[idx.cpu()].to(self.device) if self.model.cond_shape else None
        return x, y, cond

    def train_step(self, x, y, cond=None, n_global: int | None = None) -> float:
        """One optimizer step on this rank's images; returns the global batch's mean bits/dim.

        ``n_global`` is the size of the global batch (default: ``len(x)``). A non-finite loss changes no
        weight: the step is skipped and counted, and ``max_bad_steps`` of them in a row stop training. A step
        that fp16's gradient scaler skips is no bad step (the scaler is finding its scale), and moves neither
        the schedule, the EMA nor ``self.step``. Either way the batch is used up (the data order goes on):
        ``self.step`` counts optimizer updates, ``batch_in_epoch`` batches.
        """
        t = self.run.train
        n_global = n_global or len(x)
        self.model.train()
        with autocast(self.device, t.precision):
            params = self.net(x, y, cond)
        nll = self.model.head.nll(params.float(), x).sum(dim=(1, 2))
        # The sum over this rank's images, scaled so that DDP's gradient average is the global batch mean.
        loss = bits_per_dim(nll.sum() * self.world.size / n_global, math.prod(self.model.image_shape))
        bpd = all_reduce_sum(loss.detach(), self.world).item() / self.world.size
        if not math.isfinite(bpd):
            self.bad_steps += 1
            self.log({"step": self.step, "epoch": self.epoch, "bad_step": self.bad_steps, "train_bpd": bpd})
            if self.bad_steps >= t.max_bad_steps:
                raise PixelModelsError(
                    f"training stopped: the loss was not finite in {self.bad_steps} steps in a row "
                    f"(--max-bad-steps {t.max_bad_steps}) at step {self.step}; the weights were not updated by "
                    f"them and the last checkpoint in {self.out} is intact. Try a lower --lr or --precision fp32")
            return bpd
        self.bad_steps = 0
        self.opt.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        if self._optimizer_step():
            self.sched.step()
            self.ema.update(self.model)
            self.step += 1
        return bpd

    def _optimizer_step(self) -> bool:
        """``opt.step()``, through fp16's GradScaler; False when the scaler skipped it for inf/NaN gradients,
        which shows as a lower scale after ``update()`` (as Accelerate's ``optimizer_step_was_skipped`` tells)."""
        if self.scaler is None:
            self.opt.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(self.opt)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    def evaluate_and_sample(self) -> dict:
        """Test bits/dim (all ranks) and a sample grid (rank 0) from the EMA weights."""
        t = self.run.train
        bpd = evaluate(self.ema.model, self.test_set, t.eval_batch_size, self.device, t.eval_limit,
                       forward=self.eval_forward, precision=t.precision, world=self.world)
        record = {"step": self.step, "epoch": self.epoch, "test_bpd": bpd}
        self.log(record)
        if t.n_samples > 0 and self.world.main and not self.model.n_codes:  # a grid of images only
            images, nrow = sample_grid(self.ema.model, t.n_samples, t.seed, cond=self.test_set.cond)
            save_grid(images, self.out / "samples" / f"step_{self.step:07d}.png", self.model.n_bits, nrow)
            if self.writer is not None:
                grid = make_grid(images, self.model.n_bits, nrow)
                self.writer.add_image("samples", grid, self.step, dataformats="HWC")
        return record

    def _on_signal(self, signum, frame) -> None:
        """SIGTERM and SIGINT set a flag; the loop saves a checkpoint at the end of the step and stops."""
        self.stop_signal = signum

    def _stop_if_signalled(self) -> None:
        if distributed.any_rank(self.stop_signal is not None, self.world, self.device):
            self.save()
            name = signal.Signals(self.stop_signal or signal.SIGTERM).name
            raise TrainingInterrupted(f"{name} received: checkpoint saved at step {self.step} in {self.out}; "
                                      f"continue with --resume {self.out}", self.stop_signal or signal.SIGTERM)

    def fit(self, command: list[str] | None = None) -> dict:
        """Train until ``epochs`` (or ``max_steps`` / ``max_minutes``); return the last evaluation record.
        ``command``, the command line that started this session, is appended to ``command.txt``."""
        t = self.run.train
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
            if command is not None:
                with open(self.out / "command.txt", "a") as f:
                    f.write(" ".join(command) + "\n")
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:  # tensorboard is optional
                pass
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._loop(t)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if self.writer is not None:
                self.writer.close()

    def _loop(self, t: TrainConfig) -> dict:
        n_batches = math.ceil(len(self.train_set) / t.batch_size)
        record = None
        self.train_seconds = 0.0

        def done() -> bool:
            return (t.max_steps is not None and self.step >= t.max_steps) or (
                t.max_minutes is not None and self.train_seconds >= 60 * t.max_minutes)

        while self.epoch < t.epochs and not done():
            of = f"/{t.epochs}" if t.epochs < MAX_COUNT else ""  # no limit of epochs: --max-steps is the limit
            bar = tqdm(total=n_batches, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}{of}",
                       disable=(None if self.progress is None else not self.progress) if self.world.main else True,
                       leave=False, dynamic_ncols=True)
            running, tick = None, time.perf_counter()
            for b, idx in enumerate(self.batches(self.epoch)):
                if b < self.batch_in_epoch:
                    continue
                start, step = time.perf_counter(), self.step
                bpd = self.train_step(*self._batch(idx), n_global=len(idx))
                self.train_seconds += time.perf_counter() - start
                self.batch_in_epoch = b + 1
                stepped = self.step > step  # not after a non-finite loss or a step fp16's scaler skipped
                if math.isfinite(bpd):
                    running = bpd if running is None else 0.98 * running + 0.02 * bpd
                    bar.set_postfix(bpd=f"{running:.3f}")
                bar.update(1)
                if stepped and self.step % t.log_every == 0:
                    now = time.perf_counter()
                    self.log({"step": self.step, "epoch": self.epoch, "train_bpd": bpd,
                              "lr": self.sched.get_last_lr()[0],
                              "images_per_sec": t.log_every * len(idx) / max(now - tick, 1e-9)})
                    tick = now
                if stepped and t.checkpoint_every_steps and self.step % t.checkpoint_every_steps == 0:
                    self.save()
                if stepped and t.eval_every_steps and self.step % t.eval_every_steps == 0:
                    record = self.evaluate_and_sample()
                self._stop_if_signalled()
                if done():
                    break
            bar.close()
            if self.batch_in_epoch >= n_batches:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if self.epoch % t.eval_every == 0 or self.epoch == t.epochs:
                    record = self.evaluate_and_sample()
                self.save()
        if record is None or record["step"] != self.step:
            record = self.evaluate_and_sample()
        self.save()
        return record
