"""The training loop: optimizer, polyak (EMA) weights, the learning-rate schedule, mixed precision,
DistributedDataParallel, periodic evaluation of test bits/dim, the metrics log and resumable checkpoints.

:func:`train_step` is one optimizer step on a batch (the benchmarks and examples call it too); the
:class:`Trainer` runs it over a dataset. The Trainer is handed built objects (``runs.build_trainer`` builds
them) and, to continue a run, the training state to start from; what a program shows or writes besides
metrics and checkpoints (progress, sample grids, TensorBoard), and when it stops early (signals), goes
through :class:`Callbacks`. The data order of epoch e is a permutation drawn from a generator seeded with
(seed, e), so a run resumed in the middle of an epoch skips exactly the batches it already trained on.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from pixelmodels import checkpoint as ckpt
from pixelmodels.config import RunConfig, TrainConfig
from pixelmodels.devices import autocast, resolve_precision
from pixelmodels.distributed import World, all_reduce_sum, shard
from pixelmodels.errors import PixelModelsError
from pixelmodels.evaluation import evaluate
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


# -- one step ---------------------------------------------------------------------------------------------------
def perturb(x: torch.Tensor, rate: float, n_values: int, generator: torch.Generator, n_global: int | None = None,
            rows: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` with each value, independently with probability ``rate``, replaced by one drawn uniformly from
    ``0..n_values - 1``: the perturbed inputs a background model learns from (Ren et al. 2019, "mutations").

    Args:
        x: integer images (B, C, H, W) (or code maps).
        rate: the probability of each value to be replaced, in [0, 1).
        n_values: 2**n_bits for images, n_codes for code maps.
        generator: a CPU generator: the same seed gives the same perturbation.
        n_global, rows: ``x`` is the rows ``rows`` of a batch of ``n_global``; the draws are the whole batch's,
            so a rank's part is perturbed as it would be in one process (default: ``x`` is the whole batch).
    """
    n_global = len(x) if n_global is None else n_global
    shape = (n_global, *x.shape[1:])
    replace = torch.rand(shape, generator=generator) < rate
    values = torch.randint(0, n_values, shape, generator=generator, dtype=x.dtype)
    if rows is not None:
        replace, values = replace[rows], values[rows]
    return torch.where(replace.to(x.device), values.to(x.device), x)


def training_loss(model, x, y=None, cond=None, *, net=None, precision: str = "fp32", world: World = World(),
                  n_global: int | None = None) -> torch.Tensor:
    """The loss of a batch: its mean bits/dim, a float32 scalar with gradients.

    ``net(x, y, cond)`` runs the network (default ``model``; a DistributedDataParallel or compiled wrapper of
    it) under ``precision``'s autocast; the head's NLL is taken in float32. Under torchrun ``x`` is this rank's
    part of a global batch of ``n_global`` images (default ``len(x)``): the loss is its sum over the global
    batch's size, times the world size, so that DDP's gradient average is the global batch's mean.
    """
    with autocast(x.device, precision):
        params = (model if net is None else net)(x, y, cond)
    nll = model.head.nll(params.float(), x).sum(dim=(1, 2))  # (B,) nats
    return bits_per_dim(nll.sum() * world.size / (n_global or len(x)), math.prod(model.image_shape))


def optimizer_step(optimizer: torch.optim.Optimizer, scaler=None) -> bool:
    """``optimizer.step()``, through fp16's GradScaler; False when the scaler skipped it for inf/NaN gradients,
    which shows as a lower scale after ``update()`` (as Accelerate's ``optimizer_step_was_skipped`` tells)."""
    if scaler is None:
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale


def train_step(model, x, y=None, cond=None, *, optimizer: torch.optim.Optimizer, net=None, precision: str = "fp32",
               scaler=None, grad_clip: float = 0.0, world: World = World(), n_global: int | None = None
               ) -> tuple[float, bool]:
    """One optimizer step of ``model`` on a batch of its inputs ``x`` (with labels ``y`` and condition ``cond``
    where it takes them): :func:`training_loss`, backward, gradient clipping to norm ``grad_clip`` (0: none),
    ``optimizer.step()`` (through ``scaler``, fp16's GradScaler, where given).

    Returns (the global batch's mean bits/dim, whether the optimizer stepped). A non-finite loss changes nothing
    (no backward, no step); fp16's scaler skips the step for inf/NaN gradients. Either way: (loss, False).
    """
    model.train()
    loss = training_loss(model, x, y, cond, net=net, precision=precision, world=world, n_global=n_global)
    bpd = all_reduce_sum(loss.detach(), world).item() / world.size
    if not math.isfinite(bpd):
        return bpd, False
    optimizer.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return bpd, optimizer_step(optimizer, scaler)


