import pytest
import torch

from pixelmodels import list_models


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


ALL_MODELS = list_models()
