# `make demo` and `make test` work on a fresh clone: each creates .venv and installs into it.
# `make test-all` runs the same checks on every supported Python, each in its own .venv-X.Y.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Every Python omar-bulk supports (pyproject.toml's classifiers say the same).
PYTHON_VERSIONS := 3.11 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
# The X.Y of $(PYTHON): `make test` covers it already, so `test-others` leaves it out.
DEFAULT_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
OTHER_VERSIONS := $(filter-out $(DEFAULT_VERSION),$(PYTHON_VERSIONS))
VERSION_TESTS := $(addprefix test-,$(PYTHON_VERSIONS))

.PHONY: demo test test-all test-others $(VERSION_TESTS) venv-python lint typecheck check bench mutation mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# A $(VENV) made by another Python would quietly run that one instead of $(PYTHON); a PYTHON
# that does not run at all is said plainly, before anything is created.
venv-python:
	@want=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if [ -z "$$want" ]; then \
	  echo "PYTHON=$(PYTHON) does not run: no such Python interpreter on PATH" >&2; exit 2; \
	fi; \
	if [ -x $(BIN)/python ]; then \
	  have=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  if [ "$$have" != "$$want" ]; then \
	    echo "$(VENV) holds Python $$have, not $$want ($(PYTHON)): run 'make clean' first," \
	      "or give another VENV=" >&2; \
	    exit 2; \
	  fi; \
	fi

demo: venv-python $(STAMP)
	$(BIN)/omar-bulk demo

test: venv-python $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-all: test test-others

test-others: $(addprefix test-,$(OTHER_VERSIONS))

# test-X.Y: `make test` with Python X.Y in .venv-X.Y. The interpreter is pythonX.Y on PATH
# if it runs, else pyenv's newest X.Y.*. A missing one is said loudly; in CI it fails.
$(VERSION_TESTS): test-%:
	@py=; \
	for p in $$(command -v python$* 2>/dev/null) \
	    $$(ls -d $(PYENV_ROOT)/versions/$*.*/bin/python$* 2>/dev/null | sort -rV); do \
	  if [ "$$("$$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$*" ]; \
	  then py=$$p; break; fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "make $@: Python $* not found (no python$* on PATH, none in $(PYENV_ROOT)/versions)" >&2; \
	  case "$$CI" in true|1|yes) echo "make $@: CI tests every supported Python: failing" >&2; exit 1;; esac; \
	  echo "make $@: NOT TESTED on Python $*" >&2; \
	  exit 0; \
	fi; \
	echo "== make test on Python $* ($$py), in .venv-$*"; \
	start=$$(date +%s); \
	$(MAKE) --no-print-directory test VENV=.venv-$* PYTHON="$$py" || exit 1; \
	echo "== Python $*: passed in $$(( $$(date +%s) - start )) s"

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py

# Mutants of the decisions: answers, politeness, plan and dates, protocol, policy, coverage, and
# the journal's rows and the storage's paths (not their I/O). Fresh every time (mutants/ is
# rebuilt), so the score is the one a fresh clone gets. docs/TESTING.md says more.
MUTATION_SCOPE := 'omar_bulk.answers.*' 'omar_bulk.politeness.*' 'omar_bulk.plan.*' \
  'omar_bulk.dates.*' 'omar_bulk.protocol.*' 'omar_bulk.policy.*' 'omar_bulk.coverage.*' \
  'omar_bulk.journal.x?Journal?record__*' \
  $(foreach f,_relative _split path_of final part history_path sweep_parts,'omar_bulk.storage.x?Storage?$(f)__*')

mutation: venv-python $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	rm -rf mutants
	@echo "mutmut: running the mutants (about 7 minutes on 2 cores; log in mutation.log)"
	$(BIN)/mutmut run $(MUTATION_SCOPE) > mutation.log 2>&1 || { tail -20 mutation.log; exit 1; }
	@$(BIN)/python tests/mutation_score.py --mutmut $(BIN)/mutmut $(MUTATION_SCOPE)

# Semantic mutants: each plausible bug of tests/mutants/ applied to a temporary copy of the
# tracked files, the suite run against it (docs/TESTING.md). The checkout is not touched.
mutants: venv-python $(STAMP)
	$(BIN)/python tests/mutants/run.py

clean:
	rm -rf mutants mutation.log $(VENV) $(addprefix .venv-,$(PYTHON_VERSIONS)) .pytest_cache .mypy_cache .ruff_cache .hypothesis
