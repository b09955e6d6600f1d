"""Encode a refine run's `data/` into flat token shards, in parallel on Ray.

    python -m pretrain.tokenize --data RUN/data --tokenizer TOK --out TOKENS [--address ADDR]

Work is partitioned by input Parquet file: one job per file, run on a pool of Ray actors that
each load the SentencePiece model once. Each job streams its file in record batches, encodes
every document followed by EOS (no BOS), and writes its own outputs atomically (temp name,
then os.replace). Output therefore depends only on the data, the tokenizer and the validation
fraction: byte-identical across reruns and any number of workers. Encoding is
`pretrain.codec.LosslessTokenizer`'s: SentencePiece's ids, except that a literal U+2581 becomes
its byte pieces, so every document decodes back to its exact text.

Layout of TOKENS/ (the contract `pretrain.dataset` reads):

    manifest.json                 format, dtype, tokenizer (absolute path, sha256, encoding),
                                  source run config hash, split rule, per-shard
                                  documents/tokens/sha256, totals
    train/{shard}.bin             token ids, little-endian uint16 (uint32 if the vocab has more
                                  than 65,536 pieces), each document's ids then EOS, back to back
    train/{shard}.idx.npy         int64 offsets (in tokens) of each document's start, plus the end:
                                  document k is bin[idx[k]:idx[k + 1]] (its last token is EOS)
    val/{shard}.bin, .idx.npy     the same for validation documents

`{shard}` is the input file's name without `.parquet`. Documents keep their order in the input
file; a document is in validation when blake2b(id) / 2**64 < the validation fraction, so the
split is stable per document whatever else is in the run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np

from pretrain.codec import ENCODING, LosslessTokenizer
from pretrain.files import parquet_files, setup_logging, sha256_file, source_info, write_json
from pretrain.tokenizer import MODEL_FILE, load_metadata

log = logging.getLogger("pretrain.tokenize")

FORMAT = "pretrain-tokens/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
SPLIT_PERSON = b"pretrain-split"  # blake2b personalisation: this hash is only for the split


def token_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    """uint16 while every id fits (vocab <= 65,536), else uint32; little-endian either way."""
    if requested == "auto":
        requested = "uint16" if vocab_size <= 1 << 16 else "uint32"
    if requested == "uint16" and vocab_size > 1 << 16:
        raise ValueError(f"vocab of {vocab_size} does not fit uint16")
    if requested not in ("uint16", "uint32"):
        raise ValueError(f"dtype must be auto, uint16 or uint32, not {requested}")
    return np.dtype(requested).newbyteorder("<")


def is_validation(doc_id: str, val_fraction: float) -> bool:
    """Stable split: blake2b of the document id, as a fraction of 2**64, below val_fraction."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8, person=SPLIT_PERSON)
    return int.from_bytes(digest.digest(), "little") < val_fraction * 2.0**64


@dataclass
class _SplitWriter:
    """One split's .bin (streamed to a temp file, hashed on the way) and its offsets."""

    directory: Path
    name: str
    dtype: np.dtype
    offsets: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.temp = self.directory / f".{self.name}.bin.tmp"
        self.stream = open(self.temp, "wb")  # noqa: SIM115 - closed in finish()
        self.digest = hashlib.sha256()

    def add(self, documents: list[list[int]]) -> None:
        lengths = [len(ids) for ids in documents]
        self.offsets += list(accumulate(lengths, initial=self.offsets[-1]))[1:]
        data = np.fromiter(chain.from_iterable(documents), dtype=self.dtype,
                           count=sum(lengths)).tobytes()
        self.stream.write(data)
        self.digest.update(data)

    def finish(self) -> dict[str, Any]:
        self.stream.close()
        index_temp = self.directory / f".{self.name}.idx.npy.tmp"
        with open(index_temp, "wb") as stream:
            np.save(stream, np.asarray(self.offsets, dtype="<i8"))
        os.replace(index_temp, self.directory / f"{self.name}.idx.npy")
        os.replace(self.temp, self.directory / f"{self.name}.bin")
        return {"documents": len(self.offsets) - 1, "tokens": self.offsets[-1],
                "sha256": self.digest.hexdigest()}


