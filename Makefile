# Two commands set everything up on a fresh machine:
#   make demo   installs into .venv, then runs the whole pipeline (dvc repro) on generated demo data
#   make test   installs into .venv, then runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: install demo demo-ablation tune pipeline test lint format bench clean images image-test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The whole pipeline (dvc.yaml) on the demo profile: demo data -> ... -> registered model -> .mar.
demo: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@echo
	@sed -n '1p; /^## Summary/,/^## Per fold/{/^## Per fold/!p;}' build/evaluate/report.md
	@$(BIN)/python -c 'import json; print(json.load(open("build/gate/gate.json"))["summary"])'
	@echo "The report (per fold, per class, missing modalities, figures; opens offline): build/evaluate/report.html"
	@echo "Every metric: $(BIN)/dvc metrics show. The model archive: build/model-store/hjcag.mar"

# Quick look without DVC: Table 4 ablations and the baselines on stand-in features.
demo-ablation: install
	$(BIN)/hjcag demo --out $(DEMO_OUT)

# Optional, not part of `dvc repro`: Optuna search on the features `make demo` extracted, scored on each fold's
# validation split; writes build/tune/ and the profile `<profile>-tuned` into params.yaml (README "Tuning": to
# report test figures of it on these features, tune and train with --protocol holdout).
TUNE_ARGS ?=
tune: install
	$(BIN)/hjcag tune --features build/features/features.npz --out build/tune $(TUNE_ARGS)

# Compile the KFP pipeline (commit the result; tests/test_kfp_pipeline.py checks it is current).
pipeline: install
	$(BIN)/python -m hjcag.pipeline.compile --out pipelines/hjcag_training.yaml

test: install
	$(BIN)/ruff check src tests benchmarks images
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks images

format: install
	$(BIN)/ruff format src tests benchmarks

bench: install
	$(BIN)/python benchmarks/train_throughput.py

# The component image and the serving images (docker build with a Docker daemon, else buildah; a local Debian base
# where no registry is reachable), then prove them by running them (README: "Images, built and run").
images: install
	images/build.sh

image-test: install
	images/test.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache
