"""The training loop: optimizer, polyak (EMA) weights, per-step learning-rate decay,
periodic evaluation and sample grids, logs and resumable checkpoints.

The data order of epoch e is a permutation drawn from a generator seeded with
(seed, e), so a run resumed from a checkpoint taken in the middle of an epoch
skips exactly the batches it already trained on.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pixelmodels import checkpoint as ckpt
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
def evaluate(model, dataset, batch_size: int = 256, device=None, limit: int | None = None) -> float:
    """Bits per dimension of ``model`` on ``dataset`` (the first ``limit`` images), exact sum in float64."""
    device = device or next(model.parameters()).device
    n = len(dataset) if limit is None else min(limit, len(dataset))
    total = 0.0
    for start in range(0, n, batch_size):
        x = dataset.images[start:min(start + batch_size, n)].to(device)
        y = dataset.labels[start:start + len(x)].to(device) if model.n_classes else None
        total += -model.log_prob(x, y).double().sum().item()
    return total / (n * math.prod(model.image_shape) * math.log(2))


def sample_grid(model, n_samples: int, seed: int, batch_size: int | None = None):
    """Samples for a grid: one row per class for a conditional model. Returns (images, images per row)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    if model.n_classes:
        per_class = max(1, math.ceil(n_samples / model.n_classes))
        y = torch.arange(model.n_classes, device=device).repeat_interleave(per_class)
        return sample(model, len(y), y, generator=gen, batch_size=batch_size), per_class
    return sample(model, n_samples, generator=gen, batch_size=batch_size), None


class Trainer:
    """Trains one run directory; ``Trainer(run, out).fit()``."""

    def __init__(self, run: RunConfig, out: str | Path, resume: bool = False, progress: bool | None = None):
        self.out = Path(out)
        self.progress = progress
        self.device = resolve_device(run.train.device)
        torch.manual_seed(run.train.seed)  # initialization, dropout
        self.train_set = load_data(run.data, "train")
        self.test_set = load_data(run.data, "test")
        model_cfg = resolve_model_config(run.model, self.train_set, run.train.conditional)
        self.model = build_model(model_cfg).to(self.device)
        self.run = RunConfig(model=self.model.config, data=run.data,
                             train=resolve_train_config(run.train, run.model.name))
        t = self.run.train
        if not resume:
            self.model.initialize_from_data(*next(self.batches(0)))
        if t.optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=t.adam_betas)
        else:
            self.opt = torch.optim.RMSprop(self.model.parameters(), lr=t.lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=t.lr_decay)
        self.ema = EMA(self.model, t.ema)
        self.step = self.epoch = self.batch_in_epoch = 0
        if resume:
            self._restore()
        self.writer = None  # opened by fit(): constructing a Trainer writes nothing

    # -- checkpoints --------------------------------------------------------
    def _restore(self) -> None:
        state = ckpt.load_state(self.out / ckpt.STATE, map_location=self.device)
        src = self.out / ckpt.STATE
        ckpt.load_state_dict_checked(self.model, state["model"], src)
        ckpt.load_state_dict_checked(self.ema.model, state["ema"], src)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    def save(self) -> None:
        """Write config, EMA weights and the full training state, each atomically."""
        state = {
            "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "rng_cpu": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
        ckpt.save_weights(self.out / ckpt.WEIGHTS, self.ema.model.state_dict())
        ckpt.save_state(self.out / ckpt.STATE, state)

    # -- logging ------------------------------------------------------------
    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def log(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    # -- the loop -----------------------------------------------------------
    def batches(self, epoch: int):
        """(x, y) batches of ``epoch`` in the order fixed by (seed, epoch)."""
        t = self.run.train
        gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.train_set), generator=gen)
        for start in range(0, len(perm), t.batch_size):
            idx = perm[start:start + t.batch_size]
            x = self.train_set.images[idx].to(self.device, non_blocking=True)
            y = self.train_set.labels[idx].to(self.device) if self.model.n_classes else None
            yield x, y

    def train_step(self, x, y) -> float:
        self.model.train()
        loss = self.model.bits_per_dim(x, y).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.run.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.train.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.update(self.model)
        self.step += 1
        return loss.item()

    def evaluate_and_sample(self) -> dict:
        """Test bits/dim and a sample grid from the EMA weights."""
        t = self.run.train
        model = self.ema.model
        bpd = evaluate(model, self.test_set, t.eval_batch_size, self.device, t.eval_limit)
        record = {"step": self.step, "epoch": self.epoch, "test_bpd": bpd}
        self.log(record)
        if t.n_samples > 0:
            images, nrow = sample_grid(model, t.n_samples, t.seed)
            save_grid(images, self.out / "samples" / f"step_{self.step:07d}.png", model.n_bits, nrow)
            if self.writer is not None:
                grid = make_grid(images, model.n_bits, nrow)
                self.writer.add_image("samples", grid, self.step, dataformats="HWC")
        return record

    def fit(self, command: list[str] | None = None) -> dict:
        """Train until ``epochs`` (or ``max_steps`` / ``max_minutes``); return the last evaluation record.

        ``command``, the command line that started this session, is appended to ``command.txt``.
        """
        t = self.run.train
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(self.out / ckpt.CONFIG, self.run.to_dict())
        if command is not None:
            with open(self.out / "command.txt", "a") as f:
                f.write(" ".join(command) + "\n")
        self.writer = self._tensorboard()
        n_batches = math.ceil(len(self.train_set) / t.batch_size)
        record = None
        self.train_seconds = 0.0

        def done() -> bool:
            return (t.max_steps is not None and self.step >= t.max_steps) or (
                t.max_minutes is not None and self.train_seconds >= 60 * t.max_minutes)

        while self.epoch < t.epochs and not done():
            bar = tqdm(total=n_batches, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{t.epochs}",
                       disable=None if self.progress is None else not self.progress, leave=False,
                       dynamic_ncols=True)
            running, tick = None, time.perf_counter()
            for b, (x, y) in enumerate(self.batches(self.epoch)):
                if b < self.batch_in_epoch:
                    continue
                start = time.perf_counter()
                bpd = self.train_step(x, y)
                self.train_seconds += time.perf_counter() - start
                self.batch_in_epoch = b + 1
                running = bpd if running is None else 0.98 * running + 0.02 * bpd
                bar.update(1)
                bar.set_postfix(bpd=f"{running:.3f}")
                if self.step % t.log_every == 0:
                    now = time.perf_counter()
                    self.log({"step": self.step, "epoch": self.epoch, "train_bpd": bpd,
                              "lr": self.sched.get_last_lr()[0],
                              "images_per_sec": t.log_every * len(x) / max(now - tick, 1e-9)})
                    tick = now
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
        if self.writer is not None:
            self.writer.close()
        return record


def train(run: RunConfig, out: str | Path, resume: bool = False, progress: bool | None = None) -> dict:
    """Train a run described by ``run`` into directory ``out``; returns the final test record."""
    return Trainer(run, out, resume=resume, progress=progress).fit()
