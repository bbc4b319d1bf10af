"""The settings of models, data and training, with a JSON round trip, and the options of the library
calls (``sample``, ``score``, ``compress``), as dataclasses that check themselves.

Each field is declared once with ``pixelmodels.settings.setting``: its default, its help text
and its valid range, which the CLI, ``create_model``, loading a ``config.json`` and the library
calls (through ``check_field``) all check.

A run directory's ``config.json`` holds ``RunConfig.to_dict()``: the resolved
model, data and training settings, so a saved run rebuilds itself without the
user repeating any flag.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from pixelmodels.errors import PixelModelsError
from pixelmodels.settings import (MAX_BATCH, MAX_CLASSES, MAX_CODES, MAX_COUNT, MAX_FEATURES, MAX_IMAGE_SIZE,
                                  MAX_MINUTES, MAX_SAMPLES, MAX_SEED, SettingError, Settings, setting)

__all__ = ["CodecOptions", "DataConfig", "ModelConfig", "RunConfig", "SamplingOptions", "ScoreOptions",
           "SettingError", "TrainConfig", "from_dict", "read_config"]


def _as_int(s):
    if isinstance(s, bool):
        return s
    try:
        return operator.index(s)
    except TypeError:
        return int(s) if isinstance(s, float) and s.is_integer() else s


def _cond_shape_ok(shape) -> bool:
    return (isinstance(shape, tuple) and len(shape) in (1, 2, 3)
            and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_FEATURES for s in shape))


def _frequencies_ok(freqs) -> bool:
    return (isinstance(freqs, tuple) and len(freqs) >= 1
            and all(isinstance(f, float) and math.isfinite(f) and f >= 0 for f in freqs)
            and abs(sum(freqs) - 1) < 1e-6)


def _image_shape_ok(shape) -> bool:
    return (isinstance(shape, tuple) and len(shape) == 3 and all(isinstance(s, int) and not isinstance(s, bool)
                                                                 for s in shape)
            and shape[0] in (1, 3) and min(shape) >= 1)


CODECS = ("png", "webp", "jpegxl")  # the lossless codecs of input complexity (pixelmodels.ood)


@dataclass
class ModelConfig(Settings):
    """What a model is: its family, the images it models and its options.

    ``options`` holds the resolved fields of the family's options dataclass
    (preset values with the user's overrides applied); the family's options
    dataclass checks them when the model is built.
    """

    name: str = setting(help="model family", flag="--model")
    image_shape: tuple[int, int, int] = setting(help="(C, H, W) of the images, C 1 or 3", flag="image_shape",
                                                expected="(C, H, W) with C 1 or 3", test=_image_shape_ok)
    n_bits: int | None = setting(8, "bits per sub-pixel of images (None for code maps)", ge=1, le=8,
                                 expected="an integer from 1 to 8")
    n_classes: int | None = setting(None, "classes of a class-conditional model (None: unconditional)",
                                    flag="n_classes", ge=1, le=MAX_CLASSES)
    n_codes: int | None = setting(None, "K of a model of maps of K unordered codes (None: images)",
                                  flag="n_codes", ge=2, le=MAX_CODES)
    cond_shape: tuple[int, ...] | None = setting(None, "(D,) of a vector condition, (D, h, w) of a spatial "
                                                 "map, (h, w) of a map of codes (None: none)", flag="cond_shape",
                                                 expected="(D,), (D, h, w) or (h, w) of positive sizes",
                                                 test=_cond_shape_ok)
    cond_codes: int | None = setting(None, "K of a condition that is a map of K discrete codes, cond_shape (h, w) "
                                     "(None: a float condition)", flag="cond_codes", ge=2, le=MAX_CODES)
    preset: str = setting("default", "model preset (tiny, small, default, ...)")
    options: dict[str, Any] = setting(help="the family's options", default_factory=dict, flag="options")
    class_frequencies: tuple[float, ...] | None = setting(
        None, "p(y) of a class-conditional model, its training labels' frequencies: how the marginal likelihood "
        "of an unlabelled image weighs the classes (None: uniform)", flag="class_frequencies",
        expected="n_classes frequencies, each 0 or more, summing to 1", test=_frequencies_ok)

    def __post_init__(self):
        if isinstance(self.image_shape, (list, tuple)):  # JSON gives a list; datasets may give numpy ints
            self.image_shape = tuple(_as_int(s) for s in self.image_shape)
        if isinstance(self.cond_shape, (list, tuple)):
            self.cond_shape = tuple(_as_int(s) for s in self.cond_shape)
        if isinstance(self.class_frequencies, (list, tuple)):
            self.class_frequencies = tuple(float(f) if isinstance(f, (int, float)) and not isinstance(f, bool) else f
                                           for f in self.class_frequencies)
        super().__post_init__()
        if self.class_frequencies is not None and len(self.class_frequencies) != (self.n_classes or 0):
            expected = (f"one frequency per class ({self.n_classes} classes)" if self.n_classes else
                        "none for a model without classes (n_classes None)")
            raise PixelModelsError(f"class_frequencies: expected {expected}, found {len(self.class_frequencies)}")
        if (self.n_codes is None) == (self.n_bits is None):
            raise PixelModelsError("n_codes / n_bits: expected exactly one, codes (n_codes) or images of n_bits "
                                   f"bits; found n_codes={self.n_codes} and n_bits={self.n_bits}")
        codes_map = self.cond_shape is not None and len(self.cond_shape) == 2
        if codes_map != (self.cond_codes is not None):
            raise PixelModelsError(f"cond_codes / cond_shape: a map of codes has cond_shape (h, w) and cond_codes K; "
                                   f"a float condition (D,) or (D, h, w) and no cond_codes; found cond_shape "
                                   f"{self.cond_shape} and cond_codes={self.cond_codes}")
        if self.n_codes is not None and self.image_shape[0] != 1:
            raise PixelModelsError(f"n_codes: expected code maps of 1 channel, image_shape (1, H, W); found "
                                   f"image_shape {self.image_shape}")


@dataclass
class DataConfig(Settings):
    """Where the images come from."""

    dataset: str = setting("fashion-mnist", "the dataset: mnist, fashion-mnist, cifar10, colored-mnist, folder "
                           "(your images) or arrays (your arrays)")
    data_dir: str | None = setting(None, "directory holding the dataset's files (default: cache dir and usual "
                                   "local places)")
    n_bits: int | None = setting(None, "bits per sub-pixel (default: the dataset's own depth)", ge=1, le=8,
                                 expected="an integer from 1 to 8 (the dataset's n_bits)")
    image_size: int | None = setting(None, "side of the square images of a 'folder' dataset (default 32)",
                                     ge=1, le=MAX_IMAGE_SIZE)
    channels: int | None = setting(None, "1 (grayscale) or 3 (RGB) for a 'folder' dataset", choices=(1, 3))
    n_codes: int | None = setting(None, "K for an 'arrays' dataset of code maps (VQ-VAE latents) with values "
                                  "0..K-1: the model is a prior over codes", ge=2, le=MAX_CODES)
    cond_codes: int | None = setting(None, "K for an 'arrays' dataset whose condition is a map of codes (N, h, w) "
                                     "with values 0..K-1 (the top codes of a VQ-VAE-2 bottom prior)", ge=2,
                                     le=MAX_CODES)


@dataclass
class TrainConfig(Settings):
    """How a model is trained. ``None`` means: the model preset's default."""

    epochs: int | None = setting(None, "passes over the training set (default: 1; with --max-steps or "
                                 "--max-minutes, as many as it takes: they are the limit)", ge=0, le=MAX_COUNT)
    batch_size: int = setting(32, "images per step", ge=1, le=MAX_BATCH)
    lr: float | None = setting(None, "learning rate (default: the model's preset)", gt=0, le=10,
                               noun="a learning rate")
    lr_decay: float | None = setting(None, "learning rate multiplier applied after every step (--lr-schedule "
                                     "exponential)", gt=0, le=1, noun="a factor")
    lr_schedule: str = setting("exponential", "the learning rate per step after the warm-up: exponential (times "
                               "--lr-decay after every step), cosine or linear (decay to 0 at --decay-steps)",
                               choices=("exponential", "cosine", "linear"))
    warmup_steps: int = setting(0, "linear learning-rate warm-up over the first N steps", ge=0, le=MAX_COUNT)
    decay_steps: int | None = setting(None, "the step at which a cosine or linear schedule reaches 0 (default: "
                                      "--max-steps)", ge=1, le=MAX_COUNT)
    ema: float | None = setting(None, "decay of the polyak (exponential moving) average of the weights, used "
                                "for evaluation and sampling", ge=0, lt=1, noun="a decay")
    ema_warmup: bool = setting(True, "EMA warm-up: the effective decay is min(ema, (1 + n) / (10 + n)) after "
                               "n updates")
    optimizer: str | None = setting(None, "adam or rmsprop", choices=("adam", "rmsprop"), expected="adam or rmsprop")
    adam_betas: tuple[float, float] | None = setting(None, "Adam's two betas", ge=0, lt=1, noun="two betas")
    grad_clip: float | None = setting(None, "clip the gradient norm to this value (0: no clipping)", ge=0, le=1e6,
                                      noun="a gradient norm")
    weight_decay: float = setting(0.0, "L2 penalty: adds weight_decay * w to the gradient of every weight w (the "
                                  "optimizer's coupled weight decay; the loss gains weight_decay / 2 * |w|^2)",
                                  ge=0, le=1, noun="a penalty")
    perturb: float = setting(0.0, "at every training step replace each input value, independently with this "
                             "probability, by a uniformly random one: how the background model of a likelihood "
                             "ratio is trained (Ren et al. 2019); evaluation sees the inputs as they are",
                             ge=0, lt=1, noun="a rate")
    device: str = setting("auto", "cpu, cuda or cuda:N (auto: CUDA when available)")
    seed: int = setting(0, "random seed of initialization, data order and sample grids", ge=0, le=MAX_SEED)
    max_steps: int | None = setting(None, "stop after this many optimizer steps in total (with --epochs too: "
                                    "at whichever comes first)", ge=1, le=MAX_COUNT)
    max_minutes: float | None = setting(None, "stop after this many minutes of this session, evaluations, sample "
                                        "grids and checkpoints included (alone, it is the limit): the first "
                                        "evaluation comes at a tenth of them, later ones at most every tenth and "
                                        "never taking over a tenth of the time, and training stops early enough "
                                        "for the final one to fit", gt=0, le=MAX_MINUTES, noun="minutes")
    eval_every: int = setting(1, "evaluate test bits/dim and write a sample grid every this many epochs",
                              ge=1, le=MAX_COUNT)
    eval_every_steps: int | None = setting(None, "also evaluate test bits/dim (and write a sample grid) every "
                                           "this many steps: a learning curve within an epoch", ge=1, le=MAX_COUNT)
    eval_batch_size: int = setting(64, "images per evaluation batch", ge=1, le=MAX_BATCH)
    eval_limit: int | None = setting(None, "evaluate on the first N test images only", ge=1, le=MAX_COUNT)
    n_samples: int = setting(16, "images in each sample grid (per class, rounded up, for a conditional model; "
                             "0: no grid)", ge=0, le=MAX_SAMPLES)
    log_every: int = setting(10, "write training metrics every this many steps", ge=1, le=MAX_COUNT)
    conditional: bool = setting(False, "condition the model on the dataset's class labels")
    precision: str = setting("auto", "auto (bf16 where its matrix products are native and it trains as well: "
                             "CUDA with bf16; fp32 on CPUs, AMX and avx512_bf16 included, where bf16 trained a zoo "
                             "recipe to worse bits/dim; the start line says why, config.json records the choice), "
                             "fp32, bf16 (autocast, CPU or CUDA) or fp16 (autocast + gradient scaler, CUDA only)",
                             choices=("auto", "bf16", "fp16", "fp32"))
    compile: bool = setting(False, "run the training and evaluation forward passes through torch.compile")
    channels_last: bool | None = setting(None, "channels-last memory format (default: on for CUDA, off for CPU)")
    checkpoint_every_steps: int | None = setting(None, "also write a checkpoint every N steps (one is always "
                                                 "written at the end of an epoch)", ge=1, le=MAX_COUNT)
    checkpoint_every_minutes: float | None = setting(None, "also write a checkpoint when this many minutes have "
                                                     "passed since the last one (rank 0's clock), so that a "
                                                     "restart loses little", gt=0, le=MAX_MINUTES, noun="minutes")
    max_bad_steps: int = setting(20, "stop with an error after this many steps in a row with a non-finite loss "
                                 "(they are skipped)", ge=1, le=MAX_COUNT)
    deterministic: bool = setting(False, "torch.use_deterministic_algorithms: a resumed run repeats an "
                                  "uninterrupted one bitwise")


@dataclass
class RunConfig:
    """Everything a run directory needs to rebuild its model and continue training."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> "RunConfig":
        """From ``to_dict``'s form; a bad value is an error naming ``source`` (the file) and the field."""
        where = f"{source}: " if source is not None else ""
        if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
            raise PixelModelsError(f"{where}expected a run config, a dict with a 'model' section")
        return cls(**{section: from_dict(kind, d.get(section, {}), source, section)
                      for section, kind in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))})


