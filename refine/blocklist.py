"""Compact, shareable domain / URL blocklists (UT1, as packed for FineWeb).

The UT1 domain list has ~4.6 million entries. Held as a Python ``frozenset[str]`` it costs
~490 MB of private memory in every worker process; here it is held as

* a sorted ``uint64`` numpy array of stable 64-bit hashes (blake2b, 8-byte digest) of the
  normalised domains (~36 MB), and
* a small bitmap prefilter indexed by ``crc32`` of the same bytes (16 MiB for the UT1 list,
  ~3 % of bits set), which rejects ~97 % of non-listed names for the price of a ``crc32`` and
  a byte read, so the (slower) blake2b hash and binary search only run for likely hits.

Both arrays are built from the source list on first use by `refine.blocklist_build` (a
JIT-compiled hashing kernel; for the packaged list, a packed, pre-normalised copy of it), bit
for bit as the reference implementation here (`_hash_domains`: `normalize_domain`, hashlib
and zlib per line) would build them. They are cached as ``.npy`` files in a cache directory
(``$REFINE_CACHE_DIR``, default ``~/.cache/refine``) and then opened with
``np.load(mmap_mode="r")``: the pages live in the OS page cache and are shared by every worker
process on the machine instead of being copied into each. The cache key is the source file's
sha256 plus a format version, so a changed list rebuilds. Cache files are written atomically
(and builders serialise on an ``flock``), so concurrent workers never see a partial file.

A false positive needs a 64-bit hash collision with one of ~4.6M entries: p ≈ 2.5e-13 per name.

Measured on an idle 2-core VM (AMD EPYC, Python 3.11; ``bench/blocklist_build.py``) for the
packaged list: building the cache in a new process, imports and JIT compilation included,
~1.5 s (2.1 s of CPU: the kernel runs on both cores; the reference implementation: ~30 s); a
list of the same size from ``refine blocklist update``, ~3.3 s (4.1 s of CPU, ~1.8 s of it xz
decoding). Loading it from the cache: ~10 ms and ~0.1 MB RSS; the mapped pages (52 MB, page
cache, shared) enter RSS as file-backed pages as lookups touch them. `contains_host` on an
unlisted host ~1 µs. The URL list (19.6k entries, a frozenset) loads in ~50 ms, ~3.6 MB per
process. Pre-build with ``refine blocklist build-cache`` to keep the build out of workers.

Matching follows squidGuard's semantics for UT1 lists:

* a domain entry matches the host itself and every subdomain of it (``a.b.example.com`` is
  checked as ``a.b.example.com``, ``b.example.com``, ``example.com`` and ``com``). The bare
  TLD is checked too because UT1 deliberately lists whole adult TLDs (``xxx``, ``porn``,
  ``sex``, ``adult``); no ordinary TLD is in the list. IP-address hosts match exactly.
* a URL entry (``host/path``, no scheme) matches that URL and everything under it at a ``/``
  boundary (``example.com/a`` matches ``example.com/a/b.html``, not ``example.com/ab``).
  Host and path are compared lowercased, ``www.`` stripped, query and fragment ignored.

Fresh lists from UT1: `refine.blocklist_update`.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import gzip
import hashlib
import itertools
import logging
import lzma
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import numpy as np

from refine.atomic_file import atomic_write
from refine.blocklist_update import (
    DOMAINS_FILENAME,
    URLS_FILENAME,
    BlocklistUpdateError,
    update_blocklist,
)
from refine.cache_dir import default_cache_dir
from refine.urlnorm import normalize_domain, normalize_host, normalize_url_entry, split_url

__all__ = [  # update_blocklist and BlocklistUpdateError: re-exported from blocklist_update
    "DATA_DIR",
    "DOMAINS_FILENAME",
    "PACKAGED_DOMAINS",
    "PACKAGED_URLS",
    "URLS_FILENAME",
    "BlocklistUpdateError",
    "DomainBlocklist",
    "UrlBlocklist",
    "default_cache_dir",
    "reset_loaded_blocklists",
    "update_blocklist",
]

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
PACKAGED_DOMAINS = DATA_DIR / DOMAINS_FILENAME
PACKAGED_URLS = DATA_DIR / URLS_FILENAME

# Bump when normalisation, hashing or the cache layout changes: old caches are then ignored.
CACHE_FORMAT_VERSION = 1
_BITMAP_BITS_PER_ENTRY = 16  # bitmap size: next power of two >= 16 bits per entry
_MIN_BITMAP_BITS = 1 << 16


def _list_file(path: str | os.PathLike[str] | None, filename: str) -> Path:
    """`path` (None: the packaged lists), or `filename` inside it if it is a directory."""
    src = Path(path).expanduser() if path is not None else DATA_DIR
    if src.is_dir():
        src = src / filename
    return src.resolve()


def _open_text(path: Path) -> IO[str]:
    name = path.name
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8", errors="replace")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


# Per-process memo of loaded lists, so every filter in a worker shares one instance.
_LOADED: dict[tuple, object] = {}
_LOADED_LOCK = threading.Lock()
_T = TypeVar("_T")


def _memoised(key: tuple, load: Callable[[], _T]) -> _T:
    with _LOADED_LOCK:
        inst = _LOADED.get(key)
        if inst is None:
            inst = _LOADED[key] = load()
    return inst  # type: ignore[return-value]


def reset_loaded_blocklists() -> None:
    """Forget the per-process memo of `DomainBlocklist.load` / `UrlBlocklist.load` (tests)."""
    with _LOADED_LOCK:
        _LOADED.clear()


# ---------------------------------------------------------------------------------------------
# Domain blocklist: hashing and the on-disk cache
# ---------------------------------------------------------------------------------------------


def _hash_domains(domains: Iterable[str], chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, bitmap)`` of normalised domains: hashes uint64, sorted, unique. Hashed in
    chunks (bounded memory: the 4.6M-line UT1 list never sits in memory as Python strings)."""
    blake = hashlib.blake2b
    crc32 = zlib.crc32
    hash_parts = [np.zeros(0, dtype=np.uint64)]
    crc_parts = [np.zeros(0, dtype=np.uint32)]
    it = iter(domains)
    while batch := [n.encode() for n in itertools.islice(it, chunk)]:
        digests = b"".join([blake(b, digest_size=8).digest() for b in batch])
        hash_parts.append(np.frombuffer(digests, dtype="<u8").astype(np.uint64))
        crc_parts.append(np.fromiter(map(crc32, batch), dtype=np.uint32, count=len(batch)))
    hashes = np.unique(np.concatenate(hash_parts))
    return hashes, _build_bitmap(np.concatenate(crc_parts), hashes.size)


