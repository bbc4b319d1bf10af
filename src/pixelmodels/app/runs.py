"""Resolving a training run, and opening the model and data a command uses.

From a ``RunConfig`` to the process, data, model and training state a ``Trainer`` is given (seeds,
deterministic mode, torchrun's process group, random number generators on resume: the entry point's
work, kept out of the training loop); ``train(run, out)`` builds it and runs it in a session
(:mod:`pixelmodels.app.session`); ``--resume auto`` decides whether a command continues the run in its ``--out``
(the command torchrun restarts). From a run directory (or a shipped model) to the model and the data a
command uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import torch

from pixelmodels import checkpoint as ckpt
from pixelmodels import distributed
from pixelmodels.app.session import RunCallbacks, run_training
from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig, from_dict, read_config
from pixelmodels.data import DATASET_INFO, list_datasets, load_dataset
from pixelmodels.distributed import World
from pixelmodels.errors import PixelModelsError
from pixelmodels.devices import check_precision, resolve_device
from pixelmodels.models.registry import build_model, get_spec, list_models, resolve_options
from pixelmodels.pretrained import list_pretrained, pretrained_info, pretrained_path
from pixelmodels.data.datasets import class_frequencies, describe_data
from pixelmodels.settings import MAX_COUNT
from pixelmodels.training import Trainer
from pixelmodels.vqvae import has_vqvae, load_vqvae


def load_data(data: DataConfig, split: str):
    """The ``split`` of the dataset ``data`` describes."""
    return load_dataset(data.dataset, split, root=data.data_dir, n_bits=data.n_bits,
                        image_size=data.image_size, channels=data.channels, n_codes=data.n_codes,
                        cond_codes=data.cond_codes)


def check_splits(train, test) -> None:
    """Refuse a test split that holds something else than the training split."""
    if describe_data(train) != describe_data(test):
        raise PixelModelsError(f"--dataset: the train split of {train.name!r} holds {describe_data(train)}, "
                               f"the test split {describe_data(test)}")
    if train.n_classes and test.n_classes and test.n_classes > train.n_classes:
        raise PixelModelsError(f"--dataset: the train split of {train.name!r} has {train.n_classes} classes, the "
                               f"test split {test.n_classes}; give both files n_classes")


def resolve_model_config(model: ModelConfig, dataset, conditional: bool) -> ModelConfig:
    """Take the image shape, depth (or number of codes), classes and condition shape from the dataset, and
    for a class-conditional model the frequencies of its labels (p(y) of the marginal likelihood)."""
    if conditional and not dataset.n_classes:
        raise PixelModelsError(f"--conditional: dataset {dataset.name!r} has no class labels")
    return dataclasses.replace(model, image_shape=tuple(dataset.image_shape), n_bits=dataset.n_bits,
                               n_codes=dataset.n_codes, cond_shape=dataset.cond_shape,
                               cond_codes=dataset.cond_codes,
                               n_classes=dataset.n_classes if conditional else None,
                               class_frequencies=class_frequencies(dataset) if conditional else None)


def resolve_train_config(train: TrainConfig, model_name: str) -> TrainConfig:
    """Fill the settings left at None with the model family's preferred values.

    Epochs left at None: 1, or no limit of epochs when ``max_steps`` or ``max_minutes`` is set, which is then
    the limit (as Hugging Face's Trainer takes ``max_steps`` over ``num_train_epochs``); with several set, the
    first reached stops training (:func:`stop_rule` says which).
    """
    defaults = get_spec(model_name).train_defaults
    filled = {k: (defaults.get(k) if v is None and k in defaults else v) for k, v in dataclasses.asdict(train).items()}
    if filled["adam_betas"] is not None:
        filled["adam_betas"] = tuple(filled["adam_betas"])
    if filled["grad_clip"] is None:
        filled["grad_clip"] = 0.0
    if filled["epochs"] is None:
        filled["epochs"] = 1 if filled["max_steps"] is None and filled["max_minutes"] is None else MAX_COUNT
    return TrainConfig(**filled)  # which checks every value through its declaration


def new_run(model: str | None, preset: str = "default", options: dict | None = None, data: dict | None = None,
            train: dict | None = None) -> RunConfig:
    """The ``RunConfig`` of a new run of family ``model`` from the settings given (each checked by its
    declaration, the model's options by its family's; a relative ``data_dir`` made absolute); the image
    shape comes from the data at the start."""
    if model is None:
        raise PixelModelsError(f"--model: required for a new run; expected one of {list_models()}")
    resolve_options(model, preset, options or {})
    data = dict(data or {})
    if data.get("data_dir") is not None:  # absolute, so the run works from any directory
        data["data_dir"] = os.path.abspath(os.path.expanduser(data["data_dir"]))
    return RunConfig(ModelConfig(name=model, image_shape=(1, 1, 1), preset=preset, options=options or {}),
                     DataConfig(**data), TrainConfig(**(train or {})))


def default_run_dir(run: RunConfig) -> Path:
    """Where a new run goes unless told: ``runs/MODEL-DATASET-YYYYMMDD-HHMMSS``."""
    return Path("runs") / f"{run.model.name}-{run.data.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def read_run(run_dir: str | Path) -> RunConfig:
    """The ``RunConfig`` in run directory ``run_dir``, its model options checked by their declarations."""
    ckpt.model_config_of(run_dir)
    return RunConfig.from_dict(read_config(Path(run_dir) / ckpt.CONFIG), Path(run_dir) / ckpt.CONFIG)


def resumed_run(run_dir: str | Path, train: dict, *, model: str | None = None, preset: str | None = None,
                options: dict | None = None, data: dict | None = None) -> RunConfig:
    """The run in ``run_dir`` with the training settings ``train`` changed.

    A resumed run keeps its model and data, so any other change is refused. ``max_steps`` or ``max_minutes``
    given without ``epochs`` is the limit, as for a new run.
    """
    stored = read_run(run_dir)
    if model not in (None, stored.model.name) or preset is not None or options or data:
        raise PixelModelsError(f"--resume: {run_dir} is a {stored.model.name} run; only training flags "
                               "(--epochs, --max-steps, --lr, ...) can change on resume")
    if ("max_steps" in train or "max_minutes" in train) and "epochs" not in train:
        train = {**train, "epochs": None}
    return dataclasses.replace(stored, train=dataclasses.replace(stored.train, **train))


# Training settings a resume may change (as ``--resume DIR`` allows): limits, evaluation, logging, checkpoints,
# device and precision. Every other setting defines the run, so ``--resume auto`` compares it.
MAY_CHANGE = ("epochs", "max_steps", "max_minutes", "eval_every", "eval_every_steps", "eval_batch_size", "eval_limit",
              "n_samples", "log_every", "checkpoint_every_steps", "checkpoint_every_minutes", "max_bad_steps",
              "device", "precision", "compile", "channels_last")


def run_differences(asked: RunConfig, stored: RunConfig) -> list[str]:
    """The settings that make run ``asked`` (a new run's, not yet resolved) another run than ``stored`` (a run
    directory's): ``section.field (there X, asked Y)``, each field of :data:`MAY_CHANGE` left out."""
    name = asked.model.name
    options = resolve_options(name, asked.model.preset, asked.model.options, codes=stored.model.n_codes is not None)
    sides = [{"model.name": name, "model.preset": asked.model.preset,
              **{f"model.options.{k}": v for k, v in dataclasses.asdict(options).items()},
              **{f"data.{k}": v for k, v in dataclasses.asdict(asked.data).items()},
              **{f"train.{k}": v for k, v in dataclasses.asdict(resolve_train_config(asked.train, name)).items()}},
             {"model.name": stored.model.name, "model.preset": stored.model.preset,
              **{f"model.options.{k}": v for k, v in stored.model.options.items()},
              **{f"data.{k}": v for k, v in dataclasses.asdict(stored.data).items()},
              **{f"train.{k}": v for k, v in dataclasses.asdict(stored.train).items()}}]
    new, old = (json.loads(json.dumps(side)) for side in sides)  # tuples and lists alike
    return [f"{k} (there {old.get(k)!r}, asked {new.get(k)!r})" for k in sorted(new.keys() | old.keys())
            if k.rpartition(".")[2] not in MAY_CHANGE and new.get(k) != old.get(k)]


def auto_resume(out: Path, asked: RunConfig) -> tuple[bool, bool]:
    """``--resume auto``: whether the run ``asked`` continues the run in ``out`` (a checkpoint of the same run
    is there), and whether it replaces one there (the same run, stopped before its first checkpoint). A
    directory that holds nothing starts the run; one that holds another run is refused."""
    if not (out / ckpt.CONFIG).is_file():
        return False, False
    differences = run_differences(asked, read_run(out))
    if differences:
        raise PixelModelsError(f"--resume auto: --out {out} holds another run; it differs in "
                               f"{'; '.join(differences)}; give another --out, or --resume {out} to continue it")
    return (out / ckpt.STATE).is_file(), not (out / ckpt.STATE).is_file()


def run_and_dir(model: str | None, preset: str | None, out: str | Path | None, resume: str | Path | None,
                train: dict, options: dict, data: dict) -> tuple[RunConfig, Path, bool, bool]:
    """``pixelmodels train``'s run, its directory, whether it resumes and whether it replaces a run there (before
    ``--overwrite``): the run in ``resume`` with ``train`` changed (see :func:`resumed_run`), or a new one
    (:func:`new_run`) in ``out`` (default: :func:`default_run_dir`). ``resume`` "auto" is the run in ``out``
    when it holds a checkpoint of the same run (:func:`auto_resume`), else a new one."""
    if resume == "auto":
        if out is None:
            raise PixelModelsError("--resume auto: expected --out DIR, the run directory to continue or start; "
                                   "found no --out")
        asked = new_run(model, preset or "default", options, data, train)
        resuming, replaces = auto_resume(Path(out), asked)
        return (resumed_run(out, train), Path(out), True, False) if resuming else (asked, Path(out), False, replaces)
    if resume is not None:
        run = resumed_run(resume, train, model=model, preset=preset, options=options, data=data)
        return run, Path(resume), True, False
    run = new_run(model, preset or "default", options, data, train)
    return run, Path(out) if out is not None else default_run_dir(run), False, False


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


def load_splits(data: DataConfig, device: torch.device) -> tuple:
    """The train split of ``data`` (kept on ``device`` where it fits, :func:`on_device`) and its test split,
    checked against each other (:func:`check_splits`)."""
    train_set = on_device(load_data(data, "train"), device)
    test_set = load_data(data, "test")
    check_splits(train_set, test_set)
    return train_set, test_set


def build_run_model(run: RunConfig, train_set, device: torch.device) -> tuple:
    """The model of ``run`` for the data of ``train_set``, on ``device``, and ``run`` resolved: its model config
    the model's, its training settings filled with the family's defaults (:func:`resolve_train_config`)."""
    model = build_model(resolve_model_config(run.model, train_set, run.train.conditional)).to(device)
    return model, RunConfig(model=model.config, data=run.data, train=resolve_train_config(run.train, run.model.name))


def restore_rng(state: dict, device: torch.device) -> None:
    """Set the random number generators (process-wide state) as they were when the training state ``state``
    was saved, so that a resumed run draws what an uninterrupted one would have drawn (dropout)."""
    torch.set_rng_state(state["rng_cpu"].cpu())
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)


def build_trainer(run: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Trainer:
    """Set up the process, load the data, build the model (with ``resume``, load the training state in ``out``)
    and hand them to a ``Trainer``.

    A new run (not ``resume``) refuses an ``out`` that holds a run, unless ``overwrite``: then that run is
    removed, once the new run's data and model are known to be good.
    """
    from pixelmodels.app.outputs import check_run_dir

    out = Path(out)
    holds_run = check_run_dir(out, resume, overwrite)  # before any work: a folder it can write, not a run unless asked
    world, device = setup_process(run.train)
    train_set, test_set = load_splits(run.data, device)
    model, run = build_run_model(run, train_set, device)
    state = ckpt.load_state(out / ckpt.STATE, map_location=device) if resume else None
    if state is not None:
        restore_rng(state, device)
    if holds_run and world.main:
        shutil.rmtree(out)
    return Trainer(run, model, train_set, test_set, out, world=world, device=device, state=state)


def train(run: RunConfig, out: str | Path, resume: bool = False, progress: bool | None = None,
          overwrite: bool = False) -> dict:
    """Train a run described by ``run`` into directory ``out`` (``overwrite``: replacing a run there), as
    ``pixelmodels train`` does; returns the final test record. Leaves torchrun's process group at the end."""
    with distributed.closing():
        return run_training(build_trainer(run, out, resume=resume, overwrite=overwrite), RunCallbacks(progress))


# -- the model and data a command uses: a run directory or a shipped model ----------------------
def open_model(run_dir: str | Path | None, pretrained: str | None, device="cpu") -> tuple:
    """The model in ``run_dir`` or the shipped model ``pretrained`` (exactly one), on ``device`` (a name, as
    ``--device`` takes, or a torch.device): (model, the DataConfig it was trained on or None, the folder for
    default outputs: the run directory, or the current one)."""
    if (run_dir is None) == (pretrained is None):
        raise PixelModelsError("expected a run directory or --pretrained NAME (one of "
                               f"{list_pretrained()}), found {'both' if pretrained else 'neither'}")
    folder = Path(run_dir) if pretrained is None else pretrained_path(pretrained)
    model, stored = ckpt.load_with_config(folder, resolve_device(str(device)))
    if "data" in stored:  # a run directory
        data = from_dict(DataConfig, stored["data"], folder / ckpt.CONFIG, "data")
    elif pretrained is not None:  # a shipped model: its metadata names the dataset
        data = DataConfig(dataset=pretrained_info(pretrained)["dataset"], n_bits=model.n_bits)
    else:  # a directory written by save_pretrained
        data = None
    return model, data, Path(".") if pretrained is not None else folder


def vqvae_of(run_dir: str | Path | None, pretrained: str | None, device="cpu"):
    """The VQ-VAE saved beside the prior in ``run_dir`` or in the shipped model ``pretrained``
    (``vqvae.json``, as ``fashion-mnist-codes`` has), on ``device``; None when there is none."""
    folder = Path(run_dir) if pretrained is None else pretrained_path(pretrained)
    return load_vqvae(folder, resolve_device(str(device))) if has_vqvae(folder) else None


def dataset_config(run_data: DataConfig | None, dataset: str | None, data_dir: str | None, model) -> DataConfig:
    """The data a command reads for ``model``: ``dataset`` (``--dataset``, at the model's depth where it has
    more bits) or the one it was trained on, ``run_data``; its files in ``data_dir`` (``--data-dir``) if given."""
    if dataset is None:
        if run_data is None:
            raise PixelModelsError("--dataset: this model directory does not say which dataset it was trained on; "
                                   f"expected --dataset NAME, one of {list_datasets()}")
        return dataclasses.replace(run_data, data_dir=data_dir or run_data.data_dir)
    c, size, _ = model.image_shape
    folder = dict(image_size=size, channels=c) if dataset == "folder" else {}
    if dataset == "arrays":
        return DataConfig(dataset=dataset, data_dir=data_dir, n_bits=model.n_bits, n_codes=model.n_codes,
                          cond_codes=model.cond_codes)
    info = DATASET_INFO.get(dataset)
    n_bits = model.n_bits if info is not None and model.n_bits is not None and model.n_bits <= info.n_bits \
        else None  # else: refused by name when it is loaded
    return DataConfig(dataset=dataset, data_dir=data_dir, n_bits=n_bits, **folder)


def load_model_data(model, run_data: DataConfig | None, split: str, dataset: str | None = None,
                    data_dir: str | None = None):
    """The ``split`` of :func:`dataset_config`'s data, refused unless it holds what ``model`` takes (shape,
    depth or codes, condition)."""
    data = dataset_config(run_data, dataset, data_dir, model)
    loaded = load_data(data, split)
    if describe_data(loaded) != describe_data(model):
        raise PixelModelsError(f"--dataset: the model takes {describe_data(model)}, {data.dataset} has "
                               f"{describe_data(loaded)}")
    return loaded
