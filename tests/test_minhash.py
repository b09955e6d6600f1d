"""MinHash core of fuzzy dedup: datasketch equality, the LSH S-curve, normalisation, config."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from refine.dedup import (
    FINEWEB,
    REFINEDWEB,
    MinHashConfig,
    MinHasher,
    band_keys,
    hashing,
    kernels,
    normalize_text,
    word_shingles,
)
from refine.dedup.minhash import MAX_HASH, MERSENNE_PRIME, band_key_array

TEXTS = Path(__file__).parent / "data" / "text" / "cc-main-2019-30-text-sample.jsonl.gz"


def _texts(count: int) -> list[str]:
    with gzip.open(TEXTS, "rt", encoding="utf-8") as stream:
        texts = [json.loads(line)["text"] for line, _ in zip(stream, range(count), strict=False)]
    return texts + ["Too short.", "", "¡¿…!?"]  # one shingle, and two without any


def _shingles(text: str, n: int = 5) -> list[bytes]:
    return [s.encode() for s in word_shingles(text, n)]


# (1) the same signatures as datasketch


@pytest.mark.parametrize(
    ("config", "count"),
    [
        (FINEWEB, 40),
        (REFINEDWEB, 6),
        (MinHashConfig(num_bands=16, rows_per_band=4, seed=42), 40),
        (MinHashConfig(num_bands=14, rows_per_band=8, seed=7, scheme="affine32"), 40),
    ],
    ids=["fineweb", "refinedweb", "seed42", "affine32"],
)
def test_signatures_equal_datasketch(config: MinHashConfig, count: int) -> None:
    from datasketch import MinHash

    kwargs: dict = {"num_perm": config.num_perm, "seed": config.seed}
    if "scheme" in inspect.signature(MinHash).parameters:  # datasketch >= 2.0
        kwargs["scheme"] = config.scheme
    elif config.scheme != "legacy":
        pytest.skip("datasketch < 2.0 has only the legacy scheme")
    docs = [_shingles(t, config.ngram) for t in _texts(count)]
    ours = MinHasher(config).signatures(docs)
    theirs = MinHash.bulk(docs, **kwargs)
    assert ours.shape == (len(docs), config.num_perm)
    assert ours.dtype == np.uint32
    for sig, ref in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(sig, ref.hashvalues)
    assert (ours[-1] == MAX_HASH).all()  # no shingles: datasketch's empty MinHash


def test_single_batch_and_text_paths_agree() -> None:
    hasher = MinHasher(FINEWEB)
    texts = _texts(5)
    batch = hasher.signatures([_shingles(t) for t in texts])
    np.testing.assert_array_equal(hasher.text_signatures(texts), batch)
    np.testing.assert_array_equal(hasher.signature(_shingles(texts[2])), batch[2])
    np.testing.assert_array_equal(hasher.text_signature(texts[3]), batch[3])
    doubled = _shingles(texts[0]) * 2  # repeated shingles do not change a signature
    np.testing.assert_array_equal(hasher.signature(doubled), batch[0])


def _fmix64(z: np.ndarray) -> np.ndarray:
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        z = (z ^ (z >> np.uint64(33))) * np.uint64(multiplier)
    return z ^ (z >> np.uint64(33))


def _reference_sketch(per_doc: list[np.ndarray], salts: np.ndarray, k: int) -> np.ndarray:
    """Fast similarity sketching by its definition: all 2k rounds, none skipped."""
    shift = 32 - (2 * k - 1).bit_length()
    out = np.full((len(per_doc), k), MAX_HASH, dtype=np.uint32)
    for row, h in zip(out, per_doc, strict=True):
        h = h.astype(np.uint64)
        start = ((_fmix64(h ^ salts[2 * k]) >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)
        for i in range(2 * k):
            z = _fmix64(h ^ salts[i])
            if i < k:
                bins = ((z >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)
            else:
                bins = (start + np.uint64(i - k)) % np.uint64(k)
            values = (np.uint64(i) << np.uint64(shift)) | (z & np.uint64((1 << shift) - 1))
            np.minimum.at(row, bins.astype(np.int64), values.astype(np.uint32))
    return out


def _reference_signatures(
    per_doc: list[np.ndarray], a: np.ndarray, b: np.ndarray, scheme: str
) -> np.ndarray:
    """The definition in plain numpy, one document at a time (uint64 and uint32 arithmetic wrap)."""
    if scheme == "sketch":
        return _reference_sketch(per_doc, a, (len(a) - 1) // 2)
    out = np.full((len(per_doc), len(a)), MAX_HASH, dtype=np.uint32)
    for row, h in zip(out, per_doc, strict=True):
        if not len(h):
            continue
        if scheme == "legacy":
            x = (h.astype(np.uint64)[:, None] * a + b) % np.uint64(MERSENNE_PRIME)
            values = (x & np.uint64(MAX_HASH)).astype(np.uint32)
        else:
            values = h[:, None] * a + b
        row[:] = values.min(axis=0)
    return out


@pytest.mark.parametrize("scheme", ["legacy", "affine32", "sketch"])
def test_kernel_equals_numpy_reference(scheme: str) -> None:
    """Random hashes in CSR batches: empty documents, one shingle, long ones, both extremes.
    For the sketch, the reference runs every round: stopping once all bins are filled must not
    change a value."""
    rng = np.random.default_rng(11)
    odd = MinHashConfig(num_bands=37, rows_per_band=7, scheme=scheme)  # 259: no whole vectors
    refinedweb = REFINEDWEB.model_copy(update={"scheme": scheme})
    for config, sizes in ((odd, [1, 1, 0, 3, 0, 250, 2000, 0]), (refinedweb, [1, 1, 0, 60])):
        hasher = MinHasher(config)
        per_doc = [rng.integers(0, 1 << 32, n, dtype=np.uint32) for n in sizes]
        per_doc[0][:], per_doc[1][:] = 0, MAX_HASH  # documents of one shingle: the extremes
        expected = _reference_signatures(per_doc, hasher.a, hasher.b, scheme)
        ours = hasher.hash_signatures(per_doc)
        assert ours.dtype == np.uint32 and ours.shape == (len(sizes), config.num_perm)
        np.testing.assert_array_equal(ours, expected)
        assert (ours[[i for i, n in enumerate(sizes) if not n]] == MAX_HASH).all()
        for i in range(len(sizes)):  # a document alone: the same row
            np.testing.assert_array_equal(hasher.hash_signatures(per_doc[i : i + 1])[0], ours[i])
        assert hasher.hash_signatures([]).shape == (0, config.num_perm)


def test_legacy_kernel_final_subtraction() -> None:
    """(a*h + b) mod 2**64 at and around multiples of 2**61 - 1, where the Mersenne fold needs
    its last subtraction (about once in 2**58 values otherwise: the kernel's slow path)."""
    rng = np.random.default_rng(3)
    p = MERSENNE_PRIME
    targets = [p - 8, p - 1, p, p + 1, p + 7, 2 * p - 1, 2 * p, 2 * p + 6, 3 * p, 2**62 - 1,
               2**63 + 2**61 - 2, 2**64 - 9, 2**64 - 1, 5, 2**32 - 1, 2**61]  # fmt: skip
    num_perm = 3 * len(targets) + 5
    a = rng.integers(1, p, num_perm, dtype=np.uint64)
    x = np.array((targets * 4)[:num_perm], dtype=np.uint64)
    h = np.uint32(2_654_435_761)
    b = x - a * np.uint64(h)  # so that a*h + b == x (mod 2**64)
    per_doc = [np.array([h], np.uint32), rng.integers(0, 1 << 32, 50, dtype=np.uint32)]
    per_doc += [np.append(per_doc[1], h), np.array([], np.uint32), np.array([h, 7], np.uint32)]
    offsets = np.cumsum([0] + [len(d) for d in per_doc])
    out = np.empty((len(per_doc), num_perm), np.uint32)
    kernels.legacy_signatures(np.concatenate(per_doc), offsets, a, b, out)
    expected = _reference_signatures(per_doc, a, b, "legacy")
    np.testing.assert_array_equal(out, expected)
    assert expected[0, : len(targets)].tolist() == [t % p & MAX_HASH for t in targets]


def test_kernel_cache_where_package_and_home_are_read_only(tmp_path: Path) -> None:
    """numba caches beside the module or in the user's cache directory; where neither can be
    written, `kernels` caches in the temp directory instead of failing at import."""
    package = tmp_path / "package"
    package.mkdir()
    (package / "kernels_copy.py").write_text(Path(kernels.__file__).read_text())
    (package / "__pycache__").write_text("")  # a file: no cache folder can be made there
    blocked = tmp_path / "blocked"
    blocked.write_text("")  # home and cache directories below a file cannot be made either
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(HOME=str(blocked / "home"), XDG_CACHE_HOME=str(blocked / "cache"), TMPDIR=str(temp))
    code = (
        "import numba, numpy as np, kernels_copy as k\n"
        "out = np.empty((1, 4), np.uint32)\n"
        "k.affine32_signatures(np.arange(3, 6, dtype=np.uint32), np.array([0, 3]),"
        " np.ones(4, np.uint32), np.arange(4, dtype=np.uint32), out)\n"
        "print(numba.config.CACHE_DIR, out.tolist())"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=package, env=env, text=True,
                         capture_output=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    cache_dir = temp / f"numba-{os.getuid()}"
    assert run.stdout.split(maxsplit=1) == [str(cache_dir), "[[3, 4, 5, 6]]\n"]
    assert list(cache_dir.glob("**/kernels_copy.affine32_signatures-*.nbi"))


# the vectorised SHA-1 (refine.dedup.hashing) against hashlib


def _sha1_reference(shingles: list[bytes]) -> np.ndarray:
    """datasketch's `sha1_hash32`, one hashlib call per shingle."""
    return np.array(
        [int.from_bytes(hashlib.sha1(s).digest()[:4], "little") for s in shingles], np.uint32
    )


def _random_shingles(rng: np.random.Generator, count: int) -> list[bytes]:
    """Each length 0..200 bytes, then random ones, most under 56 (one SHA-1 block): random
    bytes (0xFF too) and non-ASCII UTF-8."""
    lengths = np.r_[np.arange(201), rng.integers(0, 201, count // 5), rng.integers(0, 64, count)]
    raw = [rng.bytes(int(n)) for n in lengths]
    alphabet = [0x20, 0x61, 0xE9, 0x3B1, 0x4E2D, 0x1F600]  # 1- to 4-byte UTF-8
    text = ["".join(map(chr, rng.choice(alphabet, int(n) // 2))).encode() for n in lengths]
    return raw + text


@pytest.fixture
def small_sha1_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectorised SHA-1 from 16 shingles on, in groups and chunks of a few hundred."""
    monkeypatch.setattr(hashing, "_SHA1_MIN_BATCH", 16)
    monkeypatch.setattr(hashing, "_SHA1_CHUNK", 300)


@pytest.mark.parametrize("small", [False, True], ids=["default", "small-batches"])
def test_sha1_hash32_equals_hashlib(small: bool, request: pytest.FixtureRequest) -> None:
    if small:
        request.getfixturevalue("small_sha1_batches")
    rng = np.random.default_rng(5)
    shingles = _random_shingles(rng, 6000)
    expected = _sha1_reference(shingles)
    ours = hashing.sha1_hash32(shingles)
    assert ours.dtype == np.uint32
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(hashing.sha1_hash32(iter(shingles)), expected)
    np.testing.assert_array_equal(hashing.sha1_hash32(shingles[:7]), expected[:7])
    half = len(shingles) // 2  # UTF-8 only (no 0xFF byte): the separator-scan route
    np.testing.assert_array_equal(hashing.sha1_hash32(shingles[half:]), expected[half:])
    lengths = np.array([len(s) for s in shingles])
    ends = np.cumsum(lengths)
    spans = hashing.sha1_span_hash32(b"".join(shingles), ends - lengths, ends)
    np.testing.assert_array_equal(spans, expected)

    utf8 = shingles[half:]
    sizes = [0, 1, 3, 0, 250, 1, 2000, 40, 0, 4000, 300]  # empty documents too
    docs = [utf8[i : i + n] for i, n in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True)]
    docs += [[b""], [b"\xff\xfe"], shingles[:500]]  # 0xFF in a shingle: the fallback route
    for batch in (docs, docs[-1:] * 20):
        for got, doc in zip(hashing.sha1_hash32_docs(batch), batch, strict=True):
            np.testing.assert_array_equal(np.unique(got), np.unique(_sha1_reference(doc)))


@pytest.mark.parametrize("small", [False, True], ids=["default", "small-batches"])
def test_text_sha1_hashes_equal_hashlib(small: bool, request: pytest.FixtureRequest) -> None:
    if small:
        request.getfixturevalue("small_sha1_batches")
    texts = _texts(30) + ["Zoë's café, déjà vu " * 1200, "x" * 300 + " y" * 10]
    normalized = [normalize_text(t) for t in texts]
    batch = hashing.texts_shingle_sha1_hash32(normalized, 5)
    for text, got in zip(normalized, batch, strict=True):
        expected = _sha1_reference([s.encode() for s in word_shingles(text, 5, normalized=True)])
        np.testing.assert_array_equal(got, expected)  # every shingle, in order
        one = hashing.text_shingle_sha1_hash32(text, 5)
        np.testing.assert_array_equal(np.unique(one), np.unique(expected))


@pytest.mark.parametrize(
    "config",
    [FINEWEB, REFINEDWEB, MinHashConfig(num_bands=14, rows_per_band=8, scheme="affine32")],
    ids=["fineweb", "refinedweb", "affine32"],
)
@pytest.mark.usefixtures("small_sha1_batches")
def test_vectorised_sha1_signatures_equal_datasketch(config: MinHashConfig) -> None:
    """Batches hashed in several groups and chunks, short and long shingles, repeats."""
    from datasketch import MinHash

    kwargs: dict = {"num_perm": config.num_perm, "seed": config.seed}
    if "scheme" in inspect.signature(MinHash).parameters:  # datasketch >= 2.0
        kwargs["scheme"] = config.scheme
    elif config.scheme != "legacy":
        pytest.skip("datasketch < 2.0 has only the legacy scheme")
    texts = _texts(8 if config is REFINEDWEB else 30)
    texts[1] += " " + texts[1]  # repeated shingles
    docs = [_shingles(t, config.ngram) for t in texts]
    hasher = MinHasher(config)
    ours = hasher.signatures(docs)
    for sig, ref in zip(ours, MinHash.bulk(docs, **kwargs), strict=True):
        np.testing.assert_array_equal(sig, ref.hashvalues)
    np.testing.assert_array_equal(hasher.text_signatures(texts), ours)
    for hashes, text in zip(hasher.texts_hashes(texts), texts, strict=True):
        np.testing.assert_array_equal(np.unique(hashes), np.unique(hasher.text_hashes(text)))


def test_poly64_hashes_shingle_bytes() -> None:
    """The text route hashes exactly the `word_shingles` bytes; the definition is as documented."""
    mask = (1 << 64) - 1

    def reference(data: bytes) -> int:
        h = sum(byte * pow(hashing._BASE, i, 1 << 64) for i, byte in enumerate(data))
        h = (h + len(data) * 0x9E3779B97F4A7C15) & mask
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & mask
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & mask
        return (h ^ (h >> 33)) & 0xFFFFFFFF

    for text in _texts(8) + ["Zoë's café, déjà vu", "one two three four five"]:
        shingles = _shingles(text)
        by_bytes = hashing.poly64_hash32(shingles)
        np.testing.assert_array_equal(
            hashing.text_shingle_hash32(normalize_text(text), 5), by_bytes
        )
        assert [int(h) for h in by_bytes[:20]] == [reference(s) for s in shingles[:20]]
    hasher = MinHasher(FINEWEB_POLY64)
    texts = _texts(6)
    np.testing.assert_array_equal(
        hasher.text_signatures(texts), hasher.signatures([_shingles(t) for t in texts])
    )
    assert not (
        hasher.text_signatures(texts[:1]) == MinHasher(FINEWEB).text_signatures(texts[:1])
    ).all()


# (2) the candidate probability curve 1 - (1 - s^r)^b


def _pair_signatures(
    hasher: MinHasher, jaccard: float, union: int, pairs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Signatures of `pairs` shingle-set pairs with exactly `jaccard` similarity.

    Each pair: `shared` common shingles and `unique` of its own on each side, with
    shared / (shared + 2 * unique) == jaccard. Signatures of the parts are computed once and
    combined with min, which is what a signature of their union is.
    """
    shared = round(jaccard * union)
    unique = (union - shared) // 2
    assert shared + 2 * unique == union and shared / union == pytest.approx(jaccard)
    parts = []
    for p in range(pairs):
        parts.append([f"{jaccard}/{p}/s{i}".encode() for i in range(shared)])
        parts.append([f"{jaccard}/{p}/a{i}".encode() for i in range(unique)])
        parts.append([f"{jaccard}/{p}/b{i}".encode() for i in range(unique)])
    sig = hasher.signatures(parts).reshape(pairs, 3, -1)
    return np.minimum(sig[:, 0], sig[:, 1]), np.minimum(sig[:, 0], sig[:, 2])


# (similarity, union size): the smallest union giving that similarity exactly, to keep it quick
CURVE_POINTS = [(0.5, 4), (0.6, 10), (0.7, 20), (0.75, 8), (0.8, 10), (0.85, 40), (0.9, 20),
                (0.95, 40)]  # fmt: skip


def _pairs_needed(p: float, tolerance: float = 0.05, sigmas: float = 3.5) -> int:
    """Pairs for the measured rate to fall within `tolerance` at `sigmas` standard errors."""
    return max(400, math.ceil(p * (1 - p) * (sigmas / tolerance) ** 2))


FINEWEB_POLY64 = MinHashConfig(num_bands=14, rows_per_band=8, shingle_hash="poly64")
FINEWEB_AFFINE32 = MinHashConfig(num_bands=14, rows_per_band=8, scheme="affine32")
REFINEDWEB_SKETCH = MinHashConfig(num_bands=450, rows_per_band=20, scheme="sketch")
FINEWEB_SKETCH = MinHashConfig(num_bands=14, rows_per_band=8, scheme="sketch")


@pytest.mark.parametrize(
    "config",
    [REFINEDWEB, FINEWEB, FINEWEB_POLY64, FINEWEB_AFFINE32, REFINEDWEB_SKETCH, FINEWEB_SKETCH],
    ids=["refinedweb", "fineweb", "fineweb-poly64", "fineweb-affine32", "refinedweb-sketch",
         "fineweb-sketch"],
)
def test_candidate_rate_follows_s_curve(config: MinHashConfig) -> None:
    hasher = MinHasher(config)
    for jaccard, union in CURVE_POINTS:
        expected = config.candidate_probability(jaccard)
        sig_a, sig_b = _pair_signatures(hasher, jaccard, union, _pairs_needed(expected))
        keys_a, keys_b = band_key_array(sig_a, config), band_key_array(sig_b, config)
        rate = float((keys_a == keys_b).any(axis=1).mean())
        assert abs(rate - expected) <= 0.05, (jaccard, rate, expected)
        row_match = float((sig_a == sig_b).mean())  # each hash agrees with probability s
        assert abs(row_match - jaccard) <= 0.02, (jaccard, row_match)


def test_presets_have_documented_thresholds() -> None:
    assert (REFINEDWEB.num_bands, REFINEDWEB.rows_per_band, REFINEDWEB.num_perm) == (450, 20, 9000)
    assert (FINEWEB.num_bands, FINEWEB.rows_per_band, FINEWEB.num_perm) == (14, 8, 112)
    for config in (REFINEDWEB, FINEWEB):
        assert config.ngram == 5
        assert 0.70 < config.threshold < 0.75
        assert config.candidate_probability(0.0) == 0.0
        assert config.candidate_probability(1.0) == 1.0
    assert REFINEDWEB.candidate_probability(0.72) == pytest.approx(0.5, abs=0.06)


# band keys


def test_band_keys() -> None:
    config = MinHashConfig(num_bands=4, rows_per_band=3)
    sig = np.arange(12, dtype=np.uint32)
    keys = band_keys(sig, config)
    assert len(keys) == 4 and len(set(keys)) == 4
    assert all(isinstance(k, int) and 0 <= k < 2**64 for k in keys)
    assert band_keys(sig.copy(), config) == keys
    changed = sig.copy()
    changed[4] += 1  # a row of band 1
    other = band_keys(changed, config)
    assert [a == b for a, b in zip(keys, other, strict=True)] == [True, False, True, True]
    same_rows = np.tile(np.arange(3, dtype=np.uint32), 4)
    assert len(set(band_keys(same_rows, config))) == 4  # salted by band index
    with pytest.raises(ValueError, match="shape"):
        band_key_array(np.zeros((2, 11), np.uint32), config)


# (3) normalisation


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Hello,   World!", "hello world"),
        ("  Line one.\n\n\tLine TWO  ", "line one line two"),
        ("Café Déjà Vu, naïve façade", "cafe deja vu naive facade"),
        ("state-of-the-art (2024): 50% off; a+b=c", "state of the art 2024 50 off a b c"),
        ("«Bonjour» — dit-il… „Ja“ 「はい」", "bonjour dit il ja はい"),
        ("ÅNGSTRÖM Œuvre ß", "angstrom œuvre ß"),
        ("...!!!", ""),
        ("", ""),
    ],
)
def test_normalize_text(text: str, normalized: str) -> None:
    assert normalize_text(text) == normalized


def test_word_shingles() -> None:
    assert word_shingles("A b, c d E f!") == ["a b c d e", "b c d e f"]
    assert word_shingles("a b c d e") == ["a b c d e"]
    assert word_shingles("One, two!") == ["one two"]  # shorter than n: one shingle
    assert word_shingles("") == word_shingles(" -- ") == []
    assert word_shingles("a b c", n=2) == ["a b", "b c"]
    assert word_shingles("x y x y x y", n=2) == ["x y", "y x", "x y", "y x", "x y"]
    assert word_shingles("already normal", n=5, normalized=True) == ["already normal"]
    with pytest.raises(ValueError):
        word_shingles("a b", n=0)
    for text in _texts(4) + ["Ünïcode wörds — here", "x"]:
        for n in (1, 3, 5):
            buffer, starts, ends = hashing.shingle_spans(normalize_text(text), n)
            spans = [buffer[s:e].decode() for s, e in zip(starts, ends, strict=True)]
            assert spans == word_shingles(text, n)


# (4) configuration


def test_config_validation() -> None:
    config = MinHashConfig(num_bands=10, rows_per_band=5, ngram=3, seed=9)
    assert config.num_perm == 50
    assert MinHashConfig.model_validate(config.model_dump()) == config
    for bad in (
        {"num_bands": 0},
        {"rows_per_band": 0},
        {"ngram": 0},
        {"seed": -1},
        {"seed": 2**32},
        {"scheme": "affine64"},
        {"shingle_hash": "xxh3"},
        {"num_perm": 9000},  # derived, not settable
        {"bands": 450},  # extra keys are errors, not silently ignored
    ):
        with pytest.raises(ValidationError):
            MinHashConfig(**bad)
    with pytest.raises(ValidationError):
        config.num_bands = 3  # frozen: a hasher's permutations never go stale


@pytest.mark.parametrize("jaccard", [0.7, 0.8])
def test_sketch_follows_s_curve_at_document_sizes(jaccard: float) -> None:
    """At ~1,000 shingles every shingle lands in many bins in the sketch's first rounds (the
    small unions above exercise its second phase): the rate still follows 1 - (1 - s^r)^b."""
    config = REFINEDWEB_SKETCH
    expected = config.candidate_probability(jaccard)
    sig_a, sig_b = _pair_signatures(MinHasher(config), jaccard, 1000, _pairs_needed(expected))
    rate = float((band_key_array(sig_a, config) == band_key_array(sig_b, config)).any(1).mean())
    assert abs(rate - expected) <= 0.05, (rate, expected)
    assert abs(float((sig_a == sig_b).mean()) - jaccard) <= 0.01


def test_sketch_of_a_union_is_the_minimum_of_the_parts() -> None:
    hasher = MinHasher(REFINEDWEB_SKETCH)
    rng = np.random.default_rng(5)
    for sizes in ((1, 1), (3, 700), (800, 900)):
        a, b = (rng.integers(0, 1 << 32, n, dtype=np.uint32) for n in sizes)
        sig_a, sig_b, sig_union = hasher.hash_signatures([a, b, np.concatenate([a, b])])
        np.testing.assert_array_equal(np.minimum(sig_a, sig_b), sig_union)
        assert (sig_union != MAX_HASH).all()  # every bin filled, even from two shingles
