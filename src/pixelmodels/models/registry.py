"""Registry of model families: name -> (class, options dataclass, presets).

``create_model`` resolves a preset and the user's overrides into the family's
options dataclass; ``list_models`` feeds the CLI's choices and the tests,
which run over every registered model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pixelmodels.config import ModelConfig
from pixelmodels.errors import PixelModelsError
from pixelmodels.models import gated_pixelcnn, pixelcnn, pixelcnnpp, pixelrnn, pixelsnail


@dataclass(frozen=True)
class ModelSpec:
    cls: type
    options: type
    presets: dict[str, dict[str, Any]]
    train_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


# Training settings a model family prefers when the user gives none.
_TRAIN = dict(lr=5e-4, lr_decay=0.999995, ema=0.9995, optimizer="adam", adam_betas=(0.9, 0.999))

REGISTRY: dict[str, ModelSpec] = {
    "pixelcnn": ModelSpec(pixelcnn.PixelCNN, pixelcnn.PixelCNNOptions, pixelcnn.PRESETS, _TRAIN),
    "gated-pixelcnn": ModelSpec(gated_pixelcnn.GatedPixelCNN, gated_pixelcnn.GatedPixelCNNOptions,
                                gated_pixelcnn.PRESETS, _TRAIN),
    "pixelcnnpp": ModelSpec(pixelcnnpp.PixelCNNPP, pixelcnnpp.PixelCNNPPOptions, pixelcnnpp.PRESETS,
                            pixelcnnpp.TRAIN_DEFAULTS),
    "pixelsnail": ModelSpec(pixelsnail.PixelSNAIL, pixelsnail.PixelSNAILOptions, pixelsnail.PRESETS,
                            pixelsnail.TRAIN_DEFAULTS),
    "row-lstm": ModelSpec(pixelrnn.RowLSTM, pixelrnn.PixelRNNOptions, pixelrnn.PRESETS, _TRAIN),
    "diagonal-bilstm": ModelSpec(pixelrnn.DiagonalBiLSTM, pixelrnn.PixelRNNOptions, pixelrnn.PRESETS, _TRAIN),
}


def list_models() -> list[str]:
    """Names of every registered model family."""
    return sorted(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise PixelModelsError(f"--model: unknown model {name!r}; expected one of {list_models()}")
    return REGISTRY[name]


def resolve_options(name: str, preset: str = "default", overrides: dict[str, Any] | None = None):
    """The options dataclass of ``name`` at ``preset`` with ``overrides`` applied."""
    spec = get_spec(name)
    if preset not in spec.presets:
        raise PixelModelsError(f"--preset: {name} has no preset {preset!r}; expected one of {sorted(spec.presets)}")
    fields = {f.name for f in dataclasses.fields(spec.options)}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise PixelModelsError(f"{name}: unknown options {unknown}; expected some of {sorted(fields)}")
    return spec.options(**{**spec.presets[preset], **overrides})


def build_model(config: ModelConfig):
    """Build the model described by a resolved ``ModelConfig``."""
    _check_common(config)
    options = resolve_options(config.name, config.preset, config.options)
    return get_spec(config.name).cls(config, options)


def create_model(name: str, *, image_shape, n_bits: int = 8, n_classes: int | None = None,
                 preset: str = "default", **overrides):
    """Create a fresh model: ``create_model("gated-pixelcnn", image_shape=(1, 28, 28))``.

    Args:
        name: a name from ``list_models()``.
        image_shape: (C, H, W) with C in {1, 3}.
        n_bits: bits per sub-pixel, 1..8.
        n_classes: number of classes for a class-conditional model, else None.
        preset: a preset of the family ("tiny", "small", "default", ...).
        **overrides: any field of the family's options dataclass.
    """
    config = ModelConfig(name=name, image_shape=tuple(image_shape), n_bits=n_bits, n_classes=n_classes,
                         preset=preset, options=overrides)
    return build_model(config)


def _check_common(config: ModelConfig) -> None:
    if not isinstance(config.n_bits, int) or not 1 <= config.n_bits <= 8:
        raise PixelModelsError(f"--n-bits: expected an integer from 1 to 8, found {config.n_bits!r}")
    if len(config.image_shape) != 3 or config.image_shape[0] not in (1, 3) or min(config.image_shape) < 1:
        raise PixelModelsError(f"image_shape: expected (C, H, W) with C 1 or 3, found {config.image_shape}")
    if config.n_classes is not None and config.n_classes < 1:
        raise PixelModelsError(f"n_classes: expected a positive number of classes, found {config.n_classes}")
