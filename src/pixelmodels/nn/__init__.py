"""Building blocks shared by the models: masked and shifted convolutions, gates."""

from pixelmodels.nn.masked import (
    DownShiftedConv2d,
    MaskedConv2d,
    causal_mask,
    channel_groups,
    shift_down,
)

__all__ = ["DownShiftedConv2d", "MaskedConv2d", "causal_mask", "channel_groups", "shift_down"]
