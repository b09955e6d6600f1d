"""The SentencePiece tokenizer trained on a real refine run: lossless, Llama-style, traceable."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from pretrain.tokenizer import (
    MODEL_FILE,
    TrainerOptions,
    cut_line,
    load_metadata,
    sample_lines,
    train_tokenizer,
)

from .conftest import ROOT
from .pretrain_data import VOCAB_SIZE, kept_documents


@pytest.fixture(scope="module")
def processor(tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tokenizer_dir / MODEL_FILE))


@pytest.mark.slow
def test_round_trip_is_lossless_on_every_kept_document(refine_run, processor):
    documents = kept_documents(refine_run)
    assert len(documents) > 50
    for row in documents:
        ids = processor.encode(row["text"])
        assert processor.decode(ids) == row["text"], row["id"]
        assert processor.unk_id() not in ids  # byte fallback, never <unk>


@pytest.mark.slow
def test_round_trip_of_text_the_tokenizer_never_saw(processor):
    texts = ["  two leading spaces", "\nnewline first", "tabs\tand\r\nCRLF", "trailing  ",
             "Ünïcödé — “quotes” 日本語 🦙 ١٢٣ 12,345.67", "\x00\x07 control", " ", ""]
    for text in texts:
        assert processor.decode(processor.encode(text)) == text, repr(text)


@pytest.mark.slow
def test_llama_settings_are_in_the_model_proto(tokenizer_dir):
    proto = model_pb2.ModelProto()
    proto.ParseFromString((tokenizer_dir / MODEL_FILE).read_bytes())
    spec, normalizer = proto.trainer_spec, proto.normalizer_spec
    assert spec.model_type == model_pb2.TrainerSpec.BPE
    assert spec.byte_fallback and spec.split_digits
    assert normalizer.name == "identity" and not normalizer.precompiled_charsmap
    assert normalizer.add_dummy_prefix and not normalizer.remove_extra_whitespaces
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    pieces = proto.pieces
    assert [(p.piece, p.type) for p in pieces[:3]] == [
        ("<unk>", model_pb2.ModelProto.SentencePiece.UNKNOWN),
        ("<s>", model_pb2.ModelProto.SentencePiece.CONTROL),
        ("</s>", model_pb2.ModelProto.SentencePiece.CONTROL)]
    byte_pieces = [p.piece for p in pieces if p.type == model_pb2.ModelProto.SentencePiece.BYTE]
    assert byte_pieces == [f"<0x{b:02X}>" for b in range(256)]
    assert len(pieces) == VOCAB_SIZE
    processor = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    assert processor.encode("2024", out_type=str) == ["▁", "2", "0", "2", "4"]  # split digits


@pytest.mark.slow
def test_metadata_names_the_run_it_was_trained_on(refine_run, tokenizer_dir):
    meta = load_metadata(tokenizer_dir)
    run_manifest = json.loads((refine_run / "manifest.json").read_text())
    assert meta["source"]["run_config_hash"] == run_manifest["config_hash"]
    assert meta["source"]["data"] == str((refine_run / "data").resolve())
    files = sorted(p.name for p in (refine_run / "data").glob("*.parquet"))
    assert meta["source"]["files"] == files
    model_bytes = (tokenizer_dir / MODEL_FILE).read_bytes()
    assert meta["model_sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert meta["sample"]["documents"] == len(kept_documents(refine_run))
    assert meta["vocab_size"] == VOCAB_SIZE
    assert (tokenizer_dir / "tokenizer.vocab").read_text().startswith("<unk>\t0")


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(refine_run, tokenizer_dir, tmp_path):
    """Same data and seed: the same model bytes, whatever the trainer's thread count."""
    again = tmp_path / "again"
    train_tokenizer(refine_run / "data", again, vocab_size=VOCAB_SIZE, seed=0,
                    options=TrainerOptions(vocab_size=VOCAB_SIZE, num_threads=1))
    assert (again / MODEL_FILE).read_bytes() == (tokenizer_dir / MODEL_FILE).read_bytes()


@pytest.mark.slow
def test_sample_is_seeded_bounded_and_independent_of_document_order(refine_run):
    documents = [(r["id"], r["text"]) for r in kept_documents(refine_run)]
    everything, stats = sample_lines(documents, seed=0, max_sentences=10**9, max_bytes=10**12)
    assert stats.sampled_lines == stats.lines == len(everything) > 500
    small, small_stats = sample_lines(documents, seed=0, max_sentences=200, max_bytes=10**12)
    assert len(small) == 200 and set(small) <= set(everything)
    shuffled = documents[:]
    random.Random(1).shuffle(shuffled)
    assert sample_lines(shuffled, seed=0, max_sentences=200, max_bytes=10**12)[0] == small
    other_seed = sample_lines(documents, seed=1, max_sentences=200, max_bytes=10**12)[0]
    assert other_seed != small
    by_bytes, byte_stats = sample_lines(documents, seed=0, max_sentences=10**9, max_bytes=20_000)
    assert byte_stats.sampled_bytes == sum(len(x.encode()) for x in by_bytes) <= 20_000
    assert byte_stats.sampled_bytes > 15_000 and set(by_bytes) <= set(everything)


def test_long_lines_are_cut_not_skipped():
    words = " ".join(["naïve-café"] * 1000)  # 10,999 characters, 12,999 bytes
    pieces = cut_line(words, 4192)
    assert len(pieces) == 4 and all(len(p.encode()) <= 4192 for p in pieces)
    assert " ".join(pieces) == words  # only the cut spaces are dropped
    no_spaces = "日本語" * 2000  # 18,000 bytes, 3 bytes a character
    pieces = cut_line(no_spaces, 1000)
    assert "".join(pieces) == no_spaces and all(len(p.encode()) <= 1000 for p in pieces)
    assert cut_line("short", 4192) == ["short"]


@pytest.mark.slow
def test_cli_trains_and_refuses_to_overwrite(refine_run, tmp_path):
    out = tmp_path / "tok"
    command = [sys.executable, "-m", "pretrain.tokenizer", "--data", str(refine_run / "data"),
               "--out", str(out), "--vocab-size", "1000", "--threads", "1", "--quiet"]
    subprocess.run(command, check=True, cwd=ROOT)
    assert load_metadata(out)["vocab_size"] == 1000
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    help_text = subprocess.run([sys.executable, "-m", "pretrain.tokenizer", "--help"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    assert "--max-sentences" in help_text and "byte fallback" in help_text
