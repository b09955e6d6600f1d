"""32-bit shingle hashes: datasketch's `sha1_hash32`, and a vectorised polynomial option.

``poly64`` hashes byte spans of one buffer with numpy, without a Python object per shingle:
a polynomial hash mod 2**64 of the span's bytes (``sum(byte_i * B**i)``, from prefix sums),
plus its length, through the MurmurHash3 64-bit finalizer, low 32 bits kept. It is a different
function from SHA-1 (signatures differ from datasketch's), but equally a fixed function of the
shingle's UTF-8 bytes, so Jaccard estimates and the LSH S-curve are the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_BASE = 0xC6A4A7935BD1E995  # odd (MurmurHash64A multiplier), so invertible mod 2**64
_INV_BASE = pow(_BASE, -1, 1 << 64)
_LEN_MIX = np.uint64(0x9E3779B97F4A7C15)
_powers = np.ones(1, dtype=np.uint64)
_inverse_powers = np.ones(1, dtype=np.uint64)


def sha1_hash32(shingles: Sequence[bytes] | set[bytes]) -> np.ndarray:
    """datasketch's `sha1_hash32` over many shingles: uint32 array, one per shingle."""
    sha1 = hashlib.sha1
    return np.frombuffer(b"".join([sha1(s).digest()[:4] for s in shingles]), dtype="<u4")


def _power_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """B**i and B**-i mod 2**64 for i < size (numpy's cumprod wraps mod 2**64)."""
    global _powers, _inverse_powers
    if len(_powers) < size:
        size = max(size, 2 * len(_powers))
        powers, inverse = np.ones(size, dtype=np.uint64), np.ones(size, dtype=np.uint64)
        powers[1:] = np.cumprod(np.full(size - 1, _BASE, dtype=np.uint64))
        inverse[1:] = np.cumprod(np.full(size - 1, _INV_BASE, dtype=np.uint64))
        _powers, _inverse_powers = powers, inverse
    return _powers, _inverse_powers


def span_hash32(buffer: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``poly64`` hashes of ``buffer[starts[i]:ends[i]]`` (byte offsets), as uint32."""
    data = np.frombuffer(buffer, dtype=np.uint8)
    powers, inverse = _power_tables(len(data) + 1)
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum(data * powers[: len(data)], out=prefix[1:])  # wraps mod 2**64
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    h = (prefix[ends] - prefix[starts]) * inverse[starts]  # span hash as if it began at 0
    h += (ends - starts).astype(np.uint64) * _LEN_MIX
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h.astype(np.uint32)


def poly64_hash32(shingles: Sequence[bytes] | set[bytes]) -> np.ndarray:
    """``poly64`` hashes of separate shingles (one joined buffer, one numpy pass)."""
    shingles = list(shingles)
    lengths = np.fromiter(map(len, shingles), dtype=np.int64, count=len(shingles))
    ends = np.cumsum(lengths)
    return span_hash32(b"".join(shingles), ends - lengths, ends)


def shingle_spans(normalized: str, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(UTF-8 buffer, starts, ends): byte spans of `normalized`'s word n-grams.

    ``buffer[starts[i]:ends[i]]`` equals ``word_shingles(normalized, n, normalized=True)[i]``
    encoded; `normalized` must be `normalize_text` output (words separated by single spaces).
    """
    buffer = normalized.encode()
    if not buffer:
        return buffer, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    spaces = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == 32)
    word_starts = np.r_[0, spaces + 1]
    word_ends = np.r_[spaces, len(buffer)]
    if len(word_starts) <= n:
        return buffer, word_starts[:1], word_ends[-1:]
    return buffer, word_starts[: len(word_starts) - n + 1], word_ends[n - 1 :]


def text_shingle_hash32(normalized: str, n: int) -> np.ndarray:
    """``poly64`` hashes of `normalized`'s word n-grams (see `shingle_spans`)."""
    return span_hash32(*shingle_spans(normalized, n))


def text_shingle_sha1_hash32(normalized: str, n: int) -> np.ndarray:
    """`sha1_hash32` of `normalized`'s distinct word n-grams, sliced from one buffer."""
    buffer, starts, ends = shingle_spans(normalized, n)
    return sha1_hash32({buffer[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)})
