"""The pieces of the training loop: EMA, schedule, evaluation."""

import math

import pytest
import torch

import pixelmodels
from pixelmodels.training import EMA, evaluate, resolve_device, resolve_train_config
from pixelmodels.config import TrainConfig
from pixelmodels.data import ImageDataset
from pixelmodels.errors import PixelModelsError


def test_ema_starts_from_the_initial_weights_and_averages():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for e, old, new in zip(ema.model.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.9 * old + 0.1 * new)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_preset_defaults_fill_only_what_is_not_given():
    cfg = resolve_train_config(TrainConfig(lr=1e-2), "gated-pixelcnn")
    assert cfg.lr == 1e-2 and cfg.lr_decay == 0.999995 and cfg.ema == 0.9995 and cfg.optimizer == "adam"
    with pytest.raises(PixelModelsError, match="--optimizer: expected adam or rmsprop, found 'sgd'"):
        resolve_train_config(TrainConfig(optimizer="sgd"), "pixelcnn")
    with pytest.raises(PixelModelsError, match="--ema"):
        resolve_train_config(TrainConfig(ema=1.5), "pixelcnn")


def test_device_errors_name_the_flag():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(PixelModelsError, match="--device"):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(PixelModelsError, match="no CUDA device"):
            resolve_device("cuda")


def test_evaluate_is_the_mean_of_per_image_bits_per_dim_over_batches():
    model = pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), n_bits=4, preset="tiny", n_classes=3)
    images = torch.randint(0, 16, (11, 1, 6, 6), dtype=torch.uint8)
    labels = torch.randint(0, 3, (11,))
    dataset = ImageDataset(images, labels, n_bits=4, n_classes=3)
    with torch.no_grad():
        direct = model.bits_per_dim(images, labels).double().mean().item()
    assert evaluate(model, dataset, batch_size=4) == pytest.approx(direct, rel=1e-6)
    with torch.no_grad():
        first = -model.log_prob(images[:5], labels[:5]).double().sum().item() / (5 * 36 * math.log(2))
    assert evaluate(model, dataset, batch_size=2, limit=5) == pytest.approx(first, rel=1e-6)
