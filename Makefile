# The two set-up commands in README.md run these targets on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On a machine without an NVIDIA driver, pin the CPU build of torch first so pip never pulls CUDA wheels.
TORCH_PIN ?= torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

OLDEST_VENV ?= .venv-oldest
OLD_PY := $(OLDEST_VENV)/bin/python

.PHONY: setup run test test-oldest bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),)
	$(PY) -m pip install -q $(TORCH_PIN)
endif
	$(PY) -m pip install -q -e ".[dev,quant]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/emu3 generate "a small red circle in the top left corner on a black background" --output emu3-sample.png

# The tests also drive the Gradio demo (the demo extra) in a browser; `make run` does not need it.
$(VENV)/.demo-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[demo]"
	touch $@

test: setup $(VENV)/.demo-installed
	$(PY) -m pytest -q -m "not slow and not gpu" tests

# The same suite on the oldest releases pyproject declares (its lower bounds, pinned exactly).
$(OLDEST_VENV)/.installed: pyproject.toml scripts/oldest_requirements.py
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLD_PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),)
	$(OLD_PY) -m pip install -q $(TORCH_PIN)
endif
	$(PYTHON) scripts/oldest_requirements.py > $(OLDEST_VENV)/oldest.txt
	$(OLD_PY) -m pip install -q -r $(OLDEST_VENV)/oldest.txt -e ".[dev]"
	$(OLD_PY) scripts/oldest_requirements.py --check
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	$(OLD_PY) -m pytest -q -m "not slow and not gpu" tests

# Every benchmark of BENCHMARKS.md that this machine can run (the 8B GPU one only where nvidia-smi sees a GPU); each
# script writes a JSON record under bench/results/. About half an hour on a 2-core CPU.
bench: setup
	$(PY) bench/bench_tokenizer.py
	$(PY) bench/bench_generation.py
	mkdir -p bench/results
	$(VENV)/bin/emu3 tiny-world eval -o bench/results/tiny-world-eval.json
	$(VENV)/bin/emu3 tiny-world eval --lora src/emu3_hf/assets/emu3-tiny-pink-lora -o bench/results/tiny-world-lora.json
ifneq ($(HAS_GPU),)
	$(PY) bench/bench_gpu.py
endif

clean:
	rm -rf $(VENV) $(OLDEST_VENV) build *.egg-info