def _hash_domain_file(src: Path, sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`_hash_domains` of the list file `src`'s lines, computed by the fast builder (JIT
    kernel; for the packaged list, its pre-normalised packed copy)."""
    from refine.blocklist_build import build_domain_arrays  # llvmlite: only when building

    return build_domain_arrays(src, sha256)


def _bitmap_bits(n_entries: int) -> int:
    bits = _MIN_BITMAP_BITS
    while bits < n_entries * _BITMAP_BITS_PER_ENTRY and bits < (1 << 32):
        bits <<= 1
    return bits


def _build_bitmap(crcs: np.ndarray, n_entries: int) -> np.ndarray:
    bits = _bitmap_bits(n_entries)
    idx = crcs & np.uint32(bits - 1)
    bitmap = np.zeros(bits // 8, dtype=np.uint8)
    for bit in range(8):  # duplicate indices are harmless: |= of the same bit
        sel = idx[(idx & np.uint32(7)) == bit] >> np.uint32(3)
        bitmap[sel] |= np.uint8(1 << bit)
    return bitmap


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


@contextlib.contextmanager
def _build_lock(lock_path: Path) -> Iterator[None]:
    """Serialise concurrent builders of one cache entry (best effort; the writes are atomic
    anyway, the lock only saves duplicate work)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _release_free_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise: ~200 MB RSS in a worker that
    just built the cache). No-op where glibc's malloc_trim is unavailable."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


