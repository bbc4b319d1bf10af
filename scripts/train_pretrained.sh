#!/bin/sh
# Train and export the model shipped as pixelmodels.load_pretrained("fashion-mnist").
#
# A fixed number of steps (--max-steps), so the weights do not depend on the
# machine's speed. Trains into runs/pretrained-fashion-mnist/ in stages of 1000
# steps (each stage ends with a checkpoint, and --resume continues exactly, so
# the weights are those of one `pixelmodels train ... --max-steps $STEPS`), then
# exports the EMA weights to src/pixelmodels/pretrained/fashion-mnist/
# (config.json, model.safetensors) and writes metadata.json there with the
# command and the test bits/dim: the one place the README and
# tests/test_pretrained.py take the figure from.
#
#   OMP_NUM_THREADS=1 nohup scripts/train_pretrained.sh > runs/pretrained-fashion-mnist.log 2>&1 &
#   SKIP_TRAIN=1 scripts/train_pretrained.sh     # export and evaluate the run as it is
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-3000}
RUN=runs/pretrained-fashion-mnist
DEST=src/pixelmodels/pretrained/fashion-mnist
TRAIN="--model gated-pixelcnn --preset small --dataset fashion-mnist --conditional --batch-size 32 \
--epochs 2 --eval-every 2 --lr 2e-3 --lr-decay 0.9995 --ema 0.995 --seed 0 --n-samples 0"

if [ -z "${SKIP_TRAIN:-}" ]; then
    stage=1000
    # shellcheck disable=SC2086
    $PY -m pixelmodels train $TRAIN --max-steps $((stage < STEPS ? stage : STEPS)) --no-progress --out "$RUN" --overwrite
    while [ "$stage" -lt "$STEPS" ]; do
        stage=$((stage + 1000 < STEPS ? stage + 1000 : STEPS))
        $PY -m pixelmodels train --resume "$RUN" --max-steps "$stage" --no-progress
    done
fi
$PY - "$RUN" "$DEST" "pixelmodels train $TRAIN" <<'PYEOF'
import json
import sys
from pathlib import Path

import torch

import pixelmodels
from pixelmodels.checkpoint import write_json

run, dest, command = sys.argv[1:]
steps = torch.load(Path(run, "training_state.pt"), weights_only=True)["step"]
model = pixelmodels.load(run)
pixelmodels.save_pretrained(model, dest)
test = pixelmodels.load_dataset("fashion-mnist", "test", n_bits=model.n_bits)
meta = {
    "name": "fashion-mnist",
    "description": "Gated PixelCNN (small preset), conditional on the 10 Fashion-MNIST classes, 8-bit 28x28 grayscale",
    "dataset": "fashion-mnist",
    "train_command": f"{command} --max-steps {steps} --out {run}",
    "steps": steps,
    "parameters": model.n_parameters(),
    "test_bits_per_dim": round(pixelmodels.evaluate(model, test, 500), 4),
    "test_images": len(test),
    "first_500_test_bits_per_dim": round(pixelmodels.evaluate(model, test, 500, limit=500), 4),
}
write_json(Path(dest) / "metadata.json", meta)
print(json.dumps(meta, indent=2))
PYEOF
