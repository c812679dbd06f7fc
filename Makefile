# The two commands of the README: `make demo` (the main job, local mode, real data end to end) and
# `make test`. Both create .venv with pinned versions on first use; nothing else needs installing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
WHEELHOUSE := .cache/wheelhouse
HYPOTHESIS_PROFILE ?= $(if $(CI),ci,dev)
# Debian's Chromium for the dashboard's browser test (Playwright drives it; it never downloads a browser).
CHROMIUM := /usr/bin/chromium

.PHONY: demo local bench test test-fast package deploy policies create-buckets clean

$(INSTALLED): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Lambda wheels for requirements.txt, so `chalice package` (and its test) run offline.
$(WHEELHOUSE)/.complete: requirements.txt constraints.txt $(INSTALLED)
	$(BIN)/pip download --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt \
		--only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
		-d $(WHEELHOUSE)
	touch $@

# Installed once per machine; skipped when present. Needs root (CI runs as root) and Debian's package lists.
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

demo: $(INSTALLED)
	$(BIN)/tally demo $(ARGS)

local: $(INSTALLED)
	$(BIN)/tally local $(ARGS)

# The performance report of issue 4 (tally bench), written to benchmarks/RESULTS.md.
bench: $(INSTALLED)
	$(BIN)/tally bench --markdown benchmarks/RESULTS.md $(ARGS)

# Every job and table definition loads first: a typo in a job fails here, naming the job.
test: $(INSTALLED) $(WHEELHOUSE)/.complete $(CHROMIUM)
	$(BIN)/tally validate
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(BIN)/python -m pytest $(ARGS)

test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# A stage as terraform: chalice package plus failures.tf.json (the mappers' failure queue), in build/terraform.
package: $(INSTALLED) $(WHEELHOUSE)/.complete
	PIP_NO_INDEX=1 PIP_FIND_LINKS=$(CURDIR)/$(WHEELHOUSE) $(BIN)/tally package --stage $(or $(STAGE),dev) \
		build/terraform

# chalice deploy, then the failure queue as the mappers' on-failure destination (idempotent).
deploy: $(INSTALLED)
	$(BIN)/tally deploy --stage $(or $(STAGE),dev)

# Rewrites .chalice/policy-<stage>-<function>.json (and the config entries naming them) after a change to a
# stage's buckets or to chalicelib/local/policies.py; tests/test_policies.py fails until they are committed.
policies: $(INSTALLED)
	$(BIN)/python -m chalicelib.local.policies

# One-time creation of a stage's buckets (names from .chalice/config.json), e.g. `make create-buckets STAGE=prod`.
create-buckets: $(INSTALLED)
	$(BIN)/tally create-buckets --stage $(or $(STAGE),dev)

clean:
	rm -rf $(VENV) .cache build .tally
