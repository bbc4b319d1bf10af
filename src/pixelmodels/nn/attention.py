"""Strictly causal attention over positions in raster order, as in PixelSNAIL [1].

Position t (t = i * W + j for pixel (i, j)) attends to positions 0..t-1 only, so
the keys and values may be computed from the pixel at their own position. The
first position attends to nothing: its output is exactly zero.

NOTE: several public ports of [2] mask with a large negative number before the
softmax; the first row is then masked everywhere, its softmax is uniform over
*all* positions and the first pixel's output averages the values of the whole
image, later pixels included. Here the first row is never computed: queries
1..T-1 attend with an ordinary causal mask to keys 0..T-2 (query t sees keys
0..t-1) and a zero row is prepended for position 0. With ``is_causal=True`` no
mask is materialized, so memory stays linear in T where the backend allows it.

[1]: Chen et al. 2017, "PixelSNAIL: An Improved Autoregressive Generative
     Model", https://arxiv.org/abs/1712.09763
[2]: https://github.com/neocxi/pixelsnail-public
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.nn.shifted import NIN


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Attention of position t to positions 0..t-1; the output at position 0 is zero.

    Args:
        q, k: queries and keys (B, heads, T, key_size), positions in raster order.
        v: values (B, heads, T, value_size).
        dropout_p: dropout on the attention weights; pass 0 outside training.

    Returns:
        (B, heads, T, value_size).
    """
    first = v.new_zeros(v.shape[:2] + (1, v.shape[3]))  # (B, heads, 1, value_size): attends to nothing
    if q.shape[2] == 1:
        return first
    rest = _sdpa(q[:, :, 1:], k[:, :, :-1], v[:, :, :-1], dropout_p)  # query t sees keys 0..t-1
    return torch.cat([first, rest], dim=2)


def _sdpa(q, k, v, dropout_p):
    """Causal (diagonal included) scaled dot-product attention of equally long q and k."""
    key_size, value_size = q.shape[-1], v.shape[-1]
    if q.device.type == "cpu" and key_size != value_size:
        # The CPU flash kernel needs one head size for q, k and v, else PyTorch falls back to the
        # materialized path; zero-padding q and k (and v) leaves the dot products unchanged.
        d = max(key_size, value_size)
        q, k, v = F.pad(q, (0, d - key_size)), F.pad(k, (0, d - key_size)), F.pad(v, (0, d - value_size))
    if q.device.type == "cpu":
        # the CPU flash kernel also needs unit stride along the features, else the same fallback: the
        # projections' (B, heads, T, size) views are transposed (and F.pad of zero width keeps strides)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=key_size**-0.5)
    return out[..., :value_size]


class CausalSelfAttention(nn.Module):
    """Multi-head strictly causal attention between feature maps (B, C, H, W) in raster order.

    Queries come from ``query_source``, keys and values from ``kv_source`` (the
    same map for plain self-attention), each through a 1x1 convolution (NIN).

    Args:
        query_channels, kv_channels: channels of the two sources.
        n_heads: attention heads.
        key_size: query/key features per head.
        value_size: value features per head; the output has ``n_heads * value_size`` channels.
        dropout: dropout on the attention weights, in training mode only.
    """

    def __init__(self, query_channels: int, kv_channels: int, n_heads: int = 1, key_size: int = 16,
                 value_size: int = 128, dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.key_size, self.value_size, self.dropout = n_heads, key_size, value_size, dropout
        self.query = NIN(query_channels, n_heads * key_size)
        self.key_value = NIN(kv_channels, n_heads * (key_size + value_size))

    def _heads(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """(B, heads * size, H, W) -> (B, heads, H * W, size)."""
        return x.flatten(2).unflatten(1, (self.n_heads, size)).transpose(2, 3)

    def forward(self, query_source: torch.Tensor, kv_source: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_heads * value_size, H, W): position (i, j) mixes the values of every earlier position."""
        b, _, h, w = query_source.shape
        kv = self.key_value(query_source if kv_source is None else kv_source)
        k, v = kv.split([self.n_heads * self.key_size, self.n_heads * self.value_size], dim=1)
        q = self._heads(self.query(query_source), self.key_size)
        out = causal_attention(q, self._heads(k, self.key_size), self._heads(v, self.value_size),
                               self.dropout if self.training else 0.0)  # (B, heads, T, value_size)
        return out.transpose(2, 3).reshape(b, self.n_heads * self.value_size, h, w)
