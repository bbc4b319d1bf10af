"""Likelihood heads: distribution parameters at every position -> NLL and samples.

A head is the half of a model that turns the network's output ``params``
(B, n_params, H, W) into

* ``nll(params, x)``: negative log-likelihood in nats of the integer image
  ``x`` (B, C, H, W), per pixel (B, H, W), summed over the pixel's channels,
  computed in float32 (float64 for float64 params) even under bf16 autocast;
* ``sample(params, noise, temperature=1.0)``: integer sub-pixel values (B, C) at
  one position from that position's parameters (B, n_params) and random numbers
  ``noise`` drawn by ``noise(batch, generator)`` (one ``torch.rand`` call of a
  fixed shape per pixel). Sampling is a deterministic function of the noise, so
  two sampling paths fed the same noise give the same images. ``temperature`` T
  divides categorical logits by T; for the logistic mixture it divides the
  mixture logits by T and multiplies the scales by T. T = 1 changes nothing;
* ``log_probs(params, x, c)``: log-probabilities (n, V) of all V values of
  channel c at one position, from that position's parameters (n, n_params) and
  the pixel's values x (n, C), of which only channels < c are read: the
  conditionals whose sum over the channels at the true values is ``-nll`` (an
  entropy coder's input, ``pixelmodels.compression``);
* ``param_groups()``: the image channel (n_params,) each parameter belongs
  to; a channel-masked network gives its output layer these groups, so a
  parameter of group g depends only on channels < g of the current pixel;
* ``bits_per_dim(nll, n_dims)`` turns NLL in nats into bits per dimension.

Heads are ``nn.Module`` so a head may own parameters of its own
(:class:`AutoregressiveCategoricalHead` does). :class:`HeadOptions` declares the
choice of head and the mixture's size, with their ranges.

[1]: Salimans et al. 2017, "PixelCNN++: Improving the PixelCNN with Discretized
     Logistic Mixture Likelihood and Other Modifications",
     https://arxiv.org/abs/1701.05517
[2]: Mächler 2012, "Accurately Computing log(1 - exp(-|a|))",
     https://cran.r-project.org/web/packages/Rmpfr/vignettes/log1mexp-note.pdf
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.errors import PixelModelsError
from pixelmodels.nn import MaskedConv2d
from pixelmodels.settings import MAX_MIXTURES, Settings, check_field, setting

MIN_LOG_SCALE = -7.0  # lower bound of the logistic log-scales, as in [1]'s code
TINY_BIN = 1e-30  # below this bin width (in units of the scale), use the density at the bin centre


def bits_per_dim(nll: torch.Tensor | float, n_dims: int) -> torch.Tensor | float:
    """NLL in nats over ``n_dims`` dimensions (sub-pixels or codes) -> bits per dimension, in float32 or wider."""
    nll = at_least_float32(nll) if torch.is_tensor(nll) else nll
    return nll / (math.log(2) * n_dims)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Likelihoods are computed in float32 even under bf16/fp16 autocast; float64 stays."""
    return t if t.dtype == torch.float64 else t.float()


