"""Conditioning: what a model is given besides the image, turned into an additive bias in every layer.

One mechanism serves every family and both paths (Conditional PixelCNN [1], Section 2.3):

* ``Conditioning``, one per model, turns what the user gives into a ``Condition``, once per
  forward pass and once per sampling run: class labels ``y``; a vector ``cond`` (B, D) (a class
  one-hot, an embedding, an encoder's code); a spatial map ``cond`` (B, D, h, w) of any size,
  brought to the network's H x W by a learned network m (a 1x1 convolution, nearest
  upsampling (or area averaging for a finer map), two 3x3 convolutions with ELU): the map's
  features are computed here, once; or a map of discrete codes ``cond`` (B, h, w) with values
  in [0, K) (``cond_codes``: the top codes a VQ-VAE-2 bottom prior reads), each code looked up
  in a learned table of D = MAP_FEATURES features and then taken through the same m. The table
  is the one-hot map's first 1x1 convolution written as a lookup, so a map of K codes costs
  what a float map of D features does, not of K;
* ``ConditionBias``, one per conditioned layer, maps that ``Condition`` to the layer's additive
  bias: a learned per-class vector (zero-initialized), V^T h for a vector h, a 1x1 convolution
  V * m(s) for a map (average-pooled to the layer's resolution where it is coarser), summed;
  (B, F, 1, 1) or (B, F, H, W);
* ``FrozenBias`` is a layer's bias for a sampling run: computed once, detached, read by a cache
  at the position (``at``) or row (``row``) it computes.

The bias is the whole interface between a condition and the networks, so a new kind of
condition is added in this file alone. The condition is given, so it may be non-causal (the
map's upsampling looks everywhere); the image never is.

[1]: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders",
     https://arxiv.org/abs/1606.05328
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

MAP_FEATURES = 64  # features of the upsampled map m(s)


@dataclass
class Condition:
    """What every conditioned layer of one forward pass (or sampling run) reads.

    Attributes:
        labels: class labels (B,), int64, or None.
        vector: the vector condition (B, D), or None.
        features: m(s), the upsampled map's features (B, MAP_FEATURES, H, W) at the network's size, or None.
    """

    labels: torch.Tensor | None = None
    vector: torch.Tensor | None = None
    features: torch.Tensor | None = None
    _pooled: dict = field(default_factory=dict, repr=False)

    def features_at(self, size: tuple[int, int]) -> torch.Tensor:
        """m(s) at a layer's resolution: itself, or average-pooled to a coarser ``size`` (once per size)."""
        if tuple(self.features.shape[2:]) == tuple(size):
            return self.features
        if size not in self._pooled:
            self._pooled[size] = F.adaptive_avg_pool2d(self.features, size)
        return self._pooled[size]

    def rows(self, top: int, bottom: int) -> Condition:
        """The condition of the image rows top..bottom-1 (what a network run on those rows reads)."""
        if self.features is None:
            return self
        return Condition(self.labels, self.vector, self.features[:, :, top:bottom])


