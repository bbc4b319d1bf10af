"""Draw a run's learning curve, test bits/dim against steps, as a PNG (Pillow; no plotting library).

The points are the run's ``metrics.jsonl`` records with a ``test_bpd`` (the trainer writes one at every
evaluation, ``--eval-every`` epochs or ``--eval-every-steps`` steps, on ``--eval-limit`` test images);
``--final STEP BPD`` adds a last point measured elsewhere (on the whole test set, as
``scripts/train_pretrained.py`` does).

    .venv/bin/python scripts/learning_curve.py runs/pretrained-fashion-mnist/metrics.jsonl docs/pretrained/curve.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 640, 400, 60
LINE, GOAL = (31, 119, 180), (214, 39, 40)


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


def nice_ticks(low: float, high: float, n: int = 5) -> list[float]:
    """About ``n`` round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    span = max(high - low, 1e-9)
    raw = span / n
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def draw(points: list[tuple[int, float]], path: Path, title: str, goal: float | None = None) -> tuple:
    """Draw ``points`` (step, bits/dim) as a line with its axes into ``path``; a dashed ``goal`` line if
    given. Returns the function mapping (step, bits/dim) to pixel coordinates, for checking."""
    steps, bpd = [s for s, _ in points], [b for _, b in points] + ([goal] if goal is not None else [])
    yticks = nice_ticks(min(bpd), max(bpd))
    xticks = nice_ticks(0, max(steps))
    x0, x1, y0, y1 = MARGIN, WIDTH - 20, HEIGHT - MARGIN, 40

    def to_pixel(step: float, value: float) -> tuple[int, int]:
        x = x0 + (x1 - x0) * step / xticks[-1]
        y = y0 + (y1 - y0) * (value - yticks[0]) / (yticks[-1] - yticks[0])
        return round(x), round(y)

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    d = ImageDraw.Draw(image)
    d.text((x0, 12), title, fill="black")
    d.line([(x0, y1), (x0, y0), (x1, y0)], fill="black")
    for t in yticks:
        _, y = to_pixel(0, t)
        d.line([(x0 - 4, y), (x1, y)], fill=(225, 225, 225))
        d.text((8, y - 6), f"{t:.2f}", fill="black")
    for t in xticks:
        x, _ = to_pixel(t, yticks[0])
        d.line([(x, y0), (x, y0 + 4)], fill="black")
        d.text((x - 12, y0 + 8), f"{t:,.0f}", fill="black")
    d.text(((x0 + x1) // 2 - 15, HEIGHT - 22), "steps", fill="black")
    if goal is not None:
        _, y = to_pixel(0, goal)
        for x in range(x0, x1, 12):
            d.line([(x, y), (min(x + 6, x1), y)], fill=GOAL)
        d.text((x1 - 70, y - 16), f"goal {goal:g}", fill=GOAL)
    pixels = [to_pixel(s, b) for s, b in points]
    if len(pixels) > 1:
        d.line(pixels, fill=LINE, width=2)
    for x, y in pixels:
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=LINE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return to_pixel


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
    draw(points, args.out, args.title, args.goal)
    print(f"wrote {args.out} ({len(points)} points)")


if __name__ == "__main__":
    main()
