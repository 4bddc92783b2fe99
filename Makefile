# `make serve` and `make test` work on a fresh machine: they create .venv, install the
# project with the extras they need, apt-get what is missing, and build the model bundle.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL_DIR ?= models/default
APT_PACKAGES := espeak-ng ffmpeg

.PHONY: help setup install system-deps model serve test lint format clean-model

help:
	@echo "make serve   install, build the default model if missing, start the service"
	@echo "make test    install everything the tests need and run the whole suite"
	@echo "make model   build the default model bundle into $(MODEL_DIR)"
	@echo "make lint    ruff check + format check"

# Debian packages: espeak-ng synthesises the training/test speech, ffmpeg decodes m4a/aac
# and makes the MP3 round trips. Installed only when a command is missing.
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed-dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed-dev

setup: system-deps install model

model: $(MODEL_DIR)/config.json

$(MODEL_DIR)/config.json: | install
	$(VENV)/bin/vi-asr build-model --out $(MODEL_DIR)

# The Ray Serve graph on 127.0.0.1:8000 (serve_config.yaml). `serve run` starts a local Ray
# cluster and stops it again on Ctrl-C. ASR_API_KEY, when set, guards the POST routes.
serve: setup
	ASR_MODEL_DIR=$(MODEL_DIR) exec $(VENV)/bin/serve run serve_config.yaml

test: system-deps install
	$(VENV)/bin/ruff check serve_app tests
	$(VENV)/bin/ruff format --check serve_app tests
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check serve_app tests
	$(VENV)/bin/ruff format --check serve_app tests

format: install
	$(VENV)/bin/ruff format serve_app tests
	$(VENV)/bin/ruff check --fix serve_app tests

clean-model:
	rm -rf $(MODEL_DIR)
