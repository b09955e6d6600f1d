# `make demo` and `make test` work on a fresh machine: `setup` creates .venv and installs all.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo

.PHONY: setup demo test test-fast bench lint clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/refine run configs/demo.yaml --input 'tests/data/warc/*.gz' \
		--output $(DEMO) --workers 2 --overwrite
	$(VENV)/bin/refine report $(DEMO)
	$(PY) -m pretrain.tokenizer --data $(DEMO)/data --out $(DEMO)-tokenizer --vocab-size 8000 \
		--overwrite
	$(PY) -m pretrain.tokenize --data $(DEMO)/data --tokenizer $(DEMO)-tokenizer \
		--out $(DEMO)-tokens --val-fraction 0.05 --workers 2 --overwrite
	$(PY) -m pretrain.hf_export --tokenizer $(DEMO)-tokenizer --out $(DEMO)-hf-tokenizer
	$(PY) -m pretrain.dataset --tokens $(DEMO)-tokens --seq-len 512 --world-size 2
	rm -rf $(DEMO)-ckpt $(DEMO)-hf
	$(PY) pretrain/train.py --config configs/pretrain/tiny.yaml \
		--deepspeed_config configs/deepspeed/zero1.json --data $(DEMO)-tokens \
		--output $(DEMO)-ckpt --steps 20 --tokenizer $(DEMO)-tokenizer
	$(PY) -m pretrain.export $(DEMO)-ckpt $(DEMO)-hf --tokenizer $(DEMO)-hf-tokenizer
	$(PY) pretrain/finetune.py --init $(DEMO)-hf --task classify \
		--data tests/data/finetune/msr_paraphrase_train.txt \
		--eval_data tests/data/finetune/msr_paraphrase_test.txt --output $(DEMO)-mrpc \
		--steps 60 --lr 5e-4 --micro_batch_size 16 --seq_len 128

# headless Chromium for tests/test_report.py (Debian packages; needs root or sudo)
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

lint: setup
	$(VENV)/bin/ruff check refine pretrain tests bench

clean:
	rm -rf runs .pytest_cache .ruff_cache
