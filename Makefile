# Two commands matter: `make run` (set up, build the default model, serve it) and
# `make test` (set up and run every test). Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TRIAGE := $(VENV)/bin/triage
STAMP := $(VENV)/.installed
CORPUS := datasets/corpus/train.jsonl datasets/corpus/dev.jsonl datasets/corpus/test.jsonl
MODEL := models/default
# What the default model is built from: the corpus, the lexicons and the code that trains it
# (the rules code too: flag thresholds are chosen on what the rules already catch).
MODEL_INPUTS := $(CORPUS) triage/resources/rules.json triage/resources/userdict.txt \
	$(wildcard training/*.py) triage/features.py triage/normalize.py triage/tokenize.py triage/rules.py
# A fixed build time keeps `make model` byte-for-byte reproducible.
export SOURCE_DATE_EPOCH ?= 1764000000

BACKBONE := .backbone/multilingual-e5-small

.PHONY: setup run test test-fast model corpus corpus-check eval bench bench-cocc bench-external backbone bench-transformer clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py triage/_featurize.c
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,serve,postgres,report,dask,test]'
	@# torch==2.13.0 comes from a CPU wheel on this machine kind; without it the torch tests skip
	$(PY) -m pip install --quiet -e '.[transformer]' || echo "warning: transformer extra not installed; torch tests will skip" >&2
	touch $@

corpus: setup
	$(PY) -m training.corpus build

corpus-check: setup
	$(PY) -m training.corpus stats
	$(PY) -m training.agreement

model: $(MODEL)/manifest.json

$(MODEL)/manifest.json: $(STAMP) $(MODEL_INPUTS)
	$(TRIAGE) train --data datasets/corpus/train.jsonl datasets/corpus/dev.jsonl --out $(MODEL) --name default \
		--report build/default-cv.md

eval: model
	$(TRIAGE) eval --model $(MODEL) --data datasets/corpus/test.jsonl --report build/default-test.md

run: model
	$(TRIAGE) serve --model $(MODEL)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: model
	$(PY) bench/bench_core.py --model $(MODEL) --out bench/results/core.json

bench-cocc: setup
	$(PY) bench/bench_cocc.py --out bench/results/cocc.json

bench-external: model
	$(PY) bench/bench_external.py --model $(MODEL) --out bench/results/external.json

backbone: $(BACKBONE)/backbone.json

$(BACKBONE)/backbone.json: $(STAMP)
	nice -n 10 $(PY) -m training.transformer.backbone build --out $(BACKBONE) --verify 200 --strict

bench-transformer: backbone
	nice -n 10 $(PY) bench/bench_transformer.py --out bench/results/transformer.json

clean:
	rm -rf build $(MODEL) .pytest_cache
