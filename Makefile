# ModelRollout — entry points. The README names two of them: `make demo` and `make test`.
# Every target installs what it needs, idempotently: a Python venv in .venv, Debian packages
# through apt-get when missing, and the control plane's Go binaries in a cache outside the repo.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
CLUSTER_DIR ?= .cluster
export MODELROLLOUT_CACHE ?= $(HOME)/.cache/modelrollout

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

# --- Python environment ------------------------------------------------------------------------

$(STAMP): operator/pyproject.toml serving-image/pyproject.toml requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./operator -e ./serving-image -r requirements-dev.txt
	@touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the operator, the model server and the test tools

# --- Control plane -----------------------------------------------------------------------------

.PHONY: tools
tools: ## build etcd, kube-*, kubectl, kwok and helm from the Go module proxy (cached)
	@hack/build-tools.sh >/dev/null

.PHONY: cluster-up
cluster-up: venv tools ## start the local control plane in the background (kubeconfig in .cluster/)
	$(PY) -m hack.localcluster up --dir $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: ## stop the operator and the local control plane started by demo or cluster-up
	@if [ -x $(PY) ]; then $(PY) -m hack.demo down --dir $(CLUSTER_DIR); fi

.PHONY: demo
demo: venv tools prometheus ## local control plane, operator, examples converged, then a live canary promotion and rollback
	$(PY) -m hack.demo up --dir $(CLUSTER_DIR)

.PHONY: run
run: venv ## run the operator in the foreground against $$KUBECONFIG (any cluster)
	$(BIN)/modelrollout-operator

# --- Code generation ---------------------------------------------------------------------------

.PHONY: crds
crds: venv ## regenerate crds/ from the pydantic models in operator/modelrollout/api
	$(PY) -m modelrollout.api.crdgen > crds/modeldeployments.modelrollout.io.yaml

.PHONY: protos
protos: venv ## regenerate the model server's OIP v2 gRPC messages from their proto
	cd serving-image/modelserver/proto && ../../../$(PY) -m grpc_tools.protoc -I. \
		--python_out=. --pyi_out=. grpc_predict_v2.proto

.PHONY: docs
docs: venv ## regenerate docs/api.md from the pydantic models
	$(PY) -m modelrollout.api.docgen > docs/api.md

# --- Checks ------------------------------------------------------------------------------------

.PHONY: lint
lint: venv ## ruff, mypy --strict and the import layers (import-linter contracts in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

.PHONY: fmt
fmt: venv ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test-unit
test-unit: venv prometheus lua ## pure, fast tests
	$(BIN)/pytest -q tests/unit

.PHONY: test-integration
test-integration: venv tools prometheus ## tests against the real local control plane
	$(BIN)/pytest -q tests/integration

.PHONY: test
test: venv tools prometheus lua lint ## lint, then every test (unit, serving and integration)
	$(BIN)/pytest -q tests

-include mk/*.mk
