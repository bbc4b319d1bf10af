"""pixelmodels.app.plots: ROC curves drawn from the data given, and a clear error without matplotlib."""

import sys

import numpy as np
import pytest
from PIL import Image

from pixelmodels.app import plots
from pixelmodels.errors import PixelModelsError

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def roc(seed: int, shift: float):
    """(fpr, tpr, auroc) of 200 in-distribution against 200 shifted random scores, by scikit-learn."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(200), np.ones(200)]
    scores = np.r_[rng.normal(size=200), rng.normal(shift, size=200)]
    fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores)
    return fpr, tpr, sklearn_metrics.roc_auc_score(labels, scores)


def test_roc_has_a_panel_per_score_and_a_line_per_set_with_its_auroc(tmp_path):
    curves = {"bits/dim": {"mnist": roc(0, 0.5), "noise": roc(1, 3.0)},
              "likelihood ratio": {"mnist": roc(2, 2.0), "noise": roc(3, 1.0)}}
    out = tmp_path / "plots" / "roc.png"
    figure = plots.draw_roc(out, curves, title="fashion-mnist against OOD sets")
    with Image.open(out) as image:
        (width, height), panel = image.size, plots.PANEL * plots.DPI
        assert image.format == "PNG" and abs(width - 2 * panel) < 0.1 * width and height > panel  # panels, legends
    assert len(figure.axes) == 2
    for ax, (score, by_set) in zip(figure.axes, curves.items()):
        assert ax.get_title() == score
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("false positive rate", "true positive rate")
        assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
        *lines, diagonal = ax.get_lines()
        assert len(lines) == len(by_set)
        for line, (fpr, tpr, _) in zip(lines, by_set.values()):
            np.testing.assert_array_equal(line.get_xdata(), fpr)
            np.testing.assert_array_equal(line.get_ydata(), tpr)
        assert list(diagonal.get_xdata()) == [0, 1] == list(diagonal.get_ydata())
        assert diagonal.get_linestyle() == "--"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == [f"{name} (AUROC {auroc:.3f})" for name, (_, _, auroc) in by_set.items()]
    assert [line.get_color() for line in figure.axes[0].get_lines()[:2]] == \
        [line.get_color() for line in figure.axes[1].get_lines()[:2]]  # a set has one colour in every panel


def test_roc_replaces_an_existing_file_atomically(tmp_path):
    out = tmp_path / "roc.png"
    out.write_bytes(b"old")
    plots.draw_roc(out, {"bits/dim": {"mnist": roc(0, 1.0)}})
    with Image.open(out) as image:
        width, height = image.size
        assert abs(width - plots.PANEL * plots.DPI) < 0.1 * width and height > width  # a square panel, its legend
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]  # no temporary file left


@pytest.mark.parametrize("draw", [lambda p: plots.draw_roc(p, {"bits/dim": {"mnist": ([0, 1], [0, 1], 0.5)}}),
                                  lambda p: plots.draw_learning_curve(p, [(1, 3.0)], "t")])
def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch, draw):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(PixelModelsError, match=r"needs matplotlib, which is not installed; install it with "
                                               r"pip install 'pixelmodels\[plot\]'$") as error:
        draw(tmp_path / "plot.png")
    assert "\n" not in str(error.value) and str(error.value).startswith("the ")
    assert not (tmp_path / "plot.png").exists()
