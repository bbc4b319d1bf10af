"""Building blocks shared by the models: masked and shifted convolutions, gated blocks,
class conditioning, weight-norm initialization."""

from pixelmodels.nn.attention import CausalSelfAttention, causal_attention
from pixelmodels.nn.conditioning import ClassBias
from pixelmodels.nn.init import data_dependent_init, weight_normed_layers
from pixelmodels.nn.masked import MaskedConv2d, causal_mask, channel_groups
from pixelmodels.nn.shifted import (
    NIN,
    DownRightShiftedConv2d,
    DownShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConvTranspose2d,
    GatedResNet,
    concat_elu,
    down_shift,
    right_shift,
)

__all__ = [
    "ClassBias", "DownRightShiftedConv2d", "DownRightShiftedConvTranspose2d", "DownShiftedConv2d",
    "DownShiftedConvTranspose2d", "GatedResNet", "MaskedConv2d", "NIN", "causal_mask", "channel_groups",
    "concat_elu", "data_dependent_init", "down_shift", "right_shift", "weight_normed_layers",
    "CausalSelfAttention", "causal_attention",
]
