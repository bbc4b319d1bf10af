"""pixelmodels: autoregressive image models (PixelCNN family) in PyTorch.

>>> import pixelmodels
>>> model = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 28, 28), preset="tiny")
>>> images = pixelmodels.sample(model.eval(), 4)          # uint8 (4, 1, 28, 28)
>>> model.bits_per_dim(images).shape
torch.Size([4])
>>> pixelmodels.score(model, images).bits_per_dim.shape     # also .nll, and .pixel_nll with per_pixel=True
torch.Size([4])
>>> pixelmodels.check_causality(model, positions=32).ok   # no output sees a later pixel: .summary(), .leaks
True
>>> data = pixelmodels.compress(model, images)            # lossless, about the images' NLL in bits
>>> bool((pixelmodels.decompress(model, data) == images).all())
True
>>> pixelmodels.list_pretrained()[:2]                      # shipped trained models: load_pretrained(name)
['fashion-mnist', 'fashion-mnist-codes']
"""

from pixelmodels.causality import CausalityReport, check_causality
from pixelmodels.checkpoint import load, save_pretrained
from pixelmodels.compression import compress, decompress
from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pixelmodels.data import list_datasets, load_dataset
from pixelmodels.errors import DatasetError, PixelModelsError
from pixelmodels.evaluation import evaluate
from pixelmodels.models import create_model, list_models
from pixelmodels.models.base import AutoregressiveModel, ModelOptions, SamplingCache, register_cache
from pixelmodels.models.registry import register_model
from pixelmodels.pretrained import list_pretrained, load_pretrained, pretrained_info
from pixelmodels._version import __version__
from pixelmodels.app.runs import train
from pixelmodels.sampling import complete, sample
from pixelmodels.scoring import Scores, score
from pixelmodels.settings import setting
from pixelmodels.vqvae import load_vqvae

__all__ = [
    "__version__", "AutoregressiveModel", "CausalityReport", "DataConfig", "DatasetError", "ModelConfig",
    "ModelOptions",
    "PixelModelsError", "RunConfig", "SamplingCache", "Scores", "TrainConfig", "check_causality", "complete",
    "compress", "create_model", "decompress", "evaluate", "list_datasets", "list_models", "list_pretrained", "load",
    "load_dataset", "load_pretrained", "load_vqvae", "pretrained_info", "register_cache", "register_model",
    "sample", "save_pretrained", "score", "setting", "train",
]
