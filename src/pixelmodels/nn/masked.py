"""Masked and shifted convolutions: the causal building blocks.

The raster order of sub-pixels is (row, column, channel). A convolution is
*causal* when its output at (i, j) in channel group g depends on

* every input position strictly before (i, j) in raster order, and
* at (i, j) itself, only input channel groups before g (mask ``"A"``) or up to
  and including g (mask ``"B"``).

Features are split into ``n_groups`` (the number of image channels) contiguous
groups: feature f of a layer with F features belongs to group ``f * n_groups // F``.
For an RGB image, group 0 is R, 1 is G, 2 is B, so a network of one mask-A layer
followed by mask-B layers predicts R from the past, G from the past and R, B from
the past, R and G [1].

Masks are applied functionally (``weight * mask``) so autograd, EMA and
``torch.compile`` all see the real effective weights.

[1]: van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
     https://arxiv.org/abs/1601.06759
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.nn import fast


def channel_groups(n_features: int, n_groups: int) -> torch.Tensor:
    """Group index (0..n_groups-1) of each of ``n_features`` features, contiguous blocks."""
    return torch.arange(n_features) * n_groups // n_features


def spatial_mask(kh: int, kw: int, row: int, col: int) -> torch.Tensor:
    """(kh, kw) mask of the taps strictly before (row, col) in raster order."""
    mask = torch.zeros(kh, kw)
    mask[:row] = 1
    mask[row, :col] = 1
    return mask


def causal_mask(
    out_groups: torch.Tensor,
    in_groups: torch.Tensor,
    kernel_size: tuple[int, int],
    center: tuple[int, int],
    mask_type: str,
) -> torch.Tensor:
    """Full (out, in, kh, kw) mask: past taps everywhere, the centre tap by channel group.

    Args:
        out_groups: group of each output feature, shape (out,).
        in_groups: group of each input feature, shape (in,).
        kernel_size: (kh, kw).
        center: the tap that lines up with the output position.
        mask_type: "A" (centre sees earlier groups only) or "B" (also its own group).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    mask = spatial_mask(kh, kw, *center).expand(len(out_groups), len(in_groups), kh, kw).clone()
    if mask_type == "A":
        centre = in_groups[None, :] < out_groups[:, None]
    else:
        centre = in_groups[None, :] <= out_groups[:, None]
    mask[:, :, center[0], center[1]] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-size convolution whose output at (i, j) sees only the causal past.

    The kernel holds only taps that can be unmasked, so no multiply is wasted
    on the future: ``shape="past"`` is the top (k//2 + 1) x k of a k x k kernel
    (rows above in full, the current row up to the centre; PixelCNN),
    ``shape="row"`` is 1 x (k//2 + 1), the current row up to the centre (the
    horizontal stack of the Gated PixelCNN). The centre tap is masked by
    channel group.

    Args:
        in_channels, out_channels: feature counts.
        kernel_size: k, odd; 1 gives a masked 1x1 convolution.
        mask_type: "A" or "B" (see the module docstring).
        n_groups: number of image channels (1 or 3) the features are grouped by.
        out_groups, in_groups: explicit group of each feature, for layers whose
            features are not one contiguous block per group (e.g. the two halves
            of a gated activation). Default: ``channel_groups``.
        shape: "past" or "row".
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: str,
        n_groups: int,
        *,
        out_groups: torch.Tensor | None = None,
        in_groups: torch.Tensor | None = None,
        shape: str = "past",
        bias: bool = True,
    ):
        k = kernel_size
        if k % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {k}")
        if shape == "past":
            kh, kw, pad = k // 2 + 1, k, (k // 2, k // 2, k // 2, 0)
        elif shape == "row":
            kh, kw, pad = 1, k // 2 + 1, (k // 2, 0, 0, 0)
        else:
            raise ValueError(f"shape must be 'past' or 'row', got {shape!r}")
        super().__init__(in_channels, out_channels, (kh, kw), bias=bias)
        self.pad = pad  # left, right, top, bottom
        out_groups = channel_groups(out_channels, n_groups) if out_groups is None else out_groups
        in_groups = channel_groups(in_channels, n_groups) if in_groups is None else in_groups
        mask = causal_mask(out_groups, in_groups, (kh, kw), (kh - 1, k // 2), mask_type)
        self.register_buffer("mask", mask, persistent=False)
        self.mask_type = mask_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return fast.conv2d(x, self.weight * self.mask, self.bias)
