"""Class conditioning: a learned per-class bias added inside a layer."""

from __future__ import annotations

import torch
import torch.nn as nn


class ClassBias(nn.Module):
    """A learned per-class bias (B, n, 1, 1), zero-initialized; 0 when the model is unconditional."""

    def __init__(self, n_classes: int | None, n_features: int):
        super().__init__()
        self.embedding = nn.Embedding(n_classes, n_features) if n_classes else None
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight)

    def forward(self, y: torch.Tensor | None) -> torch.Tensor | float:
        if self.embedding is None or y is None:
            return 0.0
        return self.embedding(y)[:, :, None, None]

    def add(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``x + self(y)``; x itself, without a copy, when there is no bias to add."""
        return x if self.embedding is None or y is None else x + self(y)
