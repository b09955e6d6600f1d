# `make demo` and `make test` work on a fresh machine: `setup` creates .venv and installs all.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo

LOCK   := requirements.lock
# uv resolves the lock (fast, hashes for every file); pip installs it, so torch comes from the
# CPU wheel pip finds on this kind of machine (PIP_FIND_LINKS) and never from a CUDA download.
UV_VERSION := 0.13.9
LOCKENV    := build/lockenv
FIND_LINKS ?= $(PIP_FIND_LINKS)

.PHONY: setup lock demo test test-fast bench lint clean browser gpu-bundle

setup: $(STAMP)

# Everything comes from the lock, hash-checked; the project itself is installed without deps.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

# Refresh the lock to the newest versions pyproject.toml allows; then run `make test`.
lock:
	test -x $(LOCKENV)/bin/uv || { python3 -m venv $(LOCKENV) && \
		$(LOCKENV)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(LOCKENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --upgrade \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(if $(FIND_LINKS),--find-links $(FIND_LINKS)) --no-emit-find-links \
		--custom-compile-command "make lock" -o $(LOCK)

demo: setup
	$(VENV)/bin/refine run configs/demo.yaml --input 'tests/data/warc/*.gz' \
		--output $(DEMO) --workers 2 --overwrite
	$(VENV)/bin/refine report $(DEMO)
	$(PY) -m pretrain.tokenizer --data $(DEMO)/data --out $(DEMO)-tokenizer --vocab-size 8000 \
		--overwrite
	$(PY) -m pretrain.encode --data $(DEMO)/data --tokenizer $(DEMO)-tokenizer \
		--out $(DEMO)-tokens --val-fraction 0.05 --workers 2 --overwrite
	$(PY) -m pretrain.hf_export --tokenizer $(DEMO)-tokenizer --out $(DEMO)-hf-tokenizer
	$(PY) -m pretrain.dataset --tokens $(DEMO)-tokens --seq-len 512 --world-size 2
	rm -rf $(DEMO)-ckpt $(DEMO)-hf
	$(PY) pretrain/train.py --config configs/pretrain/tiny.yaml \
		--deepspeed_config configs/deepspeed/zero1.json --data $(DEMO)-tokens \
		--output $(DEMO)-ckpt --steps 20 --tokenizer $(DEMO)-tokenizer
	$(PY) -m pretrain.export $(DEMO)-ckpt $(DEMO)-hf   # the tokenizer the checkpoint recorded
	$(PY) pretrain/finetune.py --init $(DEMO)-hf --task classify \
		--data tests/data/finetune/msr_paraphrase_train.txt \
		--eval_data tests/data/finetune/msr_paraphrase_test.txt --output $(DEMO)-mrpc --overwrite \
		--steps 60 --lr 5e-4 --micro_batch_size 16 --seq_len 128
	$(PY) -m pretrain.evaluate $(DEMO)-hf --data $(DEMO)/data --max-docs 20 \
		--out $(DEMO)-hf/eval.json
	$(PY) -m pretrain.generate $(DEMO)-hf --prompt "The city council" --max-new-tokens 24 --seed 0

# headless Chromium for tests/test_report_chromium.py and the other tests of the report page
# (Debian packages; needs root or sudo)
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
		SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }

test: setup browser
	$(VENV)/bin/pytest -q -rs

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

bench: setup
	$(PY) bench/refine_throughput.py
	$(PY) bench/extraction_quality.py
	$(PY) bench/tokenizer.py
	$(PY) bench/train_throughput.py
	$(PY) bench/dedup.py
	$(PY) bench/report.py
	$(PY) bench/scaling.py

# Wheels that bench/gpu_check.sh installs on a GPU machine that has torch but lacks some of our
# other dependencies (bench/gpu_bundle.py says which), for that machine's Python: GPU_PYTHON,
# by default the lent H100/H200 image's.
GPU_BUNDLE ?= build/gpu-bundle
GPU_PYTHON ?= 3.12

gpu-bundle: setup
	$(PY) bench/gpu_bundle.py --python $(GPU_PYTHON) --out $(GPU_BUNDLE)

lint: setup
	$(VENV)/bin/ruff check refine pretrain tests bench

clean:
	rm -rf runs .pytest_cache .ruff_cache
