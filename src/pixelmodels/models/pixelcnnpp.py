"""PixelCNN++ [1]: two shifted convolution streams over three resolutions.

The *down* stream (u) sees every pixel strictly above the current row; the
*down-right* stream (ul) sees the rows above and the pixels to the left. Both
start from shifted convolutions of the image (with a channel of ones, so the
network can tell zero padding from black), run ``n_blocks`` gated ResNet
blocks per resolution on the way up (28 -> 14 -> 7 for MNIST, down-sampled by
stride-2 shifted convolutions), then ``n_blocks + 1`` per resolution on the way
down (up-sampled by transposed shifted convolutions), each down-pass block
taking the matching up-pass output as a short-cut: the u block from u, the ul
block from [u, ul]. Gated ResNet blocks use concat_elu, dropout, weight
normalization with the data-dependent initialization of the reference code
[2] (``data_init``, on by default: ``initialize_from_data`` on the first batch),
and a per-class bias in every block when class-conditional.

Any image size: the input is padded after the last row and column to multiples
of 4 (zeros, in the ones channel too, as the shifted convolutions' own padding)
and the output cropped back. A padded position's input is constant and what
the network computes there depends only on real pixels before it, so causality
is unchanged; the likelihood is over the real positions only.

The network conditions on whole pixels, so every likelihood head paired with
it models the channels within a pixel itself: the discretized logistic
mixture (default) through its linear coefficients, the categorical head
through a small channel-masked network.

Presets: ``default`` is the paper's CIFAR-10 model (160 filters, 5 blocks per
resolution, 10 mixtures, dropout 0.5) with the reference's training settings
(Adam betas (0.95, 0.9995), learning rate 1e-3 decaying by 0.999995 per step,
EMA 0.9995).

[1]: Salimans et al. 2017, "PixelCNN++: Improving the PixelCNN with Discretized
     Logistic Mixture Likelihood and Other Modifications", https://arxiv.org/abs/1701.05517
[2]: https://github.com/openai/pixel-cnn
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.models.base import AutoregressiveModel, ModelOptions
from pixelmodels.models.registry import register_model
from pixelmodels.nn import (
    NIN,
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    GatedResNet,
    down_shift,
    right_shift,
    with_ones,
)
from pixelmodels.nn.conditioning import Condition
from pixelmodels.settings import MAX_FEATURES, MAX_LAYERS, setting


@dataclass
class PixelCNNPPOptions(ModelOptions):
    """Hyperparameters of ``pixelcnnpp`` (each field's help and range beside it)."""

    n_filters: int = setting(160, "features of both streams", ge=1, le=MAX_FEATURES)
    n_blocks: int = setting(5, "gated ResNet blocks per resolution on the up pass (one more on the down pass)",
                            ge=1, le=MAX_LAYERS)
    dropout: float = setting(0.5, "dropout probability inside the blocks", ge=0, lt=1, noun="a probability")


PRESETS = {
    "tiny": dict(n_filters=4, n_blocks=1, n_mixtures=2, dropout=0.5),
    "small": dict(n_filters=32, n_blocks=2, n_mixtures=5, dropout=0.0),
    "default": dict(),
}

# What the paper settles unlike ``ModelOptions``, and the reference code's training settings (PixelSNAIL's too).
REFERENCE_OPTIONS = dict(likelihood="logistic-mixture", weight_norm=True)
REFERENCE_TRAINING = dict(lr=1e-3, lr_decay=0.999995, ema=0.9995, optimizer="adam", adam_betas=(0.95, 0.9995))


class PixelCNNPP(AutoregressiveModel):
    """PixelCNN++ of [1]; any image size (padded inside to multiples of 4), C = 1 or 3, or codes."""

    channel_masked = False

    def __init__(self, config, options: PixelCNNPPOptions):
        super().__init__(config, options)
        c, n = self.input_channels, options.n_filters

        def block(conv, n_aux):
            return GatedResNet(n, conv, n_aux, self.conditioning, options.dropout)

        self.u_in = DownShiftedConv2d(c + 1, n, (2, 3))
        self.ul_in_above = DownShiftedConv2d(c + 1, n, (1, 3))
        self.ul_in_left = DownRightShiftedConv2d(c + 1, n, (2, 1))
        nb = options.n_blocks
        self.up_u = nn.ModuleList(nn.ModuleList(block(DownShiftedConv2d, 0) for _ in range(nb)) for _ in range(3))
        self.up_ul = nn.ModuleList(nn.ModuleList(block(DownRightShiftedConv2d, n) for _ in range(nb)) for _ in range(3))
        self.down_u = nn.ModuleList(DownShiftedConv2d(n, n, (2, 3), stride=2) for _ in range(2))
        self.down_ul = nn.ModuleList(DownRightShiftedConv2d(n, n, (2, 2), stride=2) for _ in range(2))
        counts = [nb, nb + 1, nb + 1]
        self.dn_u = nn.ModuleList(nn.ModuleList(block(DownShiftedConv2d, n) for _ in range(m)) for m in counts)
        self.dn_ul = nn.ModuleList(nn.ModuleList(block(DownRightShiftedConv2d, 2 * n) for _ in range(m))
                                   for m in counts)
        self.up_sample_u = nn.ModuleList(DownShiftedConvTranspose2d(n, n) for _ in range(2))
        self.up_sample_ul = nn.ModuleList(DownRightShiftedConvTranspose2d(n, n) for _ in range(2))
        self.out = NIN(n, self.head.n_params)

    def head_features(self) -> int:
        return self.options.n_filters

    @property
    def network_size(self) -> tuple[int, int]:
        """The image size rounded up to multiples of 4 (two stride-2 levels)."""
        return tuple(-(-s // 4) * 4 for s in self.image_shape[1:])

    def network(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        h, w = x.shape[2:]
        height, width = -(-h // 4) * 4, self.network_size[1]  # x may be the first rows of an image
        x = F.pad(with_ones(x), (0, width - w, 0, height - h))  # (B, C+1, height, width)  # padding after the image: zeros, ones channel too
        u = down_shift(self.u_in(x))  # rows above
        ul = down_shift(self.ul_in_above(x)) + right_shift(self.ul_in_left(x))  # above and to the left
        us, uls = [u], [ul]
        for level in range(3):  # up pass: full, 1/2, 1/4 resolution
            for bu, bul in zip(self.up_u[level], self.up_ul[level]):
                u = bu(u, c=c)
                ul = bul(ul, u, c=c)
                us.append(u)
                uls.append(ul)
            if level < 2:
                u, ul = self.down_u[level](u), self.down_ul[level](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for level in range(3):  # down pass: 1/4, 1/2, full resolution
            for bu, bul in zip(self.dn_u[level], self.dn_ul[level]):
                u = bu(u, us.pop(), c=c)
                ul = bul(ul, (u, uls.pop()), c=c)  # aux [u, ul], concatenated
            if level < 2:
                u, ul = self.up_sample_u[level](u), self.up_sample_ul[level](ul)
        assert not us and not uls
        return self.out(F.elu(ul))[:, :, :h, :w]  # (B, head.n_params, H, W): the real positions


register_model("pixelcnnpp", PixelCNNPP, PixelCNNPPOptions, PRESETS, REFERENCE_OPTIONS, REFERENCE_TRAINING)
