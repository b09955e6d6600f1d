"""The run directory: its layout, and all I/O to it, through fsspec.

A run directory is a local path or a URL fsspec knows (``s3://bucket/runs/r1``, ``gs://...``,
``memory://...``). Credentials and endpoints come from the usual places (``AWS_*`` variables
and ``AWS_ENDPOINT_URL``, profiles, instance roles; Google's application default credentials),
never from the command line, and nothing of them is written to the run.

Object stores have no rename, so nothing relies on one there: every object is written whole
under its final name (an object appears complete or not at all), a unit's statistics file is
written last and is what marks the unit done, and a unit redone after an interruption first
removes whatever it had written (its outputs are named by unit, so none is left twice). On a
local disk files are still written under a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from refine import arrowfile
from refine.atomic_file import atomic_write

# The layout (README: "The run directory"); the schemas of its Parquet files: refine.shards
MANIFEST = "manifest.json"
STATS = "stats.json"
REPORT = "report.html"
LEASE = ".lease.json"
DATA = "data"
FILTERED = "filtered"
REJECTED = "rejected"
SPANS = "spans"
PARTS = "stats/units"
DEDUP_STATS = "stats/dedup.json"
DEDUP_WORK = "dedup/work"
URL_SET = "dedup/urls.parquet"


class RunDir:
    """One run directory. Picklable (the workers get it as an argument)."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        remote = fsspec.utils.get_protocol(self.location) not in ("file", "local")
        # other processes write here too: never answer from a cached listing
        options = {"use_listings_cache": False} if remote else {}
        self.fs, root = fsspec.core.url_to_fs(self.location, **options)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).absolute()) if self.local else root.rstrip("/")

    def __repr__(self) -> str:
        return f"RunDir({self.location!r})"

    def __str__(self) -> str:
        return self.location

    def path(self, *parts: str) -> str:
        """The fs path of `parts` below the root."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def url(self, *parts: str) -> str:
        """`parts` as a URL a user can pass back (local: a plain path)."""
        path = self.path(*parts)
        return path if self.local else self.fs.unstrip_protocol(path)

    # --- queries ---------------------------------------------------------------------------

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def is_file(self, *parts: str) -> bool:
        return self.fs.isfile(self.path(*parts))

    def entries(self) -> list[str]:
        """Names directly below the root (nothing when it does not exist)."""
        try:
            return sorted(posixpath.basename(p.rstrip("/"))
                          for p in self.fs.ls(self.root, detail=False))
        except FileNotFoundError:
            return []

    def files(self, sub: str, suffix: str = ".parquet", prefix: str = "") -> list[str]:
        """Sorted fs paths of the files in `sub` (not hidden) with `prefix` and `suffix`."""
        try:
            found = self.fs.ls(self.path(sub), detail=False)
        except FileNotFoundError:
            return []
        names = (posixpath.basename(p) for p in found)
        return sorted(self.path(sub, n) for n in names
                      if n.endswith(suffix) and n.startswith(prefix) and not n.startswith("."))

    # --- reading ---------------------------------------------------------------------------

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        return self.fs.open(path, mode)

    def read_json(self, *parts: str) -> Any:
        with self.fs.open(self.path(*parts), "rb") as handle:
            return json.loads(handle.read())

    def read_ranges(self, paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
        """Bytes ``[start, end)`` of each path: many small reads in one call (concurrent on an
        object store; plain reads on a local disk, without fsspec's per-call overhead). An empty
        range reads nothing."""
        wanted = [i for i, (start, end) in enumerate(zip(starts, ends, strict=True)) if end > start]
        found = [b""] * len(paths)
        if not self.local:
            got = self.fs.cat_ranges([paths[i] for i in wanted], [starts[i] for i in wanted],
                                     [ends[i] for i in wanted], on_error="raise")
            for i, data in zip(wanted, got, strict=True):
                found[i] = data
            return found
        for i in wanted:
            with open(paths[i], "rb") as handle:
                handle.seek(starts[i])
                found[i] = handle.read(ends[i] - starts[i])
        return found

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return arrowfile.read_table(self.fs, path, columns)

    def parquet(self, path: str) -> contextlib.AbstractContextManager[pq.ParquetFile]:
        return arrowfile.parquet_file(self.fs, path)

    def num_rows(self, path: str) -> int:
        with self.parquet(path) as parquet:
            return parquet.metadata.num_rows

    # --- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, path: str, durable: bool = True) -> Iterator[IO[bytes]]:
        """A binary stream whose content appears at `path` whole, or not at all. `durable`:
        also across a power loss (fsync; local disks only), for all but scratch files."""
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(Path(path), durable) as handle:
                yield handle
        else:
            with self.fs.open(path, "wb") as handle:  # an object is visible once complete
                yield handle

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.writer(path) as handle:
            handle.write(data)

    def write_json(self, payload: Any, *parts: str) -> None:
        text = json.dumps(payload, indent=1, sort_keys=True) + "\n"
        self.write_bytes(self.path(*parts), text.encode())

    def write_table(self, table: pa.Table, path: str, compression: str | None) -> None:
        with self.writer(path) as handle:
            pq.write_table(table, handle, compression=compression or "none")

    def create_exclusive(self, path: str, data: bytes) -> None:
        """Write `path` only if it does not exist (raises FileExistsError): local O_EXCL, or a
        conditional PUT (If-None-Match) on object stores that have it."""
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open(path, "xb") as handle:
            handle.write(data)

    def makedirs(self, *parts: str) -> None:
        if self.local:
            Path(self.path(*parts)).mkdir(parents=True, exist_ok=True)

    # --- removing --------------------------------------------------------------------------

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def remove_tree(self, *parts: str) -> None:
        path = self.path(*parts)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isdir(path):
                self.fs.rm(path, recursive=True)
            elif self.fs.exists(path):
                self.fs.rm_file(path)
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                self.fs.invalidate_cache(path)

    def remove_prefixed(self, sub: str, prefix: str) -> None:
        """Every file in `sub` whose name (less a leading dot) starts with `prefix`, temp files
        included: what an interrupted unit left. In a bucket only keys with the prefix are
        listed (the listing of a whole data/ per unit would grow with the run)."""
        try:
            if self.local:
                found = self.fs.ls(self.path(sub), detail=False)
            else:  # no temp files in a bucket: objects are written under their final name
                found = self.fs.find(self.path(sub), prefix=prefix, maxdepth=1)
        except FileNotFoundError:
            return
        for path in found:
            if posixpath.basename(path).lstrip(".").startswith(prefix):
                self.remove(path)


def as_run_dir(location: str | Path | RunDir) -> RunDir:
    return location if isinstance(location, RunDir) else RunDir(location)