class ShardEncoder:
    """Ray actor: loads the SentencePiece model once, encodes whole Parquet files."""

    def __init__(self, model_proto: bytes, dtype: str, val_fraction: float, batch_rows: int):
        self.tokenizer = LosslessTokenizer(model_proto)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.val_fraction = val_fraction
        self.batch_rows = batch_rows

    def encode_file(self, source: str, out_dir: str) -> dict[str, Any]:
        import pyarrow.parquet as pq

        started, cpu_started = time.monotonic(), time.process_time()
        name = Path(source).name.removesuffix(".parquet")
        writers = {split: _SplitWriter(Path(out_dir) / split, name, self.dtype)
                   for split in SPLITS}
        encode_s, characters = 0.0, 0
        parquet = pq.ParquetFile(source)
        for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=["id", "text"]):
            ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
            characters += sum(map(len, texts))
            tick = time.monotonic()
            encoded = self.tokenizer.encode_batch(texts, add_eos=True, num_threads=1)
            encode_s += time.monotonic() - tick
            val = [is_validation(doc_id, self.val_fraction) for doc_id in ids]
            writers["train"].add([e for e, v in zip(encoded, val, strict=True) if not v])
            writers["val"].add([e for e, v in zip(encoded, val, strict=True) if v])
        summary: dict[str, Any] = {"source": Path(source).name, "name": name}
        for split, writer in writers.items():
            summary[split] = writer.finish()
        summary["timing"] = {"seconds": time.monotonic() - started, "encode_seconds": encode_s,
                             "cpu_seconds": time.process_time() - cpu_started,
                             "characters": characters, "pid": os.getpid()}
        return summary


@dataclass
class TokenizeResult:
    out_dir: Path
    manifest: dict[str, Any]
    shards: list[dict[str, Any]]  # per-shard summaries with timing (not in the manifest)
    wall_s: float


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if (out_dir / MANIFEST).exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir / MANIFEST} exists (use --overwrite)")
        (out_dir / MANIFEST).unlink()
    for split in SPLITS:
        if (out_dir / split).exists():  # only our own sub-directories, never out_dir itself
            shutil.rmtree(out_dir / split)
    out_dir.mkdir(parents=True, exist_ok=True)


def _run_actors(files: list[Path], out_dir: Path, model_proto: bytes, dtype: str,
                val_fraction: float, workers: int | None, batch_rows: int,
                address: str | None) -> list[dict[str, Any]]:
    import ray

    from refine.dag import init_ray

    init_ray(address)
    cpus = ray.available_resources().get("CPU", 1.0)
    size = max(1, min(workers or int(max(1, cpus)), len(files)))
    # Fractional reservations so the pool always fits what is free (see DESIGN pitfalls).
    actor_cls = ray.remote(num_cpus=min(1.0, max(0.1, cpus / size)))(ShardEncoder)
    proto_ref = ray.put(model_proto)
    actors = [actor_cls.remote(proto_ref, dtype, val_fraction, batch_rows) for _ in range(size)]
    log.info("encoding %d files on %d actors", len(files), size)
    # Largest files first for balance; the outputs do not depend on the schedule.
    queue = sorted(files, key=lambda p: (-p.stat().st_size, p.name))
    pending: dict[Any, Any] = {}
    summaries: list[dict[str, Any]] = []
    idle = list(actors)
    started = time.monotonic()
    try:
        while queue or pending:
            while queue and idle:
                actor = idle.pop()
                source = str(queue.pop(0).resolve())  # absolute: actors may run elsewhere
                pending[actor.encode_file.remote(source, str(out_dir.resolve()))] = actor
            done, _ = ray.wait(list(pending), num_returns=1)
            idle.append(pending.pop(done[0]))
            summary = ray.get(done[0])
            summaries.append(summary)
            tokens = summary["train"]["tokens"] + summary["val"]["tokens"]
            log.info("[%d/%d] %s: %d docs, %d tokens (%.0f tokens/s in the actor)",
                     len(summaries), len(files), summary["name"],
                     summary["train"]["documents"] + summary["val"]["documents"], tokens,
                     tokens / max(summary["timing"]["seconds"], 1e-9))
        log.info("encoded %d files in %.1f s", len(files), time.monotonic() - started)
    finally:
        for actor in actors:
            ray.kill(actor)
    return summaries


