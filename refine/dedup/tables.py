"""Per-code-point lookup tables (uint8, one entry per code point), built once per machine and then
loaded from ``<cache dir>/tables`` (`refine.cache_dir.default_cache_dir`: ``$REFINE_CACHE_DIR``,
default ``~/.cache/refine``) in a few milliseconds instead of being rebuilt in every process.

A table's file name carries a key of everything that can change it: the Python version (``str``
methods, `re`), `unicodedata.unidata_version`, `sys.maxunicode`, and a hash of the source files
its rules live in (the build function's module, plus any modules passed as `sources`), so any
edit there builds a new table. Files are written atomically (temp file + ``os.replace``), so a
reader sees a whole file or none; a file that does not load as the expected table is rebuilt and
rewritten. Without a writable cache directory the table is just built in memory.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import sys
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import numpy as np

from refine.atomic_file import atomic_write
from refine.cache_dir import default_cache_dir

log = logging.getLogger(__name__)

TABLE_SHAPE = (sys.maxunicode + 1,)  # 0x110000
TABLE_DTYPE = np.dtype(np.uint8)


def table_dir() -> Path:
    return default_cache_dir() / "tables"


def table_path(name: str, build: Callable[[], np.ndarray],
               sources: Iterable[ModuleType] = ()) -> Path:
    """The cache file of table `name` (raises OSError when a source file cannot be read)."""
    digest = hashlib.sha256()
    for part in (name, sys.version_info[:2], unicodedata.unidata_version, sys.maxunicode):
        digest.update(f"{part!r}\0".encode())
    modules = [inspect.getmodule(build), *sources]
    for module in modules:
        if module is None:
            raise OSError(f"no module for {build!r}")
        digest.update(inspect.getsource(module).encode() + b"\0")
    py = "{}.{}".format(*sys.version_info[:2])
    key = f"py{py}-ucd{unicodedata.unidata_version}-{digest.hexdigest()[:20]}"
    return table_dir() / f"{name}-{key}.npy"


def _load(path: Path) -> np.ndarray:
    table = np.load(path, allow_pickle=False)
    if table.dtype != TABLE_DTYPE or table.shape != TABLE_SHAPE:
        raise ValueError(f"a {table.dtype} array of shape {table.shape}")
    return table


def cached_table(name: str, build: Callable[[], np.ndarray],
                 sources: Iterable[ModuleType] = ()) -> np.ndarray:
    """`build()` (a uint8 array of shape `TABLE_SHAPE`), from the cache file when there is a good
    one, else built and written there. `sources`: modules besides `build`'s own whose source
    decides the table."""
    try:
        path = table_path(name, build, sources)
    except (OSError, TypeError) as exc:  # no source to key on: do not cache
        log.debug("table %s: no source to key a cache on (%s); building it", name, exc)
        return build()
    if path.exists():
        try:
            return _load(path)
        except Exception as exc:  # any bad file: short, garbage, the wrong array
            log.warning("table cache %s is unusable (%s: %s); rebuilding it", path,
                        type(exc).__name__, exc)
    table = build()
    if table.dtype != TABLE_DTYPE or table.shape != TABLE_SHAPE:
        raise ValueError(f"table {name}: built a {table.dtype} array of shape {table.shape}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, durable=False) as f:
            np.save(f, table, allow_pickle=False)
    except OSError as exc:
        log.debug("table %s: cache dir %s is not writable (%s); built in memory", name,
                  path.parent, exc)
    return table
