"""Fuzzy deduplication (design stage 8): text normalisation, MinHash signatures, LSH band keys.

This package knows nothing of Ray; the distributed stage builds on it.
"""

from refine.dedup.minhash import FINEWEB, REFINEDWEB, MinHashConfig, MinHasher, band_keys
from refine.dedup.normalize import normalize_text, word_shingles

__all__ = [
    "FINEWEB",
    "REFINEDWEB",
    "MinHashConfig",
    "MinHasher",
    "band_keys",
    "normalize_text",
    "word_shingles",
]