def scale_values(x: torch.Tensor, n_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """Integers in [0, 2**n_bits) -> floats in [-1, 1] (the models' input scaling)."""
    return x.to(dtype) * (2.0 / (2**n_bits - 1)) - 1.0


def gumbel(noise: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel variates from uniform ``noise`` in [0, 1)."""
    return -torch.log(-torch.log(noise.clamp(1e-20, 1.0 - 1e-7)))


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate for every d [2]; finite gradients for d > 0."""
    small = d < math.log(2)
    d_small = torch.where(small, d, torch.ones_like(d))  # double where: each branch
    d_large = torch.where(small, torch.ones_like(d), d)  # sees only its safe inputs
    return torch.where(small, torch.log(-torch.expm1(-d_small)), torch.log1p(-torch.exp(-d_large)))


def categorical_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """NLL in nats (B, H, W), summed over channels, of integer values x (B, C, H, W) under logits (B, C, K, H, W).

    The same values as ``F.cross_entropy`` with the classes moved to dim 1.
    """
    return -F.log_softmax(logits, dim=2).gather(2, x.long().unsqueeze(2)).squeeze(2).sum(dim=1)


def _tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature


class CategoricalHead(nn.Module):
    """A K-way softmax per sub-pixel: K = 2**n_bits intensities, or K = n_values codes.

    ``params`` holds C contiguous blocks of K logits, block c for
    channel c (``param_groups() == arange(C*K) // K``). The head treats the
    channels as independent given the parameters: with a channel-masked network
    the logits of channel c already depend on channels < c of the same pixel.
    """

    def __init__(self, n_channels: int, n_bits: int | None, n_values: int | None = None):
        super().__init__()
        self.n_channels = n_channels
        self.n_bits = n_bits
        self.n_values = 2**n_bits if n_values is None else n_values

    @property
    def n_params(self) -> int:
        """Parameters per position: K logits for each of the C channels."""
        return self.n_channels * self.n_values

    def param_groups(self) -> torch.Tensor:
        """Channel of each parameter: block c of K logits -> c."""
        return torch.arange(self.n_params) // self.n_values

    def logits(self, params: torch.Tensor) -> torch.Tensor:
        """(B, C*K, ...) -> (B, C, K, ...) logits, in float32 (or float64 if given)."""
        b = params.shape[0]
        return at_least_float32(params).reshape(b, self.n_channels, self.n_values, *params.shape[2:])

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel NLL in nats, (B, H, W), summed over channels."""
        return categorical_nll(self.logits(params), x)

    def log_probs(self, params: torch.Tensor, x: torch.Tensor, c: int) -> torch.Tensor:
        """Log-probabilities (n, K) of channel c's values from one position's parameters (n, C*K); the
        channels are independent given the parameters, so x (n, C) is not read."""
        return F.log_softmax(self.logits(params)[:, c], dim=-1)

    def noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform random numbers for one position: (B, C, K) in [0, 1)."""
        return torch.rand(batch, self.n_channels, self.n_values, generator=generator, device=device)

    def sample(self, params: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Gumbel-max sample (B, C) from one position's parameters (B, C*K), logits divided by ``temperature``."""
        return (_tempered(self.logits(params), temperature) + gumbel(noise)).argmax(dim=-1)


class AutoregressiveCategoricalHead(nn.Module):
    """Categorical sub-pixels whose dependence within the pixel the head supplies.

    For a network that sees only strictly earlier pixels: ``params`` are
    ``n_features`` features per position, not split by channel. A small masked
    network of 1x1 convolutions maps [features, the pixel's scaled channels] to
    C blocks of K logits (2**n_bits, or n_values codes): a mask-A layer (features visible to every
    group, channel c to groups > c) to ``hidden`` features in C contiguous
    groups, ReLU, a mask-B layer to the logits. So the logits of channel c see
    the features and channels < c only; for C = 1 it is an MLP on the features.

    ``param_groups()`` is all zeros: the features must not see the current pixel
    (this head is for networks that are not channel-masked).

    The small network runs in the likelihood's dtype (float32, or float64 for
    float64 params) with autocast off, its weights cast to that dtype.
    """

    def __init__(self, n_channels: int, n_bits: int | None, n_features: int, n_values: int | None = None):
        super().__init__()
        if n_bits is None and n_channels != 1:
            raise PixelModelsError(f"categorical likelihood of codes: expected 1 channel, found {n_channels}")
        self.n_channels = n_channels
        self.n_bits = n_bits
        self.n_values = 2**n_bits if n_values is None else n_values
        self.n_features = n_features
        c = n_channels
        hidden = -(-max(n_features, 32 * c) // c) * c  # a multiple of C
        in_groups = torch.cat([torch.full((n_features,), -1), torch.arange(c)])
        self.inner = MaskedConv2d(n_features + c, hidden, 1, "A", c, in_groups=in_groups)
        self.outer = MaskedConv2d(hidden, c * self.n_values, 1, "B", c)

    @property
    def n_params(self) -> int:
        """Parameters per position: the network's features."""
        return self.n_features

    def param_groups(self) -> torch.Tensor:
        """All zeros: every feature may see only strictly earlier pixels."""
        return torch.zeros(self.n_params, dtype=torch.long)

    def logits(self, params: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Features (B, F, H, W) and scaled channels xs (B, C, H, W) -> logits (B, C, K, H, W)."""
        p = at_least_float32(params)
        with torch.autocast(p.device.type, enabled=False):
            h = F.relu(_conv(self.inner, torch.cat([p, xs.to(p.dtype)], dim=1)))
            out = _conv(self.outer, h)
        return out.unflatten(1, (self.n_channels, self.n_values))

    def _channels(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The pixel's channels as the small network reads them: scaled intensities; for codes (one channel,
        which the mask hides from itself) zeros."""
        return torch.zeros_like(x, dtype=dtype) if self.n_bits is None else scale_values(x, self.n_bits, dtype)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel NLL in nats, (B, H, W), summed over channels."""
        x = x.long()
        logits = self.logits(params, self._channels(x, at_least_float32(params).dtype))
        return categorical_nll(logits, x)

    def noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform random numbers for one position: (B, C, K) in [0, 1)."""
        return torch.rand(batch, self.n_channels, self.n_values, generator=generator, device=device)

    def log_probs(self, params: torch.Tensor, x: torch.Tensor, c: int) -> torch.Tensor:
        """Log-probabilities (n, K) of channel c's values from one position's features (n, F) and the pixel's
        channels < c in x (n, C); channels >= c are read as zeros, as ``sample`` has them."""
        p = at_least_float32(params)[:, :, None, None]  # (n, F, 1, 1)
        earlier = torch.arange(self.n_channels, device=x.device) < c
        x = torch.where(earlier, x.long(), 0)[:, :, None, None]  # (n, C, 1, 1)
        return F.log_softmax(self.logits(p, self._channels(x, p.dtype))[:, c, :, 0, 0], dim=-1)

    def sample(self, params: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Sample (B, C) channel by channel (Gumbel-max, logits / ``temperature``) from one position's features."""
        p = at_least_float32(params)[:, :, None, None]  # (B, F, 1, 1)
        x = torch.zeros(p.shape[0], self.n_channels, 1, 1, dtype=torch.long, device=p.device)
        g = gumbel(noise)
        for c in range(self.n_channels):  # channels >= c are masked for channel c
            logits = self.logits(p, self._channels(x, p.dtype))[:, c, :, 0, 0]  # (B, K)
            x[:, c, 0, 0] = (_tempered(logits, temperature) + g[:, c]).argmax(dim=-1)
        return x[:, :, 0, 0]


def _conv(layer: MaskedConv2d, x: torch.Tensor) -> torch.Tensor:
    """A masked 1x1 convolution evaluated in x's dtype."""
    return F.conv2d(x, (layer.weight * layer.mask).to(x.dtype), layer.bias.to(x.dtype))


def coupled_mean(means: torch.Tensor, coeffs: torch.Tensor | None, xs: torch.Tensor | None, c: int) -> torch.Tensor:
    """Channel c's means given the pixel's earlier channels (the logistic mixture's RGB coupling, indexed on
    dim 1): mean_R, mean_G + c0 * xs_R, mean_B + c1 * xs_R + c2 * xs_G; ``xs`` the scaled earlier values."""
    if c == 0:
        return means[:, 0]
    if c == 1:
        return means[:, 1] + coeffs[:, 0] * xs[:, 0]
    return means[:, 2] + coeffs[:, 1] * xs[:, 0] + coeffs[:, 2] * xs[:, 1]


class LogisticMixtureHead(nn.Module):
    """Mixture of K discretized logistics per pixel, coupled across channels [1].

    Parameter layout per position (C = 1 or 3; blocks channel-major):

    ====================  =========  ===========================================
    block                 size       meaning
    ====================  =========  ===========================================
    mixture logits        K          component weights of the whole pixel
    means                 C*K        ``[c*K:(c+1)*K]``: means of channel c
    log-scales            C*K        same order; clamped below at -7
    coefficients (C = 3)  3K         [c0 | c1 | c2] (K each), through tanh
    ====================  =========  ===========================================

    so ``n_params = K * (1 + 2C) + (3K if C == 3)``. Values x in
    [0, 2**n_bits - 1] are scaled to xs in [-1, 1]; a value's bin is
    [xs - h, xs + h] with h = 1 / (2**n_bits - 1), the lowest bin extended to
    -inf and the highest to +inf. For RGB, component k's means are
    mean_G + c0 * xs_R and mean_B + c1 * xs_R + c2 * xs_G, so the head models
    the dependence within a pixel. Parameter groups:
    logits 0, mean and log-scale of channel c -> c, c0 -> 1, c1 and c2 -> 2.

    The probability of a middle bin, sigmoid(a) - sigmoid(b), is computed in log
    space without cancellation as a + log1mexp(a - b) - softplus(a) - softplus(b);
    only where the bin is too narrow for that (a - b < 1e-30) does it fall back
    to the density at the bin centre times the bin width, as [1]'s code does.

    NOTE: sampling uses the *discretized* values of earlier channels in the
    coefficient terms, so samples follow exactly the distribution ``nll``
    scores; [1]'s code used the continuous value.
    """

    def __init__(self, n_channels: int, n_bits: int, n_mixtures: int = 10):
        super().__init__()
        if n_channels not in (1, 3):
            raise PixelModelsError(f"logistic-mixture likelihood: expected 1 or 3 channels, found {n_channels}")
        self.n_channels = n_channels
        self.n_bits = n_bits
        self.n_mixtures = check_field(HeadOptions, "n_mixtures", n_mixtures)

    @property
    def n_params(self) -> int:
        """Parameters per position: K logits, C*K means, C*K log-scales (+ 3K coefficients for RGB)."""
        k, c = self.n_mixtures, self.n_channels
        return k * (1 + 2 * c) + (3 * k if c == 3 else 0)

    def param_groups(self) -> torch.Tensor:
        """Channel of each parameter (see the class docstring)."""
        k, c = self.n_mixtures, self.n_channels
        per_channel = torch.arange(c).repeat_interleave(k)
        blocks = [torch.zeros(k, dtype=torch.long), per_channel, per_channel]
        if c == 3:
            blocks.append(torch.tensor([1, 2, 2]).repeat_interleave(k))
        return torch.cat(blocks)

    def split(self, params: torch.Tensor):
        """(B, P, ...) -> logits (B, K, ...), means, log-scales (B, C, K, ...), coeffs (B, 3, K, ...) or None."""
        k, c = self.n_mixtures, self.n_channels
        p = at_least_float32(params)
        logits = p[:, :k]
        means = p[:, k:k + c * k].unflatten(1, (c, k))
        log_scales = p[:, k + c * k:k + 2 * c * k].unflatten(1, (c, k)).clamp(min=MIN_LOG_SCALE)
        coeffs = torch.tanh(p[:, k + 2 * c * k:].unflatten(1, (3, k))) if c == 3 else None
        return logits, means, log_scales, coeffs

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel NLL in nats, (B, H, W), summed over channels."""
        logits, means, log_scales, coeffs = self.split(params)  # means: (B, C, K, H, W)
        x = x.long().unsqueeze(2)  # (B, C, 1, H, W)
        xs = scale_values(x, self.n_bits, means.dtype)
        if coeffs is not None:
            means = torch.stack([coupled_mean(means, coeffs, xs, c) for c in range(3)], dim=1)
        log_p = self.log_bin_prob(x, xs, means, log_scales).sum(dim=1)  # (B, K, H, W)
        return -torch.logsumexp(F.log_softmax(logits, dim=1) + log_p, dim=1)

    def log_bin_prob(self, x: torch.Tensor, xs: torch.Tensor, mean: torch.Tensor,
                     log_scale: torch.Tensor) -> torch.Tensor:
        """log P(value x) under the discretized logistic(mean, exp(log_scale)); xs = scaled x."""
        top = 2**self.n_bits - 1
        h = 1.0 / top
        inv_s = torch.exp(-log_scale)
        centred = xs - mean
        plus_in = (centred + h) * inv_s
        min_in = (centred - h) * inv_s
        mid_in = centred * inv_s
        width = (2 * h) * inv_s  # plus_in - min_in, without cancellation
        wide = width > TINY_BIN
        exact = (plus_in + log1mexp(torch.where(wide, width, torch.ones_like(width)))
                 - F.softplus(plus_in) - F.softplus(min_in))
        wide = wide & torch.isfinite(exact)
        centre = mid_in - log_scale - 2 * F.softplus(mid_in) + math.log(2 * h)
        middle = torch.where(wide, exact, centre)
        return torch.where(x == 0, F.logsigmoid(plus_in), torch.where(x == top, F.logsigmoid(-min_in), middle))

    def log_probs(self, params: torch.Tensor, x: torch.Tensor, c: int) -> torch.Tensor:
        """Log-probabilities (n, 2**n_bits) of channel c's values given the pixel's channels < c in x (n, C),
        from one position's parameters (n, n_params).

        The components are shared by the channels of a pixel, so channel c's conditional is the mixture
        sum_k w_k p_c(v | k, x_<c) with the posterior weights w_k proportional to
        pi_k * prod_{c' < c} p_c'(x_c' | k, x_<c'), the means coupled to the earlier channels as in ``nll``.
        """
        logits, means, log_scales, coeffs = self.split(params)  # means: (n, C, K)
        x = x.long()[:, :, None]  # (n, C, 1)
        xs = scale_values(x, self.n_bits, means.dtype)

        def mean(ch: int) -> torch.Tensor:  # channel ch's means given the earlier channels, (n, K)
            return coupled_mean(means, coeffs, xs, ch)

        log_w = F.log_softmax(logits, dim=1)  # (n, K)
        for e in range(c):
            log_w = log_w + self.log_bin_prob(x[:, e], xs[:, e], mean(e), log_scales[:, e])
        log_w = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)  # the posterior given channels < c
        v = torch.arange(2**self.n_bits, device=means.device)[None, :, None]  # (1, V, 1)
        log_p = self.log_bin_prob(v, scale_values(v, self.n_bits, means.dtype), mean(c)[:, None],
                                  log_scales[:, c, None])  # (n, V, K)
        return torch.logsumexp(log_w[:, None] + log_p, dim=2)

    def noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform random numbers for one pixel: (B, K + C), K for the component, C for the values."""
        return torch.rand(batch, self.n_mixtures + self.n_channels, generator=generator, device=device)

    def sample(self, params: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Sample (B, C) from one position's parameters (B, n_params); ``temperature`` divides the mixture
        logits and multiplies the scales."""
        k, top = self.n_mixtures, 2**self.n_bits - 1
        logits, means, log_scales, coeffs = self.split(params)
        component = (_tempered(logits, temperature) + gumbel(noise[:, :k])).argmax(dim=1)  # (B,)
        pick = component[:, None, None].expand(-1, means.shape[1], 1)
        means, log_scales = means.gather(2, pick)[..., 0], log_scales.gather(2, pick)[..., 0]  # (B, C)
        if coeffs is not None:
            coeffs = coeffs.gather(2, component[:, None, None].expand(-1, 3, 1))[..., 0]  # (B, 3)
        values = []
        for c in range(self.n_channels):
            xs = scale_values(torch.stack(values, dim=1), self.n_bits, means.dtype) if values else None
            mean = coupled_mean(means, coeffs, xs, c)
            u = noise[:, k + c].to(means.dtype).clamp(1e-5, 1.0 - 1e-5)
            scale = torch.exp(log_scales[:, c]) if temperature == 1.0 else torch.exp(log_scales[:, c]) * temperature
            v = mean + scale * (torch.log(u) - torch.log1p(-u))
            values.append(torch.round((v + 1) / 2 * top).clamp(0, top).long())
        return torch.stack(values, dim=1)


HEADS = {"categorical": CategoricalHead, "logistic-mixture": LogisticMixtureHead}
"""Likelihood names (the CLI's choices). "categorical" after a network that is not
channel-masked is :class:`AutoregressiveCategoricalHead`."""


@dataclass
class HeadOptions(Settings):
    """A model's likelihood head and its size, declared once for the heads and every family's options."""

    likelihood: str = setting("categorical", "the likelihood head (on a channel-masked network the logistic "
                              "mixture's means and mixture weights are channel-masked too)", choices=tuple(HEADS))
    n_mixtures: int = setting(10, "components of the logistic mixture", ge=1, le=MAX_MIXTURES)


def make_head(name: str, n_channels: int, n_bits: int | None, *, n_mixtures: int = 10, masked: bool = True,
              n_features: int | None = None, n_codes: int | None = None) -> nn.Module:
    """Build the likelihood head called ``name`` (see ``HEADS``).

    Args:
        name: "categorical" or "logistic-mixture".
        n_channels, n_bits: the images' C and bit depth (n_bits None for codes).
        n_mixtures: components of the logistic mixture (ignored by "categorical").
        masked: whether the network is channel-masked; a categorical head after
            an unmasked network models the channels within a pixel itself.
        n_features: features per position of an unmasked network; needed by
            "categorical" with ``masked=False`` only.
        n_codes: K for maps of K unordered codes (one channel): a K-way categorical.
    """
    if name not in HEADS:
        raise PixelModelsError(f"--likelihood: unknown likelihood {name!r}; expected one of {sorted(HEADS)}")
    if name == "logistic-mixture":
        if n_codes is not None:
            raise PixelModelsError("--likelihood: logistic-mixture is for ordinal intensities; a model of "
                                   f"{n_codes} unordered codes needs categorical, found logistic-mixture")
        return LogisticMixtureHead(n_channels, n_bits, n_mixtures)
    if masked:
        return CategoricalHead(n_channels, n_bits, n_codes)
    if n_features is None:
        raise PixelModelsError("likelihood 'categorical' after a network that is not channel-masked "
                               "needs n_features (the network's features per position); found none")
    return AutoregressiveCategoricalHead(n_channels, n_bits, n_features, n_codes)
