"""Pretraining side: tokenizer, token shards, memmap dataset, `transformers` export.

Pipeline (each step a `python -m` CLI reading the previous step's directory):

    refine run ... --output RUN                       # RUN/data/*.parquet, RUN/manifest.json
    python -m pretrain.tokenizer --data RUN/data --out TOK --vocab-size 32000
    python -m pretrain.encode  --data RUN/data --tokenizer TOK --out TOKENS
    python -m pretrain.hf_export --tokenizer TOK --out HF_TOKENIZER
    python -m pretrain.dataset   --tokens TOKENS --seq-len 2048   # what training will read

`pretrain.dataset.TokenDataset` reads TOKENS for training.
"""

__version__ = "0.1.0"
