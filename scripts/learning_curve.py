"""Draw a run's learning curve, test bits/dim against steps, as a PNG, with matplotlib
(``pip install 'pixelmodels[plot]'``).

The points are the run's ``metrics.jsonl`` records with a ``test_bpd`` (the trainer writes one at every
evaluation, ``--eval-every`` epochs or ``--eval-every-steps`` steps, on ``--eval-limit`` test images);
``--final STEP BPD`` adds a last point measured elsewhere (on the whole test set, as
``scripts/train_pretrained.py`` does).

    .venv/bin/python scripts/learning_curve.py runs/pretrained-fashion-mnist/metrics.jsonl docs/pretrained/curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixelmodels.app.plots import draw_learning_curve
from pixelmodels.errors import PixelModelsError


def read_points(metrics: Path) -> list[tuple[int, float]]:
    """(step, test bits/dim) of every evaluation in ``metrics`` (a run's metrics.jsonl), in step order."""
    points = []
    for n, line in enumerate(metrics.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{metrics}:{n}: expected a JSON record per line, found {line[:40]!r} ({e})") from None
        if "test_bpd" in record:
            points.append((int(record["step"]), float(record["test_bpd"])))
    if not points:
        raise SystemExit(f"{metrics}: expected evaluation records (with test_bpd), found none")
    return sorted(points)


def draw(points: list[tuple[int, float]], path: Path, title: str, goal: float | None = None):
    """Draw ``points`` (step, bits/dim) into the PNG ``path`` (:func:`pixelmodels.app.plots.draw_learning_curve`);
    a dashed ``goal`` line if given. Returns the matplotlib Figure."""
    return draw_learning_curve(path, points, title, goal)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", type=Path, help="a run's metrics.jsonl")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--title", default="test bits/dim against training steps")
    p.add_argument("--final", nargs=2, type=float, metavar=("STEP", "BPD"), help="a last point to add")
    p.add_argument("--goal", type=float, help="a dashed horizontal line at this bits/dim")
    args = p.parse_args()
    points = read_points(args.metrics)
    if args.final:
        points = sorted(dict(points + [(int(args.final[0]), args.final[1])]).items())
    try:
        draw(points, args.out, args.title, args.goal)
    except PixelModelsError as e:
        raise SystemExit(f"learning_curve.py: error: {e}") from None
    print(f"wrote {args.out} ({len(points)} points)")


if __name__ == "__main__":
    main()
