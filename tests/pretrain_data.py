"""Real text for the pretrain tests: a refine run's kept documents and the shared text samples."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq

DATA = Path(__file__).parent / "data"

VOCAB_SIZE = 3000  # the test tokenizer's vocab: small, so training takes a second
VAL_FRACTION = 0.1  # the test token shards' validation share (a few of ~120 documents)


def kept_documents(run_dir: Path) -> list[dict]:
    """(id, text) rows of a run's data/, in the order pretrain reads them (files sorted)."""
    files = sorted((run_dir / "data").glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=["id", "text"]).to_pylist()]


def real_texts(run_dir: Path, limit: int = 1000) -> list[str]:
    """Up to `limit` real documents: the run's kept texts, then the CC text sample, then
    non-empty lines of the Lee news corpus."""
    texts = [row["text"] for row in kept_documents(run_dir)]
    with gzip.open(DATA / "text" / "cc-main-2019-30-text-sample.jsonl.gz", "rt") as stream:
        texts += [json.loads(line)["text"] for line in stream]
    news = (DATA / "text" / "lee-news-background.txt").read_text(encoding="utf-8")
    texts += [line for line in news.split("\n") if line.strip()]
    return texts[:limit]


def news_sft(path: Path, count: int = 48) -> Path:
    """Prompt/response pairs from real news: 'Continue: <12 words>' -> the next 16 words."""
    rows = []
    news = (DATA / "text" / "lee-news-background.txt").read_text(encoding="utf-8")
    for line in news.splitlines()[:count]:
        words = line.split()
        rows.append({"prompt": "Continue: " + " ".join(words[:12]),
                     "response": " ".join(words[12:28])})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
