"""scripts/learning_curve.py: the flagship's learning curve, drawn where its points say."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"
spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curve)


def test_points_are_read_from_the_evaluations_and_drawn_at_their_place(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": 10, "train_bpd": 5.0}, {"step": 3750, "test_bpd": 3.05}, {"step": 1875, "test_bpd": 3.2},
               {"step": 5625, "test_bpd": 2.98}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    points = curve.read_points(metrics)
    assert points == [(1875, 3.2), (3750, 3.05), (5625, 2.98)]
    to_pixel = curve.draw(points, tmp_path / "curve.png", "title", goal=2.85)
    image = Image.open(tmp_path / "curve.png").convert("RGB")
    assert image.size == (curve.WIDTH, curve.HEIGHT)
    for step, bpd in points:
        assert image.getpixel(to_pixel(step, bpd)) == curve.LINE
    xs = [to_pixel(s, b)[0] for s, b in points]
    ys = [to_pixel(s, b)[1] for s, b in points]
    assert xs == sorted(xs) and ys == sorted(ys)  # later steps to the right; lower bits/dim lower on the page
    gx, gy = to_pixel(0, 2.85)
    assert image.getpixel((gx + 2, gy)) == curve.GOAL and gy > max(ys)


def test_ticks_cover_the_range_in_round_steps():
    ticks = curve.nice_ticks(2.93, 3.41)
    assert ticks[0] <= 2.93 and ticks[-1] >= 3.41 and 3 <= len(ticks) <= 8
    gaps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(gaps) == 1 and gaps.pop() in (0.05, 0.1, 0.2)


def test_a_run_without_evaluations_is_a_clear_error(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 10, "train_bpd": 5.0}\n')
    with pytest.raises(SystemExit, match="metrics.jsonl: expected evaluation records"):
        curve.read_points(metrics)
    metrics.write_text("not json\n")
    with pytest.raises(SystemExit, match="metrics.jsonl:1: expected a JSON record per line"):
        curve.read_points(metrics)
