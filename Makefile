# Set-up and common jobs. `make test` and `make demo` create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On machines without an NVIDIA GPU the CPU build of torch is installed first, so that pip does not pull
# a multi-GB CUDA build as a dependency. GPU users: install the torch build that fits their CUDA instead.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup browser test demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the default torch build"; $(PY) -m pip install -q torch; \
	else \
		echo "No GPU: installing the CPU torch build ($(TORCH_SPEC))"; $(PY) -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install -q -e ".[test,app,label,supervision,video,onnx,openvino]"
	@touch $@

setup: $(VENV)/.installed

# Chromium for the browser test (tests/test_app_browser.py) comes from Debian's package: installed when missing
# and apt is usable (as root). A failure is tolerated: that one test is then skipped, the rest of the suite runs.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing chromium (apt-get) for the browser test"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -q chromium >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
			echo "Could not install chromium: tests/test_app_browser.py will be skipped"; \
		else \
			echo "No chromium and no root apt-get: tests/test_app_browser.py will be skipped"; \
		fi; }

test: setup browser
	$(PY) -m pytest -q

# `make demo SAM2=sam2_hiera_large.pt ENCODER=dinov2_vitl14_pretrain.pth [DEVICE=cuda]` uses local weights
# (files, HF directories or hub ids) instead of downloading the defaults from the Hugging Face hub.
demo: setup
	$(PY) examples/quickstart.py $(strip $(if $(SAM2),--sam2 "$(SAM2)") $(if $(ENCODER),--encoder "$(ENCODER)") \
		$(if $(DEVICE),--device "$(DEVICE)"))

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
