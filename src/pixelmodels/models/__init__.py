"""Model families and their registry."""

from pixelmodels.models.base import AutoregressiveModel
from pixelmodels.models.registry import REGISTRY, build_model, create_model, list_models

__all__ = ["AutoregressiveModel", "REGISTRY", "build_model", "create_model", "list_models"]
