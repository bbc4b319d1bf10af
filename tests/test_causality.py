"""check_causality and ``pixelmodels check``: every family passes with every kind of condition; planted leaks (a
pixel to the right, a later channel of the pixel, another image of the batch) are caught and located, in a model
and in a plain network written without pixelmodels (a sub-pixel that sees itself, batch statistics too)."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pixelmodels
from pixelmodels import check_causality, create_model, list_models
from pixelmodels.causality import MODES, PROBES
from pixelmodels.app.cli import main
from pixelmodels.errors import PixelModelsError
from pixelmodels.nn import channel_groups

H = W = 6
CONDS = {"vector": dict(cond_shape=(5,)), "map": dict(cond_shape=(2, 3, 3)),
         "codes": dict(cond_shape=(3, 3), cond_codes=7)}


def make(name, c=1, **kw):
    """A tiny model far from its initialization (its zero-initialized tables and biases too)."""
    depth = {} if "n_codes" in kw else dict(n_bits=3)
    model = create_model(name, image_shape=(c, H, W), preset="tiny", **depth, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def located(report, probe=None, mode=None):
    """{(output channel, row, col, input channel, row, col)} of the report's leaks (of one probe and mode)."""
    return {(l.channel, l.row, l.col, l.input_channel, l.input_row, l.input_col) for l in report.leaks
            if probe in (None, l.probe) and mode in (None, l.mode)}


