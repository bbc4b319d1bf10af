"""The training loop: optimizer, polyak (EMA) weights, per-step learning-rate decay,
periodic evaluation and sample grids, logs and resumable checkpoints.

The data order of epoch e is a permutation drawn from a generator seeded with
(seed, e), so a run resumed from a checkpoint taken in the middle of an epoch
skips exactly the batches it already trained on.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pixelmodels import checkpoint as ckpt
from pixelmodels import distributed
from pixelmodels.distributed import World, all_reduce_sum, shard
from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pixelmodels.data import load_dataset
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import make_grid, save_grid
from pixelmodels.models.registry import build_model, get_spec
from pixelmodels.sampling import sample


class EMA:
    """Polyak average of a model's weights: ``ema = decay * ema + (1 - decay) * weights``.

    It starts from the initial weights (not from zero), so it is usable from the
    first step. Buffers are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(list(self.model.parameters()), params, 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; refuse devices that are not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PixelModelsError(f"--device: expected cpu, cuda or cuda:N, found {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PixelModelsError(f"--device: {name} asked for, but no CUDA device is available here")
    return device


def resolve_train_config(train: TrainConfig, model_name: str) -> TrainConfig:
    """Fill the settings left at None with the model family's preferred values."""
    defaults = get_spec(model_name).train_defaults
    filled = {k: (defaults.get(k) if v is None and k in defaults else v) for k, v in dataclasses.asdict(train).items()}
    if filled["adam_betas"] is not None:
        filled["adam_betas"] = tuple(filled["adam_betas"])
    if filled["grad_clip"] is None:
        filled["grad_clip"] = 0.0
    cfg = TrainConfig(**filled)
    if cfg.optimizer not in ("adam", "rmsprop"):
        raise PixelModelsError(f"--optimizer: expected adam or rmsprop, found {cfg.optimizer!r}")
    if cfg.batch_size < 1 or cfg.epochs < 0:
        raise PixelModelsError(f"--batch-size / --epochs: expected positive numbers, found {cfg.batch_size} / {cfg.epochs}")
    if not 0.0 <= cfg.ema < 1.0:
        raise PixelModelsError(f"--ema: expected a decay in [0, 1), found {cfg.ema}")
    if cfg.checkpoint_every_steps is not None and cfg.checkpoint_every_steps < 1:
        raise PixelModelsError(f"--checkpoint-every-steps: expected a positive number of steps, "
                               f"found {cfg.checkpoint_every_steps}")
    if cfg.max_bad_steps < 1:
        raise PixelModelsError(f"--max-bad-steps: expected at least 1, found {cfg.max_bad_steps}")
    return cfg


def load_data(data: DataConfig, split: str):
    return load_dataset(data.dataset, split, root=data.data_dir, n_bits=data.n_bits,
                        image_size=data.image_size, channels=data.channels)


def resolve_model_config(model: ModelConfig, dataset, conditional: bool) -> ModelConfig:
    """Take the image shape, depth and classes from the dataset."""
    if conditional and not dataset.n_classes:
        raise PixelModelsError(f"--conditional: dataset {dataset.name!r} has no class labels")
    return dataclasses.replace(model, image_shape=tuple(dataset.image_shape), n_bits=dataset.n_bits,
                               n_classes=dataset.n_classes if conditional else None)


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 256, device=None, limit: int | None = None, *,
             forward=None, precision: str = "fp32", world: World = World()) -> float:
    """Bits per dimension of ``model`` on ``dataset`` (the first ``limit`` images), summed in float64.

    ``forward`` replaces ``model(x, y)`` (a compiled copy, say); the network runs under ``precision``'s
    autocast and the head in float32. Under torchrun each rank scores its part and the sums are added.
    """
    device = device or next(model.parameters()).device
    forward = model if forward is None else forward
    n = len(dataset) if limit is None else min(limit, len(dataset))
    mine = shard(torch.arange(n), world)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(mine), batch_size):
        idx = mine[start:start + batch_size]
        x = dataset.images[idx].to(device)
        y = dataset.labels[idx].to(device) if model.n_classes else None
        with autocast(device, precision):
            params = forward(x, y)
        total += model.head.nll(params.float(), x).double().sum()
    total = all_reduce_sum(total, world)
    return total.item() / (n * math.prod(model.image_shape) * math.log(2))


