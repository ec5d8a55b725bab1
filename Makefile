# Two entry points: `make sandbox` (a local control plane, the AKS simulator and the operator, with the
# falcon-7b Workspace provisioned through them)
# and `make test` (lint, types, tests). Both bootstrap what they need: a virtualenv with the project
# installed (redone when pyproject.toml changes) and the control-plane binaries, built once from Go
# modules into ~/.cache/kaito-py/bin/ and reused afterwards.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STATE_DIR ?= .state/sandbox
PYTEST_ARGS ?=
INSTALLED := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: all venv binaries lint typecheck unit test sandbox sandbox-down crds clean

all: test

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,runtime]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(INSTALLED)

binaries: venv
	$(BIN)/kaito sandbox build

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/shellcheck scripts/*.sh

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test: venv binaries lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

crds: venv
	$(BIN)/kaito crds --write

sandbox: venv binaries
	@$(BIN)/kaito sandbox down --state-dir $(STATE_DIR) >/dev/null 2>&1 || true
	$(BIN)/kaito sandbox up --profile full --aks --operator --state-dir $(STATE_DIR) --exit-when-ready \
		--apply examples/kaito_workspace_falcon_7b.yaml --wait-ready 300
	@KUBECONFIG=$(STATE_DIR)/kubeconfig $(BIN)/python -m sandbox.show_workspaces
	@echo
	@echo '$$ kaito generate workspace-falcon-7b "What is a GPU?"   # through the API server'"'"'s service proxy'
	@KUBECONFIG=$(STATE_DIR)/kubeconfig $(BIN)/kaito generate workspace-falcon-7b "What is a GPU?" --max-new-tokens 24
	@echo "(the sandbox model is a tiny Llama with random weights: its tokens are real, its text is not)"
	@echo
	@echo "The control plane, the AKS simulator, the operator and the pod runner keep running (logs: $(STATE_DIR)/logs/)."
	@echo "Use them with:"
	@echo "  export KUBECONFIG=$(abspath $(STATE_DIR))/kubeconfig"
	@echo "  kubectl proxy --port 8001 &   # then, through the service proxy:"
	@echo "  curl -s localhost:8001/api/v1/namespaces/default/services/workspace-falcon-7b:80/proxy/generate \\"
	@echo "    -H 'Content-Type: application/json' -d '{\"inputs\": \"What is a GPU?\", \"parameters\": {\"max_new_tokens\": 24}}'"
	@echo "  kubectl port-forward svc/workspace-falcon-7b 8080:80 &   # then: curl -s localhost:8080/generate ..."
	@echo "  kubectl logs -l kaito.sh/workspace=workspace-falcon-7b"
	@echo "Stop it with: make sandbox-down"

sandbox-down: venv
	$(BIN)/kaito sandbox down --state-dir $(STATE_DIR)

clean: sandbox-down
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
