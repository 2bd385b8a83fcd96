# qtc: two commands a newcomer needs
#   make TARGET=esp32 MODEL=peer_encoder   # the main job
#   make test                              # the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
QTC    := $(VENV)/bin/qtc
TARGET ?= esp32
MODEL  ?= peer_encoder
BUILD  := build
PYTEST_ARGS ?=
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0
export CUDA_VISIBLE_DEVICES :=

.PHONY: all main venv sysdeps models test clean help dualtrack
all: main

help:
	@echo "make TARGET=esp32 MODEL=peer_encoder   run the main job"
	@echo "make test                              run the tests"
	@echo "make models                            train the example models (cached in build/models)"
	@echo "make dualtrack CONFIG=configs/deepsets_esp32.yaml [MODEL=...]   PTQ vs QAT, winner under the budgets"

$(VENV)/.stamp: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, from local disk; the constraint keeps it pinned for everything after
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[torch,tf,runtimes,dev]'
	touch $@

venv: $(VENV)/.stamp

# The emulated board's toolchain (RV32IMAC gcc + picolibc, qemu-system-riscv32) and valgrind.
SYSDEP_CMDS := riscv64-unknown-elf-gcc qemu-system-riscv32 valgrind
sysdeps:
	@missing=""; for c in $(SYSDEP_CMDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	[ -f /usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs ] || missing="$$missing picolibc"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages for:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc valgrind >/dev/null; \
	fi

$(BUILD)/models/.stamp: $(VENV)/.stamp $(wildcard models/*.py)
	$(PY) -m models.train_all --out $(BUILD)/models
	touch $@

models: $(BUILD)/models/.stamp

# The main job: import -> PTQ -> .tflite + C -> ESP-IDF/PlatformIO projects -> board.
# No PORT: the same C runs on the emulated board (QEMU RV32) and latency is read back over its UART.
# PORT=/dev/ttyUSB0 (with ESP-IDF installed): idf.py build + esptool flash, then the same bench.
# Steps whose outputs exist are skipped; REFRESH=1 redoes them.
MODEL_SRC = $(firstword $(wildcard $(BUILD)/models/$(MODEL)/$(MODEL).keras) $(BUILD)/models/$(MODEL)/$(MODEL).onnx)
main: sysdeps models
	@mkdir -p $(BUILD)/$(MODEL)
	@[ -f $(BUILD)/$(MODEL)/dataset.npz ] && [ -z "$(REFRESH)" ] || \
	  $(PY) -m models.dataset $(MODEL) --models-dir $(BUILD)/models -o $(BUILD)/$(MODEL)/dataset.npz
	$(QTC) deploy $(MODEL_SRC) --target $(TARGET) --data $(BUILD)/$(MODEL)/dataset.npz \
	  -o $(BUILD)/$(MODEL) $(if $(PORT),--port $(PORT)) $(if $(REFRESH),--refresh)

# PTQ and QAT from the same checkpoint, the winner under the target's budgets (docs/dualtrack.md).
# MODEL (given on the command line) replaces the config's model.
CONFIG ?= configs/deepsets_esp32.yaml
dualtrack: sysdeps models
	$(QTC) dualtrack $(CONFIG) $(if $(filter command line,$(origin MODEL)),--model $(MODEL))

test: sysdeps models
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf $(BUILD)
