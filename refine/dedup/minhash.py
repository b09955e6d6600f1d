"""MinHash signatures and LSH band keys, bit-for-bit equal to datasketch's `MinHash`.

Semantics (datasketch 2.x, ``scheme="legacy"``, the scheme of every datasketch before 2.0):
each shingle (UTF-8 bytes) is hashed to 32 bits with `sha1_hash32` (first 4 bytes of its SHA-1,
little-endian); permutation k is ``((a_k * h + b_k) mod 2**64) mod (2**61 - 1)``, low 32 bits
kept, with (a_k, b_k) drawn pairwise from ``np.random.RandomState(seed)`` as datasketch does;
the signature is the per-permutation minimum over the document's shingles (all 0xFFFFFFFF for
a document without shingles). ``scheme="affine32"`` is datasketch 2.x's default instead:
sha1_hash32, MurmurHash3 fmix32, then ``a_k * h + b_k mod 2**32`` with odd a_k.
``scheme="sketch"`` is fast similarity sketching (Dahlgaard, Knudsen and Thorup 2017; see
`refine.dedup.kernels.sketch_signatures`): not datasketch's values, but each of its num_perm
values is still a min-wise hash (two sets agree on it with probability = their Jaccard
similarity), the sketch of a union is still the element-wise minimum, and it costs O(n + k log k)
for n shingles instead of O(n k): ~10x faster than legacy at 9,000 hashes.

SHA-1 of batches (`signatures`, `text_signatures`, `texts_hashes`) is vectorised over all their
shingles (`refine.dedup.hashing`); batches of texts are normalised by a compiled kernel
(`refine.dedup.textkernels`, equal to `normalize_text`). ``shingle_hash="poly64"`` swaps SHA-1
(and the per-shingle Python strings with it) for a compiled polynomial hash of the shingle
bytes: not datasketch's values, the same estimator and S-curve.

The permutations and minima are a compiled kernel (`refine.dedup.kernels`, numba) over a whole
batch: per shingle, a vectorised loop over the permutations min-reduces into the signature
row; the ``mod (2**61 - 1)`` is a Mersenne fold on 32-bit halves. Shingles of a document are
de-duplicated first where that pays (min is idempotent: one at a time, or from 512 hashes on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from refine.dedup.hashing import (
    fmix64,
    poly64_hash32,
    sha1_hash32,
    sha1_hash32_docs,
    text_shingle_hash32,
    text_shingle_sha1_hash32,
    texts_shingle_sha1_hash32,
)
from refine.dedup.normalize import normalize_text

MERSENNE_PRIME = (1 << 61) - 1
MAX_HASH = (1 << 32) - 1
_P = np.uint64(MERSENNE_PRIME)
SKETCH_MAX_PERM = 1 << 16  # 2 * num_perm rounds in 17 of 32 bits: 15 random bits remain
_DISTINCT_MIN_PERM = 512  # batches keep repeated shingles; from here a sort per doc pays off


Scheme = Literal["legacy", "affine32", "sketch"]
ShingleHash = Literal["sha1", "poly64"]


class MinHashConfig(BaseModel):
    """LSH layout: ``num_perm = num_bands * rows_per_band`` hashes, `ngram`-word shingles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_bands: int = Field(450, ge=1, le=100_000)
    rows_per_band: int = Field(20, ge=1, le=1_000)
    ngram: int = Field(5, ge=1, le=100)
    seed: int = Field(1, ge=0, lt=1 << 32)
    scheme: Scheme = "legacy"
    shingle_hash: ShingleHash = "sha1"  # poly64: faster, not datasketch's values

    @model_validator(mode="after")
    def _sketch_values_stay_distinct(self) -> MinHashConfig:
        if self.scheme == "sketch" and self.num_perm > SKETCH_MAX_PERM:
            raise ValueError(f"scheme sketch: num_bands * rows_per_band = {self.num_perm} is over "
                             f"{SKETCH_MAX_PERM} (its values would keep too few random bits)")
        return self

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    @property
    def threshold(self) -> float:
        """Jaccard similarity at the S-curve's steepest point, about ``(1/b) ** (1/r)``."""
        return (1.0 / self.num_bands) ** (1.0 / self.rows_per_band)

    def candidate_probability(self, jaccard: float) -> float:
        """P(two documents share a band) = ``1 - (1 - s**r)**b``."""
        return 1.0 - (1.0 - jaccard**self.rows_per_band) ** self.num_bands


REFINEDWEB = MinHashConfig(num_bands=450, rows_per_band=20)  # 9,000 hashes, 50% near s=0.72
FINEWEB = MinHashConfig(num_bands=14, rows_per_band=8)  # 112 hashes, 50% near s=0.72


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def permutations(config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) exactly as datasketch's `MinHash._init_permutations` draws them."""
    """For ``scheme="sketch"``: a = 2 * num_perm + 1 uint64 salts (one per round, then the
    phase-two start), b empty."""
    gen = np.random.RandomState(config.seed)
    if config.scheme == "sketch":
        return gen.randint(0, 1 << 64, 2 * config.num_perm + 1, dtype=np.uint64), np.empty(
            0, np.uint64
        )
    if config.scheme == "legacy":
        ab = np.array(
            [
                (gen.randint(1, _P, dtype=np.uint64), gen.randint(0, _P, dtype=np.uint64))
                for _ in range(config.num_perm)
            ],
            dtype=np.uint64,
        ).reshape(config.num_perm, 2)
        return ab[:, 0].copy(), ab[:, 1].copy()
    a = gen.randint(0, 1 << 31, config.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, config.num_perm, dtype=np.uint32)
    return a, b