# -- the loop ---------------------------------------------------------------------------------------------------
class Callbacks:
    """The Trainer's events, for the program around it; this base does nothing. ``should_stop`` is asked on
    every process (training stops when one says so), the others are called on the main one only."""

    def on_step(self, trainer: Trainer, bpd: float, images: int, seconds: float) -> None:
        """After each batch: its bits/dim (not finite for a skipped step), its number of images, its seconds."""

    def on_record(self, trainer: Trainer, record: dict) -> None:
        """Each record as it is appended to ``metrics.jsonl``."""

    def on_evaluate(self, trainer: Trainer, record: dict) -> None:
        """After each evaluation (``record`` holds ``test_bpd``) of the EMA weights, ``trainer.ema.model``."""

    def should_stop(self, trainer: Trainer) -> bool:
        """Asked after every batch, its checkpoint and its evaluation: True saves a checkpoint and stops."""
        return False


class Budget:
    """``--max-minutes``: the wall-clock seconds of a session, evaluations, sample grids and checkpoints included.

    An evaluation that is due runs only once a tenth of the budget, and nine times the last evaluation's
    duration, have passed since the previous one ended; the first runs at a tenth of the budget whether due or
    not, which times the final one. Training stops when the next step, the final evaluation and a checkpoint
    (each as long as the last one took) would no longer fit. Without a limit, every due evaluation runs.
    """

    def __init__(self, minutes: float | None):
        self.seconds = None if minutes is None else 60.0 * minutes
        self.start = self.last_end = time.perf_counter()
        self.eval_seconds: float | None = None
        self.save_seconds = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def may_evaluate(self) -> bool:
        if self.seconds is None:
            return True
        gap = max(self.seconds / 10, 9 * (self.eval_seconds or 0.0))
        return time.perf_counter() - self.last_end >= gap

    def must_evaluate(self) -> bool:
        return self.seconds is not None and self.eval_seconds is None and self.elapsed() >= self.seconds / 10

    def out_of_time(self, step_seconds: float) -> bool:
        reserve = step_seconds + (self.eval_seconds or 0.0) + self.save_seconds
        return self.seconds is not None and self.elapsed() + reserve > self.seconds

    def timed(self, fn, kind: str):
        """``fn()``, its seconds kept as the last ``kind`` ("eval" or "save") took."""
        start = time.perf_counter()
        result = fn()
        end = time.perf_counter()
        setattr(self, f"{kind}_seconds", end - start)
        if kind == "eval":
            self.last_end = end
        return result


