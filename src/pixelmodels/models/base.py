"""The model contract: a causal network plus a likelihood head.

``model(x, y)`` maps integer images (what the dataset yields) and optional
class labels to distribution parameters at every position;
``model.log_prob`` and ``model.bits_per_dim`` score images through the head.
Subclasses implement ``network(x_scaled, y)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.nn as nn

from pixelmodels.config import ModelConfig
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import make_head
from pixelmodels.nn.init import data_dependent_init


class AutoregressiveModel(nn.Module):
    """Base class of every registered model.

    Attributes:
        config: the resolved ``ModelConfig`` (rebuilds the model).
        head: the likelihood head.
        channel_masked: True when the network masks channels within a pixel, so
            sampling needs one network pass per sub-pixel rather than per pixel.
        receptive_rows: a bound on the rows above that reach a row, or None.
    """

    channel_masked = True

    @property
    def receptive_rows(self) -> int | None:
        """How many rows above row i can influence the output at row i (None: any)."""
        return None

    def __init__(self, config: ModelConfig, options):
        super().__init__()
        self.config = ModelConfig(**{**asdict(config), "options": asdict(options)})
        self.options = options
        self.image_shape = config.image_shape
        self.n_bits = config.n_bits
        self.n_classes = config.n_classes
        self.head = make_head(options.likelihood, config.image_shape[0], config.n_bits,
                              n_mixtures=getattr(options, "n_mixtures", 10), masked=self.channel_masked,
                              n_features=self.head_features())

    # -- the part a subclass writes ---------------------------------------
    def head_features(self) -> int | None:
        """Features per position a network that is not channel-masked gives its head."""
        return None

    def network(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Scaled images (B, C, H, W) in [-1, 1] -> params (B, head.n_params, H, W)."""
        raise NotImplementedError

    # -- the shared contract ----------------------------------------------
    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Integer images in [0, 2**n_bits) -> floats in [-1, 1], in the parameters' dtype."""
        dtype = next(self.parameters()).dtype
        return x.to(dtype) * (2.0 / (2**self.n_bits - 1)) - 1.0

    def check_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """Refuse images or labels the model cannot take, with a clear message."""
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise PixelModelsError(
                f"images: expected shape (B, {', '.join(map(str, self.image_shape))}), found {tuple(x.shape)}"
            )
        if self.n_classes is None:
            return None
        if y is None:
            raise PixelModelsError(f"labels: this model is conditional on {self.n_classes} classes; give y")
        y = torch.as_tensor(y, device=x.device).long().reshape(-1)
        if y.numel() == 1 and x.shape[0] != 1:
            y = y.expand(x.shape[0])
        if y.shape[0] != x.shape[0]:
            raise PixelModelsError(f"labels: expected {x.shape[0]} labels, found {y.shape[0]}")
        # the range check reads the labels' values: skipped inside torch.compile (it would break the graph);
        # the trainer's labels come from the dataset and the CLI checks --class
        if y.numel() and not torch.compiler.is_compiling() and (y.min() < 0 or y.max() >= self.n_classes):
            bad = y[(y < 0) | (y >= self.n_classes)][0].item()
            raise PixelModelsError(f"labels: expected class labels in 0..{self.n_classes - 1}, found {bad}")
        return y

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Distribution parameters (B, head.n_params, H, W) for integer images x."""
        y = self.check_input(x, y)
        return self.network(self.scale(x), y)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None, per_pixel: bool = False) -> torch.Tensor:
        """Log-likelihood in nats: per image (B,), or per pixel (B, H, W) summed over channels."""
        lp = -self.head.nll(self(x, y), x)
        return lp if per_pixel else lp.sum(dim=(1, 2))

    def bits_per_dim(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image bits per dimension, NLL / (ln 2 * C * H * W), in float32."""
        return -self.log_prob(x, y).float() / (math.log(2) * math.prod(self.image_shape))

    def initialize_from_data(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Data-dependent initialization of the weight-normalized layers on a real batch, for models with
        options ``weight_norm`` and ``data_init`` both on (the trainer calls it on a new run's first batch)."""
        if getattr(self.options, "weight_norm", False) and getattr(self.options, "data_init", False):
            data_dependent_init(self, x, y)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