class DomainBlocklist:
    """A set of domains, queried by host with parent-domain matching. Read-only, compact."""

    __slots__ = (
        "_hashes",
        "_hashes_mv",
        "_n",
        "_bitmap",
        "_bitmap_mask",
        "source",
        "cache_files",
        "built",
    )

    def __init__(
        self,
        hashes: np.ndarray,
        bitmap: np.ndarray,
        source: Path | None = None,
        cache_files: tuple[Path, Path] | None = None,
        built: bool = False,
    ) -> None:
        if hashes.dtype.kind != "u" or hashes.dtype.itemsize != 8 or hashes.ndim != 1:
            raise ValueError("hashes must be a 1-d uint64 array")
        nbits = bitmap.size * 8
        if bitmap.dtype != np.uint8 or nbits < 8 or nbits & (nbits - 1):
            raise ValueError("bitmap must be a uint8 array with a power-of-two number of bits")
        if not hashes.dtype.isnative:  # pragma: no cover - big-endian host reading a LE cache
            hashes = hashes.astype(np.uint64)
        self._hashes = hashes
        # bisect on a memoryview: C-level binary search yielding Python ints, ~2x faster than
        # a numpy searchsorted call for one needle
        self._hashes_mv = memoryview(np.ascontiguousarray(hashes)).cast("B").cast("Q")
        self._n = int(hashes.size)
        self._bitmap = memoryview(bitmap)  # fast scalar reads (no numpy scalar boxing)
        self._bitmap_mask = nbits - 1
        self.source = source
        self.cache_files = cache_files
        self.built = built  # True if this load built the cache files (False: reused them)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_domains(cls, domains: Iterable[str]) -> DomainBlocklist:
        """An in-memory blocklist (no cache) from domain strings, normalised like list lines."""
        return cls(*_hash_domains(d for d in map(normalize_domain, domains) if d))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> DomainBlocklist:
        """The blocklist for domain-list file `path` (None: the packaged UT1 list).

        `path` may be plain text, ``.gz`` or ``.xz``, one domain per line, or a directory
        holding ``ut1-domains.txt.xz`` (as written by `update_blocklist`). Memoised per process
        (keyed on the file's path, size and mtime); the arrays are memory-mapped from the
        cache and shared between processes.
        """
        src = _list_file(path, DOMAINS_FILENAME)
        st = src.stat()  # FileNotFoundError for a missing list: let it propagate
        cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        key = (cls, str(src), st.st_size, st.st_mtime_ns, str(cdir.resolve()))
        return _memoised(key, lambda: cls._load_uncached(src, cdir))

    @classmethod
    def _load_uncached(cls, src: Path, cache_dir: Path) -> DomainBlocklist:
        sha256 = _file_sha256(src)
        base = f"{src.name.split('.', 1)[0]}-{sha256[:24]}-v{CACHE_FORMAT_VERSION}"
        files = (cache_dir / f"{base}.hashes.npy", cache_dir / f"{base}.bitmap.npy")
        inst = cls._open_cache(src, files)
        if inst is not None:
            return inst
        if not _writable_dir(cache_dir):
            log.warning(
                "blocklist cache dir %s is not writable: building %s in memory (per process, "
                "not shared); set REFINE_CACHE_DIR to a writable directory",
                cache_dir,
                src,
            )
            inst = cls(*_hash_domain_file(src, sha256), src, None, built=True)
            _release_free_heap()
            return inst
        with _build_lock(cache_dir / f"{base}.lock"):
            inst = cls._open_cache(src, files)  # built while we waited?
            if inst is not None:
                return inst
            t0 = time.perf_counter()
            arrays = _hash_domain_file(src, sha256)
            for arr, dest in zip(arrays, files, strict=True):
                with atomic_write(dest) as f:
                    np.save(f, arr, allow_pickle=False)
            log.info(
                "built domain blocklist cache %s (%d entries) in %.1fs",
                files[0],
                arrays[0].size,
                time.perf_counter() - t0,
            )
            del arrays
            _release_free_heap()  # the build churns ~200 MB of small objects
        inst = cls._open_cache(src, files, built=True)
        if inst is None:  # pragma: no cover - cache dir not readable back
            raise OSError(f"could not read back blocklist cache {files[0]}")
        return inst

    @classmethod
    def _open_cache(
        cls, src: Path, files: tuple[Path, Path], built: bool = False
    ) -> DomainBlocklist | None:
        hashes_path, bitmap_path = files
        if not (hashes_path.is_file() and bitmap_path.is_file()):
            return None
        try:
            hashes = np.load(hashes_path, mmap_mode="r", allow_pickle=False)
            bitmap = np.load(bitmap_path, mmap_mode="r", allow_pickle=False)
            return cls(hashes, bitmap, src, files, built=built)
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable blocklist cache %s: %s", hashes_path, e)
            return None

    def __reduce__(self):
        # Pickled (e.g. shipped to a Ray worker) as "re-open from the cache", never as 36 MB.
        if self.source is None:
            return (DomainBlocklist, (np.asarray(self._hashes), np.asarray(self._bitmap)))
        cache_dir = self.cache_files[0].parent if self.cache_files else None
        return (DomainBlocklist.load, (str(self.source), str(cache_dir) if cache_dir else None))

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def _contains_hashed(self, b: bytes) -> bool:
        h = int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")
        mv = self._hashes_mv
        i = bisect.bisect_left(mv, h)
        return i < self._n and mv[i] == h

    def contains_normalized(self, host: str) -> bool:
        """`contains_host` for a host already normalised by `normalize_host` / `split_url`."""
        # the host, then each parent domain; the hot path (~0.2 µs per suffix when not listed)
        mv = self._bitmap
        mask = self._bitmap_mask
        crc32 = zlib.crc32
        b = host.encode()
        c = crc32(b) & mask
        if (mv[c >> 3] >> (c & 7)) & 1 and self._contains_hashed(b):
            return True
        if b[:1] == b"[" or b[b.rfind(b".") + 1 :].isdigit():
            return False  # IP address: exact match only
        dot = b.find(b".")
        while dot >= 0:
            b = b[dot + 1 :]
            c = crc32(b) & mask
            if (mv[c >> 3] >> (c & 7)) & 1 and self._contains_hashed(b):
                return True
            dot = b.find(b".")
        return False

    def __contains__(self, domain: object) -> bool:
        """Exact membership of one (normalisable) domain, without parent matching."""
        if not isinstance(domain, str):
            return False
        d = normalize_domain(domain)
        if d is None:
            return False
        b = d.encode()
        c = zlib.crc32(b) & self._bitmap_mask
        return bool((self._bitmap[c >> 3] >> (c & 7)) & 1) and self._contains_hashed(b)

    def contains_host(self, host: str) -> bool:
        """Whether `host` or any parent domain of it is listed. Accepts a host or a URL."""
        if "/" in host or ":" in host or "@" in host:
            parts = split_url(host)
            norm = parts[0] if parts else None
        else:
            norm = normalize_host(host)
        return norm is not None and self.contains_normalized(norm)


