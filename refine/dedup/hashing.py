"""32-bit shingle hashes: datasketch's `sha1_hash32`, and a vectorised polynomial option.

``sha1``: the first 4 bytes of the shingle's SHA-1, little-endian (datasketch's `sha1_hash32`).
One `hashlib` call per shingle costs ~0.4 us, nearly all of it per-call overhead (shingles are
~30 bytes, one SHA-1 block), so many shingles are hashed together by a numpy SHA-1 (FIPS 180-4)
instead: shingles under 56 bytes (~98% of 5-word shingles) pad to one 64-byte block; their
blocks are gathered from one joined buffer into a (16, n) word matrix and the message schedule
and 80 rounds run as in-place numpy passes over chunks of n messages, sized to stay in cache.
Only the first digest word is kept. Longer shingles, and batches too small to pay for the ~1,000
numpy calls of a chunk, go through `hashlib`. Results are bit-identical to `hashlib.sha1`.

``poly64`` hashes byte spans of one buffer with numpy, without a Python object per shingle:
a polynomial hash mod 2**64 of the span's bytes (``sum(byte_i * B**i)``, from prefix sums),
plus its length, through the MurmurHash3 64-bit finalizer, low 32 bits kept. It is a different
function from SHA-1 (signatures differ from datasketch's), but equally a fixed function of the
shingle's UTF-8 bytes, so Jaccard estimates and the LSH S-curve are the same.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence

import numpy as np

_BASE = 0xC6A4A7935BD1E995  # odd (MurmurHash64A multiplier), so invertible mod 2**64
_INV_BASE = pow(_BASE, -1, 1 << 64)
_LEN_MIX = np.uint64(0x9E3779B97F4A7C15)
_powers = np.ones(1, dtype=np.uint64)
_inverse_powers = np.ones(1, dtype=np.uint64)

# SHA-1 of many one-block messages

_SHA1_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
_SHA1_K = np.repeat(np.array([0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6], np.uint32), 20)
_ONE_BLOCK = 56  # messages of up to 55 bytes, plus 0x80 and the 8-byte length, fill one block
_SHA1_CHUNK = 16384  # messages per numpy pass (8192: call overhead shows; 32768: no faster)
_SHA1_MIN_BATCH = 4096  # fewer messages: hashlib is faster than the ~1,000 passes of a chunk
_SEP = b"\xff"  # never in UTF-8: joins shingles so one scan finds their boundaries


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, element-wise (`kernels.fmix64`: compiled, one value)."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _block_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per message length L < 56: (keep, pad), 64-byte rows viewed as 16 uint32.

    ``block = (bytes at the message start & keep[L]) | pad[L]``: the message's L bytes, 0x80,
    zeros, and the bit length as a big-endian 64-bit integer in the last 8 bytes.
    """
    column, length = np.arange(64), np.arange(_ONE_BLOCK)[:, None]
    keep = np.where(column < length, 0xFF, 0).astype(np.uint8)
    pad = np.where(column == length, 0x80, 0).astype(np.uint8)
    bits = np.arange(_ONE_BLOCK) * 8
    pad[:, 62], pad[:, 63] = bits >> 8, bits & 0xFF
    return keep.view(np.uint32), pad.view(np.uint32)


_KEEP, _PAD = _block_tables()


