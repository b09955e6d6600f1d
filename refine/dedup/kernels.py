"""Compiled MinHash kernels (numba): the signatures of a batch of documents in CSR layout.

``hashes[offsets[d] : offsets[d + 1]]`` are document d's (pre-mixed) 32-bit shingle hashes;
``out[d]`` becomes its signature, the per-permutation minimum (all 0xFFFFFFFF without hashes).
For each shingle the permutations are the inner loop, which LLVM vectorises (AVX2: 8 uint32
lanes; legacy's products 4 uint64), min-reducing into the signature row. A kernel is compiled
on its first call in a process (legacy ~3 s, affine32 ~0.6 s) unless numba's on-disk cache
has it (see `_njit`): then ~0.01 s, after numba's own start (~1 s) on the first call
(`bench/dedup.py` measures these).
"""

from __future__ import annotations

import os
import tempfile

import numba
import numpy as np

MAX_HASH = np.uint32(0xFFFFFFFF)
_P = np.uint64((1 << 61) - 1)
_LOW = np.uint64(0xFFFFFFFF)
_TOP3 = np.uint32(0xE0000000)


def _njit(fn):
    """``numba.njit(cache=True, nogil=True)``. numba caches in ``__pycache__`` beside this file,
    where that is read-only in the user's cache directory; where neither is writable (numba
    raises then), in the temp directory, else not at all (compiled in every process)."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        numba.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"numba-{os.getuid()}")
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:
        return numba.njit(nogil=True)(fn)


@_njit
def legacy_signatures(hashes, offsets, a, b, out):
    """datasketch's legacy scheme: low 32 bits of ``((a*h + b) mod 2**64) mod (2**61 - 1)``.

    `a`, `b`: uint64 (num_perm,). Two 32x32-bit products per value: with ``w = a_lo*h + b``,
    ``x = a*h + b`` has low word ``lo(w)`` and high word ``hi = hi(w) + a_hi*h (mod 2**32)``,
    and ``x mod p`` is ``(x & p) + (x >> 61)`` (low word ``lo(w) + (hi >> 29)``) less p if
    that is >= p: only possible when the low 29 bits of `hi` are all ones (one value in 2**29;
    ~3% of documents of 1,900 shingles at 9,000 permutations), so such a document is redone
    by `_legacy_exact` (that costs ~3%; testing exactly, per value, ~7%).
    """
    a_hi = (a >> np.uint64(32)).astype(np.uint32)
    for d in range(offsets.shape[0] - 1):
        row = out[d]
        row[:] = MAX_HASH
        flag = np.uint32(0)
        for i in range(offsets[d], offsets[d + 1]):
            h = np.uint64(hashes[i])
            for k in range(a.shape[0]):
                w = (a[k] & _LOW) * h + b[k]
                hi = np.uint32(np.uint32(w >> np.uint64(32)) + np.uint32(a_hi[k] * h))
                flag = max(flag, np.uint32(hi | _TOP3))
                row[k] = min(row[k], np.uint32(np.uint32(w) + (hi >> np.uint32(29))))
        if flag == MAX_HASH:
            _legacy_exact(hashes[offsets[d] : offsets[d + 1]], a, b, row)


@_njit
def _legacy_exact(hashes, a, b, row):
    row[:] = MAX_HASH
    for i in range(hashes.shape[0]):
        h = np.uint64(hashes[i])
        for k in range(a.shape[0]):
            x = a[k] * h + b[k]  # wraps mod 2**64
            x = (x & _P) + (x >> np.uint64(61))
            x = x - _P if x >= _P else x
            row[k] = min(row[k], np.uint32(x & _LOW))


@_njit
def affine32_signatures(hashes, offsets, a, b, out):
    """datasketch 2.x's affine32 scheme: ``a*h + b mod 2**32`` (`hashes` fmix32-mixed).

    `a`, `b`: uint32 (num_perm,)."""
    for d in range(offsets.shape[0] - 1):
        row = out[d]
        row[:] = MAX_HASH
        for i in range(offsets[d], offsets[d + 1]):
            h = hashes[i]
            for k in range(a.shape[0]):
                row[k] = min(row[k], np.uint32(a[k] * h + b[k]))  # numba widens: wrap here


_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S32 = np.uint64(32)


@_njit
def fmix64(z):
    """MurmurHash3's 64-bit finaliser on one value, compiled (`hashing.fmix64`: on arrays)."""
    z = (z ^ (z >> _S33)) * _M1
    z = (z ^ (z >> _S33)) * _M2
    return z ^ (z >> _S33)


@_njit
def sketch_signatures(hashes, offsets, salts, round_bits, out):
    """Fast similarity sketching (Dahlgaard, Knudsen and Thorup, FOCS 2017), k = out's width.

    Round i (0 <= i < 2k) throws every shingle h into one bin with value ``i << (32 -
    round_bits) | r``, (bin, r) from ``fmix64(h ^ salts[i])``: bins at random while i < k, then
    bin ``(start(h) + i - k) mod k`` (every shingle visits every bin by round 2k). A bin keeps
    its least value. Values rise with the round, so once every bin is filled later rounds
    change nothing and the loop stops: O(n + k log k) for n shingles, not O(n k). Each bin is
    the minimum of i.i.d. per-shingle values (equal in two sets with probability = Jaccard),
    and the sketch of a union is the bin-wise minimum of the parts' sketches.
    """
    k = out.shape[1]
    k64 = np.uint64(k)
    r_mask = np.uint64((1 << (32 - round_bits)) - 1)
    shift = np.uint64(32 - round_bits)
    start_salt = salts[2 * k]
    for d in range(offsets.shape[0] - 1):
        row = out[d]
        row[:] = MAX_HASH
        lo, hi = offsets[d], offsets[d + 1]
        if lo == hi:
            continue
        filled = 0
        for i in range(2 * k):
            salt = salts[i]
            base = np.uint64(i) << shift
            for j in range(lo, hi):
                h = np.uint64(hashes[j])
                z = fmix64(h ^ salt)
                if i < k:
                    b = ((z >> _S32) * k64) >> _S32
                else:
                    start = ((fmix64(h ^ start_salt) >> _S32) * k64) >> _S32
                    b = (start + np.uint64(i - k)) % k64
                v = np.uint32(base | (z & r_mask))
                if v < row[b]:
                    if row[b] == MAX_HASH:
                        filled += 1
                    row[b] = v
            if filled == k:
                break
