"""The schemas of a run directory's Parquet files (data/, rejected/, spans/, the URL set) and
the writer of kept and rejected shards, each file written whole (layout: refine.rundir)."""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from refine.document import Document
from refine.rundir import RunDir

# Metrics are stored as a list of {key, value} structs: the physical layout of an Arrow map, without
# the map type, which `datasets` cannot type. pandas, polars, DuckDB (`map_from_entries`) and
# `datasets` all load it. Rows are built with a plain dict (`ROW_METRICS`), cast when written.
METRICS = pa.list_(pa.struct([("key", pa.string()), ("value", pa.float64())]))
ROW_METRICS = pa.map_(pa.string(), pa.float64())

KEPT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("url", pa.string()),
    ("date", pa.string()),
    ("text", pa.string()),
    ("language", pa.string()),
    ("language_score", pa.float64()),
    ("token_count", pa.int64()),
    ("file_path", pa.string()),
    ("offset", pa.int64()),
    ("metrics", METRICS),
])

REJECTED_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("url", pa.string()),
    ("date", pa.string()),
    ("file_path", pa.string()),
    ("offset", pa.int64()),
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("duplicate_of", pa.string()),  # filled by the dedup stages
    ("language", pa.string()),
    ("metrics", METRICS),
    ("text", pa.string()),
    ("text_chars", pa.int64()),  # length of the full text before it was cut
])

# RUN/spans/: one row per substring exact dedup cut (offsets into the text before the cut)
SPAN_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("start", pa.int64()),
    ("end", pa.int64()),
    ("tokens", pa.int64()),
    ("duplicate_of", pa.string()),
    ("text", pa.string()),
])

# RUN/dedup/urls.parquet: the URLs this run kept, for a later run's dedup.urls.previous_runs
URL_SET_SCHEMA = pa.schema([("url_hash", pa.uint64()), ("id", pa.string())])

ROW_GROUP_ROWS = 2000


def metrics_dict(entries: list[dict[str, Any]] | None) -> dict[str, float]:
    """A stored metrics value (as `to_pylist` gives it) as a dict."""
    return {entry["key"]: entry["value"] for entry in entries or ()}


def kept_row(doc: Document) -> dict[str, Any]:
    """The row of `KEPT_SCHEMA` of a kept document."""
    return {
        "id": doc.id, "url": doc.url, "date": doc.date, "text": doc.text,
        "language": doc.language, "language_score": doc.language_score,
        "token_count": len(doc.text.split()), "file_path": doc.file_path,
        "offset": doc.offset, "metrics": doc.metrics,
    }


def rejected_row(doc: Document, stage: str, reason: str, text_chars: int,
                 duplicate_of: str | None = None) -> dict[str, Any]:
    """The row of `REJECTED_SCHEMA` of a document `stage` dropped for `reason`, its text cut to
    `text_chars` characters."""
    return {
        "id": doc.id, "url": doc.url, "date": doc.date, "file_path": doc.file_path,
        "offset": doc.offset, "stage": stage, "reason": reason, "duplicate_of": duplicate_of,
        "language": doc.language, "metrics": doc.metrics, "text": doc.text[:text_chars],
        "text_chars": len(doc.text),
    }


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """`rows` (their ``metrics`` a dict) as a table of `schema`."""
    index = schema.get_field_index("metrics")
    if index < 0:
        return pa.Table.from_pylist(rows, schema=schema)
    building = schema.set(index, schema.field(index).with_type(ROW_METRICS))
    return pa.Table.from_pylist(rows, schema=building).cast(schema)


class ShardWriter:
    """Rows in, `sub/{prefix}-{k:05d}.parquet` files of a run directory out, rolling over at
    about `shard_bytes`. Each file appears whole (refine.rundir.RunDir.writer)."""

    def __init__(self, run_dir: RunDir, sub: str, prefix: str, schema: pa.Schema,
                 shard_bytes: int, compression: str = "zstd"):
        self.run_dir, self.sub, self.prefix, self.schema = run_dir, sub, prefix, schema
        self.shard_bytes = shard_bytes
        self.compression = None if compression == "none" else compression
        self.rows: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self._stream: contextlib.ExitStack | None = None
        self.shard_size = 0
        self.files: list[str] = []
        run_dir.makedirs(sub)

    def _final_name(self) -> str:
        return f"{self.prefix}-{len(self.files):05d}.parquet"

    def add(self, row: dict[str, Any], size: int) -> None:
        self.rows.append(row)
        self.shard_size += size
        if len(self.rows) >= ROW_GROUP_ROWS or self.shard_size >= self.shard_bytes:
            self._flush_rows()
        if self.shard_size >= self.shard_bytes:
            self._finish_shard()

    def _flush_rows(self) -> None:
        if not self.rows:
            return
        if self.writer is None:
            self._stream = contextlib.ExitStack()
            handle = self._stream.enter_context(
                self.run_dir.writer(self.run_dir.path(self.sub, self._final_name())))
            self.writer = pq.ParquetWriter(handle, self.schema, compression=self.compression)
        self.writer.write_table(rows_to_table(self.rows, self.schema))
        self.rows = []

    def _finish_shard(self) -> None:
        self._flush_rows()
        if self.writer is None or self._stream is None:
            return
        self.writer.close()
        self._stream.close()  # the file appears under its final name
        self.files.append(self._final_name())
        self.writer, self._stream, self.shard_size = None, None, 0

    def close(self) -> list[str]:
        self._finish_shard()
        return self.files