class _Sha1Scratch(threading.local):
    """Per-thread buffers for one chunk (fresh MiB-sized arrays per chunk cost page faults)."""

    def __init__(self) -> None:
        self.size = 0

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(80, n) message schedule, (7, n) registers a..e and two temporaries, 6n temporary."""
        if self.size < n:
            self.size = max(n, _SHA1_CHUNK)
            self.words = np.empty(80 * self.size, np.uint32)
            self.state = np.empty(7 * self.size, np.uint32)
            self.temp = np.empty(6 * self.size, np.uint32)
        return (
            self.words[: 80 * n].reshape(80, n),
            self.state[: 7 * n].reshape(7, n),
            self.temp[: 6 * n],
        )


_scratch = _Sha1Scratch()


def _rotl32(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (32 - bits))) & 0xFFFFFFFF


def _first_rounds() -> tuple[np.uint32, np.uint32, tuple[int, int, int]]:
    """Rounds 0 and 1 fold into constants (registers start constant; Ch, t < 20):
    ``a1 = w0 + C0``, ``a2 = rotl5(a1) + w1 + C1`` (w with K added), and then
    ``(c, d, e) = REST``."""
    h0, h1, h2, h3, h4 = _SHA1_INIT

    def ch(b: int, c: int, d: int) -> int:
        return d ^ (b & (c ^ d))

    c0 = (_rotl32(h0, 5) + ch(h1, h2, h3) + h4) & 0xFFFFFFFF
    c1 = (ch(h0, _rotl32(h1, 30), h2) + h3) & 0xFFFFFFFF
    return np.uint32(c0), np.uint32(c1), (_rotl32(h0, 30), _rotl32(h1, 30), h2)


_C0, _C1, _REST = _first_rounds()


def _sha1_compress(w: np.ndarray, state: np.ndarray, temp: np.ndarray, out: np.ndarray) -> None:
    """First SHA-1 digest word, little-endian as `sha1_hash32`, of one-block messages.

    `w`: (80, n) uint32 with the big-endian block words in rows 0-15 (the rest is overwritten).
    Rotations are ``(x << k) | (x >> 32 - k)`` with a temporary, written out: ~1,000 numpy
    calls per chunk, so Python function calls around them show.
    """
    n = w.shape[1]
    xor, lsh, rsh = np.bitwise_xor, np.left_shift, np.right_shift
    for t in range(16, 32, 3):  # w[t] = rotl1(w[t-3] ^ w[t-8] ^ w[t-14] ^ w[t-16]), 3 at once
        g = min(3, 32 - t)
        x, tg = w[t : t + g], temp[: g * n].reshape(g, n)
        xor(w[t - 3 : t - 3 + g], w[t - 8 : t - 8 + g], out=x)
        x ^= w[t - 14 : t - 14 + g]
        x ^= w[t - 16 : t - 16 + g]
        lsh(x, 1, out=tg)
        x >>= 31
        x |= tg
    t6 = temp.reshape(6, n)
    for t in range(32, 80, 6):  # the equivalent w[t] = rotl2(w[t-6]^w[t-16]^w[t-28]^w[t-32])
        x = w[t : t + 6]
        xor(w[t - 6 : t], w[t - 16 : t - 10], out=x)
        x ^= w[t - 28 : t - 22]
        x ^= w[t - 32 : t - 26]
        lsh(x, 2, out=t6)
        x >>= 30
        x |= t6
    w += _SHA1_K[:, None]
    a, b, c, d, e, t1, t2 = state
    np.add(w[0], _C0, out=b)  # rounds 0 and 1 (`_first_rounds`): a1, which is b after round 1
    lsh(b, 5, out=t1)
    rsh(b, 27, out=t2)
    t1 |= t2
    t1 += w[1]
    np.add(t1, _C1, out=a)  # a2
    for row, value in zip((c, d, e), _REST, strict=True):
        row.fill(value)
    for t in range(2, 80):  # e becomes the new a; the other registers move by renaming
        e += w[t]
        if t < 20:  # Ch(b, c, d)
            xor(c, d, out=t2)
            t2 &= b
            t2 ^= d
        elif 40 <= t < 60:  # Maj(b, c, d)
            np.bitwise_or(b, c, out=t2)
            t2 &= d
            np.bitwise_and(b, c, out=t1)
            t2 |= t1
        else:  # Parity(b, c, d)
            xor(b, c, out=t2)
            t2 ^= d
        e += t2
        lsh(a, 5, out=t1)  # rotl5(a)
        rsh(a, 27, out=t2)
        t1 |= t2
        e += t1
        if t < 79:  # b = rotl30(b); the last round's b is not read again
            lsh(b, 30, out=t1)
            b >>= 2
            b |= t1
        a, b, c, d, e = e, a, b, c, d
    np.add(a, np.uint32(_SHA1_INIT[0]), out=out)
    out.byteswap(inplace=True)  # digest bytes 0-3 are h0 big-endian; sha1_hash32 reads them LE


def _sha1_one_block(
    buffer: bytes, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray
) -> None:
    """`out[i]` = sha1_hash32 of ``buffer[starts[i]:][:lengths[i]]``, all lengths < 56.

    `buffer` must hold 64 bytes after every start (callers append zeros).
    """
    windows = np.ndarray((len(buffer) - 63,), dtype="V64", buffer=buffer, strides=(1,))
    chunks = -(-len(starts) // (2 * _SHA1_CHUNK))
    size = -(-len(starts) // chunks)  # equal chunks of at most 2 * _SHA1_CHUNK
    for lo in range(0, len(starts), size):
        hi = min(lo + size, len(starts))
        n, length = hi - lo, lengths[lo:hi]
        block = windows[starts[lo:hi]].view(np.uint32).reshape(n, 16)  # 64 bytes from start
        block &= _KEEP.take(length, axis=0)
        block |= _PAD.take(length, axis=0)
        words, state, temp = _scratch.get(n)
        words[:16] = block.view(">u4").T  # big-endian words, one row per word
        _sha1_compress(words, state, temp, out[lo:hi])


def sha1_span_hash32(buffer: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`sha1_hash32` of ``buffer[starts[i]:ends[i]]`` (byte offsets), in one vectorised pass.

    Equal to ``sha1_hash32([buffer[s:e] for s, e in zip(starts, ends)])``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    return _sha1_spans(bytes(buffer) + bytes(64), starts, lengths)


def _sha1_spans(padded: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`sha1_span_hash32` where `padded` already ends with 64 spare bytes."""
    out = np.empty(len(starts), dtype=np.uint32)
    long = np.flatnonzero(lengths >= _ONE_BLOCK)
    if len(starts) - len(long) < _SHA1_MIN_BATCH:
        long = np.arange(len(starts))
    elif len(long):
        short = np.flatnonzero(lengths < _ONE_BLOCK)
        hashes = np.empty(len(short), dtype=np.uint32)
        _sha1_one_block(padded, starts[short], lengths[short], hashes)
        out[short] = hashes
    else:
        _sha1_one_block(padded, starts, lengths, out)
    if len(long):
        sha1 = hashlib.sha1
        spans = zip(starts[long].tolist(), (starts[long] + lengths[long]).tolist(), strict=True)
        out[long] = np.frombuffer(
            b"".join([sha1(padded[s:e]).digest()[:4] for s, e in spans]), dtype="<u4"
        )
    return out


