"""Building blocks shared by the models: masked and shifted convolutions, the gated residual block,
conditioning, causal attention, weight normalization; ``incremental`` holds the pieces the caches
use to compute a network one position at a time, and ``fast`` the CPU speed code behind its switch."""

from pixelmodels.nn.attention import CausalSelfAttention, causal_attention
from pixelmodels.nn.conditioning import Condition, ConditionBias, Conditioning, FrozenBias
from pixelmodels.nn.gated_resnet import GatedResNet
from pixelmodels.nn.init import data_dependent_init, weight_norm, weight_normed_layers
from pixelmodels.nn.masked import MaskedConv2d, causal_mask, channel_groups
from pixelmodels.nn.shifted import (
    NIN,
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    concat_elu,
    down_shift,
    right_shift,
    with_ones,
)

__all__ = [
    "CausalSelfAttention", "Condition", "ConditionBias", "Conditioning", "DownRightShiftedConv2d",
    "DownRightShiftedConvTranspose2d", "DownShiftedConv2d", "DownShiftedConvTranspose2d", "FrozenBias",
    "GatedResNet", "MaskedConv2d", "NIN", "causal_attention", "causal_mask", "channel_groups", "concat_elu",
    "data_dependent_init", "down_shift", "right_shift", "weight_norm", "weight_normed_layers", "with_ones",
]
