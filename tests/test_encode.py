"""Token shards from a real refine run on a real local Ray: counts, content, determinism, split."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from pretrain.encode import (
    MANIFEST,
    SPLITS,
    is_validation,
    token_dtype,
    tokenize_run,
)
from pretrain.tokenizer import MODEL_FILE

from .conftest import ROOT
from .pretrain_data import VAL_FRACTION, kept_documents


def shard_files(tokens: Path, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    manifest = json.loads((tokens / MANIFEST).read_text())
    data = np.fromfile(tokens / split / f"{name}.bin", dtype=np.dtype(manifest["dtype"]))
    return data, np.load(tokens / split / f"{name}.idx.npy")


def all_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_manifest_counts_equal_what_the_shards_hold(refine_run, tokens_dir):
    manifest = json.loads((tokens_dir / MANIFEST).read_text())
    assert manifest["dtype"] == "uint16" and manifest["eos_id"] == 2
    assert manifest["source"]["run_config_hash"] == json.loads(
        (refine_run / "manifest.json").read_text())["config_hash"]
    sources = sorted(p.name for p in (refine_run / "data").glob("*.parquet"))
    assert [s["source"] for s in manifest["shards"]] == sources
    totals = {split: {"documents": 0, "tokens": 0} for split in SPLITS}
    for shard in manifest["shards"]:
        for split in SPLITS:
            data, index = shard_files(tokens_dir, split, shard["name"])
            entry = shard[split]
            assert len(data) == entry["tokens"] == index[-1]
            assert len(index) == entry["documents"] + 1 and index[0] == 0
            assert np.all(np.diff(index) >= 2)  # at least one token and EOS each
            assert np.array_equal(np.flatnonzero(data == 2), index[1:] - 1)  # EOS ends each doc
            raw = (tokens_dir / split / f"{shard['name']}.bin").read_bytes()
            assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
            totals[split]["documents"] += entry["documents"]
            totals[split]["tokens"] += entry["tokens"]
    assert manifest["totals"] == totals
    assert sum(t["documents"] for t in totals.values()) == len(kept_documents(refine_run))


@pytest.mark.slow
def test_shards_decode_to_the_documents_in_order(refine_run, tokenizer_dir, tokens_dir):
    processor = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / MODEL_FILE))
    manifest = json.loads((tokens_dir / MANIFEST).read_text())
    decoded: dict[str, list[str]] = {split: [] for split in SPLITS}
    for shard in manifest["shards"]:
        for split in SPLITS:
            data, index = shard_files(tokens_dir, split, shard["name"])
            decoded[split] += [processor.decode(data[a:b - 1].tolist())
                               for a, b in zip(index[:-1], index[1:], strict=True)]
    documents = kept_documents(refine_run)
    for split, in_val in (("train", False), ("val", True)):
        expected = [d["text"] for d in documents if is_validation(d["id"], VAL_FRACTION) == in_val]
        assert decoded[split] == expected
    assert decoded["val"], "the demo run should put a few documents in validation"


@pytest.mark.slow
def test_reruns_are_byte_identical_for_any_worker_count(local_ray, refine_run, tokenizer_dir,
                                                        tokens_dir, tmp_path):
    again = tokenize_run(refine_run / "data", tokenizer_dir, tmp_path / "again",
                         val_fraction=VAL_FRACTION, workers=1, batch_rows=7)
    assert all_files(again.out_dir) == all_files(tokens_dir)
    with pytest.raises(FileExistsError):
        tokenize_run(refine_run / "data", tokenizer_dir, tmp_path / "again",
                     val_fraction=VAL_FRACTION)


def test_validation_split_is_stable_disjoint_and_near_the_fraction():
    ids = [f"<urn:uuid:{uuid.UUID(int=i)}>" for i in range(20_000)]
    first = [is_validation(doc_id, 0.1) for doc_id in ids]
    assert first == [is_validation(doc_id, 0.1) for doc_id in ids]
    assert 0.09 < sum(first) / len(ids) < 0.11
    smaller = [is_validation(doc_id, 0.05) for doc_id in ids]
    assert all(a for a, b in zip(first, smaller, strict=True) if b)  # nested as fraction grows
    assert not any(is_validation(doc_id, 0.0) for doc_id in ids)


@pytest.mark.slow
def test_train_and_val_ids_are_disjoint_and_cover_the_run(refine_run, tokens_dir):
    documents = kept_documents(refine_run)
    manifest = json.loads((tokens_dir / MANIFEST).read_text())
    val_ids = {d["id"] for d in documents if is_validation(d["id"], VAL_FRACTION)}
    train_ids = {d["id"] for d in documents} - val_ids
    assert manifest["totals"]["val"]["documents"] == len(val_ids)
    assert manifest["totals"]["train"]["documents"] == len(train_ids)
    assert manifest["split"]["val_fraction"] == VAL_FRACTION


def test_dtype_is_uint16_while_ids_fit():
    assert token_dtype(32_000) == np.dtype("<u2")
    assert token_dtype(65_536) == np.dtype("<u2")  # ids 0..65,535
    assert token_dtype(65_537) == np.dtype("<u4")
    assert token_dtype(128_256) == np.dtype("<u4")
    assert token_dtype(3_000, "uint32") == np.dtype("<u4")
    with pytest.raises(ValueError):
        token_dtype(65_537, "uint16")


@pytest.mark.slow
def test_uint32_shards_hold_the_same_tokens(local_ray, refine_run, tokenizer_dir, tokens_dir,
                                            tmp_path):
    wide = tokenize_run(refine_run / "data", tokenizer_dir, tmp_path / "wide",
                        val_fraction=VAL_FRACTION, dtype="uint32")
    assert wide.manifest["dtype"] == "uint32"
    for shard in wide.manifest["shards"]:
        for split in SPLITS:
            narrow_data, narrow_index = shard_files(tokens_dir, split, shard["name"])
            wide_data, wide_index = shard_files(wide.out_dir, split, shard["name"])
            assert wide_data.dtype == np.uint32 and np.array_equal(wide_data, narrow_data)
            assert np.array_equal(wide_index, narrow_index)


def test_cli_help_explains():
    result = subprocess.run([sys.executable, "-m", "pretrain.encode", "--help"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    for flag in ("--data", "--tokenizer", "--out", "--address", "--val-fraction", "--workers"):
        assert flag in result.stdout


@pytest.mark.slow
def test_cli_joins_a_running_ray_with_address(local_ray, refine_run, tokenizer_dir,
                                              tokens_dir, tmp_path):
    address = local_ray.get_runtime_context().gcs_address
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "pretrain.encode", "--data", str(refine_run / "data"),
                    "--tokenizer", str(tokenizer_dir), "--out", str(out), "--val-fraction",
                    str(VAL_FRACTION), "--address", address, "--quiet"], cwd=ROOT, check=True)
    assert all_files(out) == all_files(tokens_dir)
