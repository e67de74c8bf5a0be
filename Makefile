# mmlit developer tasks. The README's two commands, `make demo` and `make test`, work on a fresh clone:
# each creates/reuses the virtual environment .venv and installs what it needs first.
# `make help` lists the targets.

SHELL        := /bin/bash
.DEFAULT_GOAL := help

# the interpreter that creates .venv (3.11: the local torch wheel is cp311)
PYTHON ?= python3
VENV   ?= .venv
# installed FIRST: the local CPU wheel (a bare `torch` requirement would pull GBs of CUDA packages)
TORCH  ?= torch==2.13.0
# parallel workers for notebooks (CI has 2 cores)
JOBS   ?= 2
# pytest: one file per worker (module-scoped fixtures are built once), the slowest tests listed at the end
PYTEST_ARGS ?= -q -n $(JOBS) --dist loadfile --durations=15

BIN := $(abspath $(VENV))/bin
PY  := $(BIN)/python
# nbdev_*, papermill, smalldocs and the `mmlit` script come from the venv
export PATH := $(BIN):$(PATH)

# Re-install only when the install recipe's inputs change: the stamp's name carries their hash.
INSTALL_HASH := $(shell cat settings.ini setup.py 2>/dev/null | sha256sum | cut -c1-16)
STAMP        := $(VENV)/.mmlit-installed-$(INSTALL_HASH)

# Every check of `make test`, in order (install runs first and stops everything when it fails).
CHECKS := chromium export-check clean-check readme-check nbtest tutorials docs pytest

.PHONY: help install demo test $(CHECKS) readme clean-docs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

# ------------------------------------------------------------------------------------------------ install
install: $(STAMP)  ## create/reuse .venv; install torch (CPU), then mmlit with its dev extras and the python3 kernel

$(STAMP):
	@test -x $(PY) || { echo "[install] creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mmlit)"
	@rm -f $(VENV)/.mmlit-installed-*
	@touch $@
	@echo "[install] done ($(VENV))"

# ------------------------------------------------------------------------------------------------ the two README commands
demo: install  ## run `mmlit demo` (a small model trained and scored on data shipped with the dependencies)
	MPLBACKEND=Agg $(BIN)/mmlit demo

test: install  ## every CI check (see CHECKS); ends with an `N passed, N failed` line
	@# one BLAS/OpenMP thread per process: notebooks run $(JOBS) at a time, and tiny models on an oversubscribed
	@# 2-core machine were measured 20-60x slower with torch's default thread count
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MAKE="$(MAKE)" bash tools/run_checks.sh $(CHECKS)

# ------------------------------------------------------------------------------------------------ the checks
chromium:  ## make sure headless Chromium is there for the docs-site test (apt-get as root)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  echo "[chromium] $$(command -v chromium || command -v chromium-browser)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "[chromium] installing with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && command -v chromium; \
	else \
	  echo "[chromium] not installed and not root (or no apt-get): skipping; tests/test_docs_site.py will be skipped"; \
	fi

export-check: install  ## nbdev_export, then mmlit/ must have no diff and no untracked file (the notebooks are the source)
	nbdev_export
	@out="$$(git status --porcelain --untracked-files=all -- $$(sed -n 's/^lib_path *= *//p' settings.ini))"; \
	if [ -n "$$out" ]; then echo "$$out"; git --no-pager diff --stat -- mmlit; \
	  echo "[export-check] FAILED: the package differs from what the notebooks export (run nbdev_export and commit)"; exit 1; \
	else echo "[export-check] mmlit/ matches the notebooks"; fi

clean-check: install  ## nbdev_clean must not change any notebook
	@find nbs -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort | xargs sha256sum > $(VENV)/.clean-before
	nbdev_clean
	@find nbs -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort | xargs sha256sum > $(VENV)/.clean-after
	@if ! diff -q $(VENV)/.clean-before $(VENV)/.clean-after >/dev/null; then \
	  diff $(VENV)/.clean-before $(VENV)/.clean-after | sed -n 's/^> [0-9a-f]* *//p'; rm -f $(VENV)/.clean-before $(VENV)/.clean-after; \
	  echo "[clean-check] FAILED: nbdev_clean changed the notebooks above (it has now cleaned them: commit them)"; exit 1; \
	fi; rm -f $(VENV)/.clean-before $(VENV)/.clean-after; echo "[clean-check] notebooks are clean"

readme-check: install  ## README.md must be what `make readme` generates from nbs/index.ipynb
	$(PY) tools/docs.py readme --check

nbtest: install  ## nbdev_test on every notebook, keeping the executed copies for the docs (tutorials: see `tutorials`)
	$(PY) tools/nbtest.py --n_workers $(JOBS) --timing --skip_folder_re '^([_.].*|tutorials)$$'

tutorials: install  ## papermill every nbs/tutorials notebook with its CI parameters -> _executed/tutorials/
	$(PY) tools/docs.py tutorials --n_workers $(JOBS)

docs: install tutorials  ## the offline docs site: run notebooks (unless fresh), nbdev-process, smalldocs -> _site/
	$(PY) tools/docs.py execute --n_workers $(JOBS)
	$(PY) tools/docs.py site --n_workers $(JOBS)

pytest: install  ## the pytest suite in tests/ (run after `docs`: it checks the built site in Chromium)
	MPLBACKEND=Agg $(PY) -m pytest tests/ $(PYTEST_ARGS)

# ------------------------------------------------------------------------------------------------ other tasks
readme: install  ## regenerate README.md from nbs/index.ipynb
	$(PY) tools/docs.py readme

clean-docs:  ## remove the docs build outputs
	rm -rf _executed _proc _site _docs .screenshots
