# Two commands matter: `make demo` (a full payment on loopback) and `make test` (everything CI runs).
# Both install what they need into .venv first. Other targets are listed by `make help`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := python3
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
FUNCTION_NAMES := stk-push stk-callback payment-status reconcile payment-events webhook-delivery
FUNCTIONS := $(addprefix -p ,$(FUNCTION_NAMES))
CARGO ?= cargo

.PHONY: help setup build demo test lint template sam-build sam-local deploy-check clean fuzz storm bench

help:
	@echo "make demo      run a full payment (and a cancelled one) against the local stack"
	@echo "make test      fmt, clippy, unit and integration tests, template checks"
	@echo "make setup     install the local tools (moto, aws-sam-cli, cargo-lambda) into $(VENV)"
	@echo "make sam-build sam build for x86_64 (cargo-lambda with zig, both from $(VENV))"
	@echo "make sam-local every sam local command of the README, in Docker, checked (starts Docker if needed)"
	@echo "make deploy-check  sam package + sam deploy of the build into moto, every resource checked"
	@echo "make storm     load tests on the local stack: the callback storm, and pushes through DynamoDB outages"

$(VENV)/.installed: tools/requirements.txt
	@echo "==> installing local tools into $(VENV) (moto, aws-sam-cli, cargo-lambda)"
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements.txt
	touch $@

setup: $(VENV)/.installed

build: setup
	@echo "==> building the functions and the local stack"
	$(CARGO) build $(FUNCTIONS) -p local-stack -p daraja-sim -p webhook-receiver

demo: build
	@echo "==> running the demo"
	$(CARGO) run --quiet -p local-stack -- demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# Each function alone, with only its own features of `app` (as `sam build` builds it).
	for f in $(FUNCTION_NAMES); do $(CARGO) clippy -p $$f -- -D warnings || exit 1; done

# Lint, then SAM's own translator (what `sam deploy` runs; `--lint` alone never translates)
# for each samconfig.toml environment, and cfn-lint over the translated templates.
template: setup
	sam validate --lint --template-file template.yaml
	cfn-lint template.yaml
	$(VENV)/bin/python tools/sam/translate.py

test: build lint template
	@echo "==> unit and integration tests (DynamoDB emulator, Daraja simulator, functions under the runtime emulator)"
	$(CARGO) test --workspace

sam-build: setup
	sam build --template-file template.yaml --parameter-overrides Architecture=x86_64

# The README's `sam local` section, run for real in Docker. Also: the glibc each bootstrap
# needs (AL2023 has 2.34; the local base image is newer), and the API Gateway stand-in
# compared with `sam local start-api`. SAM_LOCAL_FLAGS holds what this machine adds to every
# `sam local` command: no container registry answers here, so SAM must not try to pull (with
# one, `make sam-local SAM_LOCAL_FLAGS=` lets SAM pull the real base image).
SAM_LOCAL_FLAGS ?= --skip-pull-image
export SAM_LOCAL_FLAGS
sam-local: build sam-build
	tools/sam-local/docker-up.sh
	tools/sam-local/glibc-check.sh
	$(CARGO) run --quiet -p local-stack -- sam-local
	$(CARGO) build --quiet -p event-echo
	tools/sam-local/glibc-check.sh "$$($(CARGO) metadata --format-version 1 --no-deps | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/event-echo"
	$(CARGO) run --quiet -p local-stack --bin compare-gateway

deploy-check: sam-build
	$(VENV)/bin/python tools/sam/deploy_check.py

clean:
	rm -rf .aws-sam $(VENV)

# Coverage-guided fuzzing (cargo-fuzz on stable, its own target dir); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO="$(CARGO)" fuzz/run.sh

# 200 payments and 1,000 callbacks (duplicates, orphans, early and contradicting results) with
# 16 in flight against the local stack; checks nothing is lost or applied twice, and one event
# and one webhook per state change; then pushes through DynamoDB outages, and the events
# pipeline's rate. Not in `test`.
storm: build
	$(CARGO) test -p e2e --test storm -- --ignored --nocapture

# Figures for BENCHMARKS.md (not in `test`; nothing fails on timing): cold start against a
# minimal function, warm latency, handler overhead (criterion), calls per operation, bootstrap
# size and peak memory. Release builds; the runner's sections: tools/bench/run.sh [section…].
bench: setup
	CARGO="$(CARGO)" tools/bench/run.sh