class Conditioning(nn.Module):
    """The model's conditioning component: user inputs -> ``Condition`` (None for an unconditional model).

    Args:
        n_classes: classes of a class-conditional model, or None.
        cond_shape: (D,) for a vector condition, (D, h, w) for a spatial map, (h, w) for a map of codes,
            or None.
        size: the network's (H, W), the size m(s) is brought to.
        cond_codes: K of a map of codes (``cond_shape`` (h, w)), else None.
    """

    def __init__(self, n_classes: int | None = None, cond_shape: tuple[int, ...] | None = None,
                 size: tuple[int, int] | None = None, cond_codes: int | None = None):
        super().__init__()
        self.n_classes = n_classes
        self.cond_shape = None if cond_shape is None else tuple(cond_shape)
        self.size = size
        self.codes = nn.Embedding(cond_codes, MAP_FEATURES) if cond_codes else None
        self.upsample = None
        if self.spatial:
            d = MAP_FEATURES if self.codes is not None else self.cond_shape[0]
            self.upsample = nn.ModuleDict({
                "inner": nn.Conv2d(d, MAP_FEATURES, 1),
                "conv1": nn.Conv2d(MAP_FEATURES, MAP_FEATURES, 3, padding=1),
                "conv2": nn.Conv2d(MAP_FEATURES, MAP_FEATURES, 3, padding=1),
            })

    @property
    def spatial(self) -> bool:
        return self.codes is not None or (self.cond_shape is not None and len(self.cond_shape) == 3)

    @property
    def active(self) -> bool:
        return bool(self.n_classes) or self.cond_shape is not None

    def forward(self, y: torch.Tensor | None, cond: torch.Tensor | None = None) -> Condition | None:
        """Labels and a condition already checked by the model -> the ``Condition`` (computed once)."""
        if not self.active:
            return None
        vector = features = None
        if cond is not None and self.spatial:
            if self.codes is not None:
                cond = self.codes(cond).movedim(-1, 1)  # (B, h, w) codes -> (B, MAP_FEATURES, h, w)
            m = self.upsample
            finer = cond.shape[2] > self.size[0] or cond.shape[3] > self.size[1]
            h = F.interpolate(m["inner"](cond), size=self.size, mode="area" if finer else "nearest")
            features = m["conv2"](F.elu(m["conv1"](F.elu(h))))  # (B, MAP_FEATURES, H, W)
        elif cond is not None:
            vector = cond
        return Condition(labels=y, vector=vector, features=features)

    def bias(self, n_features: int) -> ConditionBias:
        """A new per-layer bias of ``n_features`` for this model's kinds of condition."""
        vector = self.cond_shape[0] if self.cond_shape is not None and not self.spatial else None
        return ConditionBias(self.n_classes, n_features, vector, self.spatial)


class ConditionBias(nn.Module):
    """A layer's additive bias from the ``Condition``; none when the model is unconditional.

    Parts (summed): ``embedding``, the per-class table (zero-initialized); ``vector``, V^T h
    (a linear map without bias) of a vector of ``vector`` features; ``spatial``, a 1x1 convolution
    of m(s), without bias.
    """

    def __init__(self, n_classes: int | None, n_features: int, vector: int | None = None, spatial: bool = False):
        super().__init__()
        self.n_features = n_features
        self.embedding = nn.Embedding(n_classes, n_features) if n_classes else None
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight)
        self.vector = nn.Linear(vector, n_features, bias=False) if vector else None
        self.spatial = nn.Conv2d(MAP_FEATURES, n_features, 1, bias=False) if spatial else None

    def forward(self, c: Condition | None, size: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The bias (B, F, 1, 1) or (B, F, h, w) for condition ``c`` at a layer of spatial ``size``, or None."""
        if c is None:
            return None
        bias = None
        if self.embedding is not None and c.labels is not None:
            bias = self.embedding(c.labels)[:, :, None, None]
        if self.vector is not None and c.vector is not None:
            v = self.vector(c.vector)[:, :, None, None]
            bias = v if bias is None else bias + v
        if self.spatial is not None and c.features is not None:
            s = self.spatial(c.features if size is None else c.features_at(size))
            bias = s if bias is None else bias + s
        return bias

    def add(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        """``x`` (B, F, H, W) plus the bias; ``x`` itself, without a copy, when there is no bias."""
        bias = self(c, tuple(x.shape[2:]))
        return x if bias is None else x + bias

    @torch.no_grad()
    def frozen(self, c: Condition | None, size: tuple[int, int] | None = None) -> FrozenBias:
        """This layer's bias for a sampling run under ``c``, computed once and detached."""
        bias = self(c, size)
        return FrozenBias(None if bias is None else bias.detach())


class FrozenBias:
    """A layer's conditioning bias during a sampling run, read where a cache computes.

    ``bias`` is (n, F, h, w) with h, w either 1 (the same at every position) or the layer's
    size, or None (no condition: ``at`` and ``row`` give 0.0, which adds nothing).
    """

    def __init__(self, bias: torch.Tensor | None):
        self.bias = bias

    def at(self, i: int, j: int) -> torch.Tensor | float:
        """The bias (n, F) at position (i, j), or 0.0."""
        if self.bias is None:
            return 0.0
        h, w = self.bias.shape[2:]
        return self.bias[:, :, i if h > 1 else 0, j if w > 1 else 0]

    def row(self, i: int) -> torch.Tensor | float:
        """The bias of row i, (n, F, W) or (n, F, 1) when it is the same along the row, or 0.0."""
        if self.bias is None:
            return 0.0
        return self.bias[:, :, i if self.bias.shape[2] > 1 else 0]
