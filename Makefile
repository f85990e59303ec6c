# The commands a newcomer types. Everything installs into .venv from the pinned requirement files.
# The project runs on Python 3.13 (Azure's worker runtime, azure-functions-runtime, needs it):
# tools/find_python.sh finds one (PATH, pyenv, the usual prefixes; PYTHON=... to choose).
VENV := .venv
PY := $(VENV)/bin/python
BASE_PYTHON = $(shell PYTHON="$(PYTHON)" tools/find_python.sh)
STATE ?= .devhost
PORT ?= 7071

.PHONY: setup test test-faults lint serve demo bench-scale clean

# The stamp names the Python version: a .venv left by an older Python is rebuilt, not reused.
$(VENV)/.installed-3.13: requirements.txt requirements-dev.txt pyproject.toml kit/pyproject.toml
	@test -n "$(BASE_PYTHON)" || { echo "make: no Python 3.13 interpreter (see above)" >&2; exit 2; }
	$(BASE_PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed-3.13

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

# A randomized fault campaign (tools/fault_campaign.py): N schedules from SEED, the coverage sample first.
N ?= 200
SEED ?= $(shell date +%s)
test-faults: setup
	$(PY) -m tools.fault_campaign --schedules $(N) --seed $(SEED)

# One scheduled tick over N generated targets on the local stack, and what it cost (benchmarks/scale.py).
CONCURRENCY ?= 8
OVERLAP ?= PT1H
bench-scale: setup
	$(PY) -m benchmarks.scale --targets $(N) --concurrency $(CONCURRENCY) --overlap $(OVERLAP)

# checkov lives in its own virtualenv (infra/requirements-lint.txt says why).
INFRA_LINT := $(VENV)/infra-lint
$(INFRA_LINT)/.installed: infra/requirements-lint.txt $(VENV)/.installed-3.13
	$(BASE_PYTHON) -m venv $(INFRA_LINT)
	$(INFRA_LINT)/bin/python -m pip install --quiet -r infra/requirements-lint.txt
	touch $@

# bandit: every Python file but the tests (tests/unit/project/test_lint_config.py keeps this list complete);
# mypy: the deployed app and the consumer kit (its file list is in pyproject.toml).
# Bandit's "nosec encountered (B608), but no failed test" warnings on f-strings are a known bandit
# bug (PyCQA/bandit#1204): the suppressed finding is real, the warning is not.
BANDIT_PATHS := function_app.py rotation activities orchestrations triggers devhost emulators tools samples infra benchmarks kit keyrotation_cli
lint: setup $(INFRA_LINT)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m bandit --quiet -c pyproject.toml -r $(BANDIT_PATHS)
	$(PY) -m mypy
	$(PY) infra/lint.py --checkov $(INFRA_LINT)/bin/checkov

serve: setup
	ROTATION_POLICY_PATH=$${ROTATION_POLICY_PATH:-config/rotation-policy.local.json} \
	ROTATION_SCHEDULE="$${ROTATION_SCHEDULE:-0 0 3 * * *}" \
	$(PY) -m devhost serve --port $(PORT) --state $(STATE)

# KEEP=1: the stack stays up afterwards for the keyrotation command (docs/cli.md); Ctrl-C stops it.
demo: setup
	$(PY) -m tools.demo $(if $(KEEP),--keep)

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .ruff_cache .mypy_cache
