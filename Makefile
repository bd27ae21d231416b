# The set-up commands of the README. Each creates .venv at the repo root if missing and installs, with uv, exactly
# the versions of a lock (with hashes), then distilforge itself (-e ., no deps). Two locks, generated together from
# pyproject.toml by `make lock`:
#   requirements.lock      what the product runs with: every dependency of .[all] (each target's runtime and
#                          converter, the Optimum peer, the report's metrics, Ray), a 3.1 GB .venv. `make demo`,
#                          `make install`. Every manifest records this lock's sha256 and whether the environment
#                          matches it.
#   requirements-dev.lock  every dependency of .[all,dev]: the above, same versions and hashes, plus the test-only
#                          packages (TensorFlow, tf-keras, Flax, optimum-intel, tritonclient, playwright, pytest,
#                          ruff, tox, ...): 5.4 GB. `make test`, `make lint`, `make install-dev`.
# A .venv that has the test packages keeps them: `make demo` after `make test` syncs the dev lock again (a no-op
# when nothing changed) instead of the runtime one; `make test` after `make demo` adds them.
# `make lock` keeps the current pins wherever pyproject.toml's ranges allow (they are uv's preferences); `make
# lock-upgrade` takes the newest releases inside the ranges. The runtime lock is compiled with the dev lock as
# constraints, so its pins are a subset of the dev lock's (tests/test_lock.py checks both).
# --compile-bytecode: uv does not write .pyc files by default (pip does), and with PYTHONDONTWRITEBYTECODE set every
# process would compile transformers anew (its import took 13 s instead of 5 s).
# The locks are for CPython 3.11 on x86_64 Linux; torch is its CPU build (2.13.0+cpu), found in
# TORCH_WHEELS (this machine's copy; elsewhere https://download.pytorch.org/whl/cpu/torch/).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
TORCH_WHEELS ?= /opt/wheels
RUNTIME_STAMP := $(VENV)/.distilforge-runtime
DEV_STAMP := $(VENV)/.distilforge-dev
# what `make install` left before the two locks: that .venv holds every dev package, so it counts as a dev one
OLD_STAMP := $(VENV)/.distilforge-installed
SYNC = $(UV) pip sync --quiet --python $(PY) --find-links $(TORCH_WHEELS) --require-hashes --compile-bytecode
INSTALL_SELF = $(UV) pip install --quiet --python $(PY) --no-deps -e .
COMPILE = $(UV) pip compile pyproject.toml --generate-hashes --find-links $(TORCH_WHEELS) --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" --quiet
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-all lint install install-dev node-packages triton-server lock lock-upgrade clean

demo: $(RUNTIME_STAMP)
	$(VENV)/bin/distilforge build --out artifacts --keep-going --bench
	$(VENV)/bin/distilforge report artifacts
	$(VENV)/bin/distilforge predict artifacts "the striker scored twice in the final"

# the tests on every core (pytest-xdist; loadgroup keeps the Ray tests on one worker, the ARM ones on one); each
# head's tiny build is made once per session for all workers (tests/conftest.py). TEST_JOBS=1: one process.
TEST_JOBS ?= $(shell nproc)
PYTEST = $(PY) -m pytest -n $(TEST_JOBS) --dist loadgroup -ra --durations=25

test: $(DEV_STAMP) node-packages triton-server
	$(PYTEST) -m "not exhaustive"

# everything, the exhaustive tests too (every installed target for TF- and Flax-written checkpoints: 47 min more)
test-all: $(DEV_STAMP) node-packages triton-server
	$(PYTEST)

# tests/node: the pinned @huggingface/transformers that tests/test_package_transformersjs.py runs packages with,
# installed from its package-lock.json when node >= 20.9 and npm are here (else that test skips, saying why).
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's postinstall would fetch GPU providers from outside the registry;
# its CPU build is in the package. A failed install is one line, not a failed `make test`.
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.distilforge-installed
node-packages:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "node or npm not found: the Transformers.js tests will be skipped"; \
	elif ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 9) ? 0 : 1)'; then \
	  echo "node $$(node --version) is older than 20.9: the Transformers.js tests will be skipped"; \
	else $(MAKE) --no-print-directory -s $(NODE_STAMP) \
	  || echo "npm ci in $(NODE_DIR) failed: the Transformers.js tests will be skipped"; fi

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
	touch $@

# .venv/tritonserver: the Triton server tests/test_triton_server.py starts (nvidia-pytriton's tritonserver 2.51
# with its python backend), installed without its dependencies from requirements-tritonserver.txt (pinned, with
# its hash; it cannot join the locks: see that file). A failed install is one line: that test then skips.
TRITON_DIR := $(VENV)/tritonserver
triton-server: $(DEV_STAMP)
	@[ -x $(TRITON_DIR)/pytriton/tritonserver/bin/tritonserver ] \
	  || $(UV) pip install --quiet --python $(PY) --no-deps --require-hashes --target $(TRITON_DIR) \
	       -r requirements-tritonserver.txt \
	  || echo "nvidia-pytriton could not be installed: the Triton server test will be skipped"

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check distilforge tests benchmarks

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(UV): | $(PY)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)

# the runtime set, unless this .venv has the dev set: then that one, so `make demo` never removes test packages
$(RUNTIME_STAMP): pyproject.toml $(LOCK) $(DEV_LOCK) | $(UV)
	@if [ -e $(OLD_STAMP) ]; then mv $(OLD_STAMP) $(DEV_STAMP); fi
	@lock=$(LOCK); if [ -e $(DEV_STAMP) ]; then lock=$(DEV_LOCK); fi; echo "$(SYNC) $$lock"; $(SYNC) $$lock
	$(INSTALL_SELF)
	@if [ -e $(DEV_STAMP) ]; then touch $(DEV_STAMP); fi
	touch $@

$(DEV_STAMP): pyproject.toml $(DEV_LOCK) | $(UV)
	$(SYNC) $(DEV_LOCK)
	$(INSTALL_SELF)
	rm -f $(OLD_STAMP)
	touch $@ $(RUNTIME_STAMP)

# the dev lock first (its existing pins are uv's preferences), then the runtime lock constrained by it
lock: | $(UV)
	$(COMPILE) --extra all --extra dev $(UPGRADE) -o $(DEV_LOCK)
	$(COMPILE) --extra all -c $(DEV_LOCK) -o $(LOCK)

lock-upgrade: UPGRADE := --upgrade
lock-upgrade: lock

clean:
	rm -rf artifacts .pytest_cache