class Trainer:
    """Trains ``model`` into the run directory ``out``: metrics.jsonl, config.json and checkpoints
    (``model.safetensors`` with the EMA weights, ``training_state.pt``); usually ``runs.build_trainer``.

    ``run`` is resolved (``run.model`` is ``model.config``; ``runs.resolve_train_config`` filled ``run.train``).
    A new run (no ``state``) starts with the model's data-dependent initialization on its first global batch;
    ``state`` (a ``training_state.pt`` as :func:`pixelmodels.checkpoint.load_state` reads it) continues one
    where it stopped. Under ``torchrun`` every rank builds a Trainer: ``batch_size`` is the global batch, each
    rank trains on its part of it through DistributedDataParallel, and only rank 0 writes anything. It sets
    no process-wide state: signal handlers, and on resume the random number generators' states, are the
    program's (``session.RunCallbacks``, ``runs.restore_rng``).
    """

    def __init__(self, run: RunConfig, model, train_set, test_set, out: str | Path, *, world: World = World(),
                 device: torch.device | None = None, state: dict | None = None):
        self.out, self.world = Path(out), world
        self.device = device or next(model.parameters()).device
        t = dataclasses.replace(run.train, precision=resolve_precision(run.train.precision, self.device))
        self.run = run = dataclasses.replace(run, train=t)  # config.json records the precision that ran
        self.model, self.train_set, self.test_set = model, train_set, test_set
        self.channels_last = self.device.type == "cuda" if t.channels_last is None else t.channels_last
        if state is None:  # every rank initializes on the same whole first batch
            self.model.initialize_from_data(*self.batch(next(self.batches(0)), whole=True))
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = (torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=t.adam_betas, weight_decay=t.weight_decay)
                    if t.optimizer == "adam" else
                    torch.optim.RMSprop(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay))
        self.sched = lr_scheduler(self.opt, t)
        self.scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
        self.ema = EMA(self.model, t.ema, warmup=t.ema_warmup)
        self.step = self.epoch = self.batch_in_epoch = self.bad_steps = 0
        if state is not None:
            self.load_state_dict(state)
        self.net = self.model if not self.world.distributed else DistributedDataParallel(
            self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.eval_forward = self.ema.model
        if t.compile:
            self.net, self.eval_forward = torch.compile(self.net), torch.compile(self.ema.model)
        self.callbacks = Callbacks()  # fit's, while it runs
        self.budget = Budget(t.max_minutes)  # fit's time budget (--max-minutes), started by fit
        self.saved_at = self.budget.start  # when the last checkpoint was written (--checkpoint-every-minutes)

    # -- state and checkpoints --------------------------------------------------
    def state_dict(self) -> dict:
        """What ``training_state.pt`` holds (:func:`pixelmodels.checkpoint.training_state`)."""
        counters = dict(zip(ckpt.COUNTERS, (self.step, self.epoch, self.batch_in_epoch, self.ema.updates)))
        return ckpt.training_state(self.model, self.ema.model, self.opt, self.sched, counters, scaler=self.scaler,
                                   device=self.device)

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: weights, EMA, optimizer, schedule, gradient scaler and counters. Its random
        number generator states are the program's to restore (they are process-wide). A state written before
        EMA updates were counted had one per optimizer step."""
        source = self.out / ckpt.STATE
        ckpt.load_state_dict_checked(self.model, state["model"], source)
        ckpt.load_state_dict_checked(self.ema.model, state["ema"], source)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.ema.updates = state.get("ema_updates", state["step"])

    def save(self) -> None:
        """Write config, EMA weights and the full training state, each atomically (rank 0 only)."""
        self.saved_at = time.perf_counter()
        if not self.world.main:
            return
        ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
        ckpt.save_weights(self.out / ckpt.WEIGHTS, self.ema.model.state_dict())
        ckpt.save_state(self.out / ckpt.STATE, self.state_dict())

    def log(self, record: dict) -> None:
        """Append ``record`` to metrics.jsonl as strict JSON (a non-finite number is written null), rank 0."""
        if not self.world.main:
            return
        strict = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(strict, allow_nan=False) + "\n")
        self.callbacks.on_record(self, record)

    # -- data and steps ---------------------------------------------------------
    def batches(self, epoch: int):
        """Index tensors of the global batches of ``epoch``, in the order fixed by (seed, epoch)."""
        t = self.run.train
        gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.train_set), generator=gen)
        return iter(perm.split(t.batch_size))

    def batch(self, idx: torch.Tensor, whole: bool = False):
        """(x, y, cond) of this rank's part of the global batch ``idx`` (of all of it when ``whole``) on the
        device; y and cond are None when the model takes no labels or no condition. With ``perturb``, the
        training batch (not the whole first batch that initializes) is perturbed as one global batch, with a
        generator seeded by (seed, epoch, batch), so the perturbation does not depend on the number of ranks
        and a resumed run repeats it."""
        t = self.run.train
        rows = torch.arange(len(idx)) if whole else shard(torch.arange(len(idx)), self.world)
        n_global, idx = len(idx), idx[rows].to(self.train_set.images.device)
        x = self.train_set.images[idx]
        if t.perturb and not whole:
            gen = torch.Generator().manual_seed((t.seed * 100_003 + self.epoch) * 1_000_003 + self.batch_in_epoch)
            x = perturb(x, t.perturb, self.model.n_codes or 2 ** self.model.n_bits, gen, n_global, rows)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and not whole:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.train_set.labels[idx].to(self.device) if self.model.n_classes else None
        cond = self.train_set.cond[idx.cpu()].to(self.device) if self.model.cond_shape else None
        return x, y, cond

    def train_step(self, x, y=None, cond=None, n_global: int | None = None) -> float:
        """:func:`train_step` on this rank's images with the run's settings, then the Trainer's part; returns
        the global batch's mean bits/dim.

        A non-finite loss is a bad step: logged and counted, and ``max_bad_steps`` of them in a row stop
        training. A step that fp16's gradient scaler skips is no bad step (the scaler is finding its scale).
        Neither moves the schedule, the EMA nor ``self.step``, which counts optimizer updates.
        """
        t = self.run.train
        bpd, stepped = train_step(self.model, x, y, cond, optimizer=self.opt, net=self.net, precision=t.precision,
                                  scaler=self.scaler, grad_clip=t.grad_clip, world=self.world, n_global=n_global)
        if not math.isfinite(bpd):
            self.bad_steps += 1
            self.log({"step": self.step, "epoch": self.epoch, "bad_step": self.bad_steps, "train_bpd": bpd})
            if self.bad_steps >= t.max_bad_steps:
                raise PixelModelsError(
                    f"training stopped: the loss was not finite in {self.bad_steps} "
                    f"step{'s' * (self.bad_steps != 1)} in a row "
                    f"(--max-bad-steps {t.max_bad_steps}) at step {self.step}; the weights were not updated by "
                    f"them and the last checkpoint in {self.out} is intact. Try a lower --lr or --precision fp32")
            return bpd
        self.bad_steps = 0
        if stepped:
            self.sched.step()
            self.ema.update(self.model)
            self.step += 1
        return bpd

    def evaluate(self) -> float:
        """Test bits/dim of the EMA weights in fp32, whatever the run trains in, so that a figure does not depend
        on the precision of training (every rank takes part)."""
        t = self.run.train
        return evaluate(self.ema.model, self.test_set, t.eval_batch_size, self.device, t.eval_limit,
                        forward=self.eval_forward, precision="fp32", world=self.world)

    def _evaluate(self) -> dict:
        record = {"step": self.step, "epoch": self.epoch, "test_bpd": self.evaluate()}
        self.log(record)
        if self.world.main:
            self.callbacks.on_evaluate(self, record)
        return record

    def _any(self, *flags: bool) -> list[bool]:
        """Each flag true on every rank where it is true on one, so that all ranks act together."""
        if not self.world.distributed:
            return list(flags)
        summed = all_reduce_sum(torch.tensor([float(f) for f in flags], device=self.device), self.world)
        return (summed > 0).tolist()

    def _checkpoint_time(self) -> bool:
        """``checkpoint_every_minutes`` have passed since the last checkpoint on rank 0's clock; every rank
        agrees, so that all save together."""
        minutes = self.run.train.checkpoint_every_minutes
        if minutes is None:
            return False
        due = self.world.main and time.perf_counter() - self.saved_at >= 60 * minutes
        return self._any(due)[0]

    # -- fit --------------------------------------------------------------------
    def fit(self, callbacks: Callbacks | None = None) -> dict | None:
        """Train until ``epochs``, ``max_steps`` or ``max_minutes`` (:class:`Budget`); return the last
        evaluation record, or None when ``callbacks.should_stop`` stopped training (after a checkpoint)."""
        self.callbacks = callbacks or Callbacks()
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
        self.budget = Budget(self.run.train.max_minutes)
        self.saved_at = self.budget.start  # for checkpoint_every_minutes
        try:
            return self._fit(self.budget)
        finally:
            self.callbacks = Callbacks()

    def _fit(self, budget: Budget) -> dict | None:
        t = self.run.train
        n_batches = math.ceil(len(self.train_set) / t.batch_size)
        if n_batches and self.batch_in_epoch >= n_batches:  # saved at an epoch's last batch, or at a larger batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        record, finished, tick = None, t.max_steps is not None and self.step >= t.max_steps, time.perf_counter()
        while self.epoch < t.epochs and n_batches and not finished:
            for idx in itertools.islice(self.batches(self.epoch), self.batch_in_epoch, None):
                start, step = time.perf_counter(), self.step
                bpd = self.train_step(*self.batch(idx), n_global=len(idx))
                seconds = time.perf_counter() - start
                stepped = self.step > step  # not after a non-finite loss or a step fp16's scaler skipped
                self.batch_in_epoch += 1
                if self.world.main:
                    self.callbacks.on_step(self, bpd, len(idx), seconds)
                if stepped and self.step % t.log_every == 0:
                    now = time.perf_counter()
                    self.log({"step": self.step, "epoch": self.epoch, "train_bpd": bpd,
                              "lr": self.sched.get_last_lr()[0],
                              "images_per_sec": t.log_every * len(idx) / max(now - tick, 1e-9)})
                    tick = now
                epoch_end = self.batch_in_epoch == n_batches
                if epoch_end:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if epoch_end or stepped and t.checkpoint_every_steps and self.step % t.checkpoint_every_steps == 0 \
                        or self._checkpoint_time():
                    budget.timed(self.save, "save")
                due = (epoch_end and (self.epoch % t.eval_every == 0 or self.epoch == t.epochs)) or \
                    (stepped and t.eval_every_steps and self.step % t.eval_every_steps == 0)
                may, must = (True, False) if budget.seconds is None else \
                    self._any(budget.may_evaluate(), budget.must_evaluate())
                if (due and may) or must:
                    record = budget.timed(self._evaluate, "eval")
                stop, out_of_time = self._any(self.callbacks.should_stop(self), budget.out_of_time(seconds))
                if stop:
                    self.save()
                    return None
                finished = out_of_time or (t.max_steps is not None and self.step >= t.max_steps)
                if finished:
                    break
        if record is None or record["step"] != self.step:
            record = self._evaluate()
        self.save()
        return record
