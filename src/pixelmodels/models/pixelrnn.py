"""PixelRNN [1]: the Row LSTM and the Diagonal BiLSTM.

Both networks (Section 3 and Figure 5 of [1]): a 7x7 mask-A convolution of the
image to ``n_channels`` features; ``n_layers`` residual blocks, each an LSTM
layer over the block's input whose ``n_state``-unit hidden state is mapped back
to ``n_channels`` by a mask-B 1x1 convolution (none when the sizes are equal)
and added to the input; then ReLU, 1x1 mask B, ReLU, 1x1 mask B to the head's
parameters. An LSTM layer computes its gates (i, f, o, g) as an input-to-state
part, one masked convolution over the whole input map before the recurrence,
plus a state-to-state part over the hidden state of the previous step; then
c = f * c + i * g and h = o * tanh(c), with sigmoid i, f, o and tanh g. The
input-to-state convolutions use mask B in every layer, the first included: it
reads the mask-A input convolution, not the image.

* ``row-lstm``: the recurrence runs down the rows, a whole row per step. The
  input-to-state part is a masked 1x3 convolution along the row (the pixel to
  the left, and the pixel itself masked by channel group), the state-to-state
  part a 1x3 convolution over the previous row's hidden state. The receptive
  field is a triangle above the pixel, widening by one column per row up on
  each side, plus the pixels to the left that the stacked input-to-state
  kernels and the input convolution reach: it misses part of the past.
* ``diagonal-bilstm``: the input-to-state part (a masked 1x1 convolution) is
  *skewed*, row i shifted right by i, (B, F, H, W) -> (B, F, H, W + H - 1), so
  that the diagonal {i + j = s} of the image is column s. The recurrence runs
  along these W + H - 1 columns, a whole column per step; the state-to-state
  part is a 2x1 convolution over the previous column, rows i - 1 and i, which
  are the pixels (i - 1, j) and (i, j - 1) of the image. A second LSTM does the
  same on the horizontally mirrored input map (so it sees (i - 1, j) and
  (i, j + 1)), and its output, mirrored back, is shifted down one row before
  it is added to the first one's, so that the state at (i, j) takes only rows
  above from it. The sum is unskewed back to (B, n_state, H, W). The two
  directions run in the same loop (one grouped convolution per step). From the
  first layer on the receptive field is every earlier pixel (see the NOTE).

For RGB, features are split into groups by ``pixelmodels.nn.channel_groups``
as in PixelCNN: the input-to-state convolutions are channel-masked, and each
of the four gate blocks carries the layout of the state, so state unit u has
one group in every gate and in c and h. The state-to-state parts see only
earlier rows or diagonals, all of whose channels are in the past, so they are
not masked. Class conditioning adds a learned per-class bias to the gates'
pre-activation in every layer (not in [1]; as in [2]).

Default preset: [1] gives, for CIFAR-10, 12 layers of h = 128 units per LSTM
for both models, and the residual stream of 2h = 256 features (Figure 5); it
does not give the width of the output layers, we use 1024 as for PixelCNN.

NOTE: as [1] describes it, the Diagonal BiLSTM misses one pixel: pixel
(i - 1, W - 1) (its last channel, for RGB) enters the network, through the
mask-A input convolution, only at positions of row i within k//2 columns of
the right edge; from there the left-to-right LSTM carries it only to the right
and the right-to-left one, shifted down, only to row i + 1. So (i, j) with
j < W - 1 - k//2 never sees it, however deep the network. We close the gap
(not in [1]): the first layer's right-to-left gates also read the image
through an unmasked 1x1 convolution (``image_to_reverse``), which is causal
because that direction's output at row i is used at row i + 1 only.
NOTE: ``receptive_rows`` is H - 1 (every row above; rows below never matter),
so the sampler runs the network on rows 0..i only. That gives the full pass's
values: each direction is mirrored (or not) before it is skewed, so row i is
scanned after the same i columns of skew padding whatever the image's height.
NOTE: feature counts that are not a multiple of the channel count give groups
of unequal size (128 state units: 43, 43, 42), as in ``pixelcnn``.

[1]: van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
     https://arxiv.org/abs/1601.06759
[2]: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
     Decoders", https://arxiv.org/abs/1606.05328
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels.models.base import AutoregressiveModel, ModelOptions
from pixelmodels.models.registry import register_model
from pixelmodels.nn import MaskedConv2d, channel_groups
from pixelmodels.nn.conditioning import Condition, Conditioning
from pixelmodels.settings import MAX_FEATURES, MAX_KERNEL, MAX_LAYERS, setting


@dataclass
class PixelRNNOptions(ModelOptions):
    """Hyperparameters of ``row-lstm`` and ``diagonal-bilstm`` (each field's help and range beside it)."""

    n_channels: int = setting(256, "features of the residual stream (2h in [1])", ge=1, le=MAX_FEATURES)
    n_state: int = setting(128, "hidden units of each LSTM (h in [1])", ge=1, le=MAX_FEATURES)
    n_layers: int = setting(12, "residual LSTM layers", ge=1, le=MAX_LAYERS)
    input_kernel_size: int = setting(7, "the first (mask-A) convolution", ge=1, le=MAX_KERNEL, odd=True)
    n_out_channels: int = setting(1024, "features of the hidden 1x1 output layer", ge=1, le=MAX_FEATURES)


PRESETS = {
    "tiny": dict(n_channels=12, n_state=6, n_layers=2, n_out_channels=12),
    "small": dict(n_channels=96, n_state=48, n_layers=4, n_out_channels=128),
    "default": dict(),
}


def lstm_step(gates: torch.Tensor, c: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM update; ``gates`` holds (i, f, o, g) along ``dim`` (size 4), c is gates without it."""
    i, f, o, g = gates.unbind(dim)  # unbind: one gradient op, not one full-size zero tensor per gate
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W) -> (B, F, H, W + H - 1): row i shifted right by i, zeros elsewhere."""
    b, f, h, w = x.shape
    flat = F.pad(x, (0, h)).flatten(2)[:, :, : h * (w + h - 1)]  # row i starts i * (W + H) = i * (W + H - 1) + i
    return flat.view(b, f, h, w + h - 1)


def unskew(x: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W + H - 1) -> (B, F, H, W): the inverse of ``skew``."""
    b, f, h, ws = x.shape
    flat = F.pad(x.flatten(2), (0, h))  # (B, F, H * (W + H))
    return flat.view(b, f, h, ws + 1)[:, :, :, : ws + 1 - h]


def gate_groups(n_state: int, n_groups: int, n_blocks: int) -> torch.Tensor:
    """Group of each gate unit: ``n_blocks`` copies of the state's layout."""
    return channel_groups(n_state, n_groups).repeat(n_blocks)


class RowLSTMLayer(nn.Module):
    """The Row LSTM layer: (B, n_channels, H, W) -> hidden states (B, n_state, H, W)."""

    def __init__(self, n_channels: int, n_state: int, n_groups: int, conditioning: Conditioning):
        super().__init__()
        self.input_to_state = MaskedConv2d(n_channels, 4 * n_state, 3, "B", n_groups, shape="row",
                                           out_groups=gate_groups(n_state, n_groups, 4))
        self.state_to_state = nn.Conv1d(n_state, 4 * n_state, 3, padding=1, bias=False)
        self.state_to_state.init_scale = None  # applied row after row from a zero state: no data init
        self.class_bias = conditioning.bias(4 * n_state)
        self.n_state = n_state

    def forward(self, x: torch.Tensor, c: Condition | None, extra: torch.Tensor | float = 0.0) -> torch.Tensor:
        """``extra``: a term added to the gates' pre-activation, (B, 4 * n_state, H, W) or 0."""
        b, _, height, width = x.shape
        n = self.n_state
        gates_in = self.class_bias.add(self.input_to_state(x), c) + extra
        rows = gates_in.permute(2, 0, 1, 3).contiguous().unbind(0)  # H x (B, 4n, W)
        h = c = x.new_zeros(b, n, width)
        hs = []
        for i, gates in enumerate(rows):
            if i > 0:
                gates = gates + self.state_to_state(h)  # (B, 4n, W)
            h, c = lstm_step(gates.view(b, 4, n, width), c, 1)
            hs.append(h)
        return torch.stack(hs, 2)  # (B, n, H, W)


class DiagonalBiLSTMLayer(nn.Module):
    """The Diagonal BiLSTM layer: (B, n_channels, H, W) -> hidden states (B, n_state, H, W)."""

    def __init__(self, n_channels: int, n_state: int, n_groups: int, conditioning: Conditioning):
        super().__init__()
        self.input_to_state = MaskedConv2d(n_channels, 8 * n_state, 1, "B", n_groups,
                                           out_groups=gate_groups(n_state, n_groups, 8))  # both directions
        self.state_to_state = nn.Conv1d(2 * n_state, 8 * n_state, 2, padding=1, groups=2, bias=False)
        self.state_to_state.init_scale = None  # applied row after row from a zero state: no data init
        self.class_bias = conditioning.bias(8 * n_state)
        self.n_state = n_state

    def forward(self, x: torch.Tensor, c: Condition | None, extra: torch.Tensor | float = 0.0) -> torch.Tensor:
        """``extra``: a term added to the gates' pre-activation, (B, 8 * n_state, H, W) or 0."""
        b, _, height, _ = x.shape
        n = self.n_state
        gates = self.class_bias.add(self.input_to_state(x), c) + extra
        forward, mirrored = gates.chunk(2, 1)  # (B, 4n, H, W) each
        gates_in = skew(torch.cat([forward, mirrored.flip(3)], 1))  # (B, 8n, H, W + H - 1)
        columns = gates_in.permute(3, 0, 1, 2).contiguous().unbind(0)  # (W + H - 1) x (B, 8n, H)
        h = c = x.new_zeros(b, 2, n, height)
        hs = []
        for s, gates in enumerate(columns):
            if s > 0:  # output i of the padded 2x1 convolution: rows i - 1 and i of the previous column
                gates = gates + self.state_to_state(h.view(b, 2 * n, height))[:, :, :height]
            h, c = lstm_step(gates.view(b, 2, 4, n, height), c, 2)
            hs.append(h)
        out = unskew(torch.stack(hs, -1).view(b, 2 * n, height, -1))  # (B, 2n, H, W)
        forward, mirrored = out.chunk(2, 1)
        return forward + F.pad(mirrored.flip(3), (0, 0, 1, 0))[:, :, :height]  # mirrored: one row down


class ResidualBlock(nn.Module):
    """An LSTM layer, a mask-B 1x1 back to the stream's width, and the block's own skip."""

    def __init__(self, lstm: nn.Module, n_channels: int, n_state: int, n_groups: int):
        super().__init__()
        self.lstm = lstm
        self.proj = MaskedConv2d(n_state, n_channels, 1, "B", n_groups) if n_state != n_channels else nn.Identity()

    def forward(self, x: torch.Tensor, c: Condition | None, extra: torch.Tensor | float = 0.0) -> torch.Tensor:
        return x + self.proj(self.lstm(x, c, extra))


class PixelRNN(AutoregressiveModel):
    """PixelRNN of [1]; subclasses choose the LSTM layer."""

    layer_cls: type[nn.Module]

    def __init__(self, config, options: PixelRNNOptions):
        super().__init__(config, options)
        c, f, n = config.image_shape[0], options.n_channels, options.n_state
        self.input_conv = MaskedConv2d(self.input_channels, f, options.input_kernel_size, "A", c)
        self.blocks = nn.ModuleList(
            ResidualBlock(self.layer_cls(f, n, c, self.conditioning), f, n, c) for _ in range(options.n_layers)
        )
        self.out_hidden = MaskedConv2d(f, options.n_out_channels, 1, "B", c)
        self.out = MaskedConv2d(options.n_out_channels, self.head.n_params, 1, "B", c,
                                out_groups=self.head.param_groups())

    @property
    def receptive_rows(self) -> int:
        """Every row above (see the module's NOTE)."""
        return self.image_shape[1] - 1

    def first_layer_extra(self, x: torch.Tensor) -> torch.Tensor | float:
        """A term the first LSTM layer adds to its gates' pre-activation (none here)."""
        return 0.0

    def network(self, x: torch.Tensor, c: Condition | None) -> torch.Tensor:
        h = self.input_conv(x)  # (B, F, H, W)
        for k, block in enumerate(self.blocks):
            h = block(h, c, self.first_layer_extra(x) if k == 0 else 0.0)
        return self.out(F.relu(self.out_hidden(F.relu(h))))  # (B, n_params, H, W)


class RowLSTM(PixelRNN):
    """``row-lstm``: PixelRNN with Row LSTM layers."""

    layer_cls = RowLSTMLayer


class DiagonalBiLSTM(PixelRNN):
    """``diagonal-bilstm``: PixelRNN with Diagonal BiLSTM layers."""

    layer_cls = DiagonalBiLSTMLayer

    def __init__(self, config, options: PixelRNNOptions):
        super().__init__(config, options)
        self.image_to_reverse = nn.Conv2d(self.input_channels, 4 * options.n_state, 1, bias=False)

    def first_layer_extra(self, x: torch.Tensor) -> torch.Tensor:
        """The image, unmasked, into the right-to-left gates only (see the module's NOTE)."""
        return F.pad(self.image_to_reverse(x), (0, 0, 0, 0, 4 * self.options.n_state, 0))  # (B, 8n, H, W)


register_model("row-lstm", RowLSTM, PixelRNNOptions, PRESETS)
register_model("diagonal-bilstm", DiagonalBiLSTM, PixelRNNOptions, PRESETS)
