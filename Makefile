# `make test` installs everything from nothing into .venv and runs the whole test suite.
PY ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip
PYTEST = $(VENV)/bin/python -m pytest
# torch for the mmx[torch] tests (tests/test_dataset_torch.py): the CPU wheel, exactly, because
# a plain `torch` from PyPI pulls ~3 GB of CUDA; about 25 s to install from the local wheel.
# `make test TORCH=` leaves it out (those tests are then skipped).
TORCH ?= torch==2.13.0+cpu
# mediapipe for the mmx[pose] tests (tests/test_pose*.py): --no-deps, since its numpy<2 pin would downgrade numpy
# for everything (the rest of what it imports is in the dev extra); ~35 MB, the model inside.
# `make test MEDIAPIPE=` leaves it out (those tests are then skipped).
MEDIAPIPE ?= mediapipe==0.10.21

.PHONY: install test test-python test-convex test-busy system-deps man bench

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

install: $(VENV)/bin/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	$(if $(TORCH),$(PIP) install --quiet '$(TORCH)')
	$(if $(MEDIAPIPE),$(PIP) install --quiet --no-deps '$(MEDIAPIPE)')

# Debian's Chromium and ChromeDriver for the browser tests (root only; skipped otherwise).
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromedriver >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

test-convex:
	@if [ -f examples/convex/package.json ]; then \
		cd examples/convex && npm ci --no-audit --no-fund && npx tsc --noEmit && npx vitest run; \
	fi

test-python: install
	$(PYTEST)

test: system-deps test-convex test-python

# The Python suite three times in a row while 3 processes burn CPU (scripts/test_under_load.sh):
# tests wait for events, never for time, so a busy machine must not fail them.
test-busy: install
	PY=$(VENV)/bin/python scripts/test_under_load.sh

man: install
	$(VENV)/bin/python scripts/gen_man.py

# Every benchmark in bench/, one after the other; each prints its own figures. Helper modules
# that are not benches (the stock-aiortc baseline relay) live in bench/lib/, outside the glob.
bench: install
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done
