"""The cached sampling path of PixelRNN (Row LSTM, Diagonal BiLSTM) [1].

Both networks are channel-masked, so ``step(x, i, j)`` comes once per channel
pass at the same (i, j): the network at (i, j) is recomputed at every call (at
most C times), the last call giving the values later positions read. The image
buffer is written at (i, j) and once more at the previous position, whose last
channel is sampled after its last step. At every step: the 7x7 mask-A input
convolution over the window ending at (i, j), then per layer the LSTM at (i, j)
(below), the block's 1x1 projection and skip, then the 1x1 output layers.

* Row LSTM: the input-to-state part at (i, j) is the masked 1x3 convolution of
  the layer's input at (i, j - 1) and (i, j) (a one-row buffer per layer); the
  state-to-state part of row i (a 1x3 convolution of row i - 1's h) is
  computed for the whole row at the first step of row i; c comes from (i - 1, j).
* Diagonal BiLSTM, in image coordinates (the skew maps the diagonal s = i + j
  to a column): the left-to-right direction at (i, j) reads h at (i - 1, j) and
  (i, j - 1) and c at (i, j - 1), all final, so it runs per position. The
  right-to-left one reads (i, j + 1), not yet known, but its output at row i is
  used at row i + 1 only: at the first step of row i it runs over row i - 1,
  from column W - 1 down to 0, every layer at once (each layer's gates for row
  i - 1 were stored when row i - 1 was stepped, since a layer's input there
  already holds the previous layer's right-to-left output of row i - 2), with
  the first layer's ``image_to_reverse`` term of the image row i - 1 added then.
  A layer's output at (i, j) is then left-to-right (i, j) + right-to-left (i - 1, j).

Effective weights are frozen once, in the constructor.

[1]: Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
     Models", https://arxiv.org/abs/1704.06001
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelmodels.models.base import SamplingCache, register_cache
from pixelmodels.models.pixelrnn import DiagonalBiLSTM, PixelRNN, RowLSTM, lstm_step
from pixelmodels.nn import MaskedConv2d
from pixelmodels.nn.conditioning import Condition
from pixelmodels.nn.incremental import (OutputStack, PaddedBuffer, PreviousPixel, channels_last, conv_at_flat,
                                        flat_taps, frozen, frozen_pointwise)


class _PixelRNNCache(SamplingCache):
    """The input convolution, the residual blocks' projections and the output layers, one position at a time."""

    def __init__(self, model: PixelRNN, n: int, c: Condition | None):
        super().__init__(model, n, c)
        p = next(model.parameters())
        self.height, self.width = model.image_shape[1:]
        self.n_layers, self.n_state = len(model.blocks), model.options.n_state
        self.zeros = lambda *shape: torch.zeros(*shape, device=p.device, dtype=p.dtype)
        weight, bias = frozen(model.input_conv)
        image = PaddedBuffer(n, model.input_channels, self.height, self.width, model.input_conv.pad, p.device,
                             p.dtype)
        self.image, self.kernel, self.input_conv = channels_last(image), weight.shape[2:], (flat_taps(weight), bias)
        self.previous = PreviousPixel(self.image, model.embed)
        self.proj = [frozen_pointwise(b.proj) if isinstance(b.proj, MaskedConv2d) else None for b in model.blocks]
        self.output = OutputStack(model.out_hidden, model.out)
        self.biases = [b.lstm.class_bias.frozen(c, (self.height, self.width)) for b in model.blocks]
        self.row = -1  # the row stepped last

    def start_row(self, x: torch.Tensor, i: int) -> None:
        """Work done once per row, at its first step (rows < i are final in x)."""

    def lstm_at(self, k: int, h: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Layer k's LSTM output (n, n_state) at (i, j) from its input h (n, n_channels) there."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Parameters (n, head.n_params) at (i, j) of the partial integer image x (n, C, H, W)."""
        self.previous.update(x, i, j)
        if i != self.row:
            self.row = i
            self.start_row(x, i)
        self.image.write(i, j, self.model.embed(x[:, :, i, j]))
        h = conv_at_flat(self.image.window(i, j, *self.kernel), *self.input_conv)  # (n, F)
        for k, proj in enumerate(self.proj):
            out = self.lstm_at(k, h, i, j)  # (n, n_state)
            h = h + (out if proj is None else F.linear(out, *proj))
        return self.output(h)  # (n, P)


class RowLSTMCache(_PixelRNNCache):
    """Cached sampling of ``row-lstm``; see the module docstring for the schedule."""

    def __init__(self, model: RowLSTM, n: int, c: Condition | None):
        super().__init__(model, n, c)
        L, W, ns, f = self.n_layers, self.width, self.n_state, model.options.n_channels
        self.input_to_state = []  # per layer: (4ns, 2F) over [input (i, j - 1), input (i, j)], bias
        for block in model.blocks:
            weight, bias = frozen(block.lstm.input_to_state)  # (4ns, F, 1, 2)
            self.input_to_state.append((weight[:, :, 0].permute(0, 2, 1).reshape(4 * ns, 2 * f), bias))
        self.state_to_state = [b.lstm.state_to_state.weight.detach() for b in model.blocks]  # (4ns, ns, 3)
        self.inputs = self.zeros(L, n, W + 1, f)  # the current row of each layer's input; column 0 = padding
        self.h = self.zeros(L, n, ns, W)  # the current row's state
        self.c, self.c_above = self.zeros(L, n, ns, W), self.zeros(L, n, ns, W)
        self.above = None  # (L, n, 4ns, W): the state-to-state part of the current row

    def start_row(self, x: torch.Tensor, i: int) -> None:
        if i == 0:
            return
        self.above = torch.stack([F.conv1d(self.h[k], w, padding=1) for k, w in enumerate(self.state_to_state)])
        self.c, self.c_above = self.c_above, self.c

    def lstm_at(self, k: int, h: torch.Tensor, i: int, j: int) -> torch.Tensor:
        self.inputs[k, :, j + 1] = h
        gates = F.linear(self.inputs[k, :, j: j + 2].reshape(self.n, -1), *self.input_to_state[k])
        gates = gates + self.biases[k].at(i, j)  # (n, 4ns)
        if self.above is not None:
            gates = gates + self.above[k, :, :, j]
        h, c = lstm_step(gates.view(self.n, 4, self.n_state), self.c_above[k, :, :, j], 1)
        self.h[k, :, :, j], self.c[k, :, :, j] = h, c
        return h


class DiagonalBiLSTMCache(_PixelRNNCache):
    """Cached sampling of ``diagonal-bilstm``; see the module docstring for the schedule."""

    def __init__(self, model: DiagonalBiLSTM, n: int, c: Condition | None):
        super().__init__(model, n, c)
        L, W, ns = self.n_layers, self.width, self.n_state
        self.input_to_state = [frozen_pointwise(b.lstm.input_to_state) for b in model.blocks]  # (8ns, F): both ways
        # state-to-state (8ns, ns, 2): tap 0 reads the row above, tap 1 the previous position along the row
        s2s = [b.lstm.state_to_state.weight.detach() for b in model.blocks]
        self.forward_s2s = [torch.cat([w[: 4 * ns, :, 0], w[: 4 * ns, :, 1]], 1) for w in s2s]  # (4ns, 2ns)
        self.reverse_s2s = torch.stack([torch.cat([w[4 * ns:, :, 0], w[4 * ns:, :, 1]], 1).t() for w in s2s])
        self.image_to_reverse = model.image_to_reverse.weight.detach()[:, :, 0, 0]  # (4ns, C), unmasked
        self.h = self.zeros(L, W + 1, n, ns)  # left-to-right state of the current row; index j + 1 is column j
        self.c = self.zeros(L, W + 1, n, ns)
        self.h_above = self.zeros(L, W, n, ns)  # left-to-right h of the row above
        self.reverse_gates = self.zeros(L, W, n, 4 * ns)  # right-to-left gates' input part, current row
        self.reverse = self.zeros(L, W, n, ns)  # right-to-left h of the row above (the output's second term)

    def start_row(self, x: torch.Tensor, i: int) -> None:
        if i == 0:
            return
        self.h_above, self.h = self.h[:, 1:], torch.zeros_like(self.h)
        gates = self.reverse_gates.clone()  # (L, W, n, 4ns), row i - 1
        pixels = self.model.embed(x[:, :, i - 1]).permute(2, 0, 1)  # (W, n, C), all final
        gates[0] = gates[0] + F.linear(pixels, self.image_to_reverse)
        h = c = self.zeros(self.n_layers, self.n, self.n_state)  # (L, n, ns): column W is outside the image
        rows = []
        for j in reversed(range(self.width)):  # (i - 2, j) and (i - 1, j + 1) -> (i - 1, j), every layer at once
            s2s = torch.bmm(torch.cat([self.reverse[:, j], h], -1), self.reverse_s2s)  # (L, n, 4ns)
            h, c = lstm_step((gates[:, j] + s2s).view(self.n_layers, self.n, 4, self.n_state), c, 2)
            rows.append(h)
        self.reverse = torch.stack(rows[::-1], 1)  # (L, W, n, ns)

    def lstm_at(self, k: int, h: torch.Tensor, i: int, j: int) -> torch.Tensor:
        ns = self.n_state
        gates = F.linear(h, *self.input_to_state[k]) + self.biases[k].at(i, j)  # (n, 8ns)
        self.reverse_gates[k, j] = gates[:, 4 * ns:]
        s2s = F.linear(torch.cat([self.h_above[k, j], self.h[k, j]], 1), self.forward_s2s[k])  # (n, 4ns)
        h, c = lstm_step((gates[:, : 4 * ns] + s2s).view(self.n, 4, ns), self.c[k, j], 1)
        self.h[k, j + 1], self.c[k, j + 1] = h, c
        return h + self.reverse[k, j]


register_cache(RowLSTM, RowLSTMCache)
register_cache(DiagonalBiLSTM, DiagonalBiLSTMCache)
