"""Tokenizer training cost and encoding throughput; prints one JSON line per measurement.

Corpus: the kept documents of a refine run (--run RUN, or a fresh run of configs/demo.yaml over
../shared/data/warc/real-html) plus the real text samples in ../shared/data/text (the Common
Crawl text sample and the Lee news background corpus).

1. Training (`bench: tokenizer_train`), at each of --train-lines sizes: a data/ directory of
   that many lines, drawn with replacement (seeded) from the corpus's real non-empty lines and
   grouped 20 to a document, is trained on by `python -m pretrain.tokenizer` in a child
   process; we report its wall seconds and its peak RSS (ru_maxrss from wait4). Target:
   under 8 GB at 5 million lines.
2. Encoding (`bench: tokenizer_encode`): the corpus's documents, repeated to at least
   --encode-chars characters and written as --encode-shards Parquet files, are encoded by
   `pretrain.encode` on Ray (--workers actors) and, in this same process, by bare
   `sentencepiece` (one thread, the same batches). Tokens/s per core: Ray = tokens / wall /
   workers (wall from the call to the manifest, Ray already started), bare = tokens / wall;
   the CPU-time versions (tokens per CPU second) are reported too, as they are less sensitive
   to other load on the machine. Target: Ray >= 80% of bare per core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
LINES_PER_DOCUMENT = 20
RSS_TARGET_MB = 8 * 1024
RATIO_TARGET = 0.8


def log(message: str) -> None:
    print(f"[bench/tokenizer] {message}", file=sys.stderr, flush=True)


def make_run(into: Path, workers: int) -> Path:
    from refine.config import load_config
    from refine.dag import init_ray
    from refine.run import run

    inputs = sorted(str(p) for p in (SHARED / "warc" / "real-html").glob("*.warc.gz"))
    log(f"refining {len(inputs)} real-html WARC files with configs/demo.yaml")
    init_ray(None)
    run(load_config(ROOT / "configs" / "demo.yaml"), inputs, into, workers=workers)
    return into


def corpus_documents(run_dir: Path, text_dir: Path) -> tuple[list[str], dict[str, int]]:
    files = sorted((run_dir / "data").glob("*.parquet"))
    run_texts = [t for f in files for t in pq.read_table(f, columns=["text"])["text"].to_pylist()]
    texts = list(run_texts)
    sample = text_dir / "cc-main-2019-30-text-sample.jsonl.gz"
    if sample.exists():
        with gzip.open(sample, "rt") as stream:
            texts += [json.loads(line)["text"] for line in stream]
    news = text_dir / "lee-news-background.txt"
    if news.exists():
        texts += [line for line in news.read_text(encoding="utf-8").split("\n") if line.strip()]
    return texts, {"run_documents": len(run_texts), "other_documents": len(texts) - len(run_texts)}


def write_documents(directory: Path, texts: list[str], shards: int, prefix: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(texts) // shards)
    for shard in range(shards):
        part = texts[shard * per_shard:(shard + 1) * per_shard]
        ids = [f"{prefix}-{shard * per_shard + i}" for i in range(len(part))]
        pq.write_table(pa.table({"id": ids, "text": part}),
                       directory / f"{prefix}-{shard:04d}.parquet", compression="zstd")


def write_line_corpus(directory: Path, lines: list[str], count: int, seed: int) -> int:
    """`count` lines drawn with replacement, 20 to a document, in shards of 50,000 documents."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written, shard, total_bytes = 0, 0, 0
    while written < count:
        n = min(count - written, 50_000 * LINES_PER_DOCUMENT)
        drawn = rng.choices(lines, k=n)
        total_bytes += sum(len(x.encode("utf-8")) for x in drawn)
        texts = ["\n".join(drawn[i:i + LINES_PER_DOCUMENT])
                 for i in range(0, n, LINES_PER_DOCUMENT)]
        ids = [f"lines-{shard}-{i}" for i in range(len(texts))]
        pq.write_table(pa.table({"id": ids, "text": texts}),
                       directory / f"lines-{shard:04d}.parquet", compression="zstd")
        written += n
        shard += 1
    return total_bytes


