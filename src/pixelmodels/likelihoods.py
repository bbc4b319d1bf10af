"""Likelihood heads: distribution parameters at every position -> NLL and samples.

A head is the half of a model that turns the network's output ``params``
(B, n_params, H, W) into

* ``nll(params, x)``: negative log-likelihood in nats of the integer image
  ``x`` (B, C, H, W), per pixel (B, H, W), summed over the pixel's channels;
* ``sample(params, noise)``: integer sub-pixel values (B, C) at one position from
  that position's parameters (B, n_params) and random numbers ``noise`` drawn by
  ``noise(batch, generator)``. Sampling is a deterministic function of the
  noise, so two sampling paths fed the same noise give the same images.

Heads are ``nn.Module`` so a later head may own parameters of its own.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.errors import PixelModelsError


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Likelihoods are computed in float32 even under bf16/fp16 autocast; float64 stays."""
    return t if t.dtype == torch.float64 else t.float()


class CategoricalHead(nn.Module):
    """A 2**n_bits-way softmax per sub-pixel.

    ``params`` holds C contiguous blocks of K = 2**n_bits logits, block c for
    channel c. With a channel-masked network the logits of channel c already
    depend on channels < c of the same pixel (and not on c itself).
    """

    def __init__(self, n_channels: int, n_bits: int):
        super().__init__()
        self.n_channels = n_channels
        self.n_bits = n_bits
        self.n_values = 2**n_bits

    @property
    def n_params(self) -> int:
        """Parameters per position: K logits for each of the C channels."""
        return self.n_channels * self.n_values

    def logits(self, params: torch.Tensor) -> torch.Tensor:
        """(B, C*K, ...) -> (B, C, K, ...) logits, in float32 (or float64 if given)."""
        b = params.shape[0]
        return at_least_float32(params).reshape(b, self.n_channels, self.n_values, *params.shape[2:])

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel NLL in nats, (B, H, W), summed over channels."""
        logits = self.logits(params)  # (B, C, K, H, W)
        nll = F.cross_entropy(logits.transpose(1, 2), x.long(), reduction="none")  # (B, C, H, W)
        return nll.sum(dim=1)

    def noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform random numbers for one position: (B, C, K) in [0, 1)."""
        return torch.rand(batch, self.n_channels, self.n_values, generator=generator, device=device)

    def sample(self, params: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Gumbel-max sample (B, C) from one position's parameters (B, C*K)."""
        gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1.0 - 1e-7)))
        return (self.logits(params) + gumbel).argmax(dim=-1)


HEADS = {"categorical": CategoricalHead}


def make_head(name: str, n_channels: int, n_bits: int, **options) -> nn.Module:
    """Build the likelihood head called ``name`` (see ``HEADS``)."""
    if name not in HEADS:
        raise PixelModelsError(f"unknown likelihood {name!r}; expected one of {sorted(HEADS)}")
    return HEADS[name](n_channels, n_bits, **options)
