"""The compiled text path of fuzzy dedup equals its Python definition, byte for byte."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from refine.dedup import MinHashConfig, MinHasher, normalize_text
from refine.dedup.hashing import text_shingle_hash32
from refine.dedup.textkernels import normalized_utf8, poly64_shingle_hashes

TEXTS = Path(__file__).parent / "data" / "text" / "cc-main-2019-30-text-sample.jsonl.gz"
HOSTILE = [
    "", " ", "x", "...!!!", "¡¿…!?", "Hello,   World!", "  Line one.\n\n\tLine TWO  ",
    "Café Déjà Vu, naïve façade", "state-of-the-art (2024): 50% off; a+b=c",
    "«Bonjour» — dit-il… „Ja“ 「はい」", "ÅNGSTRÖM Œuvre ß", "x\u0301 \u0301y \u0301",
    "\u2003a\u00a0b\u2028c\x1fd\x85e", "a b c d e", "a b c d e f", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 end",
    "İstanbul ǅ ﬁ Ⅻ", "a\u200bb", "日本語のテキスト、句読点。", "\x00nul\x00",
]  # fmt: skip


def _corpus() -> list[str]:
    with gzip.open(TEXTS, "rt", encoding="utf-8") as stream:
        return [json.loads(line)["text"] for line in stream][:200] + HOSTILE


def test_normalized_utf8_equals_normalize_text() -> None:
    texts = _corpus()
    data, offsets = normalized_utf8(texts)
    assert len(offsets) == len(texts) + 1 and offsets[0] == 0 and offsets[-1] == len(data)
    for i, text in enumerate(texts):
        assert data[offsets[i] : offsets[i + 1]].tobytes() == normalize_text(text).encode(), text
    data, offsets = normalized_utf8([])
    assert len(data) == 0 and offsets.tolist() == [0]


@pytest.mark.parametrize("n", [1, 2, 5, 13])
def test_poly64_shingle_hashes_equal_span_hashes(n: int) -> None:
    texts = _corpus()
    hashes = poly64_shingle_hashes(*normalized_utf8(texts), n)
    assert len(hashes) == len(texts)
    for text, ours in zip(texts, hashes, strict=True):
        np.testing.assert_array_equal(ours, text_shingle_hash32(normalize_text(text), n))


@pytest.mark.parametrize("shingle_hash", ["sha1", "poly64"])
@pytest.mark.parametrize("scheme", ["legacy", "affine32", "sketch"])
def test_batches_of_texts_sign_as_one_text_at_a_time(scheme: str, shingle_hash: str) -> None:
    hasher = MinHasher(MinHashConfig(num_bands=9, rows_per_band=5, scheme=scheme,
                                     shingle_hash=shingle_hash))
    texts = _corpus()[190:]
    batch = hasher.text_signatures(texts)
    for text, row in zip(texts, batch, strict=True):
        np.testing.assert_array_equal(hasher.hash_signatures([hasher.text_hashes(text)])[0], row)
