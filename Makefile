# The two set-up commands of the README. Each creates .venv at the repo root if missing,
# installs torch (pinned CPU build, first: an unpinned torch pulls a multi-GB CUDA build),
# then distilforge with every backend.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.distilforge-installed
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint install clean

demo: $(STAMP)
	$(VENV)/bin/distilforge build --out artifacts --keep-going --bench
	$(VENV)/bin/distilforge report artifacts
	$(VENV)/bin/distilforge predict artifacts "the striker scored twice in the final"

test: $(STAMP)
	$(PY) -m pytest -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check distilforge tests benchmarks

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[all,dev]" $(TORCH)
	touch $(STAMP)

clean:
	rm -rf artifacts .pytest_cache
