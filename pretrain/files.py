"""Small file helpers shared by the pretraining steps: atomic writes, hashes, run inputs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from refine.atomic_file import write_json_atomic as write_json  # noqa: F401 (re-export)

RUN_MANIFEST = "manifest.json"


def setup_logging(verbose: bool = True) -> None:
    """Log lines like refine's CLI: `INFO pretrain.tokenize: ...` on stderr."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parquet_files(data_dir: Path) -> list[Path]:
    """The run's kept-document shards in a stable (sorted by name) order."""
    files = sorted(Path(data_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no *.parquet in {data_dir}")
    return files


def source_info(data_dir: Path) -> dict[str, Any]:
    """What the data directory is: the run's config hash (if RUN/manifest.json exists)."""
    data_dir = Path(data_dir).resolve()
    manifest_path = data_dir.parent / RUN_MANIFEST
    info: dict[str, Any] = {"data": str(data_dir), "run_config_hash": None,
                            "run_manifest_sha256": None}
    if manifest_path.is_file():
        info["run_config_hash"] = json.loads(manifest_path.read_text()).get("config_hash")
        info["run_manifest_sha256"] = sha256_file(manifest_path)
    return info


def iter_documents(files: list[Path], batch_rows: int = 1024) -> Iterator[tuple[str, str]]:
    """(id, text) for every row of the given Parquet files, streamed in record batches."""
    for path in files:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=["id", "text"]):
            yield from zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(),
                           strict=True)
