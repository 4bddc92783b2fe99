# `make serve` and `make test` work on a fresh machine: they create .venv, install the
# project with the extras they need, apt-get what is missing, and build the model bundle.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL_DIR ?= models/default
# Debian packages as command:package (or file:package), each installed only when that
# command or file is missing. espeak-ng synthesises the training/test speech, ffmpeg decodes
# m4a/aac and makes the MP3 round trips, hunspell-vi's syllable list is one source of the
# decoder's lexicon and LM (`vi-asr build-lm`); the tests also need chromium + chromedriver (the UI end-to-end test) and
# prometheus + promtool (the observability test, `make observe`).
SERVE_APT := espeak-ng:espeak-ng ffmpeg:ffmpeg /usr/share/hunspell/vi_VN.dic:hunspell-vi
TEST_APT := $(SERVE_APT) chromium:chromium chromedriver:chromium-driver prometheus:prometheus

.PHONY: help setup install system-deps test-deps model serve serve-venv ui observe bench kuberay deploy-tools compose-check test lint format clean-model

help:
	@echo "make serve   install, build the default model if missing, start the service"
	@echo "make ui      the Streamlit UI on 127.0.0.1:$(UI_PORT) for the service at $(ASR_URL)"
	@echo "make test    install everything the tests need and run the whole suite"
	@echo "make model   build the default model bundle into $(MODEL_DIR)"
	@echo "make lint    the pre-commit hooks on every file: ruff check + format, whitespace, YAML/TOML/JSON"
	@echo "make bench   benchmark suite -> BENCHMARKS.md (~20 min; BENCH_ARGS=--quick: ~3 min)"
	@echo "make observe Prometheus + ASR alert rules against the running local Ray cluster"
	@echo "make compose-check  docker-compose.yml (both profiles) validated offline"

define apt_install
	@missing=""; \
	for pair in $(1); do what=$${pair%%:*}; \
		command -v $$what >/dev/null || [ -e $$what ] || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

system-deps:
	$(call apt_install,$(SERVE_APT))

test-deps:
	$(call apt_install,$(TEST_APT))

$(VENV)/.installed-dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed-dev

setup: system-deps install model

model: $(MODEL_DIR)/config.json $(MODEL_DIR)/lm.arpa

$(MODEL_DIR)/config.json: | install
	$(VENV)/bin/vi-asr build-model --out $(MODEL_DIR)

# build-model writes the lexicon + LM too; this adds them to a bundle built before they existed.
$(MODEL_DIR)/lm.arpa: | $(MODEL_DIR)/config.json
	$(VENV)/bin/vi-asr build-lm --model $(MODEL_DIR)

# The serving environment: the project with its `serve` extra and nothing else, as in the
# container image. .venv also holds the UI's and the dev tools' packages, and ray.serve
# imports pandas and pyarrow whenever they are installed: ~1 s of CPU in each of the ~7 Serve
# processes that start together, 1.5-3 s of the cold start on 2 cores (bench/cold_start.py).
SERVE_VENV ?= .venv-serve
$(SERVE_VENV)/.installed: pyproject.toml
	test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e '.[serve]'
	touch $@

serve-venv: $(SERVE_VENV)/.installed

# The Ray Serve graph on 127.0.0.1:8000 (serve_config.yaml). `serve run` starts a local Ray
# cluster and stops it again on Ctrl-C. ASR_API_KEY, when set, guards the POST routes.
# .venv builds the model (torch); the service runs from $(SERVE_VENV).
serve: setup serve-venv
	ASR_MODEL_DIR=$(MODEL_DIR) exec $(SERVE_VENV)/bin/serve run serve_config.yaml

# The Streamlit UI (ui/app.py) on 127.0.0.1:$(UI_PORT): it talks to the service at ASR_URL
# over HTTP only (start `make serve` in another shell), with ASR_API_KEY when that is set.
# `python -m` puts the repository (the working directory) on sys.path, so `ui.*` imports.
ASR_URL ?= http://127.0.0.1:8000
UI_PORT ?= 8501
ui: install
	ASR_URL=$(ASR_URL) exec $(PY) -m streamlit run ui/app.py --server.address=127.0.0.1 \
		--server.port=$(UI_PORT) --server.headless=true --browser.gatherUsageStats=false \
		--client.toolbarMode=viewer

# The benchmark suite: starts its own `serve run serve_config.yaml` on a free port and stops
# it; writes bench/results/suite-*.json, bench/report/*.png and BENCHMARKS.md.
bench: setup serve-venv
	$(PY) -m bench.suite --model-dir $(MODEL_DIR) $(BENCH_ARGS)

# Prometheus on 127.0.0.1:9090 scraping the local Ray cluster that ray_cluster/start_head.sh
# (or `make serve`) started, with ray_cluster/alerts.yml; foreground until Ctrl-C.
observe:
	$(call apt_install,prometheus:prometheus)
	ray_cluster/observe.sh

# kuberay/generated/ from serve_config.yaml and dashboards/ (tests fail when it is stale).
kuberay: install
	$(PY) kuberay/generate.py

# The requirements of one extra of pyproject.toml, read from there: $(call extra,NAME).
extra = $$($(PYTHON) -c 'import tomllib; \
	print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["$(1)"])')

# Tools whose pins cannot live with ray/pytest, each in a venv of its own from its extra:
# checkov (packaging<24) in .venv-checkov, docker-compose 1.x (PyYAML<6) in .venv-compose.
CHECKOV_VENV ?= .venv-checkov
COMPOSE_VENV ?= .venv-compose
deploy-tools: $(CHECKOV_VENV)/.installed $(COMPOSE_VENV)/.installed
$(CHECKOV_VENV)/.installed: pyproject.toml
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q $(call extra,checkov)
	touch $@

# PyYAML 5 has no wheel for Python 3.11 and its setup.py fails under Cython 3, so the
# compose extra's source packages build without isolation, against Cython 0.29.
$(COMPOSE_VENV)/.installed: pyproject.toml
	test -x $(COMPOSE_VENV)/bin/python || $(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install -q 'cython<3' setuptools wheel
	$(COMPOSE_VENV)/bin/pip install -q --no-build-isolation $(call extra,compose)
	touch $@

# docker-compose.yml, both profiles, checked without a Docker engine (tests/test_compose.py
# does this and more).
compose-check: $(COMPOSE_VENV)/.installed
	$(COMPOSE_VENV)/bin/docker-compose --profile monitoring config --quiet

test: test-deps install deploy-tools
	$(VENV)/bin/ruff check serve_app modelbuild kuberay ui tests dashboards bench
	$(VENV)/bin/ruff format --check serve_app modelbuild kuberay ui tests dashboards bench
	$(VENV)/bin/pytest

# .pre-commit-config.yaml's hooks over every file, with .venv's tools first on PATH (the hooks
# are local: offline). The whitespace fixers rewrite what they flag; run it again to confirm.
lint: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pre-commit run --all-files

format: install
	$(VENV)/bin/ruff format serve_app modelbuild kuberay ui tests dashboards bench
	$(VENV)/bin/ruff check --fix serve_app modelbuild kuberay ui tests dashboards bench

clean-model:
	rm -rf $(MODEL_DIR)
