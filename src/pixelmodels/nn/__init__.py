"""Building blocks shared by the models: masked and shifted convolutions, gated blocks and the tanh gate,
conditioning, causal attention, weight-norm initialization; ``incremental`` holds the
one-position versions the caches use."""

from pixelmodels.nn.activations import tanh_gate
from pixelmodels.nn.attention import CausalSelfAttention, causal_attention
from pixelmodels.nn.conditioning import Condition, ConditionBias, Conditioning, FrozenBias
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
    "CausalSelfAttention", "Condition", "ConditionBias", "Conditioning", "DownRightShiftedConv2d",
    "DownRightShiftedConvTranspose2d", "DownShiftedConv2d", "DownShiftedConvTranspose2d", "FrozenBias",
    "GatedResNet", "MaskedConv2d", "NIN", "causal_attention", "causal_mask", "channel_groups", "concat_elu",
    "data_dependent_init", "down_shift", "right_shift", "tanh_gate", "weight_normed_layers",
]
