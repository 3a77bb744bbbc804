# Two entry points that work on a fresh machine with Python 3.11 and the package registry:
#   make demo   - set up, then run the main job (CPU preset, embedded local Ray, bundled data)
#   make test   - set up, then run the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint chromium gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, on its own: pip takes the pinned wheels from the local disk where present.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf results/cpu-small results/replay-demo  # the demo's own folders: a rerun replaces them
	$(PY) -m service bench --preset cpu-small --storage results
	$(PY) -m service bench --preset replay-demo --storage results

# The report's browser test drives Debian's Chromium (no browser download): installed here
# when missing and allowed, else that one test is skipped.
chromium:
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "Chromium could not be installed: tests/reports/test_report_browser.py will be skipped"

test: $(STAMP) chromium
	$(PY) -m pytest -q --durations=25

# The developer's loop: unit and contract tests that need no Ray instance (tests/conftest.py
# marks the others slow), one pytest-xdist worker per core, each on one thread (the tests
# are single-threaded Python and small tensors: 3 min 2 s on a fresh clone with 2 cores,
# 6 min 52 s in one process, measured 2026-12-07).
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" -n auto --dist worksteal --durations=25

# The GPU check: torch and the project only (no Ray), at most 5 minutes on one GPU; without
# a GPU it runs its reduced form on the CPU.
gpu-check: $(STAMP)
	$(PY) -m service.benchmark gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
