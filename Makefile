# The two set-up commands of the README. Each creates .venv at the repo root if missing and installs
# exactly the versions in requirements.lock (every dependency of .[all,dev], with hashes) with uv, then
# distilforge itself. `make lock` refreshes the lock from pyproject.toml's ranges. --compile-bytecode: uv does not
# write .pyc files by default (pip does), and with PYTHONDONTWRITEBYTECODE set every process would compile
# transformers anew (its import took 13 s instead of 5 s).
# The lock is for CPython 3.11 on x86_64 Linux; torch is its CPU build (2.13.0+cpu), found in
# TORCH_WHEELS (this machine's copy; elsewhere https://download.pytorch.org/whl/cpu/torch/).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
LOCK := requirements.lock
TORCH_WHEELS ?= /opt/wheels
STAMP := $(VENV)/.distilforge-installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-all lint install lock clean

demo: $(STAMP)
	$(VENV)/bin/distilforge build --out artifacts --keep-going --bench
	$(VENV)/bin/distilforge report artifacts
	$(VENV)/bin/distilforge predict artifacts "the striker scored twice in the final"

test: $(STAMP)
	$(PY) -m pytest -ra --durations=25 -m "not exhaustive"

# everything, the exhaustive tests too (every installed target for TF- and Flax-written checkpoints: 47 min more)
test-all: $(STAMP)
	$(PY) -m pytest -ra --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check distilforge tests benchmarks

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(UV): | $(PY)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)

$(STAMP): pyproject.toml $(LOCK) | $(UV)
	$(UV) pip sync --quiet --python $(PY) --find-links $(TORCH_WHEELS) --require-hashes --compile-bytecode $(LOCK)
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $(STAMP)

lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra all --extra dev --generate-hashes --find-links $(TORCH_WHEELS) \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
		--upgrade --quiet -o $(LOCK)

clean:
	rm -rf artifacts .pytest_cache