def _joined_spans(parts: list[bytes], count: int) -> tuple[bytes, np.ndarray, np.ndarray] | None:
    """(buffer, starts, lengths) of the `count` shingles in `parts`, for `_sha1_spans`.

    `parts`: `_SEP`-joined lists of shingles, one part per non-empty list. None when a shingle
    holds the separator byte itself (not UTF-8), for the caller to hash another way.
    """
    buffer = _SEP.join([*parts, bytes(64)])  # a separator ends every shingle, then padding
    ends = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == _SEP[0])
    if len(ends) != count:
        return None
    starts = np.empty(count, dtype=np.int64)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    return buffer, starts, ends - starts


def _grouped(counts: np.ndarray, hash_group: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """All documents' hashes, concatenated: `hash_group(lo, hi)` hashes documents lo..hi-1.

    Groups hold about `_SHA1_CHUNK` shingles each, so buffers stay in cache and small enough
    to be reused by the allocator (fresh multi-MiB buffers cost page faults).
    """
    bounds = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    total = int(bounds[-1])
    groups = max(1, round(total / _SHA1_CHUNK))
    cuts = np.unique(np.searchsorted(bounds, np.linspace(0, total, groups + 1)[1:-1]))
    out = np.empty(total, dtype=np.uint32)
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(counts)], strict=True):
        if bounds[hi] > bounds[lo]:
            out[bounds[lo] : bounds[hi]] = hash_group(lo, hi)
    return out


def _hashlib_hash32(shingles: Iterable[bytes]) -> np.ndarray:
    sha1 = hashlib.sha1
    return np.frombuffer(b"".join([sha1(s).digest()[:4] for s in shingles]), dtype="<u4")


