"""Model families and their registry: importing this package registers every family and its cached sampler."""

from pixelmodels.models import (  # noqa: F401  (each registers itself)
    gated_pixelcnn,
    gated_pixelcnn_cache,
    pixelcnn,
    pixelcnn_cache,
    pixelcnnpp,
    pixelcnnpp_cache,
    pixelrnn,
    pixelrnn_cache,
    pixelsnail,
    pixelsnail_cache,
)
from pixelmodels.models.base import AutoregressiveModel, ModelOptions
from pixelmodels.models.registry import REGISTRY, build_model, create_model, list_models

__all__ = ["AutoregressiveModel", "ModelOptions", "REGISTRY", "build_model", "create_model", "list_models"]
