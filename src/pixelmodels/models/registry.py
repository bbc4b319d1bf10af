"""Registry of model families: name -> (class, options dataclass, presets, defaults, training defaults).

Each family registers itself in its own file (``register_model`` at the end of
``models/<family>.py``), as timm's models do; its cached sampler names the model
class it serves (``register_cache(PixelCNN, PixelCNNCache)`` at the end of the cache's file).
``pixelmodels.models`` imports every family, so the registry is complete once the
package is imported. ``create_model`` resolves a preset and the user's overrides
into the family's options dataclass; ``list_models`` feeds the CLI's choices and
the tests, which run over every registered model.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from typing import Any

from pixelmodels.config import ModelConfig
from pixelmodels.errors import PixelModelsError
from pixelmodels.models.base import AutoregressiveModel
from pixelmodels.nn.init import weight_norm

# Training settings a model family prefers when the user gives none.
TRAIN_DEFAULTS = dict(lr=5e-4, lr_decay=0.999995, ema=0.9995, optimizer="adam", adam_betas=(0.9, 0.999))

# Options of earlier versions that saved configs may hold, with the one value every model now has: ignored.
RETIRED_OPTIONS = {"attention": "sdpa"}


@dataclass(frozen=True)
class ModelSpec:
    """A registered family: its network class, options dataclass, presets, option and training defaults."""

    cls: type[AutoregressiveModel]
    options: type
    presets: dict[str, dict[str, Any]]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_defaults: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(TRAIN_DEFAULTS))


REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, cls: type[AutoregressiveModel], options: type, presets: dict[str, dict[str, Any]],
                   defaults: dict[str, Any] | None = None, train_defaults: dict[str, Any] | None = None) -> None:
    """Register a family under ``name``; ``defaults`` are option values (under every preset) that differ from
    the shared ``ModelOptions`` ones, ``train_defaults`` the training settings it prefers (``TRAIN_DEFAULTS``)."""
    REGISTRY[name] = ModelSpec(cls, options, presets, dict(defaults or {}), dict(train_defaults or TRAIN_DEFAULTS))


def list_models() -> list[str]:
    """Names of every registered model family."""
    return sorted(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise PixelModelsError(f"--model: unknown model {name!r}; expected one of {list_models()}")
    return REGISTRY[name]


def resolve_options(name: str, preset: str = "default", overrides: dict[str, Any] | None = None,
                    codes: bool = False):
    """The options dataclass of ``name`` at ``preset`` with ``overrides`` applied; for a model of ``codes``
    the likelihood is categorical unless the overrides name one."""
    spec = get_spec(name)
    if preset not in spec.presets:
        raise PixelModelsError(f"--preset: {name} has no preset {preset!r}; expected one of {sorted(spec.presets)}")
    fields = {f.name for f in dataclasses.fields(spec.options)}
    overrides = {k: v for k, v in (overrides or {}).items()
                 if v is not None and not (k in RETIRED_OPTIONS and v == RETIRED_OPTIONS[k])}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise PixelModelsError(f"{name}: unknown options {unknown}; expected some of {sorted(fields)}")
    defaults = {**spec.defaults, **spec.presets[preset], **({"likelihood": "categorical"} if codes else {})}
    return spec.options(**{**defaults, **overrides})


def parse_model_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """'NAME:PRESET key=value ...' -> (name, preset, options), values as Python literals or else strings: a
    model named on one line (benchmarks' ``--config``)."""
    words = spec.split()
    if not words or ":" not in words[0] or not all("=" in w for w in words[1:]):
        raise PixelModelsError(f"--config: expected 'NAME:PRESET [key=value ...]', found {spec!r}")
    name, _, preset = words[0].partition(":")
    options = {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return name, preset, options


def build_model(config: ModelConfig):
    """Build the model described by a resolved ``ModelConfig``."""
    _check_common(config)
    options = resolve_options(config.name, config.preset, config.options, codes=config.n_codes is not None)
    model = get_spec(config.name).cls(config, options)
    if options.weight_norm:  # the network's convolutions; the head and the conditioning stay as they are
        weight_norm(model, skip=(model.head, model.conditioning))
    return model


def create_model(name: str, *, image_shape, n_bits: int | None = None, n_classes: int | None = None,
                 n_codes: int | None = None, cond_shape: tuple[int, ...] | None = None,
                 cond_codes: int | None = None, preset: str = "default", **overrides):
    """Create a fresh model: ``create_model("gated-pixelcnn", image_shape=(1, 28, 28))``.

    Args:
        name: a name from ``list_models()``.
        image_shape: (C, H, W) with C in {1, 3} (C = 1 for code maps), any H and W.
        n_bits: bits per sub-pixel of images, 1..8 (default 8).
        n_classes: number of classes for a class-conditional model, else None.
        n_codes: K for a prior over maps of K unordered codes (VQ-VAE latents); excludes ``n_bits``.
        cond_shape: (D,) for a vector condition, (D, h, w) for a spatial map, (h, w) for a map of codes
            (with ``cond_codes``), else None.
        cond_codes: K for a condition that is a map of K discrete codes (B, h, w), say a VQ-VAE-2 bottom
            prior's top codes: embedded by a learned table, then the spatial map's path. Else None.
        preset: a preset of the family ("tiny", "small", "default", ...).
        **overrides: any field of the family's options dataclass.
    """
    if n_codes is not None and n_bits is not None:
        raise PixelModelsError(f"n_codes / n_bits: a model takes codes (n_codes) or images of n_bits bits, not "
                               f"both; found n_codes={n_codes} and n_bits={n_bits}")
    config = ModelConfig(name=name, image_shape=tuple(image_shape), n_bits=None if n_codes is not None else
                         (8 if n_bits is None else n_bits), n_classes=n_classes, n_codes=n_codes,
                         cond_shape=None if cond_shape is None else tuple(cond_shape), cond_codes=cond_codes,
                         preset=preset,
                         options=overrides)
    return build_model(config)


def _check_common(config: ModelConfig) -> None:
    """n_bits, image_shape, n_classes: ModelConfig's declarations, checked again in case it changed since."""
    config.__post_init__()