def leak_right(model):
    """Unmask the tap right of the centre of the first (mask-A) convolution: its features see the pixel to
    their right. With 1x1 blocks after it (``kernel_size=1``), each output sees exactly that pixel."""
    mask = model.input_conv.mask  # (out, in, kh, kw), the centre tap at (kh - 1, kw // 2)
    mask[:, :, -1, mask.shape[-1] // 2 + 1] = 1
    return model


def mixing_the_batch(model):
    """The model with every image's parameters shifted by the batch's mean."""
    family = type(model)

    class Mixed(family):
        def network(self, x, c):
            params = family.network(self, x, c)
            return params + params.mean(0, keepdim=True)

    model.__class__ = Mixed
    return model


@pytest.mark.parametrize("name,likelihood,c", list(itertools.product(list_models(), ["categorical",
                                                                                    "logistic-mixture"], [1, 3])))
def test_every_family_is_causal_with_labels(name, likelihood, c):
    model = make(name, c, n_classes=3, likelihood=likelihood)
    report = check_causality(model)
    groups = c if model.channel_masked else 1
    assert report.ok and report.max_leak == 0 and report.batch_leak == 0 and not report.leaks
    assert report.dependence.shape == (groups, H, W) and report.dependence.eq(0).all()
    assert set(report.within) == set(report.across) == set(itertools.product(PROBES, MODES))
    assert report.summary() == (f"causal: no output depends on an input it must not ({groups * H * W} outputs x 2 "
                                "probes x train/eval; largest forbidden dependence 0)")


@pytest.mark.parametrize("name,cond,codes", list(itertools.product(list_models(), CONDS, [True, False])))
def test_every_family_is_causal_with_every_condition_over_codes_and_rgb_images(name, cond, codes):
    depth = dict(n_codes=20) if codes else {}
    model = make(name, 1 if codes else 3, n_classes=3, **CONDS[cond], **depth)
    report = check_causality(model)
    assert report.ok and report.max_leak == 0 and report.dependence.eq(0).all()
    assert report.n_outputs == (3 if model.channel_masked and not codes else 1) * H * W


def test_a_pixel_to_the_right_is_caught_and_located_by_both_probes_in_both_modes():
    model = leak_right(make("pixelcnn", kernel_size=1))
    report = check_causality(model)
    expected = {(0, i, j, 0, i, j + 1) for i in range(H) for j in range(W - 1)}
    for probe, mode in itertools.product(PROBES, MODES):  # a ReLU off at the probed input may hide one output
        found = located(report, probe, mode)
        assert found <= expected and (0, 3, 4, 0, 3, 5) in found and len(found) > len(expected) // 2, (probe, mode)
    assert not report.ok and report.batch_leak == 0 and report.dependence[0, :, -1].eq(0).all()
    worst = report.leaks[0]
    assert worst.value == report.max_leak > 0
    assert report.summary() == (f"LEAK: output (channel 0, row {worst.row}, col {worst.col}) depends on input "
                                f"(channel 0, row {worst.row}, col {worst.col + 1}): {worst.value:.3g} "
                                f"({worst.probe} probe, {worst.mode} mode); {report.n_leaking} of 36 outputs leak")


@pytest.mark.parametrize("probe", PROBES)
def test_each_probe_alone_catches_the_leak_on_a_subset_of_positions(probe):
    model = leak_right(make("pixelcnn", kernel_size=1))
    report = check_causality(model, probes=(probe,), modes=("eval",), positions=4)
    assert report.n_positions == 4 and set(report.by_probe) == {probe} and report.by_probe[probe] > 0
    found = located(report)
    assert found and all((i2, j2) == (i, j + 1) for _, i, j, _, i2, j2 in found)
    causal = check_causality(make("pixelcnn", kernel_size=1), probes=(probe,), modes=("eval",), positions=4)
    assert causal.ok and causal.summary().startswith("causal: no output depends on an input it must not (4 of 36 "
                                                     "positions x 1 probe x eval;")


def test_a_later_channel_of_the_pixel_is_caught_and_located():
    model = make("pixelcnn", 3, kernel_size=1)
    conv = model.input_conv
    red = channel_groups(conv.out_channels, 3) == 0
    conv.mask[red, 1, -1, conv.mask.shape[-1] // 2] = 1  # R's features see G of their own pixel
    report = check_causality(model)
    # R, and G through R's features, see G of their own pixel; B may see R and G
    expected = {(c, i, j, 1, i, j) for c in (0, 1) for i in range(H) for j in range(W)}
    found = located(report)
    assert found <= expected and (0, 2, 3, 1, 2, 3) in found and len(found) > len(expected) // 2
    assert report.dependence[2].eq(0).all() and report.batch_leak == 0


def test_a_pixel_of_its_own_is_a_leak_for_a_network_that_is_not_channel_masked():
    model = make("pixelcnnpp", 3)
    family = type(model)

    class Shifted(family):  # the input moved one column left: each output sees its own pixel
        def network(self, x, c):
            return family.network(self, torch.cat([x[..., 1:], x[..., :1]], -1), c)

    model.__class__ = Shifted
    report = check_causality(model, modes=("eval",))
    found = located(report)
    assert found and all(channel is None and (i2, j2) == (i, j) for channel, i, j, _, i2, j2 in found)
    assert report.summary().startswith("LEAK: output (all channels, row ")


def test_a_leak_across_the_batch_is_reported_as_one():
    model = mixing_the_batch(make("gated-pixelcnn", 3, n_classes=2))
    report = check_causality(model)
    assert all(value > 0 for value in report.across.values())
    assert not report.ok and report.batch_leak == max(report.across.values()) > 0
    assert report.summary().startswith("LEAK across the batch: an image's outputs depend on another image's input: ")


@pytest.mark.parametrize("train", [True, False])
def test_the_model_its_mode_its_weights_and_the_random_state_are_left_as_they_were(train):
    model = make("pixelcnnpp", 3, n_classes=2).train(train)  # dropout in train mode
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    assert check_causality(model, positions=4).ok
    assert model.training == train and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert torch.equal(torch.random.get_rng_state(), state)
    leaky = leak_right(make("pixelcnn")).train(train)
    state = torch.random.get_rng_state()
    assert not check_causality(leaky, positions=4).ok
    assert leaky.training == train and torch.equal(torch.random.get_rng_state(), state)


def test_a_model_with_non_finite_outputs_is_not_called_causal():
    model = make("pixelcnn")
    with torch.no_grad():
        model.out.bias[0] = float("nan")  # one parameter NaN at every position
    report = check_causality(model, positions=4)
    assert not report.ok and report.max_leak == report.by_probe["perturbation"] == float("inf")


def test_given_inputs_labels_and_condition_in_float32():
    model = make("gated-pixelcnn", 3, n_classes=3, cond_shape=(2, 3, 3))
    x = torch.randint(0, 8, (2, 3, H, W), dtype=torch.uint8)
    report = check_causality(model, x, torch.tensor([0, 2]), torch.randn(2, 2, 3, 3), dtype=torch.float32,
                             tolerance=1e-6)
    assert report.ok and report.tolerance == 1e-6
    leaky = check_causality(leak_right(make("pixelcnn", kernel_size=1)), dtype=torch.float32, tolerance=1e-6)
    assert not leaky.ok and leaky.max_leak > 1e-6


@pytest.mark.parametrize("kw,message", [
    (dict(tolerance=-1.0), "tolerance: expected a number >= 0 (the largest dependence taken as none), found -1.0"),
    (dict(tolerance=float("nan")), "tolerance: expected a number >= 0"),
    (dict(tolerance="0"), "tolerance: expected a number >= 0"),
    (dict(positions=1), "positions: expected an integer from 2 to 36 (the first and the last pixel are always "
                        "among them) or None (every position), found 1"),
    (dict(positions=37), "found 37"),
    (dict(probes=("jacobian",)), "probes: expected a non-empty tuple of ('gradient', 'perturbation')"),
    (dict(modes=()), "modes: expected a non-empty tuple"),
    (dict(batch_size=1), "batch_size: expected an integer >= 2, found 1"),
    (dict(dtype=torch.int64), "dtype: expected a floating point dtype, found torch.int64"),
    (dict(x=torch.zeros(2, 3, H, W, dtype=torch.long)),
     "x: the model takes images (N, C, H, W) with (C, H, W) = (1, 6, 6) (grayscale 6x6), found a tensor of shape "
     "(2, 3, 6, 6)"),
    (dict(x=torch.full((2, 1, H, W), 8)), "x: the model takes 3-bit values 0..7, found values 8..8"),
    (dict(x=torch.zeros(2, 1, H, W, dtype=torch.long), y=torch.tensor([0, 9])),
     "labels: expected class labels in 0..2, found 9"),
])
def test_bad_input_is_a_clear_one_line_error(kw, message):
    model = make("pixelcnn", n_classes=3)
    with pytest.raises(PixelModelsError) as e:
        check_causality(model, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_something_that_is_neither_a_model_nor_a_network_is_a_clear_error():
    with pytest.raises(PixelModelsError, match=r"model: expected a pixelmodels model .* or a network \(an nn.Module "
                       r"or a callable of float images \(B, C, H, W\)\), found str"):
        check_causality("pixelcnn")
    with pytest.raises(PixelModelsError, match="image_shape: a network's images are not known; give "
                       r"image_shape=\(C, H, W\) or an example batch x"):
        check_causality(torch.nn.Linear(2, 2))


# -- plain networks: float images (B, C, H, W) in, outputs (B, C, H, W) or (B, F, C, H, W) out ------------------
def plain_mask(out_groups, in_groups, k: int, centre: str) -> torch.Tensor:
    """(out, in, k, k): the taps before the centre in raster order, and at the centre the input groups before the
    output's ("A"), up to it ("B"), or every group ("all")."""
    mask = torch.zeros(len(out_groups), len(in_groups), k, k)
    mask[:, :, : k // 2] = 1
    mask[:, :, k // 2, : k // 2] = 1
    rule = {"A": in_groups[None] < out_groups[:, None], "B": in_groups[None] <= out_groups[:, None],
            "all": torch.ones(len(out_groups), len(in_groups), dtype=torch.bool)}[centre]
    mask[:, :, k // 2, k // 2] = rule.float()
    return mask


class PlainPixelCNN(torch.nn.Module):
    """A PixelCNN written with plain torch (no pixelmodels): a k x k mask-A convolution, a 1x1 mask-B one, then
    the logits (B, F, C, H, W) of F values per sub-pixel (``features=None``: one output per sub-pixel,
    (B, C, H, W)); ``batch_norm`` after the first layer."""

    def __init__(self, c=3, k=5, hidden=12, features=4, batch_norm=False):
        super().__init__()
        groups = torch.arange(hidden) * c // hidden
        out = torch.arange((features or 1) * c) % c  # output f * C + c is sub-pixel c's
        self.shape, self.features = c, features
        self.first = torch.nn.Parameter(0.3 * torch.randn(hidden, c, k, k))
        self.hidden = torch.nn.Parameter(0.3 * torch.randn(hidden, hidden, 1, 1))
        self.out = torch.nn.Parameter(0.3 * torch.randn(len(out), hidden, 1, 1))
        self.register_buffer("first_mask", plain_mask(groups, torch.arange(c), k, "A"))
        self.register_buffer("hidden_mask", plain_mask(groups, groups, 1, "B"))
        self.register_buffer("out_mask", plain_mask(out, groups, 1, "B"))
        self.norm = torch.nn.BatchNorm2d(hidden) if batch_norm else torch.nn.Identity()

    def forward(self, x):
        h = torch.tanh(self.norm(F.conv2d(x, self.first * self.first_mask, padding=self.first.shape[-1] // 2)))
        h = torch.tanh(F.conv2d(h, self.hidden * self.hidden_mask))
        out = F.conv2d(h, self.out * self.out_mask)  # (B, F * C, H, W)
        return out if self.features is None else out.view(len(x), self.features, self.shape, *x.shape[2:])


def with_centre(net, centre: str, rows=None):
    """``net`` whose first layer's centre tap follows ``centre`` ("B": a sub-pixel sees itself) for the hidden
    features ``rows`` (default: all)."""
    groups = torch.arange(net.first.shape[0]) * net.shape // net.first.shape[0]
    mask = plain_mask(groups, torch.arange(net.shape), net.first.shape[-1], centre)
    rows = slice(None) if rows is None else rows
    net.first_mask[rows] = mask[rows]
    return net


@pytest.mark.parametrize("features", [4, None])
@pytest.mark.parametrize("c", [1, 3])
def test_a_plain_causal_network_passes(features, c):
    net = PlainPixelCNN(c, features=features)
    report = check_causality(net, image_shape=(c, H, W))
    assert report.ok and report.max_leak == 0 and not report.leaks
    assert report.dependence.shape == (c, H, W) and report.dependence.eq(0).all()
    assert report.summary() == (f"causal: no output depends on an input it must not ({c * H * W} outputs x 2 "
                                "probes x train/eval; largest forbidden dependence 0)")
    x = torch.rand(3, c, H, W)  # an example batch, in float32
    assert check_causality(net, x, dtype=torch.float32, tolerance=1e-6).ok
    double = PlainPixelCNN(c, features=features).double()
    assert check_causality(lambda images: double(images), image_shape=(c, H, W)).ok  # a function: called as is


def test_a_later_pixel_is_caught_and_located_in_a_plain_network():
    net = PlainPixelCNN(3)
    net.first_mask[:, :, 2, 3] = 1  # the tap right of the centre: every feature sees the pixel to its right
    report = check_causality(net, image_shape=(3, H, W))
    found = located(report)
    assert found and all((i2, j2) == (i, j + 1) for _, i, j, _, i2, j2 in found)
    assert {(c, 3, 4) for c in range(3)} <= {(c, i, j) for c, i, j, *_ in found}
    assert report.dependence[:, :, -1].eq(0).all() and report.batch_leak == 0
    for probe, mode in itertools.product(PROBES, MODES):
        assert report.within[probe, mode] > 0, (probe, mode)
    assert report.summary().startswith("LEAK: output (channel ")

    shifted = check_causality(lambda x: torch.roll(x, -1, dims=-1), image_shape=(2, H, W))  # x[.., j + 1]
    expected = {(c, i, j, c, i, j + 1) for c in range(2) for i in range(H) for j in range(W - 1)}
    assert located(shifted) == expected and shifted.n_leaking == len(expected)
    assert check_causality(lambda x: F.pad(x, (1, 0))[..., :-1], image_shape=(2, H, W)).ok  # x[.., j - 1]


def test_a_later_channel_of_the_pixel_is_caught_and_located_in_a_plain_network():
    net = PlainPixelCNN(3)
    red = torch.arange(12) * 3 // 12 == 0
    net.first_mask[red, 1, 2, 2] = 1  # R's features see G of their own pixel
    report = check_causality(net, image_shape=(3, H, W))
    # R, and G through R's features, see G of their own pixel; B may see R and G
    expected = {(c, i, j, 1, i, j) for c in (0, 1) for i in range(H) for j in range(W)}
    found = located(report)
    assert found <= expected and (0, 2, 3, 1, 2, 3) in found and len(found) > len(expected) // 2
    assert report.dependence[2].eq(0).all() and report.batch_leak == 0


@pytest.mark.parametrize("c", [1, 3])
def test_a_sub_pixel_that_sees_itself_is_caught_and_located_in_a_plain_network(c):
    net = with_centre(PlainPixelCNN(c, features=None), "B")  # the first layer's centre: mask B, not A
    report = check_causality(net, image_shape=(c, H, W))
    found = located(report)
    assert found <= {(g, i, j, g, i, j) for g in range(c) for i in range(H) for j in range(W)}
    assert {(g, 1, 4, g, 1, 4) for g in range(c)} <= found and report.batch_leak == 0


def test_a_plain_network_that_mixes_the_batch_is_caught_in_train_mode_only():
    net = PlainPixelCNN(3, batch_norm=True).train()  # batch statistics in train mode, running ones in eval
    running = net.norm.running_mean.clone()
    report = check_causality(net, image_shape=(3, H, W))
    assert all(report.across[probe, "train"] > 0 for probe in PROBES)
    assert all(report.across[probe, "eval"] == 0 == report.within[probe, "eval"] for probe in PROBES)
    assert report.summary().startswith("LEAK across the batch: an image's outputs depend on another image's input: ")
    assert net.training and torch.equal(net.norm.running_mean, running)  # a copy was checked


def test_a_plain_linear_layer_over_each_row_leaks_everywhere():
    report = check_causality(torch.nn.Linear(W, W), image_shape=(1, H, W))  # mixes every row's columns
    assert not report.ok and report.n_leaking == H * W and report.batch_leak == 0


@pytest.mark.parametrize("net,message", [
    (lambda x: x.flatten(1), "found (64, 108)"),
    (lambda x: x.repeat(1, 10, 1, 1), "found (64, 30, 6, 6)"),
    (lambda x: x[:, None].transpose(1, 2), "found (64, 3, 1, 6, 6)"),
    (lambda x: (x, x), "found a tuple"),
    (lambda x: x.long(), "found a torch.int64 tensor of shape (64, 3, 6, 6)"),
])
def test_a_plain_network_with_outputs_of_neither_layout_is_a_clear_error(net, message):
    with pytest.raises(PixelModelsError) as e:
        check_causality(net, image_shape=(3, H, W))
    assert str(e.value) == ("model: expected output (B, C, H, W) or (B, F, C, H, W) for input (B, C, H, W) = "
                            f"(64, 3, 6, 6), {message}")


@pytest.mark.parametrize("kw,message", [
    (dict(x=torch.zeros(2, 3, H, W, dtype=torch.long)), "x: expected a float batch (B, C, H, W) for a network, "
     "found a torch.int64 tensor of shape (2, 3, 6, 6)"),
    (dict(x=torch.zeros(3, H, W)), "found a torch.float32 tensor of shape (3, 6, 6)"),
    (dict(x=torch.zeros(2, 3, H, W), image_shape=(1, H, W)),
     "image_shape: expected None or x's (C, H, W) (3, 6, 6), found (1, 6, 6)"),
    (dict(image_shape=(3, H)), "image_shape: expected (C, H, W), three positive integers, found (3, 6)"),
    (dict(image_shape=(3, H, W), y=torch.tensor([0])), "y: a plain network takes images only"),
    (dict(image_shape=(3, H, W), positions=99), "positions: expected an integer from 2 to 36"),
])
def test_bad_arguments_for_a_plain_network_are_clear_one_line_errors(kw, message):
    with pytest.raises(PixelModelsError) as e:
        check_causality(PlainPixelCNN(3), **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A tiny pixelcnn run trained for two steps on 8-bit 6x6 arrays."""
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 8), ("test", 4)):
        np.savez(data / f"{split}.npz", x=rng.integers(0, 256, (n, H, W)).astype(np.uint8))
    out = tmp_path / "run"
    assert main(["train", "--model", "pixelcnn", "--preset", "tiny", "--dataset", "arrays", "--data-dir", str(data),
                 "--batch-size", "4", "--max-steps", "2", "--n-samples", "0", "--eval-limit", "4", "--no-progress",
                 "--out", str(out)]) == 0
    return out


def test_the_check_command_passes_a_trained_run_and_fails_a_leaking_one(run, capsys, monkeypatch):
    capsys.readouterr()
    assert main(["check", str(run)]) == 0
    assert capsys.readouterr().out == ("causal: no output depends on an input it must not (36 outputs x 2 probes x "
                                       "train/eval; largest forbidden dependence 0)\n")
    assert main(["check", str(run), "--positions", "5"]) == 0
    assert "(5 of 36 positions x 2 probes" in capsys.readouterr().out

    from pixelmodels.app import runs

    opened = runs.open_model

    def open_leaking(*args):  # the run's model, with one mask tap unmasked
        model, data, home = opened(*args)
        return leak_right(model), data, home

    monkeypatch.setattr(runs, "open_model", open_leaking)
    assert main(["check", str(run)]) == 1
    line = capsys.readouterr().out
    assert line.startswith("LEAK: output (channel 0, row ") and line.count("\n") == 1
    assert main(["check", str(run), "--positions", "0"]) == 2
    assert "pixelmodels check: error: --positions: expected an integer from 2 to 36" in capsys.readouterr().err
    assert pixelmodels.load(run).input_conv.mask[:, :, -1, -1].eq(0).all()  # the saved run is causal
