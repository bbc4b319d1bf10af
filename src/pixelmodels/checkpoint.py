"""Saving and loading run directories: config, weights and training state.

A run directory holds

* ``config.json``: the resolved ``RunConfig`` (or, for an exported model, just
  ``{"model": ...}``);
* ``model.safetensors``: the EMA weights, what users load;
* ``training_state.pt``: raw weights, optimizer, schedule, EMA, the counters
  (``COUNTERS``) and RNG states, tensors and plain data only, read with
  ``weights_only=True``; ``training_state`` builds it, ``Trainer.load_state_dict``
  loads it back.

Every file is written atomically: a temporary file in the same directory,
flushed and fsync'ed, renamed over the target, then the directory fsync'ed, so
a crash at any moment leaves the previous complete file in place.
"""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pixelmodels.config import ModelConfig, SettingError, from_dict, read_config
from pixelmodels.errors import PixelModelsError, one_line
from pixelmodels.models.registry import build_model, resolve_options

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE = "training_state.pt"
# what a training state holds (training_state writes them); optional: ema_updates, scaler, rng_cuda
STATE_KEYS = ("model", "ema", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "rng_cpu")
COUNTERS = ("step", "epoch", "batch_in_epoch", "ema_updates")


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    Raises:
        PixelModelsError: the write failed (disk full, no permission...); the
            previous file, if any, is intact and no temporary file is left.
    """
    path = Path(path)
    tmp, replaced = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        # mode 0666 less the process's umask, applied by the kernel: a normal file's mode (mkstemp's is 0600)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        tmp = name
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp, replaced = None, True
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        kept = "" if replaced else "; the previous file, if any, is unchanged"
        raise PixelModelsError(f"{path}: {write_failure(e)}{kept}") from e
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_failure(e: OSError) -> str:
    """Why a write failed, in words: the disk is full, or the system's reason."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"could not write: the disk is full ({os.strerror(e.errno)})"
    return f"could not write ({e.strerror or e})"


def write_json(path: str | Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors (contiguous CPU copies)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, st_save(tensors))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PixelModelsError(f"{path}: no such file; expected the model weights ({WEIGHTS})")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise PixelModelsError(f"{path}: expected a safetensors file, could not read it ({e})") from None


def save_state(path: str | Path, state: dict) -> None:
    """Write training state (tensors and plain Python data only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def load_state(path: str | Path, map_location="cpu") -> dict:
    """Read training state without running any code from the file.

    Raises:
        PixelModelsError: no such file, not a training state, or a pickle that
            refers to anything but tensors and plain data (refused, never run).
    """
    path = Path(path)
    if not path.is_file():
        raise PixelModelsError(f"{path}: no such file; expected a training state ({STATE})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise PixelModelsError(
            f"{path}: refused to load: expected a training state of tensors and plain data "
            f"({type(e).__name__}: {one_line(str(e).splitlines()[0] if str(e) else '')})"
        ) from None
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else None
    if missing is None or missing:
        found = f"a dict without {missing}" if missing else type(state).__name__
        raise PixelModelsError(f"{path}: expected a training state, a dict with keys {list(STATE_KEYS)}; "
                               f"found {found}")
    return state


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model``, refusing by name the first tensor that does not fit."""
    if not isinstance(state, dict):
        raise PixelModelsError(f"{source}: expected a dict of named tensors, found {type(state).__name__}")
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise PixelModelsError(f"{source}: tensor {name!r} is missing; the checkpoint is of another model")
        if not isinstance(state[name], torch.Tensor):
            raise PixelModelsError(f"{source}: {name!r} is a {type(state[name]).__name__}, expected a tensor")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise PixelModelsError(
                f"{source}: tensor {name!r} has shape {tuple(state[name].shape)}, the config's model expects "
                f"{tuple(tensor.shape)}; the checkpoint does not fit config.json"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise PixelModelsError(f"{source}: unexpected tensor {extra[0]!r}; the checkpoint is of another model")
    model.load_state_dict(state)


def training_state(model, ema_model, optimizer, scheduler, counters: dict[str, int], *, scaler=None,
                   device: torch.device | None = None) -> dict:
    """The dict ``training_state.pt`` holds: raw and EMA weights, optimizer, schedule, the ``COUNTERS``
    (optimizer steps, epoch, batches done in it, EMA updates), the RNG states and fp16's gradient scaler."""
    state = {"model": model.state_dict(), "ema": ema_model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), **{k: int(counters[k]) for k in COUNTERS},
             "rng_cpu": torch.get_rng_state()}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if device is not None and device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    return state


def model_config_of(run_dir: str | Path) -> ModelConfig:
    """The ``ModelConfig`` stored in a run (or exported model) directory."""
    return read_model_dir(run_dir)[0]


def read_model_dir(run_dir: str | Path) -> tuple[ModelConfig, dict]:
    """The ``ModelConfig`` stored in a run (or exported model) directory, its family's options checked by their
    declarations before anything is built, and the whole ``config.json`` as read (its other sections unchecked)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PixelModelsError(f"{run_dir}: no such run directory")
    path = run_dir / CONFIG
    cfg = read_config(path)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise PixelModelsError(f"{path}: expected a 'model' section, found "
                               f"{f'keys {sorted(cfg)}' if isinstance(cfg, dict) else type(cfg).__name__}")
    config = from_dict(ModelConfig, cfg["model"], path, "model")
    try:
        resolve_options(config.name, config.preset, config.options)
    except SettingError as e:
        raise SettingError(e.name, f"{path}: model.options.{e.name}", e.expected, e.found, e.allowed) from None
    except PixelModelsError as e:
        raise PixelModelsError(f"{path}: {e}") from None
    return config, cfg


def load(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model saved in a run directory, with its EMA weights, in eval mode."""
    return load_with_config(path, device)[0]


def load_with_config(path: str | Path, device: str | torch.device = "cpu") -> tuple:
    """:func:`load`, and the directory's whole ``config.json`` (read once): (model, the config as a dict)."""
    path = Path(path)
    config, stored = read_model_dir(path)
    model = build_model(config)
    load_state_dict_checked(model, load_weights(path / WEIGHTS), path / WEIGHTS)
    return model.to(device).eval(), stored


def save_pretrained(model, path: str | Path) -> Path:
    """Export ``model`` as a directory with ``config.json`` and ``model.safetensors`` that ``load`` takes."""
    path = Path(path)
    save_weights(path / WEIGHTS, model.state_dict())
    write_json(path / CONFIG, {"model": asdict(model.config)})
    return path
