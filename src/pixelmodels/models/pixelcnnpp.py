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

from pixelmodels.errors import PixelModelsError
from pixelmodels.models.base import AutoregressiveModel
from pixelmodels.models.pixelcnnpp_cache import PixelCNNPPCache
from pixelmodels.nn import (
    NIN,
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    GatedResNet,
    down_shift,
    right_shift,
)


@dataclass
class PixelCNNPPOptions:
    """Hyperparameters of ``pixelcnnpp``.

    Args:
        n_filters: features of both streams.
        n_blocks: gated ResNet blocks per resolution on the up pass (one more on the down pass).
        n_mixtures: logistic mixture components (logistic-mixture head).
        dropout: dropout probability inside the blocks.
        likelihood: "logistic-mixture" or "categorical".
        weight_norm: weight-normalize every convolution.
        data_init: data-dependent initialization on the first training batch.
    """

    n_filters: int = 160
    n_blocks: int = 5
    n_mixtures: int = 10
    dropout: float = 0.5
    likelihood: str = "logistic-mixture"
    weight_norm: bool = True
    data_init: bool = True


PRESETS = {
    "tiny": dict(n_filters=4, n_blocks=1, n_mixtures=2, dropout=0.5),
    "small": dict(n_filters=32, n_blocks=2, n_mixtures=5, dropout=0.0),
    "default": dict(),
}

TRAIN_DEFAULTS = dict(lr=1e-3, lr_decay=0.999995, ema=0.9995, optimizer="adam", adam_betas=(0.95, 0.9995))


class PixelCNNPP(AutoregressiveModel):
    """PixelCNN++ of [1]; any image size divisible by 4, C = 1 or 3."""

    channel_masked = False

    def __init__(self, config, options: PixelCNNPPOptions):
        c, h, w = config.image_shape
        if h % 4 or w % 4:
            raise PixelModelsError(f"image size: pixelcnnpp needs height and width divisible by 4, found {h}x{w}")
        super().__init__(config, options)
        n, wn, k = options.n_filters, options.weight_norm, config.n_classes

        def block(conv, n_aux):
            return GatedResNet(n, conv, n_aux, k, options.dropout, wn)

        self.u_in = DownShiftedConv2d(c + 1, n, (2, 3), weight_norm=wn)
        self.ul_in_above = DownShiftedConv2d(c + 1, n, (1, 3), weight_norm=wn)
        self.ul_in_left = DownRightShiftedConv2d(c + 1, n, (2, 1), weight_norm=wn)
        nb = options.n_blocks
        self.up_u = nn.ModuleList(nn.ModuleList(block(DownShiftedConv2d, 0) for _ in range(nb)) for _ in range(3))
        self.up_ul = nn.ModuleList(nn.ModuleList(block(DownRightShiftedConv2d, n) for _ in range(nb)) for _ in range(3))
        self.down_u = nn.ModuleList(DownShiftedConv2d(n, n, (2, 3), stride=2, weight_norm=wn) for _ in range(2))
        self.down_ul = nn.ModuleList(DownRightShiftedConv2d(n, n, (2, 2), stride=2, weight_norm=wn) for _ in range(2))
        counts = [nb, nb + 1, nb + 1]
        self.dn_u = nn.ModuleList(nn.ModuleList(block(DownShiftedConv2d, n) for _ in range(m)) for m in counts)
        self.dn_ul = nn.ModuleList(nn.ModuleList(block(DownRightShiftedConv2d, 2 * n) for _ in range(m))
                                   for m in counts)
        self.up_sample_u = nn.ModuleList(DownShiftedConvTranspose2d(n, n, weight_norm=wn) for _ in range(2))
        self.up_sample_ul = nn.ModuleList(DownRightShiftedConvTranspose2d(n, n, weight_norm=wn) for _ in range(2))
        self.out = NIN(n, self.head.n_params, weight_norm=wn)

    def head_features(self) -> int:
        return self.options.n_filters

    def network(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (B, C+1, H, W)
        u = down_shift(self.u_in(x))  # rows above
        ul = down_shift(self.ul_in_above(x)) + right_shift(self.ul_in_left(x))  # above and to the left
        us, uls = [u], [ul]
        for level in range(3):  # up pass: full, 1/2, 1/4 resolution
            for bu, bul in zip(self.up_u[level], self.up_ul[level]):
                u = bu(u, y=y)
                ul = bul(ul, u, y=y)
                us.append(u)
                uls.append(ul)
            if level < 2:
                u, ul = self.down_u[level](u), self.down_ul[level](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for level in range(3):  # down pass: 1/4, 1/2, full resolution
            for bu, bul in zip(self.dn_u[level], self.dn_ul[level]):
                u = bu(u, us.pop(), y=y)
                ul = bul(ul, torch.cat([u, uls.pop()], dim=1), y=y)
            if level < 2:
                u, ul = self.up_sample_u[level](u), self.up_sample_ul[level](ul)
        assert not us and not uls
        return self.out(F.elu(ul))  # (B, head.n_params, H, W)

    def sampling_cache(self, n: int, y: torch.Tensor | None) -> PixelCNNPPCache:
        """The cached sampler (``pixelcnnpp_cache``): ``step(x, i, j)`` -> params (n, P) at (i, j)."""
        return PixelCNNPPCache(self, n, y)
