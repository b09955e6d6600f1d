"""Compiled text path of fuzzy dedup (numba): `normalize_text` and ``poly64`` shingle hashes
of a whole batch in two passes, no Python object per word or shingle.

`normalized_utf8` gives, byte for byte, ``normalize_text(t).encode()`` of each text: Python
still lowercases and (for non-ASCII texts) applies NFD, both C-speed; the kernel then maps each
code point through one table (keep, separator, drop), collapses separators to one space and
writes UTF-8. `poly64_shingle_hashes` hashes each run of `n` words as
`refine.dedup.hashing.span_hash32` does (equal values).
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Sequence
from functools import cache

import numpy as np

from refine.dedup import normalize
from refine.dedup.hashing import _BASE, _INV_BASE, _LEN_MIX
from refine.dedup.kernels import _njit, fmix64
from refine.dedup.normalize import char_class
from refine.dedup.tables import cached_table


def _build_code_point_classes() -> np.ndarray:
    return np.fromiter((char_class(chr(code)) for code in range(sys.maxunicode + 1)),
                       dtype=np.uint8, count=sys.maxunicode + 1)


@cache
def code_point_classes() -> np.ndarray:
    """`normalize.char_class` of every code point, as one uint8 table: ~0.7 s to build, so it is
    built once per machine and loaded from the cache (`refine.dedup.tables`, keyed on this file
    and ``normalize.py``) in a few ms, once per process."""
    return cached_table("code_point_classes", _build_code_point_classes, sources=(normalize,))


@_njit
def _normalize(code_points, offsets, classes, out, out_offsets):
    pos = 0
    for d in range(offsets.shape[0] - 1):
        out_offsets[d] = pos
        pending = False
        for i in range(offsets[d], offsets[d + 1]):
            c = code_points[i]
            kind = classes[c]
            if kind == 2:
                continue
            if kind == 1:
                pending = pos > out_offsets[d]
                continue
            if pending:
                out[pos] = 32
                pos += 1
                pending = False
            if c < 0x80:
                out[pos] = c
                pos += 1
            elif c < 0x800:
                out[pos] = 0xC0 | (c >> 6)
                out[pos + 1] = 0x80 | (c & 0x3F)
                pos += 2
            elif c < 0x10000:
                out[pos] = 0xE0 | (c >> 12)
                out[pos + 1] = 0x80 | ((c >> 6) & 0x3F)
                out[pos + 2] = 0x80 | (c & 0x3F)
                pos += 3
            else:
                out[pos] = 0xF0 | (c >> 18)
                out[pos + 1] = 0x80 | ((c >> 12) & 0x3F)
                out[pos + 2] = 0x80 | ((c >> 6) & 0x3F)
                out[pos + 3] = 0x80 | (c & 0x3F)
                pos += 4
    out_offsets[offsets.shape[0] - 1] = pos


def normalized_utf8(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets): ``bytes[offsets[i]:offsets[i + 1]]`` is ``normalize_text(texts[i])``
    in UTF-8."""
    prepared = [t.lower() for t in texts]
    prepared = [t if t.isascii() else unicodedata.normalize("NFD", t) for t in prepared]
    lengths = np.fromiter(map(len, prepared), dtype=np.int64, count=len(prepared))
    offsets = np.zeros(len(prepared) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    code_points = np.frombuffer("".join(prepared).encode("utf-32-le"), dtype=np.uint32)
    out = np.empty(4 * len(code_points), dtype=np.uint8)
    out_offsets = np.empty(len(prepared) + 1, dtype=np.int64)
    _normalize(code_points, offsets, code_point_classes(), out, out_offsets)
    return out[: out_offsets[-1]], out_offsets


@_njit
def _poly64_shingles(data, offsets, n, base, inv_base, len_mix, out, counts):
    """Per document: word boundaries, the polynomial prefix sums, then each n-word span's
    ``(prefix[e] - prefix[s]) * base**-s + len * len_mix``, fmix64-mixed, low 32 bits."""
    total = 0
    size = 0
    for d in range(offsets.shape[0] - 1):
        size = max(size, offsets[d + 1] - offsets[d])
    prefix = np.empty(size + 1, dtype=np.uint64)
    inverse = np.empty(size + 1, dtype=np.uint64)
    starts = np.empty(size + 1, dtype=np.int64)
    ends = np.empty(size + 1, dtype=np.int64)
    for d in range(offsets.shape[0] - 1):
        lo, length = offsets[d], offsets[d + 1] - offsets[d]
        words = 0
        if length:
            power = np.uint64(1)
            inv = np.uint64(1)
            prefix[0] = 0
            starts[0] = 0
            for i in range(length):
                byte = data[lo + i]
                inverse[i] = inv
                prefix[i + 1] = prefix[i] + np.uint64(byte) * power
                power *= base
                inv *= inv_base
                if byte == 32:
                    ends[words] = i
                    words += 1
                    starts[words] = i + 1
            ends[words] = length
            words += 1
        if words == 0:
            count = 0
        elif words <= n:
            count = 1
            ends[0] = ends[words - 1]
        else:
            count = words - n + 1
        for k in range(count):
            s = starts[k]
            e = ends[k + n - 1] if words > n else ends[0]
            h = (prefix[e] - prefix[s]) * inverse[s] + np.uint64(e - s) * len_mix
            out[total + k] = np.uint32(fmix64(h) & np.uint64(0xFFFFFFFF))
        counts[d] = count
        total += count
    return total


def poly64_shingle_hashes(data: np.ndarray, offsets: np.ndarray, n: int) -> list[np.ndarray]:
    """``poly64`` hashes of each document's word n-grams (repeats kept), documents given as
    `normalized_utf8` returns them."""
    docs = len(offsets) - 1
    out = np.empty(len(data) + docs, dtype=np.uint32)
    counts = np.empty(docs, dtype=np.int64)
    total = _poly64_shingles(data, offsets, n, np.uint64(_BASE), np.uint64(_INV_BASE),
                             _LEN_MIX, out, counts)
    return np.split(out[:total], np.cumsum(counts[:-1])) if docs else []
