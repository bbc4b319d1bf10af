"""PixelRNN: the receptive fields [1] describes, the skew, and running on the first rows.

The generic causality, normalization, gradient and sampling tests run over these
models from tests/test_models.py and tests/test_sampling.py.

[1]: van den Oord et al. 2016, "Pixel Recurrent Neural Networks", https://arxiv.org/abs/1601.06759
"""

import pytest
import torch

from pixelmodels import create_model
from pixelmodels.errors import PixelModelsError
from pixelmodels.models.pixelrnn import skew, unskew


def make(name, c, h, w, **kw):
    model = create_model(name, image_shape=(c, h, w), n_bits=3, preset="tiny", **kw)
    with torch.no_grad():  # break the symmetry of zero-initialized parameters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.double()


def fields(model, points):
    """(P, C, H, W) bool: the sub-pixels the params of each point (i, j) or (i, j, channel) depend on.

    One backward pass: point p reads image p of a batch (images of a batch are
    independent, which tests/test_models.py checks).
    """
    x = torch.randint(0, 8, (len(points),) + tuple(model.image_shape))
    x = model.embed(x).requires_grad_(True)
    params = model.network(x, None)
    groups = model.head.param_groups()
    total = 0
    for p, (i, j, *channel) in enumerate(points):
        total = total + params[p, groups == channel[0] if channel else slice(None), i, j].sum()
    (g,) = torch.autograd.grad(total, x)
    return g != 0


def field(model, i, j):
    """(C, H, W) bool: the sub-pixels the params at (i, j) depend on."""
    return fields(model, [(i, j)])[0]


def earlier(c, h, w, i, j, channel):
    """(C, H, W) bool: every sub-pixel before (channel, i, j) in raster order."""
    a = torch.zeros(c, h, w, dtype=torch.bool)
    a[:, :i] = True
    a[:, i, :j] = True
    a[:channel, i, j] = True
    return a


def row_lstm_field(i, j, h, w, n_layers, input_kernel):
    """(H, W) bool: the pixels the Row LSTM's output at (i, j) sees, from the kernel sizes.

    Each layer's masked 1x3 input-to-state convolution reaches one column left in
    the current row; its 1x3 state-to-state convolution one column further on each
    side per row up (the triangle of [1]); the 7x7 mask-A input convolution adds
    r = 3 columns left in the current row, and up to r rows up r columns on each
    side. So in row i - d, d >= 1, columns j - n_layers - d - r .. j + d - 1 + r
    (the right edge: d - 1 rows of triangle and one row of the input convolution);
    in row i, columns j - n_layers - r .. j - 1.
    """
    r = input_kernel // 2
    f = torch.zeros(h, w, dtype=torch.bool)
    f[i, max(0, j - n_layers - r):j] = True
    for d in range(1, i + 1):
        f[i - d, max(0, j - n_layers - d - r):j + d - 1 + r + 1] = True
    return f


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_row_lstm_sees_the_triangle_of_the_paper_exactly(n_layers):
    h, w = 8, 22
    model = make("row-lstm", 1, h, w, n_layers=n_layers)
    points = [(7, 12), (5, 3), (7, 21), (0, 10)]
    for (i, j), f in zip(points, fields(model, points)):
        expected = row_lstm_field(i, j, h, w, n_layers, model.options.input_kernel_size)
        assert torch.equal(f[0], expected), (i, j)
        assert torch.equal(expected & earlier(1, h, w, i, j, 0)[0], expected)  # the expected set is causal
    f = field(model, 7, 12)[0]
    assert not f[6, 16] and f[6, 15]  # one row up: 3 columns right (input conv), not 4
    assert not f[7, 12 - n_layers - 4] and f[7, 12 - n_layers - 3]  # current row: only as far as the kernels reach
    assert not f[5, 12 + 5] and f[5, 12 + 4]  # two rows up: the triangle widens by one column


@pytest.mark.parametrize("c", [1, 3])
def test_diagonal_bilstm_sees_every_earlier_sub_pixel(c):
    h, w = 6, 10
    model = make("diagonal-bilstm", c, h, w, n_layers=1)
    points = [(i, j, ch) for i, j in [(h - 1, w - 1), (0, 7), (3, 2), (2, 0), (4, 5)] for ch in range(c)]
    for (i, j, ch), f in zip(points, fields(model, points)):  # last, first row, the gap of [1], first column
        assert torch.equal(f, earlier(c, h, w, i, j, ch)), (i, j, ch)


def test_diagonal_bilstm_without_the_image_path_has_the_gap_of_the_paper():
    """The NOTE of the module: as [1] describes it, (i, j) misses (i - 1, W - 1) for j < W - 4."""
    h, w = 6, 10
    model = make("diagonal-bilstm", 1, h, w, n_layers=3)
    with torch.no_grad():
        model.image_to_reverse.weight.zero_()
    f = fields(model, [(3, 2), (5, 5), (3, 6)])
    for (i, j), g in zip([(3, 2), (5, 5)], f):
        expected = earlier(1, h, w, i, j, 0)[0]
        expected[i - 1, w - 1] = False
        assert torch.equal(g[0], expected), (i, j)
    assert torch.equal(f[2, 0], earlier(1, h, w, 3, 6, 0)[0])  # j >= W - 4: the 7x7 input convolution reaches it


def test_row_lstm_does_not_see_everything():
    model = make("row-lstm", 1, 8, 22)
    f = field(model, 7, 12)[0]
    before = earlier(1, 8, 22, 7, 12, 0)[0]
    assert not f[~before].any()
    assert (before & ~f).sum() > 10


def test_skew_shifts_row_i_right_by_i_and_unskew_inverts_it():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).view(2, 3, 4, 5) + 1
    s = skew(x)
    assert s.shape == (2, 3, 4, 8)
    expected = torch.zeros(2, 3, 4, 8, dtype=torch.float64)
    for i in range(4):
        expected[:, :, i, i:i + 5] = x[:, :, i]
    assert torch.equal(s, expected)
    assert torch.equal(unskew(s), x)


@pytest.mark.parametrize("name", ["row-lstm", "diagonal-bilstm"])
def test_first_rows_alone_give_the_full_pass_values(name):
    """What ``receptive_rows = H - 1`` promises the sampler: rows below never matter."""
    model = make(name, 3, 7, 6)
    x = model.embed(torch.randint(0, 8, (2, 3, 7, 6)))
    full = model.network(x, None)
    for rows in (1, 4):
        assert torch.allclose(model.network(x[:, :, :rows], None), full[:, :, :rows], atol=1e-12, rtol=0)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(PixelModelsError, match="--n-state: expected at least 1, found 0"):
        create_model("diagonal-bilstm", image_shape=(1, 8, 8), preset="tiny", n_state=0)
