"""pixelmodels: autoregressive image models (PixelCNN family) in PyTorch."""

from pixelmodels.errors import PixelModelsError
from pixelmodels.models import create_model, list_models

__all__ = ["PixelModelsError", "create_model", "list_models"]