# ---------------------------------------------------------------------------------------------
# URL blocklist
# ---------------------------------------------------------------------------------------------


class UrlBlocklist:
    """Full-URL entries (``host/path``), matched on ``/`` boundaries. ~20k entries: a frozenset."""

    __slots__ = ("urls", "hosts", "source")

    def __init__(self, urls: Iterable[str], source: Path | None = None) -> None:
        self.urls = frozenset(urls)
        self.hosts = frozenset(u.partition("/")[0] for u in self.urls)
        self.source = source

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: Path | None = None) -> UrlBlocklist:
        return cls((u for u in map(normalize_url_entry, lines) if u), source)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> UrlBlocklist:
        """The URL list in file `path` (``.gz``/``.xz``/text, or a directory holding
        ``ut1-urls.txt.gz``); None: the packaged UT1 list. Memoised per process."""
        src = _list_file(path, URLS_FILENAME)
        st = src.stat()

        def load() -> UrlBlocklist:
            with _open_text(src) as f:
                return cls.from_lines(f, src)

        return _memoised((cls, str(src), st.st_size, st.st_mtime_ns), load)

    def __len__(self) -> int:
        return len(self.urls)

    def contains_parts(self, host: str, path: str) -> bool:
        """Whether ``host + path`` (host normalised, path raw) or a ``/``-prefix of it is listed."""
        if host not in self.hosts:
            return False
        urls = self.urls
        if host in urls:
            return True
        path = path.lower().rstrip("/")
        while path:
            if host + path in urls:
                return True
            path = path[: path.rfind("/")].rstrip("/")
        return False

    def contains_url(self, url: str) -> bool:
        parts = split_url(url)
        return parts is not None and self.contains_parts(parts[0], parts[1])
