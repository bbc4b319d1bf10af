# make demo: set up everything on a fresh machine, train a small gated PixelCNN on
#            Fashion-MNIST, print its test bits/dim and write a sample grid.
# make test: set up everything, then run the tests.

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO    := runs/demo

.PHONY: demo test setup data clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[tensorboard,test]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package; where apt is not there, pixelmodels downloads it (md5-checked).
data:
	@test -f $(FASHION) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "dataset-fashion-mnist not installed; pixelmodels will download Fashion-MNIST into its cache"

demo: setup data
	$(VENV)/bin/pixelmodels train --model gated-pixelcnn --preset small --dataset fashion-mnist \
	  --conditional --batch-size 16 --max-steps 1800 --lr 2e-3 --lr-decay 0.99975 \
	  --n-samples 0 --out $(DEMO) --overwrite
	$(VENV)/bin/pixelmodels generate $(DEMO) --n 4 --out $(DEMO)/samples.png

test: setup data
	$(PY) -m pytest -q -n 2

clean:
	rm -rf $(VENV) runs
