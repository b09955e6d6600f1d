"""Parquet files opened for pyarrow without a Python file object inside Arrow.

Arrow releases a wrapped Python file on whichever thread drops the last reference, and a
thread of Arrow's pool that does so while the interpreter finalizes takes the GIL, is ended by
CPython and aborts the process ("terminate called without an active exception", exit 134).
So whole-table reads only ever get native sources: a local path, or a remote object's bytes
copied into an Arrow-owned buffer.
Streamed reads go through `ParquetFile`, whose file the calling thread releases on `close()`;
it gets a local path, or an fsspec stream for a remote object (never read whole).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem


def native_source(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """A path (local) or a pyarrow.BufferReader holding a copy of the file's bytes (remote)."""
    if isinstance(fs, LocalFileSystem):
        return fs._strip_protocol(path)
    sink = pa.BufferOutputStream()
    sink.write(fs.cat_file(path))  # copied: a buffer over Python bytes would refer to them
    return pa.BufferReader(sink.getvalue())


@contextlib.contextmanager
def parquet_file(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[pq.ParquetFile]:
    with contextlib.ExitStack() as stack:
        local = isinstance(fs, LocalFileSystem)
        # remote: no read-ahead cache, so reading some columns fetches only their byte ranges
        source = (fs._strip_protocol(path) if local
                  else stack.enter_context(fs.open(path, "rb", cache_type="none")))
        parquet = pq.ParquetFile(source, pre_buffer=False)
        stack.callback(parquet.close)
        yield parquet


def read_table(fs: fsspec.AbstractFileSystem, path: str,
               columns: list[str] | None = None) -> pa.Table:
    # ParquetFile, not pq.read_table: the same table, without pyarrow's dataset module, whose
    # import (pandas with it) costs each new worker process ~0.6 s
    with pq.ParquetFile(native_source(fs, path)) as parquet:
        return parquet.read(columns=columns)