def from_dict(cls, d: dict, source: str | Path | None = None, section: str | None = None):
    """Build settings dataclass ``cls`` from ``d``, refusing unknown keys and bad values by name.

    With ``source`` (a file) and ``section`` (its part), an error reads
    ``FILE: section.field: expected ..., found ...``.
    """
    where = f"{source}: " if source is not None else ""
    label = section or cls.__name__
    if not isinstance(d, dict):
        raise PixelModelsError(f"{where}{label}: expected a dict of settings, found {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise PixelModelsError(f"{where}{label}: unknown settings {unknown}; expected some of {sorted(names)}")
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.default is MISSING and f.default_factory is MISSING and f.name not in d)
    if missing:
        raise PixelModelsError(f"{where}{label}: missing settings {missing}")
    try:
        return cls(**d)
    except SettingError as e:
        if source is None and section is None:
            raise
        raise SettingError(e.name, f"{where}{label}.{e.name}", e.expected, e.found, e.allowed) from None


def read_config(path: str | Path) -> dict:
    """Read a ``config.json`` with a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise PixelModelsError(f"{path}: no such file; a run directory must hold config.json")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PixelModelsError(f"{path}: expected a JSON config, could not read it ({e})") from None


# -- options of library calls, checked by the calls (``check_field``) and inherited by the commands' settings --
@dataclass
class SamplingOptions(Settings):
    """What ``sample`` and ``complete`` take besides the model and the images."""

    temperature: float = setting(1.0, "divides the logits (and multiplies the logistic scales): below 1 "
                                 "sharper, above 1 flatter samples", gt=0, le=100)


@dataclass
class ScoreOptions(Settings):
    """What ``score`` takes besides the model and the images."""

    batch_size: int = setting(64, "images per forward pass (bounds memory, does not change the result)", ge=1,
                              le=MAX_BATCH)
    complexity: str | None = setting(None, "also each image's input complexity, bits/dim of its file under this "
                                     "lossless codec, and S = bits/dim - complexity (Serra et al. 2020): png "
                                     "(Pillow), webp or jpegxl (imagecodecs)", choices=CODECS)


@dataclass
class CodecOptions(Settings):
    """What ``compress`` (both) and ``decompress`` (``workers``) take besides the model and the images."""

    chunk_size: int = setting(256, "images coded together (one batch of the model); larger is faster, a prior "
                              "over many codes may want fewer", ge=1, le=MAX_BATCH)
    workers: int | None = setting(None, "chunks coded at the same time, a thread each (default: torch's "
                                  "thread count); the stream does not depend on it", ge=1, le=1024)
