"""scripts/learning_curve.py: the flagship's learning curve, read from a run's evaluations and plotted as given."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"
spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curve)


def test_points_are_read_from_the_evaluations_and_plotted_as_given(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": 10, "train_bpd": 5.0}, {"step": 3750, "test_bpd": 3.05}, {"step": 1875, "test_bpd": 3.2},
               {"step": 5625, "test_bpd": 2.98}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    points = curve.read_points(metrics)
    assert points == [(1875, 3.2), (3750, 3.05), (5625, 2.98)]
    out = tmp_path / "new" / "curve.png"
    figure = curve.draw(points, out, "fashion-mnist: test bits/dim against steps", goal=2.85)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (640, 400)
    (ax,) = figure.axes
    line, goal = ax.get_lines()
    assert line.get_xdata().tolist() == [1875, 3750, 5625] and line.get_ydata().tolist() == [3.2, 3.05, 2.98]
    assert line.get_marker() == "o"
    assert list(goal.get_ydata()) == [2.85, 2.85] and goal.get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["test bits/dim", "goal 2.85"]
    assert ax.get_title() == "fashion-mnist: test bits/dim against steps"  # spaces kept
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("steps", "test bits/dim")
    low, high = ax.get_ylim()
    assert low < 2.85 and high > 3.2  # the goal and every point inside the axes


def test_without_a_goal_only_the_curve_is_drawn(tmp_path):
    figure = curve.draw([(100, 4.0), (200, 3.5)], tmp_path / "curve.png", "t")
    (ax,) = figure.axes
    assert len(ax.get_lines()) == 1 and ax.get_legend() is None
    assert (tmp_path / "curve.png").exists()


def test_a_run_without_evaluations_is_a_clear_error(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 10, "train_bpd": 5.0}\n')
    with pytest.raises(SystemExit, match="metrics.jsonl: expected evaluation records"):
        curve.read_points(metrics)
    metrics.write_text("not json\n")
    with pytest.raises(SystemExit, match="metrics.jsonl:1: expected a JSON record per line"):
        curve.read_points(metrics)
