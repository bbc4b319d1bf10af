"""The FLOP counter against counts by hand."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels import create_model
from pixelmodels.flops import FlopCounter, count_flops, training_step_flops


def test_conv_linear_and_transposed_conv_by_hand():
    conv = nn.Conv2d(3, 8, (2, 3), stride=2, padding=1)  # 5x7 input -> 3x4 output
    linear = nn.Linear(10, 6)
    up = nn.ConvTranspose2d(4, 5, 2, stride=2)  # 3x3 input -> 6x6 output
    assert conv(torch.zeros(2, 3, 5, 7)).shape == (2, 8, 3, 4)
    assert count_flops(conv, torch.zeros(2, 3, 5, 7)) == 2 * (2 * 3 * 4) * 8 * (3 * 2 * 3)
    assert count_flops(linear, torch.zeros(7, 10)) == 2 * 7 * 10 * 6
    assert count_flops(linear, torch.zeros(2, 7, 10)) == 2 * 14 * 10 * 6  # a batch of matrices
    assert count_flops(up, torch.zeros(2, 4, 3, 3)) == 2 * (2 * 3 * 3) * 4 * 5 * (2 * 2)
    grouped = nn.Conv2d(4, 6, 3, groups=2)
    assert count_flops(grouped, torch.zeros(1, 4, 5, 5)) == 2 * 9 * 6 * 2 * 9


def test_functional_masked_conv_matmul_and_causal_attention():
    x, w = torch.zeros(1, 4, 6, 6), torch.ones(8, 4, 3, 3)
    with FlopCounter() as counter:
        F.conv2d(x, w * torch.zeros_like(w), padding=1)  # masked weights still cost their multiplies
        torch.zeros(5, 3) @ torch.zeros(3, 2)
        torch.bmm(torch.zeros(4, 5, 3), torch.zeros(4, 3, 2))
    assert counter.by_op == {"convolution": 2 * 36 * 8 * 4 * 9, "mm": 2 * 5 * 3 * 2, "bmm": 2 * 4 * 5 * 3 * 2}
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 10, 8), torch.randn(2, 3, 10, 8)
    full = count_flops(F.scaled_dot_product_attention, q, k, v)
    causal = count_flops(F.scaled_dot_product_attention, q, k, v, is_causal=True)
    assert full == 2 * (2 * 3) * 10 * 10 * (8 + 8)  # q k^T and weights @ v (fused kernel or its bmm's)
    assert causal in (full, full // 2)  # the fused kernels count the lower half; the math path both halves


def test_model_training_step_is_three_forwards_of_its_layers():
    model = create_model("gated-pixelcnn", image_shape=(1, 8, 8), preset="tiny")
    x = torch.randint(0, 256, (2, 1, 8, 8))
    by_hand = 0  # every layer is a convolution that keeps the 8x8 size
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            by_hand += 2 * (2 * 8 * 8) * m.out_channels * m.in_channels * m.weight.shape[2] * m.weight.shape[3]
    assert training_step_flops(model, x) == 3 * by_hand
