"""Small file helpers shared by the pretraining steps: atomic writes, hashes, run inputs.

A location (`--data`, `--out`, `--tokenizer`) is a local path or a URL fsspec knows
(`s3://bucket/runs/r1/data`, `gs://...`, `memory://...`). Remote ones are read and written
through fsspec (`refine.rundir.RunDir`), with credentials and endpoints from the environment
(`AWS_*` variables and `AWS_ENDPOINT_URL`, profiles, instance roles; Google's application
default credentials), never from the command line, and nothing of them is recorded. The helpers
that refine shares (`is_remote`, `as_location`, `exists`, `parquet_files`, ...) are
`refine.documents`', imported from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from refine import LOG_FORMAT
from refine.atomic_file import write_json_atomic as write_json  # noqa: F401 (re-export)
from refine.documents import (  # noqa: F401 (re-export)
    Location,
    as_location,
    exists,
    file_name,
    is_remote,
    open_parquet,
    parquet_files,
)
from refine.rundir import RunDir

RUN_MANIFEST = "manifest.json"


def setup_logging(verbose: bool = True) -> None:
    """Log lines like refine's CLI: `INFO pretrain.encode: ...` on stderr."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format=LOG_FORMAT)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- locations: a local path or a URL ------------------------------------------------------

def storage(location: Location) -> RunDir:
    """The fsspec filesystem and root of a remote location (RunDir: no cached listings)."""
    return RunDir(location)


def describe(location: Location) -> str:
    """How a location is recorded: a local path absolute and resolved, a URL without a
    trailing slash (credentials never appear in either)."""
    return storage(location).url() if is_remote(location) else str(Path(location).resolve())


def read_bytes(location: Location, *parts: str) -> bytes:
    """The whole content of a file `parts` below `location` (FileNotFoundError if missing)."""
    if is_remote(location):
        store = storage(location)
        return store.fs.cat_file(store.path(*parts))
    return Path(location, *parts).read_bytes()


# --- a refine run's data/ ------------------------------------------------------------------

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


def iter_documents(files: list[str], batch_rows: int = 1024) -> Iterator[tuple[str, str]]:
    """(id, text) for every row of the given Parquet files, streamed in record batches."""
    for path in files:
        with open_parquet(path) as parquet:
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=["id", "text"]):
                yield from zip(batch.column("id").to_pylist(),
                               batch.column("text").to_pylist(), strict=True)
