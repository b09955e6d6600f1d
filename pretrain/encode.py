"""Encode a refine run's `data/` into flat token shards, in parallel on Ray.

    python -m pretrain.encode --data RUN/data --tokenizer TOK --out TOKENS [--address ADDR]

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

`--data`, `--tokenizer` and `--out` may be URLs (`s3://bucket/runs/r1/data`, `gs://...`), read
and written through fsspec with credentials from the environment (never the command line, never
recorded). With a remote `--out`, each actor writes a shard into a local temporary directory and
uploads its finished files whole (an object store has no rename); the manifest is written last,
once every shard is there. Training memory-maps TOKENS from a local disk: copy a remote TOKENS to
the training machine first (`aws s3 sync s3://bucket/tokens ./tokens`, or fsspec's
`get(..., recursive=True)`), or tokenize there with a local `--out`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np

from pretrain.codec import ENCODING, LosslessTokenizer
from pretrain.dataset import FORMAT, MANIFEST, SPLITS
from pretrain.files import (
    Location,
    as_location,
    describe,
    exists,
    is_remote,
    open_parquet,
    parquet_files,
    read_bytes,
    setup_logging,
    source_info,
    storage,
    write_json,
)
from pretrain.tokenizer import MODEL_FILE, load_metadata

log = logging.getLogger("pretrain.encode")

SPLIT_PERSON = b"pretrain-split"  # blake2b personalisation: this hash is only for the split
# what a split directory may hold: shards and the temp files of an interrupted run
SHARD_FILE = re.compile(r"[^/]+\.(bin|idx\.npy)|\.[^/]+\.(bin|idx\.npy)\.tmp")


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
        """Encode `source` (a local path or a URL) into `out_dir`'s train/ and val/. A remote
        `out_dir` gets the files once finished, each uploaded whole from a local staging copy."""
        if not is_remote(out_dir):
            return self._encode(source, Path(out_dir))
        with tempfile.TemporaryDirectory(prefix="pretrain-tokenize-") as staging:
            summary = self._encode(source, Path(staging))
            tick = time.monotonic()
            store = storage(out_dir)
            for split in SPLITS:
                for name in (f"{summary['name']}.idx.npy", f"{summary['name']}.bin"):
                    store.fs.put_file(os.path.join(staging, split, name), store.path(split, name))
            summary["timing"]["upload_seconds"] = time.monotonic() - tick
        return summary

    def _encode(self, source: str, out_dir: Path) -> dict[str, Any]:
        started, cpu_started = time.monotonic(), time.process_time()
        source_name = posixpath.basename(source)
        name = source_name.removesuffix(".parquet")
        writers = {split: _SplitWriter(out_dir / split, name, self.dtype) for split in SPLITS}
        encode_s, characters = 0.0, 0
        with open_parquet(source) as parquet:
            for batch in parquet.iter_batches(batch_size=self.batch_rows,
                                              columns=["id", "text"]):
                ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
                characters += sum(map(len, texts))
                tick = time.monotonic()
                encoded = self.tokenizer.encode_batch(texts, add_eos=True, num_threads=1)
                encode_s += time.monotonic() - tick
                val = [is_validation(doc_id, self.val_fraction) for doc_id in ids]
                writers["train"].add([e for e, v in zip(encoded, val, strict=True) if not v])
                writers["val"].add([e for e, v in zip(encoded, val, strict=True) if v])
        summary: dict[str, Any] = {"source": source_name, "name": name}
        for split, writer in writers.items():
            summary[split] = writer.finish()
        summary["timing"] = {"seconds": time.monotonic() - started, "encode_seconds": encode_s,
                             "cpu_seconds": time.process_time() - cpu_started,
                             "characters": characters, "pid": os.getpid()}
        return summary


@dataclass
class TokenizeResult:
    out_dir: Location
    manifest: dict[str, Any]
    shards: list[dict[str, Any]]  # per-shard summaries with timing (not in the manifest)
    wall_s: float


def _split_entries(out_dir: Location, split: str) -> list[tuple[str, bool]] | None:
    """(name, is a file) of what is in `out_dir/split`; None when it does not exist."""
    if is_remote(out_dir):
        store = storage(out_dir)
        try:
            found = store.fs.ls(store.path(split), detail=True)
        except FileNotFoundError:
            return None
        return [(posixpath.basename(entry["name"].rstrip("/")), entry["type"] == "file")
                for entry in found]
    directory = Path(out_dir) / split
    if not directory.exists():
        return None
    if not directory.is_dir():
        return [(split, True)]
    return [(entry.name, entry.is_file() and not entry.is_symlink())
            for entry in directory.iterdir()]


def _prepare_out(out_dir: Location, overwrite: bool) -> None:
    """Make `out_dir` ready for new shards. Only what this command writes is ever removed: a
    TOKENS manifest (with `overwrite`), and train/ and val/ when they hold shard files only
    (an earlier run's, or an interrupted one's); anything else is refused, nothing removed."""
    where = describe(out_dir)
    if exists(out_dir, MANIFEST):
        try:
            kind = json.loads(read_bytes(out_dir, MANIFEST)).get("format")
        except (ValueError, AttributeError):
            kind = None
        if kind != FORMAT:
            raise FileExistsError(f"{where} is not a TOKENS directory (its {MANIFEST} is not "
                                  f"{FORMAT}); choose another --out")
        if not overwrite:
            raise FileExistsError(f"{where}/{MANIFEST} exists (use --overwrite)")
    for split in SPLITS:
        entries = _split_entries(out_dir, split) or []
        strays = [name for name, is_file in entries
                  if not (is_file and SHARD_FILE.fullmatch(name))]
        if strays:
            raise FileExistsError(f"{where}/{split} holds files that are not token shards "
                                  f"({', '.join(sorted(strays)[:3])}); choose another --out")
    if is_remote(out_dir):
        store = storage(out_dir)
        store.remove(store.path(MANIFEST))
        for split in SPLITS:  # only our own sub-directories, never out_dir itself
            store.remove_tree(split)
        return
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).exists():
        (out_dir / MANIFEST).unlink()
    for split in SPLITS:
        if (out_dir / split).exists():  # only our own sub-directories, never out_dir itself
            shutil.rmtree(out_dir / split)
    out_dir.mkdir(parents=True, exist_ok=True)


def _sizes(files: list[str]) -> list[int]:
    if not files or not is_remote(files[0]):
        return [os.path.getsize(path) for path in files]
    store = storage(posixpath.dirname(files[0]))  # one listing, not a request per file
    sizes = {store.fs.unstrip_protocol(entry["name"]): entry["size"]
             for entry in store.fs.ls(store.root, detail=True)}
    return [sizes[path] for path in files]


def _run_actors(files: list[str], out_dir: Location, model_proto: bytes, dtype: str,
                val_fraction: float, workers: int | None, batch_rows: int,
                address: str | None) -> list[dict[str, Any]]:
    from refine.dag import map_actors

    # Largest files first for balance; the outputs do not depend on the schedule.
    queue = [path for _, _, path in sorted(zip((-size for size in _sizes(files)),
                                               map(posixpath.basename, files), files,
                                               strict=True))]
    target = describe(out_dir)  # absolute or a URL: actors may run elsewhere
    summaries: list[dict[str, Any]] = []
    started = time.monotonic()
    log.info("encoding %d files", len(files))
    for summary in map_actors(ShardEncoder, (model_proto, dtype, val_fraction, batch_rows),
                              "encode_file", [(source, target) for source in queue], workers,
                              address):
        summaries.append(summary)
        tokens = summary["train"]["tokens"] + summary["val"]["tokens"]
        log.info("[%d/%d] %s: %d docs, %d tokens (%.0f tokens/s in the actor)",
                 len(summaries), len(files), summary["name"],
                 summary["train"]["documents"] + summary["val"]["documents"], tokens,
                 tokens / max(summary["timing"]["seconds"], 1e-9))
    log.info("encoded %d files in %.1f s", len(files), time.monotonic() - started)
    return summaries


def tokenize_run(data_dir: Location, tokenizer_dir: Location, out_dir: Location,
                 val_fraction: float = 0.01, workers: int | None = None,
                 address: str | None = None, dtype: str = "auto", batch_rows: int = 256,
                 overwrite: bool = False) -> TokenizeResult:
    """Encode every Parquet file of `data_dir` into TOKENS (`out_dir`); write the manifest.
    Each of the three may be a local path or a URL (s3://...)."""
    started = time.monotonic()
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError("val_fraction must be in [0, 1)")
    files = parquet_files(data_dir)
    model_proto = read_bytes(tokenizer_dir, MODEL_FILE)
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
        "tokenizer": {"path": describe(tokenizer_dir),
                      "model_sha256": hashlib.sha256(model_proto).hexdigest(),
                      "encoding": ENCODING,
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
    if is_remote(out_dir):  # last: the shards are all there once the manifest is
        storage(out_dir).write_json(manifest, MANIFEST)
    else:
        write_json(Path(out_dir) / MANIFEST, manifest)
    wall = time.monotonic() - started
    totals = manifest["totals"]
    log.info("wrote %s: train %d docs / %d tokens, val %d docs / %d tokens, %s, %.1f s",
             out_dir, totals["train"]["documents"], totals["train"]["tokens"],
             totals["val"]["documents"], totals["val"]["tokens"], np_dtype.name, wall)
    return TokenizeResult(out_dir, manifest, summaries, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.encode",
        description="Encode a refine run's kept documents into flat token shards (EOS after "
                    "each document) on Ray, one job per Parquet file, with a stable train/"
                    "validation split by document id. Writes TOKENS/{train,val}/*.bin, "
                    "*.idx.npy and TOKENS/manifest.json.",
        epilog="--data, --tokenizer and --out may be URLs (s3://bucket/runs/r1/data, gs://...), "
               "read and written through fsspec (pip install s3fs or gcsfs); credentials and "
               "endpoint come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
               "AWS_ENDPOINT_URL, a profile or an instance role), never from the command line; "
               "with --address, every node needs them in its environment. Training reads TOKENS "
               "from a local disk: copy a remote --out to the training machine first (aws s3 "
               "sync s3://bucket/tokens ./tokens, or fsspec's get(..., recursive=True)), or run "
               "this there with a local --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=as_location, required=True,
                        help="a refine run's data/ directory, local or a URL")
    parser.add_argument("--tokenizer", type=as_location, required=True,
                        help="TOK directory from `python -m pretrain.tokenizer`, local or a URL")
    parser.add_argument("--out", type=as_location, required=True,
                        help="TOKENS output directory, local or a URL (the manifest is written "
                             "last)")
    parser.add_argument("--val-fraction", type=float, default=0.01,
                        help="share of documents (by id hash) that go to val/")
    parser.add_argument("--workers", type=int, default=None,
                        help="encoding actors (default: one per available CPU, at most one per "
                             "input file)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: start a local Ray); paths must be "
                             "visible to every node (or be URLs)")
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
    except (OSError, ValueError) as error:  # as refine's CLI: one error: line, exit code 2
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