def sha1_hash32(shingles: Iterable[bytes]) -> np.ndarray:
    """datasketch's `sha1_hash32` over many shingles: uint32 array, one per shingle."""
    shingles = shingles if isinstance(shingles, list | tuple) else list(shingles)
    if len(shingles) < _SHA1_MIN_BATCH:
        return _hashlib_hash32(shingles)
    pieces = [shingles[i : i + _SHA1_CHUNK] for i in range(0, len(shingles), _SHA1_CHUNK)]
    return np.concatenate(sha1_hash32_docs(pieces))


def sha1_hash32_docs(docs: Iterable[Iterable[bytes]]) -> list[np.ndarray]:
    """`sha1_hash32` of each document's shingles, all documents hashed in a few passes.

    Repeats are kept when there are enough shingles for the vectorised SHA-1; each distinct
    shingle once when hashed one at a time (the same signatures either way).
    """
    docs = [d if isinstance(d, list | tuple) else list(d) for d in docs]
    counts = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    if counts.sum() < _SHA1_MIN_BATCH:
        return [_hashlib_hash32(set(d)) for d in docs]

    def hash_group(lo: int, hi: int) -> np.ndarray:
        group = docs[lo:hi]
        joined = _joined_spans([_SEP.join(d) for d in group if d], int(counts[lo:hi].sum()))
        if joined is None:
            return _hashlib_hash32([s for d in group for s in d])
        return _sha1_spans(*joined)

    return np.split(_grouped(counts, hash_group), np.cumsum(counts[:-1]))


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
    return fmix64(h).astype(np.uint32)


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
    if len(spaces) < n:  # at most n words: one shingle of all of them
        return buffer, np.zeros(1, dtype=np.int64), np.full(1, len(buffer), dtype=np.int64)
    count = len(spaces) + 2 - n  # words - n + 1
    starts = np.empty(count, dtype=np.int64)  # word i starts after space i - 1
    starts[0] = 0
    np.add(spaces[: count - 1], 1, out=starts[1:])
    ends = np.empty(count, dtype=np.int64)  # word i + n - 1 ends at space i + n - 1
    ends[:-1] = spaces[n - 1 :]
    ends[-1] = len(buffer)
    return buffer, starts, ends


def text_shingle_hash32(normalized: str, n: int) -> np.ndarray:
    """``poly64`` hashes of `normalized`'s word n-grams (see `shingle_spans`)."""
    return span_hash32(*shingle_spans(normalized, n))


def text_shingle_sha1_hash32(normalized: str, n: int) -> np.ndarray:
    """`sha1_hash32` of `normalized`'s word n-grams, sliced from one buffer.

    Each distinct n-gram once when they are few (hashed one at a time); all of them, repeats
    kept, when there are enough to hash in one vectorised pass.
    """
    buffer, starts, ends = shingle_spans(normalized, n)
    if len(starts) >= _SHA1_MIN_BATCH:
        return _sha1_spans(buffer + bytes(64), starts, ends - starts)
    return sha1_hash32({buffer[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)})


def texts_shingle_sha1_hash32(normalized: Sequence[str], n: int) -> list[np.ndarray]:
    """`text_shingle_sha1_hash32` of many texts (repeats kept), hashed in a few passes."""
    spans = [shingle_spans(text, n) for text in normalized]
    counts = np.fromiter((len(s) for _, s, _ in spans), dtype=np.int64, count=len(spans))
    if counts.sum() < _SHA1_MIN_BATCH:
        return [text_shingle_sha1_hash32(text, n) for text in normalized]

    def hash_group(lo: int, hi: int) -> np.ndarray:
        group = spans[lo:hi]
        offsets = np.cumsum([0] + [len(buffer) for buffer, _, _ in group]).tolist()
        starts = np.concatenate([s + o for (_, s, _), o in zip(group, offsets, strict=False)])
        ends = np.concatenate([e + o for (_, _, e), o in zip(group, offsets, strict=False)])
        padded = b"".join([*(buffer for buffer, _, _ in group), bytes(64)])
        return _sha1_spans(padded, starts, ends - starts)

    return np.split(_grouped(counts, hash_group), np.cumsum(counts[:-1]))
