"""Small file helpers shared by the pretraining steps: atomic writes, hashes, run inputs.

A location (`--data`, `--out`, `--tokenizer`) is a local path or a URL fsspec knows
(`s3://bucket/runs/r1/data`, `gs://...`, `memory://...`). Remote ones are read and written
through fsspec (`refine.rundir.RunDir`), with credentials and endpoints from the environment
(`AWS_*` variables and `AWS_ENDPOINT_URL`, profiles, instance roles; Google's application
default credentials), never from the command line, and nothing of them is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq

from refine import arrowfile
from refine.atomic_file import write_json_atomic as write_json  # noqa: F401 (re-export)
from refine.rundir import RunDir

RUN_MANIFEST = "manifest.json"

Location = Path | str  # a local path, or the URL of a remote one (a str)


def setup_logging(verbose: bool = True) -> None:
    """Log lines like refine's CLI: `INFO pretrain.encode: ...` on stderr."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- locations: a local path or a URL ------------------------------------------------------

def is_remote(location: Location) -> bool:
    """Whether `location` is a URL of a non-local filesystem (s3://, gs://, memory://, ...)."""
    text = str(location)
    return (isinstance(location, str) and "://" in text
            and fsspec.utils.get_protocol(text) not in ("file", "local"))


def as_location(value: str) -> Location:
    """A command-line location: a URL of a remote filesystem stays a string (Path would fold
    its `//`), anything else is a Path (`file://` dropped)."""
    if is_remote(value):
        return value
    return Path(value.removeprefix("file://"))


def storage(location: Location) -> RunDir:
    """The fsspec filesystem and root of a remote location (RunDir: no cached listings)."""
    return RunDir(location)


def describe(location: Location) -> str:
    """How a location is recorded: a local path absolute and resolved, a URL without a
    trailing slash (credentials never appear in either)."""
    return storage(location).url() if is_remote(location) else str(Path(location).resolve())


def exists(location: Location, *parts: str) -> bool:
    if is_remote(location):
        return storage(location).exists(*parts)
    return Path(location, *parts).exists()


def read_bytes(location: Location, *parts: str) -> bytes:
    """The whole content of a file `parts` below `location` (FileNotFoundError if missing)."""
    if is_remote(location):
        store = storage(location)
        return store.fs.cat_file(store.path(*parts))
    return Path(location, *parts).read_bytes()


def file_name(location: str | Path) -> str:
    """The last part of a local path or a URL."""
    return posixpath.basename(str(location).rstrip("/"))


# --- a refine run's data/ ------------------------------------------------------------------

def parquet_files(data_dir: Location) -> list[str]:
    """The run's kept-document shards in a stable (sorted by name) order: absolute local
    paths, or URLs when `data_dir` is remote."""
    if is_remote(data_dir):
        store = storage(data_dir)
        files = [store.fs.unstrip_protocol(path) for path in store.files("")]
        if not files and not store.exists():
            raise FileNotFoundError(f"{store.url()} does not exist (expected a refine run's "
                                    "data/ directory)")
    else:
        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise FileNotFoundError(f"{data_dir} does not exist (expected a refine run's data/ "
                                    "directory)")
        files = [os.path.abspath(path) for path in sorted(data_dir.glob("*.parquet"))]
    if not files:
        raise FileNotFoundError(f"no *.parquet in {data_dir}")
    return files


def source_info(data_dir: Location) -> dict[str, Any]:
    """What the data directory is: the run's config hash (if RUN/manifest.json exists)."""
    info: dict[str, Any] = {"data": describe(data_dir), "run_config_hash": None,
                            "run_manifest_sha256": None}
    if is_remote(data_dir):
        store = storage(data_dir)
        try:
            raw = store.fs.cat_file(posixpath.join(posixpath.dirname(store.root), RUN_MANIFEST))
        except FileNotFoundError:
            return info
    else:
        manifest_path = Path(info["data"]).parent / RUN_MANIFEST
        if not manifest_path.is_file():
            return info
        raw = manifest_path.read_bytes()
    info["run_config_hash"] = json.loads(raw).get("config_hash")
    info["run_manifest_sha256"] = hashlib.sha256(raw).hexdigest()
    return info


@contextlib.contextmanager
def open_parquet(location: str | Path) -> Iterator[pq.ParquetFile]:
    """A ParquetFile over a local path or a remote object, streamed (see refine.arrowfile)."""
    fs, path = fsspec.core.url_to_fs(str(location))
    with arrowfile.parquet_file(fs, path) as parquet:
        yield parquet


def iter_documents(files: list[str], batch_rows: int = 1024) -> Iterator[tuple[str, str]]:
    """(id, text) for every row of the given Parquet files, streamed in record batches."""
    for path in files:
        with open_parquet(path) as parquet:
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=["id", "text"]):
                yield from zip(batch.column("id").to_pylist(),
                               batch.column("text").to_pylist(), strict=True)