def sample_grid(model, n_samples: int, seed: int, batch_size: int | None = None):
    """Samples for a grid: one row per class for a conditional model. Returns (images, images per row)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    if model.n_classes:
        per_class = max(1, math.ceil(n_samples / model.n_classes))
        y = torch.arange(model.n_classes, device=device).repeat_interleave(per_class)
        return sample(model, len(y), y, generator=gen, batch_size=batch_size), per_class
    return sample(model, n_samples, generator=gen, batch_size=batch_size), None


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise PixelModelsError(f"--precision: expected one of {sorted(PRECISIONS)}, found {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise PixelModelsError("--precision fp16: needs a CUDA device (it trains with a gradient scaler); "
                               f"this run is on {device.type}: use --precision bf16 or fp32")


def autocast(device: torch.device, precision: str):
    """The mixed-precision context of ``precision`` (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class TrainingInterrupted(PixelModelsError):
    """SIGTERM or SIGINT arrived; a checkpoint was written before stopping."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class Faults:
    """Test hooks, from the environment variable ``PIXELMODELS_FAULTS`` (never set in normal use).

    ``nan@3,4`` makes the loss of the 3rd and 4th step attempts of this process NaN;
    ``kill@step:7`` SIGKILLs the process right after optimizer step 7;
    ``kill@save:2`` SIGKILLs it in the middle of writing the 2nd checkpoint of this process.
    Items are separated by ``;``.
    """

    def __init__(self, spec: str = ""):
        self.nan_attempts: set[int] = set()
        self.kill_step = self.kill_save = None
        for item in filter(None, (part.strip() for part in spec.split(";"))):
            kind, _, arg = item.partition("@")
            if kind == "nan":
                self.nan_attempts = {int(a) for a in arg.split(",")}
            elif kind == "kill" and arg.startswith("step:"):
                self.kill_step = int(arg[5:])
            elif kind == "kill" and arg.startswith("save:"):
                self.kill_save = int(arg[5:])
            else:
                raise PixelModelsError(f"PIXELMODELS_FAULTS: unknown test hook {item!r}")

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class Trainer:
    """Trains one run directory; ``Trainer(run, out).fit()``.

    Under ``torchrun`` every rank builds a Trainer: ``batch_size`` is the global batch, each rank trains
    on its part of it through DistributedDataParallel, and only rank 0 writes anything.
    """

    def __init__(self, run: RunConfig, out: str | Path, resume: bool = False, progress: bool | None = None):
        self.out = Path(out)
        self.progress = progress
        device = resolve_device(run.train.device)
        self.world = distributed.init(device)
        self.device = distributed.local_device(device, self.world)
        check_precision(run.train.precision, self.device)
        if run.train.batch_size % self.world.size:
            raise PixelModelsError(f"--batch-size: the global batch {run.train.batch_size} does not divide among "
                                   f"{self.world.size} processes; use a multiple of {self.world.size}")
        if run.train.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(run.train.seed)  # initialization, dropout
        self.train_set = self._on_device(load_data(run.data, "train"))
        self.test_set = load_data(run.data, "test")
        model_cfg = resolve_model_config(run.model, self.train_set, run.train.conditional)
        self.model = build_model(model_cfg).to(self.device)
        self.run = RunConfig(model=self.model.config, data=run.data,
                             train=resolve_train_config(run.train, run.model.name))
        t = self.run.train
        self.channels_last = self.device.type == "cuda" if t.channels_last is None else t.channels_last
        if not resume:  # every rank initializes on the same whole first batch
            self.model.initialize_from_data(*self._batch(next(self.batches(0)), whole=True))
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if t.optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=t.adam_betas)
        else:
            self.opt = torch.optim.RMSprop(self.model.parameters(), lr=t.lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=t.lr_decay)
        self.scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
        self.ema = EMA(self.model, t.ema)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.bad_steps = self.attempts = self.saves = 0
        self.faults = Faults(os.environ.get("PIXELMODELS_FAULTS", ""))
        if resume:
            self._restore()
        self.net = self.model
        if self.world.distributed:
            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                               else None)
        self.eval_forward = self.ema.model
        if t.compile:
            self.net, self.eval_forward = torch.compile(self.net), torch.compile(self.ema.model)
        self.writer = None  # opened by fit(): constructing a Trainer writes nothing
        self.stop_signal = None

    def _on_device(self, dataset):
        """Keep a small dataset whole on the GPU (uint8); indexing it then costs no transfer."""
        if self.device.type == "cuda" and dataset.images.numel() < 2**31:
            dataset.images, dataset.labels = dataset.images.to(self.device), dataset.labels.to(self.device)
        return dataset

    # -- checkpoints --------------------------------------------------------
    def _restore(self) -> None:
        src = self.out / ckpt.STATE
        state = ckpt.load_state(src, map_location=self.device)
        ckpt.load_state_dict_checked(self.model, state["model"], src)
        ckpt.load_state_dict_checked(self.ema.model, state["ema"], src)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        torch.set_rng_state(state["rng_cpu"].cpu())
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)

    def save(self) -> None:
        """Write config, EMA weights and the full training state, each atomically (rank 0 only)."""
        if not self.world.main:
            return
        state = {
            "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "rng_cpu": torch.get_rng_state(),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        self.saves += 1
        ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
        ckpt.save_weights(self.out / ckpt.WEIGHTS, self.ema.model.state_dict())
        if self.faults.kill_save == self.saves:  # die half way through writing the state's temporary file
            buf = io.BytesIO()
            torch.save(state, buf)
            with open(self.out / f".{ckpt.STATE}.killed.tmp", "wb") as f:
                f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
                f.flush()
                self.faults.die()
        ckpt.save_state(self.out / ckpt.STATE, state)

    # -- logging ------------------------------------------------------------
    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.world.main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
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
        """(x, y) of this rank's part of a global batch (of all of it when ``whole``)."""
        idx = idx if whole else shard(idx, self.world)
        idx = idx.to(self.train_set.images.device)
        x = self.train_set.images[idx].to(self.device, non_blocking=True)
        if self.channels_last and not whole:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.train_set.labels[idx].to(self.device) if self.model.n_classes else None
        return x, y

    def train_step(self, x, y, n_global: int | None = None) -> float:
        """One optimizer step on this rank's images; returns the global batch's mean bits/dim.

        ``n_global`` is the size of the global batch (default: ``len(x)``). A non-finite loss changes no
        weight: the step is skipped and counted, and ``max_bad_steps`` of them in a row stop training.
        """
        t = self.run.train
        n_global = n_global or len(x)
        self.model.train()
        self.attempts += 1
        with autocast(self.device, t.precision):
            params = self.net(x, y)
        nll = self.model.head.nll(params.float(), x).sum(dim=(1, 2))
        # The sum over this rank's images, scaled so that DDP's gradient average is the global batch mean.
        loss = nll.sum() * (self.world.size / (n_global * math.log(2) * math.prod(self.model.image_shape)))
        if self.attempts in self.faults.nan_attempts:
            loss = loss * float("nan")
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
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.sched.step()
        self.ema.update(self.model)
        self.step += 1
        return bpd

    def evaluate_and_sample(self) -> dict:
        """Test bits/dim (all ranks) and a sample grid (rank 0) from the EMA weights."""
        t = self.run.train
        bpd = evaluate(self.ema.model, self.test_set, t.eval_batch_size, self.device, t.eval_limit,
                       forward=self.eval_forward, precision=t.precision, world=self.world)
        record = {"step": self.step, "epoch": self.epoch, "test_bpd": bpd}
        self.log(record)
        if t.n_samples > 0 and self.world.main:
            images, nrow = sample_grid(self.ema.model, t.n_samples, t.seed)
            save_grid(images, self.out / "samples" / f"step_{self.step:07d}.png", self.model.n_bits, nrow)
            if self.writer is not None:
                grid = make_grid(images, self.model.n_bits, nrow)
                self.writer.add_image("samples", grid, self.step, dataformats="HWC")
        return record

    @contextlib.contextmanager
    def _catch_signals(self):
        """SIGTERM and SIGINT set a flag; the loop saves a checkpoint at the end of the step and stops."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self.stop_signal = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _stop_if_signalled(self) -> None:
        if distributed.any_rank(self.stop_signal is not None, self.world, self.device):
            self.save()
            name = signal.Signals(self.stop_signal or signal.SIGTERM).name
            raise TrainingInterrupted(f"{name} received: checkpoint saved at step {self.step} in {self.out}; "
                                      f"continue with --resume {self.out}", self.stop_signal or signal.SIGTERM)

    def fit(self, command: list[str] | None = None) -> dict:
        """Train until ``epochs`` (or ``max_steps`` / ``max_minutes``); return the last evaluation record.

        ``command``, the command line that started this session, is appended to ``command.txt``.
        """
        t = self.run.train
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
            if command is not None:
                with open(self.out / "command.txt", "a") as f:
                    f.write(" ".join(command) + "\n")
            self.writer = self._tensorboard()
        try:
            with self._catch_signals():
                return self._loop(t)
        finally:
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
            bar = tqdm(total=n_batches, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{t.epochs}",
                       disable=(None if self.progress is None else not self.progress) if self.world.main else True,
                       leave=False, dynamic_ncols=True)
            running, tick = None, time.perf_counter()
            for b, idx in enumerate(self.batches(self.epoch)):
                if b < self.batch_in_epoch:
                    continue
                start = time.perf_counter()
                bpd = self.train_step(*self._batch(idx), n_global=len(idx))
                self.train_seconds += time.perf_counter() - start
                self.batch_in_epoch = b + 1
                if math.isfinite(bpd):
                    running = bpd if running is None else 0.98 * running + 0.02 * bpd
                    bar.set_postfix(bpd=f"{running:.3f}")
                bar.update(1)
                if self.step % t.log_every == 0 and math.isfinite(bpd):
                    now = time.perf_counter()
                    self.log({"step": self.step, "epoch": self.epoch, "train_bpd": bpd,
                              "lr": self.sched.get_last_lr()[0],
                              "images_per_sec": t.log_every * len(idx) / max(now - tick, 1e-9)})
                    tick = now
                if t.checkpoint_every_steps and self.step % t.checkpoint_every_steps == 0 and math.isfinite(bpd):
                    self.save()
                if self.faults.kill_step == self.step:
                    self.faults.die()
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


def train(run: RunConfig, out: str | Path, resume: bool = False, progress: bool | None = None) -> dict:
    """Train a run described by ``run`` into directory ``out``; returns the final test record."""
    return Trainer(run, out, resume=resume, progress=progress).fit()
