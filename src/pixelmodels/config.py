"""Settings as dataclasses, with a JSON round trip.

A run directory's ``config.json`` holds ``RunConfig.to_dict()``: the resolved
model, data and training settings, so a saved run rebuilds itself without the
user repeating any flag. The CLI derives its flags from these fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelmodels.errors import PixelModelsError


@dataclass
class ModelConfig:
    """What a model is: its family, the images it models and its options.

    ``options`` holds the resolved fields of the family's options dataclass
    (preset values with the user's overrides applied).
    """

    name: str
    image_shape: tuple[int, int, int]
    n_bits: int = 8
    n_classes: int | None = None
    preset: str = "default"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)


@dataclass
class DataConfig:
    """Where the images come from."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    n_bits: int | None = None
    image_size: int | None = None
    channels: int | None = None


@dataclass
class TrainConfig:
    """How a model is trained. ``None`` means: the model preset's default."""

    epochs: int = 1
    batch_size: int = 32
    lr: float | None = None
    lr_decay: float | None = None
    ema: float | None = None
    optimizer: str | None = None
    adam_betas: tuple[float, float] | None = None
    grad_clip: float | None = None
    device: str = "auto"
    seed: int = 0
    max_steps: int | None = None
    max_minutes: float | None = None
    eval_every: int = 1
    eval_batch_size: int = 64
    eval_limit: int | None = None
    n_samples: int = 16
    log_every: int = 10
    conditional: bool = False
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool | None = None
    checkpoint_every_steps: int | None = None
    max_bad_steps: int = 20
    deterministic: bool = False


@dataclass
class RunConfig:
    """Everything a run directory needs to rebuild its model and continue training."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(
            model=from_dict(ModelConfig, d["model"]),
            data=from_dict(DataConfig, d.get("data", {})),
            train=from_dict(TrainConfig, d.get("train", {})),
        )


def from_dict(cls, d: dict):
    """Build dataclass ``cls`` from ``d``, refusing unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise PixelModelsError(f"{cls.__name__}: unknown settings {unknown}; expected some of {sorted(names)}")
    return cls(**d)


def read_config(path: str | Path) -> dict:
    """Read a ``config.json`` with a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise PixelModelsError(f"{path}: no such file; a run directory must hold config.json")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PixelModelsError(f"{path}: expected a JSON config, could not read it ({e})") from None
