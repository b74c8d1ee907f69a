# mt: `make train` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Every dependency pinned, as tested by CI (`make lock` re-resolves it); CONSTRAINTS= installs the newest releases.
CONSTRAINTS ?= constraints.txt
DATA_DIR ?= ../shared/data/multi30k
TEXT ?= I like eating ice cream
SWEEP ?= smoke
ARGS ?=
export TEXT  # read by the shell as "$$TEXT": any quotes inside the text survive
RUN ?=
NPROC ?= 2
EXPORT_DIR ?= exports/model

.PHONY: help install lock data train train-ddp train-full translate serve evaluate export sweep compare align bench test test-fast lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# CPU machines get the small CPU build of torch: a local wheel if pip finds one offline,
	@# else torch alone (--no-deps) from PyTorch's CPU index; its dependencies, like everything
	@# else, then come from pip's default index. CUDA machines get the regular build.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PIP) install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) "torch==$(TORCH_VERSION)"; \
	elif ! $(PIP) install -q --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null; then \
	  $(PIP) install -q --no-deps "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX); \
	fi
	$(PIP) install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) "torch==$(TORCH_VERSION)" -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## create .venv and install mt with the tested versions of constraints.txt (CPU torch unless CUDA is present)

# One resolution for every Python the project supports (>= 3.10) and platform (markers), with torch
# held at TORCH_VERSION; uv resolves it (pip cannot resolve for other Pythons). Run make test after.
# Pins already in constraints.txt are kept where they still fit; UPGRADE=1 takes the newest releases.
# Not after `install`: a pyproject.toml change that the old pins no longer fit would stop it first.
lock: ## re-resolve constraints.txt after a change to pyproject.toml (UPGRADE=1: newest releases; torch stays TORCH_VERSION)
	test -x $(PIP) || python3 -m venv $(VENV)
	$(PIP) install -q uv
	echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-pin.txt
	cp constraints.txt constraints.txt.tmp
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 $(if $(UPGRADE),--upgrade) \
	  -c $(VENV)/torch-pin.txt --custom-compile-command "make lock" -o constraints.txt.tmp \
	  || { rm -f constraints.txt.tmp; exit 1; }
	mv constraints.txt.tmp constraints.txt

data: install ## prepare Multi30k in data/multi30k (copy from ../shared, or download)
	$(PY) scripts/prepare_data.py --from $(DATA_DIR) --to data/multi30k

# Every corpus is found by name: data/NAME (Multi30k, made by `make data`), else ../shared/data.
train: data ## train the default recipe (en->de on Multi30k + Tatoeba; ARGS=data=multi30k for captions only); ARGS="model.layers=4 ..." to change it
	$(PY) -m mt.train $(if $(RUN),train.resume=true hydra.run.dir=$(RUN)) $(ARGS)

train-ddp: data ## train on NPROC processes with torchrun (DDP; GPUs or CPU processes)
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m mt.train \
	  hydra.run.dir=$(if $(RUN),$(RUN) train.resume=true,outputs/ddp/$(shell date +%Y-%m-%d_%H-%M-%S)) $(ARGS)

train-full: data ## the longer Multi30k recipe (train=full: more steps; best with a GPU)
	$(PY) -m mt.train data=multi30k train=full $(ARGS)

translate: install ## translate TEXT="..." with the latest run's best checkpoint
	$(PY) -m mt.translate "$$TEXT" $(ARGS)

serve: install ## HTTP API + attention explorer on http://127.0.0.1:8000/ (ARGS="--checkpoint CKPT --port N")
	$(PY) -m mt.serve $(ARGS)

evaluate: install ## BLEU/chrF of the latest run on the test split (ARGS="--beam 1 ...")
	$(PY) -m mt.evaluate $(ARGS)

export: install ## model folder + CTranslate2 model of the latest run in EXPORT_DIR (ARGS="--checkpoint CKPT --quantization int8 --force")
	$(PY) -m mt.export ct2 --out $(EXPORT_DIR) $(ARGS)

sweep: $(if $(filter smoke,$(SWEEP)),install,data) ## run a sweep preset from configs/sweep (SWEEP=smoke|model_size|norm|dropout|label_smoothing|lr_warmup)
	$(PY) -m mt.train +sweep=$(SWEEP) $(ARGS)

compare: install ## compare the runs of the latest sweep (ARGS="multirun/... outputs/...")
	$(PY) -m mt.compare $(ARGS)

# Outside outputs/: these en<->fr study models never become the default model of mt.translate.
# (studies/align-null, studies/align-avg: the recipes before the five weight snapshots and before
# the 5-run teacher vote; a run is never resumed with another teacher, mt.train refuses it.)
ALIGN_RUNS ?= studies/align-vote5
align: data ## alignment study: en->fr + fr->en with supervised aligning heads, AER per direction and symmetrized, eflomal
	$(PY) -m mt.align prepare-gold --out data/align
	$(PY) scripts/prepare_align_corpus.py
	@# Each direction resumes from where its run stopped (interrupted, or finished with fewer
	@# train.max_steps than the recipe's now); a run already at the recipe's steps is only re-tested.
	for pair in en-fr fr-en; do \
	  $(PY) -m mt.train experiment=align_$${pair/-/_}_tok hydra.run.dir=$(ALIGN_RUNS)/$$pair train.resume=true $(ARGS) || exit 1; \
	done
	@# Each direction's attention averaged over the run's last five weight snapshots (the recipe keeps them).
	$(PY) scripts/align_report.py --forward $(ALIGN_RUNS)/en-fr/checkpoints/step-*.pt \
	  --reverse $(ALIGN_RUNS)/fr-en/checkpoints/step-*.pt \
	  --name "supervised aligning heads, last five snapshots" --json $(ALIGN_RUNS)/report.json
	$(PY) scripts/baseline_eflomal.py

bench: install ## training and decoding throughput of the default model
	$(PY) scripts/bench_train.py $(ARGS)
	$(PY) scripts/bench_decode.py $(ARGS)

test: install ## run the whole test suite (what CI runs)
	$(PY) -m pytest

test-fast: install ## the tests that train nothing (-m "not slow"), for a quick loop
	$(PY) -m pytest -m "not slow"

lint: install ## ruff: lint and formatting check (also part of the test suite)
	$(VENV)/bin/ruff check mt tests scripts
	$(VENV)/bin/ruff format --check mt tests scripts

format: install ## apply ruff's formatting and safe lint fixes
	$(VENV)/bin/ruff check --fix mt tests scripts
	$(VENV)/bin/ruff format mt tests scripts

clean: ## remove runs, caches and the venv
	rm -rf $(VENV) outputs multirun data/cache data/multi30k .pytest_cache .ruff_cache
