"""Model families and their registry: importing this package registers every built-in family and its cached
sampler; a model of your own subclasses ``AutoregressiveModel`` and calls ``register_model``."""

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
from pixelmodels.models.base import AutoregressiveModel, ModelOptions, SamplingCache, register_cache
from pixelmodels.models.registry import REGISTRY, build_model, create_model, import_models, list_models, register_model

__all__ = ["AutoregressiveModel", "ModelOptions", "REGISTRY", "SamplingCache", "build_model", "create_model",
           "import_models", "list_models", "register_cache", "register_model"]