class MinHasher:
    """Computes signatures (uint32 arrays of `config.num_perm`) for shingle sets or texts.

    `hash_signatures` holds no state and releases the GIL in its kernel (threads may share it);
    the SHA-1 routes use `refine.dedup.hashing`'s module-level scratch buffers (one thread).
    """

    def __init__(self, config: MinHashConfig = REFINEDWEB) -> None:
        self.config = config
        self.a, self.b = permutations(config)

    def hashes(self, shingles: Sequence[bytes]) -> np.ndarray:
        """32-bit hashes of a document's shingles, pre-mixed as the scheme requires."""
        if self.config.shingle_hash == "sha1":
            h = sha1_hash32(set(shingles))  # SHA-1 is the cost: each distinct shingle once
        else:
            h = poly64_hash32(shingles)
        return self._premix(h)

    def text_hashes(self, text: str) -> np.ndarray:
        """`hashes` of `word_shingles(text, config.ngram)`, by the fastest route."""
        normalized = normalize_text(text)
        if self.config.shingle_hash == "sha1":
            return self._premix(text_shingle_sha1_hash32(normalized, self.config.ngram))
        return self._premix(text_shingle_hash32(normalized, self.config.ngram))

    def _premix(self, h: np.ndarray) -> np.ndarray:
        return _fmix32(h) if self.config.scheme == "affine32" else h

    def signature(self, shingles: Sequence[bytes]) -> np.ndarray:
        return self.signatures([shingles])[0]

    def text_signature(self, text: str) -> np.ndarray:
        return self.text_signatures([text])[0]

    def texts_hashes(self, texts: Sequence[str]) -> list[np.ndarray]:
        """`text_hashes` of many texts, faster: their shingles are hashed together."""
        from refine.dedup.textkernels import normalized_utf8, poly64_shingle_hashes  # numba

        data, offsets = normalized_utf8(texts)
        if self.config.shingle_hash == "sha1":
            normalized = [data[offsets[i] : offsets[i + 1]].tobytes().decode()
                          for i in range(len(texts))]
            return self._batch(texts_shingle_sha1_hash32(normalized, self.config.ngram))
        return [self._premix(h) for h in poly64_shingle_hashes(data, offsets, self.config.ngram)]

    def text_signatures(self, texts: Sequence[str]) -> np.ndarray:
        """Signatures of texts: their normalised word `ngram` shingles (UTF-8)."""
        return self.hash_signatures(self.texts_hashes(texts))

    def signatures(self, docs: Sequence[Sequence[bytes]]) -> np.ndarray:
        """One signature per document (a sequence of shingle bytes): (len(docs), num_perm)."""
        if self.config.shingle_hash == "sha1":
            return self.hash_signatures(self._batch(sha1_hash32_docs(docs)))
        return self.hash_signatures([self.hashes(d) for d in docs])

    def _batch(self, per_doc: list[np.ndarray]) -> list[np.ndarray]:
        """Pre-mixed batch hashes; repeats dropped where permuting them would cost more."""
        if self.config.num_perm >= _DISTINCT_MIN_PERM and self.config.scheme != "sketch":
            per_doc = [np.unique(h) for h in per_doc]
        return [self._premix(h) for h in per_doc]

    def hash_signatures(self, per_doc: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures from each document's (pre-mixed) shingle hashes, as `hashes` gives."""
        offsets = np.zeros(len(per_doc) + 1, dtype=np.int64)
        np.cumsum([len(h) for h in per_doc], out=offsets[1:])
        hashes = (
            np.concatenate(per_doc, dtype=np.uint32) if len(per_doc) else np.empty(0, np.uint32)
        )
        out = np.empty((len(per_doc), self.config.num_perm), dtype=np.uint32)
        # imported here: numba takes ~0.5 s and ~60 MB, which only processes that sign pay
        from refine.dedup import kernels

        if self.config.scheme == "sketch":
            round_bits = (2 * self.config.num_perm - 1).bit_length()
            kernels.sketch_signatures(hashes, offsets, self.a, round_bits, out)
        elif self.config.scheme == "legacy":
            kernels.legacy_signatures(hashes, offsets, self.a, self.b, out)
        else:
            kernels.affine32_signatures(hashes, offsets, self.a, self.b, out)
        return out


def band_keys(signature: np.ndarray, config: MinHashConfig) -> list[int]:
    """One 64-bit key per band: a hash of the band's row values, salted by the band index.

    Two documents are candidates when they share a key (keys of different bands differ but for
    a ~2**-64 chance). Use `band_key_array` for batches.
    """
    return band_key_array(np.asarray(signature)[None, :], config)[0].tolist()


def band_key_array(signatures: np.ndarray, config: MinHashConfig) -> np.ndarray:
    """(n, num_perm) signatures -> (n, num_bands) uint64 band keys (see `band_keys`)."""
    sig = np.asarray(signatures, dtype=np.uint64)
    if sig.ndim != 2 or sig.shape[1] != config.num_perm:
        raise ValueError(f"signatures must have shape (n, {config.num_perm}), got {sig.shape}")
    bands = sig.reshape(len(sig), config.num_bands, config.rows_per_band)
    key = np.arange(1, config.num_bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    key = np.broadcast_to(key, bands.shape[:2]).copy()
    for row in range(config.rows_per_band):
        key ^= bands[:, :, row] * np.uint64(0xC6A4A7935BD1E995)
        key = fmix64(key)
    return key

