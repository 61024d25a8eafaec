# Quick start: `make demo` runs the main job on the embedded model; `make test` sets up and passes
# the tests. Both create their own virtual environments; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
PI_VENV := .venv-pi
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast lint bench fuzz install install-test pi-env mct-env java-env android-assets web-env web-assets clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

# tflite-runtime (what Raspberry Pi / Coral users run) needs numpy<2: its own environment.
pi-env:
	test -x $(PI_VENV)/bin/python || $(PYTHON) -m venv $(PI_VENV)
	$(PI_VENV)/bin/pip install -q "tflite-runtime" "numpy<2"

# Sony MCT 2.6.1 (the benchmark's peer) needs TensorFlow 2.15 / Keras 2: its own environment.
MCT_VENV := .venv-mct
mct-env:
	test -x $(MCT_VENV)/bin/python || python3.11 -m venv $(MCT_VENV)
	$(MCT_VENV)/bin/pip install -q "tensorflow==2.15.1" "model-compression-toolkit==2.6.1"

demo: install
	$(BIN)/aa-tflite demo

lint: install-test
	$(BIN)/ruff check aa_tflite converters tests benchmarks

# Debian's junit4 (and a JDK) compile and test the Android demo's plain-Java core.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
java-env:
	test -f /usr/share/java/junit4.jar || $(SUDO) apt-get install -y -q --no-install-recommends junit4 \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends junit4)
	command -v javac >/dev/null || $(SUDO) apt-get install -y -q --no-install-recommends default-jdk-headless

# The Android demo's assets: the demo's three-point file, labels and sample digits.
android-assets: install
	$(BIN)/aa-tflite demo --no-progress --out demo_out/digits
	$(BIN)/aa-tflite export demo_out/digits.tflite --target android --out android_demo/app/src/main/assets

# The browser demo: LiteRT.js and playwright-core from npm, Chromium from Debian.
web-env:
	cd web_demo && npm ci --no-audit --no-fund
	command -v chromium >/dev/null || $(SUDO) apt-get install -y -q --no-install-recommends chromium \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium)

# The browser demo's assets (serve web_demo/ and open index.html).
web-assets: install
	$(BIN)/aa-tflite demo --no-progress --out demo_out/digits
	$(BIN)/aa-tflite export demo_out/digits.tflite --target web --out web_demo/assets

test: install-test pi-env java-env web-env lint
	$(BIN)/python -m pytest -q

# The unit tier alone (no TensorFlow, no conversions): seconds, for the edit-test loop.
test-fast: install-test
	$(BIN)/python -m pytest -q tests/unit

bench: install-test mct-env
	$(BIN)/python -m benchmarks.lowering
	$(BIN)/python -m benchmarks.plan_quality --no-progress
	$(BIN)/python -m benchmarks.curves
	$(BIN)/python -m benchmarks.kernels
	$(BIN)/python -m benchmarks.planning_time --label after
	$(BIN)/python -m benchmarks.real_arena
	$(BIN)/python -m benchmarks.users
	$(BIN)/python -m benchmarks.readme

# The random-graph robustness run (about an hour on 2 cores); `make bench` reads its last result.
fuzz: install-test
	$(BIN)/python -m benchmarks.fuzz --graphs 500

clean:
	rm -rf $(VENV) $(PI_VENV) $(MCT_VENV) demo_out .pytest_cache