def bench_training(lines: list[str], sizes: list[int], vocab: int, threads: int, work: Path,
                   seed: int) -> Path:
    """Train at each size in a child process; returns the smallest size's tokenizer dir."""
    first: Path | None = None
    for size in sizes:
        data = work / f"train-{size}" / "data"
        log(f"writing {size:,} lines for training")
        written_bytes = write_line_corpus(data, lines, size, seed)
        out = work / f"tok-{size}"
        command = [sys.executable, "-m", "pretrain.tokenizer", "--data", str(data), "--out",
                   str(out), "--vocab-size", str(vocab), "--threads", str(threads),
                   "--max-sentences", str(max(size, 1)), "--max-bytes", str(1 << 34), "--quiet"]
        log(f"training on {size:,} lines ({written_bytes / 1e6:.0f} MB)")
        started = time.monotonic()
        child = subprocess.Popen(command, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            sys.exit(f"training on {size} lines failed ({child.returncode})")
        meta = json.loads((out / "metadata.json").read_text())
        peak_mb = usage.ru_maxrss / 1024
        print(json.dumps({
            "bench": "tokenizer_train",
            "lines": meta["sample"]["sampled_lines"],
            "bytes": meta["sample"]["sampled_bytes"],
            "documents": meta["sample"]["documents"],
            "lines_source": f"drawn with replacement (seed {seed}) from {len(lines):,} "
                            "distinct real lines (refine run + shared text samples)",
            "vocab_size": meta["vocab_size"],
            "threads": threads,
            "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "rss_target_mb": RSS_TARGET_MB,
            "rss_ok": peak_mb < RSS_TARGET_MB,
        }), flush=True)
        first = first or out
        shutil.rmtree(data)
    assert first is not None
    return first


def bench_encoding(texts: list[str], tokenizer: Path, workers: int, min_chars: int,
                   shards: int, work: Path) -> None:
    import sentencepiece as spm

    from pretrain.encode import tokenize_run

    copies = max(1, -(-min_chars // sum(map(len, texts))))
    tiled = texts * copies
    data = work / "encode" / "data"
    write_documents(data, tiled, shards, "doc")
    characters = sum(map(len, tiled))
    log(f"encoding {len(tiled):,} documents ({characters / 1e6:.0f} M characters)")

    processor = spm.SentencePieceProcessor(model_file=str(tokenizer / "tokenizer.model"))
    batches = [pq.read_table(f, columns=["text"])["text"].to_pylist()
               for f in sorted(data.glob("*.parquet"))]
    bare_tokens = 0
    started, cpu_started = time.monotonic(), time.process_time()
    for shard in batches:
        for i in range(0, len(shard), 256):
            encoded = processor.encode(shard[i:i + 256], add_eos=True, num_threads=1)
            bare_tokens += sum(map(len, encoded))
    bare_s, bare_cpu = time.monotonic() - started, time.process_time() - cpu_started
    del batches

    from refine.dag import init_ray

    init_ray(None)
    result = tokenize_run(data, tokenizer, work / "encode" / "tokens", val_fraction=0.01,
                          workers=workers, overwrite=True)
    totals = result.manifest["totals"]
    ray_tokens = totals["train"]["tokens"] + totals["val"]["tokens"]
    assert ray_tokens == bare_tokens, (ray_tokens, bare_tokens)
    actor_s = sum(s["timing"]["seconds"] for s in result.shards)
    actor_cpu = sum(s["timing"]["cpu_seconds"] for s in result.shards)
    actor_encode = sum(s["timing"]["encode_seconds"] for s in result.shards)
    bare_rate = bare_tokens / bare_s
    ray_rate = ray_tokens / result.wall_s / workers
    print(json.dumps({
        "bench": "tokenizer_encode",
        "documents": len(tiled),
        "characters": characters,
        "tokens": ray_tokens,
        "text": f"refine run + shared text samples, {copies} copies, {shards} Parquet files",
        "vocab_size": processor.get_piece_size(),
        "workers": workers,
        "cpus": os.cpu_count(),
        "bare_tokens_per_s_per_core": round(bare_rate),
        "ray_tokens_per_s_per_core": round(ray_rate),
        "ratio": round(ray_rate / bare_rate, 3),
        "ratio_target": RATIO_TARGET,
        "ratio_ok": ray_rate / bare_rate >= RATIO_TARGET,
        "bare_wall_s": round(bare_s, 2),
        "ray_wall_s": round(result.wall_s, 2),
        "ray_actor_busy_s": round(actor_s, 2),
        "ray_tokens_per_busy_actor_s": round(ray_tokens / actor_s),
        "ray_encode_share_of_actor_time": round(actor_encode / actor_s, 3),
        "bare_tokens_per_cpu_s": round(bare_tokens / bare_cpu),
        "ray_tokens_per_actor_cpu_s": round(ray_tokens / actor_cpu),
        "cpu_ratio": round((ray_tokens / actor_cpu) / (bare_tokens / bare_cpu), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None,
                        help="an existing refine run (default: refine real-html into a temp dir)")
    parser.add_argument("--text", type=Path, default=SHARED / "text",
                        help="directory with the shared real text samples")
    parser.add_argument("--train-lines", default="50000,500000,5000000",
                        help="comma-separated training sample sizes, in lines")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="SentencePiece trainer threads")
    parser.add_argument("--workers", type=int, default=2, help="Ray encoding actors")
    parser.add_argument("--encode-chars", type=int, default=100_000_000,
                        help="encode at least this many characters")
    parser.add_argument("--encode-shards", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(x) for x in args.train_lines.split(",") if x]

    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as temp:
        work = Path(temp)
        run_dir = args.run or make_run(work / "run", args.workers)
        texts, counts = corpus_documents(run_dir, args.text)
        lines = sorted({line for text in texts for line in text.split("\n") if line.strip()})
        log(f"corpus: {counts}, {len(lines):,} distinct non-empty lines")
        tokenizer = bench_training(lines, sizes, args.vocab_size, args.threads, work, args.seed)
        bench_encoding(texts, tokenizer, args.workers, args.encode_chars, args.encode_shards,
                       work)


if __name__ == "__main__":
    main()
