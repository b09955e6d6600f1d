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

from pretrain.codec import META, LosslessTokenizer
from pretrain.tokenizer import (
    MODEL_FILE,
    TrainerOptions,
    cut_line,
    load_metadata,
    sample_lines,
    train_tokenizer,
)

from .conftest import ROOT
from .pretrain_data import DATA, VOCAB_SIZE, kept_documents, real_texts

# a literal U+2581 at the start, in the middle, at the end, in runs, next to spaces and newlines
META_TEXTS = [META, f"{META}x", f"x{META}", f"{META} b", f" {META}", f"{META}{META}",
              f"a {META} b", f"{META}  ", f"  {META}", f"tok{META}en", f"{META * 3} {META}",
              f"a\n{META}\nb", f"{META}\t{META}", f"SentencePiece writes {META}Hello{META}world",
              f"日本{META}語 🦙{META}", f"{META}<0xE2>{META}", f"{META}</s>"]


@pytest.fixture(scope="module")
def processor(tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tokenizer_dir / MODEL_FILE))


@pytest.fixture(scope="module")
def lossless(tokenizer_dir):
    return LosslessTokenizer.load(tokenizer_dir)


def with_literal_meta(texts: list[str], seed: int = 0) -> list[str]:
    """Each text with 1-4 literal U+2581 inserted at seeded positions (also before and after
    spaces, at the start and at the end)."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        for _ in range(rng.randint(1, 4)):
            at = rng.choice([0, len(text), rng.randint(0, len(text))])
            text = text[:at] + META * rng.randint(1, 2) + text[at:]
        out.append(text)
    return out


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
def test_plain_sentencepiece_turns_a_literal_u2581_into_a_space(processor):
    """Why LosslessTokenizer exists: SentencePiece reads U+2581 as its whitespace symbol."""
    assert processor.encode(f"a{META}b") == processor.encode("a b")
    assert all(processor.decode(processor.encode(t)) != t for t in META_TEXTS)


@pytest.mark.slow
def test_round_trip_is_lossless_with_a_literal_u2581_anywhere(lossless):
    for text in META_TEXTS:
        assert lossless.decode(lossless.encode(text)) == text, repr(text)
        assert lossless.unk_id() not in lossless.encode(text)


@pytest.mark.slow
def test_round_trip_is_lossless_for_real_documents_with_u2581_inserted(refine_run, lossless):
    texts = with_literal_meta(real_texts(refine_run, 300))
    encoded = lossless.encode_batch(texts, add_eos=True, num_threads=2)
    assert [lossless.decode(ids) for ids in encoded] == texts
    assert encoded == [lossless.encode(t, add_eos=True) for t in texts]
    assert all(ids[-1] == lossless.eos_id() for ids in encoded)


@pytest.mark.slow
def test_a_literal_u2581_is_its_byte_pieces_which_decode_to_it(lossless, processor):
    meta_ids = lossless.encode(META)
    assert processor.id_to_piece(meta_ids) == ["<0xE2>", "<0x96>", "<0x81>"]
    assert processor.decode(meta_ids) == META  # plain SentencePiece decodes them to the char
    # the text before keeps SentencePiece's dummy prefix; the text after gets none
    assert lossless.encode(f"x{META}y") == (processor.encode("x") + meta_ids
                                            + [processor.piece_to_id("y")])


@pytest.mark.slow
def test_ids_of_text_without_u2581_are_sentencepieces_own(refine_run, processor, lossless):
    """Token shards of existing data do not change: same ids, batched or not."""
    texts = real_texts(refine_run, 1000)
    assert not any(META in t for t in texts)
    expected = processor.encode(texts, add_eos=True)
    assert lossless.encode_batch(texts, add_eos=True, num_threads=2) == expected
    assert [lossless.encode(t) for t in texts[:200]] == processor.encode(texts[:200])
    mixed = texts[:50] + with_literal_meta(texts[50:60]) + texts[60:100]
    batched = lossless.encode_batch(mixed, num_threads=2)
    assert batched[:50] == processor.encode(texts[:50])
    assert batched[50:60] == [lossless.encode(t) for t in mixed[50:60]]
    assert batched[60:] == processor.encode(texts[60:100])


def test_a_model_without_byte_pieces_is_refused(tmp_path):
    lines = (DATA / "text" / "lee-news-background.txt").read_text().splitlines()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "m"),
                                   model_type="bpe", vocab_size=300, byte_fallback=False,
                                   minloglevel=2)
    with pytest.raises(ValueError, match="byte_fallback"):
        LosslessTokenizer.load(tmp_path / "m.model")


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
