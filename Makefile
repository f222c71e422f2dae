# Set-up and common jobs. `make test` and `make demo` create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On machines without an NVIDIA GPU the CPU build of torch is installed first, so that pip does not pull
# a multi-GB CUDA build as a dependency. GPU users: install the torch build that fits their CUDA instead.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the default torch build"; $(PY) -m pip install -q torch; \
	else \
		echo "No GPU: installing the CPU torch build ($(TORCH_SPEC))"; $(PY) -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) examples/quickstart.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
