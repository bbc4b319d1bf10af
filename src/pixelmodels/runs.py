"""Resolving a run: from a ``RunConfig`` to the process, data, model and settings a ``Trainer`` is given.

This is the entry point's work (seeds, deterministic mode, torchrun's process group, datasets, the
model), kept out of the training loop; ``train(run, out)`` is the whole of it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pixelmodels import distributed
from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pixelmodels.data import load_dataset
from pixelmodels.distributed import World
from pixelmodels.errors import PixelModelsError
from pixelmodels.evaluation import check_precision, resolve_device
from pixelmodels.faults import Faults
from pixelmodels.models.registry import build_model, get_spec
from pixelmodels.training import Trainer


def load_data(data: DataConfig, split: str):
    return load_dataset(data.dataset, split, root=data.data_dir, n_bits=data.n_bits,
                        image_size=data.image_size, channels=data.channels, n_codes=data.n_codes)


def describe_data(dataset) -> str:
    """What a dataset holds, in words: '8-bit images (1, 28, 28)' or 'maps of 512 codes (1, 7, 7)', and its cond."""
    what = f"maps of {dataset.n_codes} codes" if dataset.n_codes else f"{dataset.n_bits}-bit images"
    cond = f" with cond {tuple(dataset.cond_shape)}" if dataset.cond_shape is not None else ""
    return f"{what} {tuple(dataset.image_shape)}{cond}"


def check_splits(train, test) -> None:
    """Refuse a test split that holds something else than the training split."""
    if describe_data(train) != describe_data(test):
        raise PixelModelsError(f"--dataset: the train split of {train.name!r} holds {describe_data(train)}, "
                               f"the test split {describe_data(test)}")
    if train.n_classes and test.n_classes and test.n_classes > train.n_classes:
        raise PixelModelsError(f"--dataset: the train split of {train.name!r} has {train.n_classes} classes, the "
                               f"test split {test.n_classes}; give both files n_classes")


def resolve_model_config(model: ModelConfig, dataset, conditional: bool) -> ModelConfig:
    """Take the image shape, depth (or number of codes), classes and condition shape from the dataset."""
    if conditional and not dataset.n_classes:
        raise PixelModelsError(f"--conditional: dataset {dataset.name!r} has no class labels")
    return dataclasses.replace(model, image_shape=tuple(dataset.image_shape), n_bits=dataset.n_bits,
                               n_codes=dataset.n_codes, cond_shape=dataset.cond_shape,
                               n_classes=dataset.n_classes if conditional else None)


def resolve_train_config(train: TrainConfig, model_name: str) -> TrainConfig:
    """Fill the settings left at None with the model family's preferred values."""
    defaults = get_spec(model_name).train_defaults
    filled = {k: (defaults.get(k) if v is None and k in defaults else v) for k, v in dataclasses.asdict(train).items()}
    if filled["adam_betas"] is not None:
        filled["adam_betas"] = tuple(filled["adam_betas"])
    if filled["grad_clip"] is None:
        filled["grad_clip"] = 0.0
    return TrainConfig(**filled)  # which checks every value through its declaration


def setup_process(train: TrainConfig) -> tuple[World, torch.device]:
    """Process-wide state of a training run: its device, torchrun's process group (joined once), the
    checks that need both, deterministic algorithms when asked, and the seed of initialization and dropout."""
    device = resolve_device(train.device)
    world = distributed.init(device)
    device = distributed.local_device(device, world)
    check_precision(train.precision, device)
    if train.batch_size % world.size:
        raise PixelModelsError(f"--batch-size: the global batch {train.batch_size} does not divide among "
                               f"{world.size} processes; use a multiple of {world.size}")
    if train.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(train.seed)
    return world, device


def on_device(dataset, device: torch.device):
    """Keep a small dataset whole on the GPU (uint8); indexing it then costs no transfer."""
    if device.type == "cuda" and dataset.images.numel() < 2**31:
        dataset.images, dataset.labels = dataset.images.to(device), dataset.labels.to(device)
    return dataset


def build_trainer(run: RunConfig, out: str | Path, *, resume: bool = False, progress: bool | None = None,
                  faults: Faults | None = None, trainer_cls: type[Trainer] = Trainer, **options) -> Trainer:
    """Set up the process, load the data, build the model and hand them to a ``Trainer`` (``trainer_cls``,
    given ``options`` too). ``faults``: the test hooks, by default those of ``PIXELMODELS_FAULTS``."""
    world, device = setup_process(run.train)
    train_set = on_device(load_data(run.data, "train"), device)
    test_set = load_data(run.data, "test")
    check_splits(train_set, test_set)
    model = build_model(resolve_model_config(run.model, train_set, run.train.conditional)).to(device)
    run = RunConfig(model=model.config, data=run.data, train=resolve_train_config(run.train, run.model.name))
    return trainer_cls(run, model, train_set, test_set, out, world=world, device=device, resume=resume,
                       progress=progress, faults=Faults.from_env() if faults is None else faults, **options)


def train(run: RunConfig, out: str | Path, resume: bool = False, progress: bool | None = None) -> dict:
    """Train a run described by ``run`` into directory ``out``; returns the final test record."""
    return build_trainer(run, out, resume=resume, progress=progress).fit()