def tokenize_run(data_dir: Path, tokenizer_dir: Path, out_dir: Path, val_fraction: float = 0.01,
                 workers: int | None = None, address: str | None = None, dtype: str = "auto",
                 batch_rows: int = 256, overwrite: bool = False) -> TokenizeResult:
    """Encode every Parquet file of `data_dir` into TOKENS (`out_dir`); write the manifest."""
    started = time.monotonic()
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError("val_fraction must be in [0, 1)")
    files = parquet_files(data_dir)
    model_file = Path(tokenizer_dir) / MODEL_FILE
    model_proto = model_file.read_bytes()
    processor = LosslessTokenizer(model_proto)
    vocab_size = processor.piece_size()
    np_dtype = token_dtype(vocab_size, dtype)
    _prepare_out(out_dir, overwrite)
    summaries = _run_actors(files, out_dir, model_proto, np_dtype.name, val_fraction, workers,
                            batch_rows, address)
    summaries.sort(key=lambda s: s["name"])
    try:
        tokenizer_meta = load_metadata(tokenizer_dir)
    except FileNotFoundError:
        tokenizer_meta = {}
    manifest = {
        "format": FORMAT,
        "dtype": np_dtype.name,
        "byte_order": "little",
        "eos_id": processor.eos_id(),
        "bos_id": processor.bos_id(),
        "bos_added": False,
        "vocab_size": vocab_size,
        "tokenizer": {"path": str(Path(tokenizer_dir).resolve()),
                      "model_sha256": sha256_file(model_file), "encoding": ENCODING,
                      "trained_on_run_config_hash":
                          tokenizer_meta.get("source", {}).get("run_config_hash")},
        "source": source_info(data_dir),
        "split": {"rule": "blake2b(id, digest_size=8, person='pretrain-split') / 2**64 "
                          "< val_fraction", "val_fraction": val_fraction},
        "shards": [{key: s[key] for key in ("name", "source", *SPLITS)} for s in summaries],
        "totals": {split: {"documents": sum(s[split]["documents"] for s in summaries),
                           "tokens": sum(s[split]["tokens"] for s in summaries)}
                   for split in SPLITS},
        "versions": {"sentencepiece": metadata.version("sentencepiece")},
    }
    write_json(out_dir / MANIFEST, manifest)
    wall = time.monotonic() - started
    totals = manifest["totals"]
    log.info("wrote %s: train %d docs / %d tokens, val %d docs / %d tokens, %s, %.1f s",
             out_dir, totals["train"]["documents"], totals["train"]["tokens"],
             totals["val"]["documents"], totals["val"]["tokens"], np_dtype.name, wall)
    return TokenizeResult(out_dir, manifest, summaries, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.tokenize",
        description="Encode a refine run's kept documents into flat token shards (EOS after "
                    "each document) on Ray, one job per Parquet file, with a stable train/"
                    "validation split by document id. Writes TOKENS/{train,val}/*.bin, "
                    "*.idx.npy and TOKENS/manifest.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a refine run's data/ directory")
    parser.add_argument("--tokenizer", type=Path, required=True,
                        help="TOK directory from `python -m pretrain.tokenizer`")
    parser.add_argument("--out", type=Path, required=True, help="TOKENS output directory")
    parser.add_argument("--val-fraction", type=float, default=0.01,
                        help="share of documents (by id hash) that go to val/")
    parser.add_argument("--workers", type=int, default=None,
                        help="encoding actors (default: one per available CPU, at most one per "
                             "input file)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: start a local Ray); paths must be "
                             "visible to every node")
    parser.add_argument("--dtype", choices=("auto", "uint16", "uint32"), default="auto",
                        help="token dtype; auto = uint16 unless the vocab needs uint32")
    parser.add_argument("--batch-rows", type=int, default=256,
                        help="documents read and encoded at a time per actor")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing TOKENS directory's manifest and shards")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    args = parser.parse_args(argv)
    setup_logging(not args.quiet)
    try:
        tokenize_run(args.data, args.tokenizer, args.out, args.val_fraction, args.workers,
                     args.address, args.dtype, args.batch_rows, args.overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
