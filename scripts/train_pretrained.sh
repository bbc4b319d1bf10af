#!/bin/sh
# Train, export and measure a model shipped with pixelmodels: scripts/train_pretrained.sh NAME [options].
# The recipes (the exact `pixelmodels train` commands, with fixed step counts) and what is measured are in
# scripts/train_pretrained.py; the weights and metadata.json go to src/pixelmodels/pretrained/NAME/.
#
#   OMP_NUM_THREADS=1 nohup scripts/train_pretrained.sh fashion-mnist > runs/pretrained-fashion-mnist.log 2>&1 &
#   scripts/train_pretrained.sh fashion-mnist --export-only     # export and measure the run as it is
set -eu
cd "$(dirname "$0")/.."
exec "${PY:-.venv/bin/python}" scripts/train_pretrained.py "$@"
