"""Registry of model families: name -> (class, options dataclass, presets, defaults, training defaults).

Each family registers itself in its own file (``register_model`` at the end of ``models/<family>.py``), as
timm's models do; its cached sampler names the model class it serves (``register_cache(PixelCNN,
PixelCNNCache)`` at the end of the cache's file). ``pixelmodels.models`` imports every built-in family, so
those are registered once the package is imported. A model of your own registers the same way, in your
module (``docs/own_model.md``); a program imports that module before it creates or loads the model, and the
CLI imports it when asked (``--import MODULE`` or ``PIXELMODELS_IMPORT``, through :func:`import_models`),
never because a ``config.json`` names it: importing runs the module's code. ``create_model`` resolves a
preset and the user's overrides into the family's options dataclass; ``list_models`` feeds the CLI's
choices and the tests, which run over every built-in model.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelmodels.config import ModelConfig
from pixelmodels.errors import PixelModelsError, one_line
from pixelmodels.models.base import AutoregressiveModel, ModelOptions
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


def register_model(name: str, cls: type[AutoregressiveModel], options: type = ModelOptions,
                   presets: dict[str, dict[str, Any]] | None = None, defaults: dict[str, Any] | None = None,
                   train_defaults: dict[str, Any] | None = None) -> None:
    """Register a family under ``name`` (what ``create_model``, ``config.json`` and ``--model`` call it).

    Args:
        name: the family's name, e.g. "my-pixelcnn"; a name taken by another class is refused (the same
            class, by module and name, imported again replaces its entry).
        cls: the ``AutoregressiveModel`` subclass, built as ``cls(config, options)``.
        options: its options, a ``@dataclass`` subclass of ``ModelOptions`` whose fields are declared with
            ``setting()`` (they become ``pixelmodels train`` flags).
        presets: named option values, e.g. ``{"tiny": dict(n_layers=2), "default": {}}``; "default" (the
            preset used when none is named) is the options' own defaults unless given.
        defaults: option values under every preset that differ from ``ModelOptions``' ones.
        train_defaults: training settings the family prefers, some of ``TRAIN_DEFAULTS`` (the rest as there).
    """
    if not isinstance(name, str) or not name or any(ch.isspace() or ch in ":/\\" for ch in name):
        raise PixelModelsError(f"register_model: expected a name without spaces, ':' or '/', found {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, AutoregressiveModel)):
        raise PixelModelsError(f"register_model: {name}: expected a subclass of AutoregressiveModel, found {cls!r}")
    if not (isinstance(options, type) and issubclass(options, ModelOptions) and "__dataclass_fields__" in
            vars(options)):
        raise PixelModelsError(f"register_model: {name}: expected options, a @dataclass subclass of ModelOptions, "
                               f"found {options!r}")
    presets = {"default": {}, **(presets or {})}
    defaults, train_defaults = dict(defaults or {}), dict(train_defaults or {})
    fields = {f.name for f in dataclasses.fields(options)}
    for where, given, allowed in [*((f"preset {k!r}", v, fields) for k, v in presets.items()),
                                  ("defaults", defaults, fields), ("train_defaults", train_defaults, TRAIN_DEFAULTS)]:
        unknown = sorted(set(given) - set(allowed)) if isinstance(given, dict) else None
        if unknown is None or unknown:
            raise PixelModelsError(f"register_model: {name}: {where}: expected a dict of some of {sorted(allowed)}, "
                                   f"found {unknown or type(given).__name__}")
    for preset, values in presets.items():  # each preset's values checked by the options' declarations
        try:
            options(**{**defaults, **values})
        except (PixelModelsError, TypeError) as e:
            raise PixelModelsError(f"register_model: {name}: preset {preset!r}: {e}") from None
    old = REGISTRY.get(name)
    if old is not None and not _same_class(old.cls, cls):
        raise PixelModelsError(f"register_model: {name!r} is already the name of "
                               f"{old.cls.__module__}.{old.cls.__qualname__}; choose another name")
    REGISTRY[name] = ModelSpec(cls, options, presets, defaults, {**TRAIN_DEFAULTS, **train_defaults})


def _same_class(old: type, new: type) -> bool:
    """Whether ``new`` is ``old``'s module imported again: the same class name in the same module (a script's
    own ``__main__`` counting as the module it is imported as)."""
    modules = {old.__module__, new.__module__}
    return old.__qualname__ == new.__qualname__ and (len(modules) == 1 or "__main__" in modules)


def list_models() -> list[str]:
    """Names of every registered model family."""
    return sorted(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise PixelModelsError(f"--model: unknown model {name!r}; expected one of {list_models()}; a model of your "
                               "own: pass --import MODULE (the module that calls register_model)")
    return REGISTRY[name]


def import_models(modules: list[str]) -> None:
    """Import the modules that register a user's own models, for an entry point (the CLI's ``--import``).

    Each is a module name, found from the current directory first and then ``sys.path`` (the current
    directory is put first on ``sys.path`` unless it is there, as ``python -m`` has it), or a path to a
    ``.py`` file. Importing runs the module's code, so it happens only for modules the user names.
    """
    for module in modules:
        if module.endswith(".py"):
            _import_file(Path(module))
            continue
        if not module or not all(part.isidentifier() for part in module.split(".")):
            raise PixelModelsError(f"--import: expected a module name (own_model, package.module) or a .py file, "
                                   f"found {module!r}")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(module)
        except Exception as e:
            if isinstance(e, ModuleNotFoundError) and e.name is not None and f"{module}.".startswith(f"{e.name}."):
                raise PixelModelsError(f"--import: no module named {module!r} in the current directory "
                                       f"({os.getcwd()}) or on sys.path") from e
            raise PixelModelsError(f"--import: importing {module!r} failed: {type(e).__name__}: {one_line(e)}") from e


def _import_file(path: Path) -> None:
    """Import the ``.py`` file ``path`` as the module named by its stem (once: a module of that file already
    imported is kept)."""
    if not path.is_file():
        raise PixelModelsError(f"--import: {path}: no such file")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        if where is not None and Path(where).resolve() == path.resolve():
            return
        raise PixelModelsError(f"--import: {path}: a module named {name!r} is already imported (from "
                               f"{where or 'Python itself'}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise PixelModelsError(f"--import: importing {path} failed: {type(e).__name__}: {one_line(e)}") from e


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
                 cond_codes: int | None = None, preset: str = "default",
                 class_frequencies=None, **overrides):
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
        class_frequencies: p(y) of a class-conditional model, ``n_classes`` numbers summing to 1 (its training
            labels' frequencies, which ``pixelmodels train`` records): how the marginal likelihood of an
            unlabelled image weighs the classes (``score`` without ``y``). None: uniform.
        **overrides: any field of the family's options dataclass.
    """
    if n_codes is not None and n_bits is not None:
        raise PixelModelsError(f"n_codes / n_bits: a model takes codes (n_codes) or images of n_bits bits, not "
                               f"both; found n_codes={n_codes} and n_bits={n_bits}")
    config = ModelConfig(name=name, image_shape=tuple(image_shape), n_bits=None if n_codes is not None else
                         (8 if n_bits is None else n_bits), n_classes=n_classes, n_codes=n_codes,
                         cond_shape=None if cond_shape is None else tuple(cond_shape), cond_codes=cond_codes,
                         preset=preset, options=overrides,
                         class_frequencies=None if class_frequencies is None else tuple(class_frequencies))
    return build_model(config)


def _check_common(config: ModelConfig) -> None:
    """n_bits, image_shape, n_classes: ModelConfig's declarations, checked again in case it changed since."""
    config.__post_init__()
