# Two commands for a newcomer (see README.md):
#   make demo   set up, then run the hub plus an agent on a sample clip and show the stats
#               (make demo SOURCE=video.mp4|rtsp://...|0 for your own source)
#   make test   set up, then lint, type-check and run every test against real services
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup models services lint test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Both distributions, editable: audience-edge (the agent and the contract, with the
# tools) and audience-hub (hub-package, the hub and `cloud-hub up`'s extras).
$(VENV)/.installed: pyproject.toml hub-package/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]' -e './hub-package[demo]'
	touch $@

models/dist/manifest.json: models/manifest.json models/build.py | $(VENV)/.installed
	$(BIN)/python models/build.py

setup: $(VENV)/.installed models/dist/manifest.json

services:
	.ci/services.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint services
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/cloud-hub up $(SOURCE) $(UP_ARGS)

clean:
	rm -rf $(VENV) models/dist models/cache

# The device image (docs/firmware.md): a flashable disk image for IMAGE_ARCH (amd64 or
# arm64) in build/firmware/; the debootstrapped root and the wheelhouse are cached in
# ~/.cache/audience-edge/firmware. `make image-test` boots the amd64 image under qemu.
.PHONY: image image-test
IMAGE_ARCH ?= amd64
IMAGE_INPUTS := $(shell git ls-files firmware_images edge_agent pyproject.toml 2>/dev/null)

build/firmware/edge-%.img: $(IMAGE_INPUTS) models/dist/manifest.json | $(VENV)/.installed
	.ci/image-tools.sh --all
	firmware_images/build.sh $*

image: $(VENV)/.installed models/dist/manifest.json
	.ci/image-tools.sh --all
	firmware_images/build.sh $(IMAGE_ARCH)

image-test: build/firmware/edge-amd64.img
	.ci/image-tools.sh --all
	$(BIN)/python -m pytest -m image -s tests/firmware  # -s: each boot prints its time to online
