"""The model contract: a causal network plus a likelihood head, and the cache protocol. It is public:
a model of your own subclasses ``AutoregressiveModel`` (``docs/own_model.md``).

``model(x, y, cond)`` maps integer inputs (what the dataset yields: images of ``n_bits`` intensities, or
maps of ``n_codes`` unordered codes) and the optional class labels and condition (a vector (B, D), a
spatial map (B, D, h, w) or a map of discrete codes (B, h, w)) to distribution parameters at every
position; ``model.log_prob`` and ``model.bits_per_dim`` score them through the head. A subclass writes
``network(x_in, c)``: ``x_in`` is ``model.embed(x)`` (intensities scaled to [-1, 1], or a learned
embedding of each code), ``c`` the ``Condition`` the model's one ``Conditioning`` component made (None
when unconditional). The checks, the head, the conditioning, sampling, scoring, training, saving and
compression come with the base class.

A family's cached sampler (``models/<family>_cache.py``) subclasses ``SamplingCache`` and is declared the
sampler of its model class by ``register_cache(PixelCNN, PixelCNNCache)`` at the end of its file (that
class's ``cache_class``); ``model.sampling_cache(n, y)`` builds one for a sampling run, or, for a model
without one, a ``ReferenceCache`` (a full pass per step: exact, slower). ``ModelOptions`` holds the
options every family has: the likelihood head and weight normalization.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from pixelmodels.config import ModelConfig
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import HeadOptions, bits_per_dim, make_head, scale_values
from pixelmodels.nn.conditioning import Condition, Conditioning
from pixelmodels.nn.init import data_dependent_init
from pixelmodels.sampling import reference_step
from pixelmodels.settings import setting

CODE_FEATURES = 64  # features of a code's learned embedding (the network's input channels for code maps)


@dataclass
class ModelOptions(HeadOptions):
    """The options of every family. A family's options are a ``@dataclass`` subclass that adds its own
    fields, each declared once with ``setting(default, help, ge=..., le=..., choices=...)``: that gives the
    ``pixelmodels train`` flag (``--field-name``), its help and its range, checked for the CLI, for
    ``create_model(name, ..., field=value)`` and for a saved ``config.json`` alike. A family whose paper
    settles the shared options differently says so when it registers (``register_model(..., defaults=...)``).
    """

    weight_norm: bool = setting(False, "weight-normalize every convolution of the network (per output feature, "
                                "so every mask and thus causality is kept)")
    data_init: bool = setting(True, "with weight_norm: data-dependent initialization on the first training batch")


class SamplingCache:
    """The cache protocol: a network evaluated one position at a time, for one sampling run.

    ``cls(model, n, c)`` freezes the model's effective weights and the conditioning biases of
    ``c`` (a ``Condition`` or None) for ``n`` images and allocates its buffers; nothing it
    computes needs gradients. ``step(x, i, j)`` returns the parameters (n, head.n_params) at
    position (i, j) of the partial integer image ``x`` (n, C, H, W), equal to the full pass's
    ``model(x, y)[:, :, i, j]``, reading only what that position may depend on.

    The sampler calls ``step`` at every position in raster order, ``model.steps_per_position``
    times in a row: C times for a channel-masked network, once before each channel of the pixel
    is drawn (the later calls see the channels drawn so far), and once for a network that sees
    only whole earlier pixels (its head draws the channels of a pixel itself). At a position a
    completion keeps (the whole pixel known) it calls ``step`` once, so the cache sees it.
    """

    def __init__(self, model: AutoregressiveModel, n: int, c: Condition | None):
        self.model, self.n = model, n

    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        raise NotImplementedError


class ReferenceCache(SamplingCache):
    """The protocol without a cache: each step is the reference path's full network pass over the rows that
    can reach row i (``receptive_rows``). A model that registers no cache of its own samples, completes and
    compresses through it: the same values as a cache would give, at a full pass per step."""

    def __init__(self, model: AutoregressiveModel, n: int, c: Condition | None):
        super().__init__(model, n, c)
        self.c = c

    @torch.no_grad()
    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        return reference_step(self.model, x, self.c, i, j)


class AutoregressiveModel(nn.Module):
    """Base class of every registered model, the built-in families' and yours.

    A subclass (see ``docs/own_model.md`` and ``examples/own_model.py``):

    * ``__init__(self, config, options)`` calls ``super().__init__(config, options)`` first, which sets
      ``image_shape``, ``n_bits``, ``n_codes``, ``n_classes``, ``head``, ``input_channels`` and
      ``conditioning``, then builds its layers: they take ``input_channels`` features and end in
      ``head.n_params`` outputs per position. ``options`` is the family's options dataclass (a
      ``ModelOptions`` subclass).
    * ``network(x_in, c)`` maps ``embed(x)`` (B, input_channels, H, W) and the ``Condition`` ``c`` (or None)
      to the head's parameters (B, head.n_params, H, W), causally: the parameters of sub-pixel (c, i, j)
      see only the pixels before (i, j) in raster order and, when ``channel_masked``, the channels before c
      of (i, j) (``head.param_groups()`` says which image channel each parameter belongs to; with
      ``pixelmodels.nn.MaskedConv2d``, give the last layer ``out_groups=self.head.param_groups()``). A class
      label or condition reaches a layer through ``self.conditioning.bias(features).add(h, c)``.
    * ``channel_masked`` (class attribute, default True): False for a network whose outputs at (i, j) see
      only the pixels before it (its head then draws a pixel's channels together); ``head_features()``
      then gives the features per position the head takes.
    * optionally ``receptive_rows`` (a bound on the rows above that reach a row: sampling without a cache
      computes only those rows) and a cache of its own (``register_cache``).

    ``check_causality(model)`` checks the rule; ``register_model`` makes the family known to
    ``create_model``, ``load`` and the CLI (``--import MODULE``).

    Attributes:
        config: the resolved ``ModelConfig`` (rebuilds the model).
        head: the likelihood head.
        channel_masked: True when the network masks channels within a pixel, so
            sampling needs one network pass per sub-pixel rather than per pixel.
        receptive_rows: a bound on the rows above that reach a row, or None.
        cache_class: the family's ``SamplingCache``, set by :func:`register_cache` (None: sampling steps
            through a ``ReferenceCache``).
        conditioning: the one component that turns labels into every layer's bias.
    """

    channel_masked = True
    cache_class: type[SamplingCache] | None = None

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
        self.n_codes = config.n_codes
        self.n_classes = config.n_classes
        self.cond_shape = config.cond_shape
        self.cond_codes = config.cond_codes
        self.head = make_head(options.likelihood, config.image_shape[0], config.n_bits,
                              n_mixtures=options.n_mixtures, masked=self.channel_masked,
                              n_features=self.head_features(), n_codes=config.n_codes)
        self.code_embedding = nn.Embedding(config.n_codes, CODE_FEATURES) if config.n_codes else None
        self.conditioning = Conditioning(config.n_classes, config.cond_shape, self.network_size, config.cond_codes)

    @property
    def input_channels(self) -> int:
        """Channels of the network's input ``embed(x)``: C for images, the code embedding's features for codes."""
        return CODE_FEATURES if self.n_codes else self.image_shape[0]

    @property
    def network_size(self) -> tuple[int, int]:
        """(H, W) the network computes at (a family that pads internally says so)."""
        return tuple(self.image_shape[1:])

    # -- the part a subclass writes ---------------------------------------
    def head_features(self) -> int | None:
        """Features per position a network that is not channel-masked gives its head."""
        return None

    def network(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        """Network inputs (B, input_channels, H, W) and the condition -> params (B, head.n_params, H, W)."""
        raise NotImplementedError

    # -- the shared contract ----------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Integer inputs (B, C, ...) -> the network's input (B, input_channels, ...) in the parameters' dtype:
        intensities in [0, 2**n_bits) scaled to [-1, 1], or each code's learned embedding."""
        if self.code_embedding is not None:
            return self.code_embedding(x[:, 0].long()).movedim(-1, 1)
        return scale_values(x, self.n_bits, next(self.parameters()).dtype)

    def check_images(self, x: torch.Tensor, what: str = "images") -> None:
        """Refuse inputs the model cannot take (shape, dtype, values), naming ``what`` and what was found."""
        c, h, w = self.image_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            kind = {1: "grayscale", 3: "RGB"}.get(c, f"{c}-channel")
            raise PixelModelsError(f"{what}: the model takes images (N, C, H, W) with (C, H, W) = ({c}, {h}, {w}) "
                                   f"({kind} {h}x{w}), found a tensor of shape {tuple(x.shape)}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise PixelModelsError(f"{what}: expected integer images (what the datasets give), found dtype {x.dtype}")
        # the range check reads the values: skipped inside torch.compile (it would break the graph)
        top = self.n_codes or 2**self.n_bits
        if x.numel() and not torch.compiler.is_compiling() and (int(x.min()) < 0 or int(x.max()) >= top):
            if self.n_codes:
                bad = x[(x.long() < 0) | (x.long() >= top)][0].item()
                raise PixelModelsError(f"codes: expected values in 0..{top - 1}, found {bad}")
            raise PixelModelsError(f"{what}: the model takes {self.n_bits}-bit values 0..{top - 1}, "
                                   f"found values {int(x.min())}..{int(x.max())}")

    def check_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """Refuse images or labels the model cannot take; the labels as ``check_labels`` gives them."""
        self.check_images(x)
        return self.check_labels(y, x.shape[0], x.device)

    def check_labels(self, y, n: int, device=None) -> torch.Tensor | None:
        """Labels for ``n`` images (an int for all, or (n,)) as int64 (n,); None for an unconditional model."""
        if self.n_classes is None:
            return None
        if y is None:
            raise PixelModelsError(f"labels: this model is conditional on {self.n_classes} classes; give y")
        y = torch.as_tensor(y, device=device).long().reshape(-1)
        if y.numel() == 1 and n != 1:
            y = y.expand(n)
        if y.shape[0] != n:
            raise PixelModelsError(f"labels: expected {n} labels, found {y.shape[0]}")
        # the range check reads the values: skipped inside torch.compile (it would break the graph)
        if y.numel() and not torch.compiler.is_compiling() and (y.min() < 0 or y.max() >= self.n_classes):
            bad = y[(y < 0) | (y >= self.n_classes)][0].item()
            raise PixelModelsError(f"labels: expected class labels in 0..{self.n_classes - 1}, found {bad}")
        return y

    def check_cond(self, cond, n: int, device=None) -> torch.Tensor | None:
        """The condition for ``n`` examples, (n, *cond_shape): in the parameters' dtype, or int64 codes for a
        model with ``cond_codes``; None when there is none."""
        if self.cond_shape is None:
            if cond is not None:
                raise PixelModelsError("cond: this model takes no condition (cond_shape is None); found a tensor "
                                       f"of shape {tuple(torch.as_tensor(cond).shape)}")
            return None
        expected = (n, *self.cond_shape)
        if cond is None:
            raise PixelModelsError(f"cond: this model is conditional on cond_shape {tuple(self.cond_shape)}; "
                                   f"give cond of shape {expected}")
        cond = torch.as_tensor(cond, device=device)
        if cond.dim() == len(self.cond_shape) and n != 1 and tuple(cond.shape) == tuple(self.cond_shape):
            cond = cond.expand(expected)  # one condition for every example
        if tuple(cond.shape) != expected:
            what = f"maps of {self.cond_codes} codes, " if self.cond_codes else ""
            raise PixelModelsError(f"cond: expected {what}shape {expected}, found {tuple(cond.shape)} (one "
                                   f"condition for all: shape {tuple(self.cond_shape)})")
        if self.cond_codes is None:
            return cond.to(next(self.parameters()).dtype)
        if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
            raise PixelModelsError(f"cond: this model is conditioned on maps of {self.cond_codes} codes; expected "
                                   f"integers 0..{self.cond_codes - 1}, found dtype {cond.dtype}")
        # the range check reads the values: skipped inside torch.compile (it would break the graph)
        if cond.numel() and not torch.compiler.is_compiling() and (
                int(cond.min()) < 0 or int(cond.max()) >= self.cond_codes):
            bad = cond[(cond.long() < 0) | (cond.long() >= self.cond_codes)][0].item()
            raise PixelModelsError(f"cond: expected codes 0..{self.cond_codes - 1}, found {bad}")
        return cond.long()

    def condition(self, y=None, n: int | None = None, cond=None) -> Condition | None:
        """The ``Condition`` every layer reads, for ``n`` examples (default: one per label or condition)."""
        if not self.conditioning.active:
            return None
        if n is None:
            n = len(cond) if cond is not None else torch.as_tensor(y).numel() if y is not None else 1
        device = next(self.parameters()).device
        return self.conditioning(self.check_labels(y, n, device), self.check_cond(cond, n, device))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, cond: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Distribution parameters (B, head.n_params, H, W) for integer inputs x, labels y and condition cond."""
        y = self.check_input(x, y)
        cond = self.check_cond(cond, x.shape[0], x.device)
        return self.network(self.embed(x), self.conditioning(y, cond))

    @property
    def steps_per_position(self) -> int:
        """How many times the sampler steps a cache (or runs the network) at each position."""
        return self.image_shape[0] if self.channel_masked else 1

    def sampling_cache(self, n: int, y: torch.Tensor | None = None, cond: torch.Tensor | None = None
                       ) -> SamplingCache:
        """The cached sampler's state for ``n`` examples with labels ``y`` and condition ``cond`` (a
        ``ReferenceCache`` for a model that registers none)."""
        with torch.no_grad():
            return (self.cache_class or ReferenceCache)(self, n, self.condition(y, n, cond))

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None, cond: torch.Tensor | None = None,
                 per_pixel: bool = False) -> torch.Tensor:
        """Log-likelihood in nats: per image (B,), or per pixel (B, H, W) summed over channels."""
        lp = -self.head.nll(self(x, y, cond), x)
        return lp if per_pixel else lp.sum(dim=(1, 2))

    def bits_per_dim(self, x: torch.Tensor, y: torch.Tensor | None = None, cond: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Per-example bits per dimension, NLL / (ln 2 * C * H * W), in float32."""
        return bits_per_dim(-self.log_prob(x, y, cond), math.prod(self.image_shape))

    def initialize_from_data(self, x: torch.Tensor, y: torch.Tensor | None = None,
                             cond: torch.Tensor | None = None) -> None:
        """Data-dependent initialization of the weight-normalized layers on a real batch, for models with
        options ``weight_norm`` and ``data_init`` both on (the trainer calls it on a new run's first batch)."""
        if self.options.weight_norm and self.options.data_init:
            data_dependent_init(self, x, y, cond)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def register_cache(model: type[AutoregressiveModel], cache: type[SamplingCache]) -> None:
    """Declare ``cache`` the cached sampler of ``model`` (``model.cache_class``): called at the end of the
    cache's file, as ``register_model`` is at the end of the model's. ``step`` must give the full pass's
    parameters (the tests of the built-in caches compare both paths)."""
    if not (isinstance(model, type) and issubclass(model, AutoregressiveModel)):
        raise PixelModelsError(f"register_cache: expected an AutoregressiveModel subclass, found {model!r}")
    if not (isinstance(cache, type) and issubclass(cache, SamplingCache)):
        raise PixelModelsError(f"register_cache: expected a SamplingCache subclass, found {cache!r}")
    model.cache_class = cache
