"""The settings of the commands that use a trained model (their numeric flags), declared once each; the
library options they share (``SamplingOptions``, ``ScoreOptions``, ``CodecOptions``) are the core's."""

from __future__ import annotations

from dataclasses import dataclass

from pixelmodels.config import CodecOptions, SamplingOptions, ScoreOptions
from pixelmodels.errors import PixelModelsError
from pixelmodels.settings import (MAX_BATCH, MAX_CLASSES, MAX_COUNT, MAX_IMAGE_SIZE, MAX_SAMPLES, MAX_SEED,
                                  SettingError, Settings, setting)


def label_setting(more: str = ""):
    """The declaration of ``--label``, for every command that reads images."""
    return setting(None, "class label for a conditional model, 0..K-1 of its K classes (checked against the "
                   "model): all image files (and the dataset, instead of its labels)" + more, le=MAX_CLASSES - 1)


def check_class(flag: str, value: int | None, model) -> None:
    """A class label given by ``flag`` (``--class``, ``--label``) against ``model``'s classes, 0..K-1."""
    if value is not None and not model.n_classes:
        raise PixelModelsError(f"{flag}: this model is not conditional")
    if value is not None and not 0 <= value < model.n_classes:
        raise PixelModelsError(f"{flag}: expected a class 0..{model.n_classes - 1}, found {value}")




@dataclass
class EvaluateSettings(Settings):
    """``pixelmodels evaluate``'s numeric flags."""

    limit: int | None = setting(None, "evaluate the first N images only", ge=1, le=MAX_COUNT)
    batch_size: int = setting(64, "images per forward pass", ge=1, le=MAX_BATCH)


@dataclass
class GenerateSettings(SamplingOptions):
    """``pixelmodels generate``'s numeric flags."""

    n: int = setting(16, "images (per class for a conditional model without --class)", ge=1, le=MAX_SAMPLES)
    class_label: int | None = setting(None, "class label for a conditional model, 0..K-1 of its K classes "
                                      "(checked against the model)", flag="--class", le=MAX_CLASSES - 1)
    seed: int = setting(0, "random seed of the samples", ge=0, le=MAX_SEED)
    batch_size: int = setting(256, "images sampled at a time (bounds memory)", ge=1, le=MAX_BATCH)

    def check(self, model, n_conds: int | None = None) -> None:
        """These settings against the model they sample: ``--class`` one of its classes (and given when it
        is conditional on classes and a condition), at most ``MAX_SAMPLES`` images for ``n_conds`` conditions."""
        check_class("--class", self.class_label, model)
        if model.cond_shape is not None and model.n_classes and self.class_label is None:
            raise PixelModelsError(f"--class: the model is conditional on {model.n_classes} classes and on --cond; "
                                   "give --class K")
        if n_conds is not None and self.n * n_conds > MAX_SAMPLES:
            raise PixelModelsError(f"--n / --cond: expected at most {MAX_SAMPLES} samples, found {self.n} for each "
                                   f"of {n_conds} conditions ({self.n * n_conds})")


@dataclass
class CompleteSettings(SamplingOptions):
    """``pixelmodels complete``'s numeric flags."""

    rows: int | None = setting(None, "keep the first K rows, 0..H (default: half the image)", ge=0,
                               le=MAX_IMAGE_SIZE * 4)
    pixels: int | None = setting(None, "keep the first P pixels in raster order, 0..H*W", ge=0,
                                 le=(MAX_IMAGE_SIZE * 4) ** 2)
    n: int = setting(8, "images to complete: the first N of the split, then of the INPUT files (default: 8, or "
                     "all when there are fewer)", ge=1, le=MAX_SAMPLES)
    seed: int = setting(0, "random seed of the completions", ge=0, le=MAX_SEED)
    label: int | None = label_setting()

    def check(self, model) -> None:
        """These settings against the model that completes, before reading its images: ``--label`` one of its
        classes, ``--rows`` / ``--pixels`` within its images."""
        check_class("--label", self.label, model)
        self.known_pixels(model.image_shape, self.n)

    def known_pixels(self, image_shape, n_images: int) -> int:
        """How many pixels, in raster order, completions keep of images of ``image_shape`` (C, H, W):
        ``--pixels``, else ``--rows`` whole rows (default: half of them); ``--n`` checked against the
        ``n_images`` read."""
        _, h, w = image_shape
        if self.n > n_images:
            raise SettingError("n", "--n", f"1 to {n_images} images (those read)", self.n)
        if self.pixels is not None and self.pixels > h * w:
            raise SettingError("pixels", "--pixels", f"0 to {h * w}", self.pixels)
        rows = h // 2 if self.rows is None else self.rows
        if self.pixels is None and rows > h:
            raise SettingError("rows", "--rows", f"0 to {h}", rows)
        return self.pixels if self.pixels is not None else rows * w


@dataclass
class ScoreSettings(ScoreOptions):
    """``pixelmodels score``'s numeric flags."""

    limit: int | None = setting(None, "score the first N images only: of the dataset, then of the image files "
                                "(each folder's in sorted order)", ge=1, le=MAX_COUNT)
    label: int | None = label_setting()

    def check(self, model) -> None:
        """These settings against the model that scores: ``--label`` one of its classes."""
        check_class("--label", self.label, model)


@dataclass
class OodSettings(ScoreOptions):
    """``pixelmodels ood``'s numeric flags."""

    limit: int | None = setting(None, "score the first N images of each set only (the synthetic sets noise and "
                                "constant: N images; default 1,000)", ge=1, le=MAX_COUNT)
    seed: int = setting(0, "random seed of the synthetic sets noise and constant", ge=0, le=MAX_SEED)


@dataclass
class CompressSettings(CodecOptions):
    """``pixelmodels compress``'s numeric flags (``decompress`` takes ``--workers``)."""

    limit: int | None = setting(None, "compress the first N images only: of the dataset, then of the image "
                                "files (each folder's in sorted order)", ge=1, le=MAX_COUNT)
    label: int | None = label_setting("; stored in the stream")

    def check(self, model) -> None:
        """These settings against the model: ``--label`` one of its classes."""
        check_class("--label", self.label, model)
