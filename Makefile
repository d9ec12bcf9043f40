# codeb.backup — developer and CI entry points. Run as root on Debian 12.
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST_ARGS ?=
# One worker per core, at most 4; a whole test file stays on one worker (module fixtures
# start servers once per file). PYTEST_JOBS=0 runs serially.
PYTEST_JOBS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)
XDIST = $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS) --dist loadfile)

.PHONY: help deps venv demo test unit integration faults sanity lint changelog molecule bench clean

help:
	@echo "make demo   - install what is missing, then set up and exercise the whole system on this machine (scripts/demo.sh)"
	@echo "make test   - install what is missing, then molecule (in the background) + unit + integration + sanity + lint"
	@echo "make unit | integration | faults | sanity | lint | molecule - one part of 'make test'"
	@echo "make changelog - lint changelogs/fragments and regenerate CHANGELOG.md from changelogs/"

deps:
	@scripts/install-deps.sh

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	scripts/demo.sh

unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

integration: deps venv
	$(PY) -m pytest -q $(XDIST) tests/integration $(PYTEST_ARGS)

# Kills, full and read-only disks, missing tools, hostile manifests (needs root: tmpfs).
faults: deps venv
	$(PY) -m pytest -q $(XDIST) tests/faults $(PYTEST_ARGS)

sanity: venv
	scripts/sanity.sh

# A fragment antsibull-changelog cannot read fails CI here, not at release time.
lint: venv
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production
	$(BIN)/antsibull-changelog lint

# CHANGELOG.md is generated: edit changelogs/changelog.yaml (released versions) or add a
# fragment to changelogs/fragments (unreleased changes); `antsibull-changelog release`
# turns the fragments into a version when one is released.
changelog: venv
	$(BIN)/antsibull-changelog lint
	$(BIN)/antsibull-changelog generate

# ansible-test integration targets of the module contracts (tests/integration/targets):
# check mode, diff, a second identical run, bad input, against throwaway local servers.
.PHONY: integration-targets
integration-targets: deps venv
	scripts/integration-targets.sh

molecule: deps venv
	scripts/molecule.sh
	scripts/molecule.sh test -s env_backup

test: deps venv
	PYTEST_XDIST='$(XDIST)' PYTEST_ARGS='$(PYTEST_ARGS)' scripts/test.sh

clean:
	rm -rf $(VENV) tests/output .pytest_cache
