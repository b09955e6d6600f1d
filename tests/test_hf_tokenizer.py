"""The exported `transformers` tokenizer gives SentencePiece's ids, leading whitespace included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sentencepiece as spm

from pretrain.hf_export import build_tokenizer_json, export_hf_tokenizer, load_hf_tokenizer
from pretrain.tokenizer import MODEL_FILE

from .conftest import ROOT
from .pretrain_data import real_texts

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

LEADING = [" Hello world", "  two spaces", "    indented code", "\nnewline first",
           "\n\n  blank line then indent", "\tTab first", " \n", " ", "   ", "\u00a0nbsp first",
           "trailing space ", "", "x", "Hello\n world"]


@pytest.fixture(scope="module")
def processor(tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tokenizer_dir / MODEL_FILE))


@pytest.fixture(scope="module")
def hf_dir(tokenizer_dir, tmp_path_factory):
    return export_hf_tokenizer(tokenizer_dir, tmp_path_factory.mktemp("hf-tokenizer"))


@pytest.fixture(scope="module")
def hf_tokenizer(hf_dir):
    return load_hf_tokenizer(hf_dir)


@pytest.fixture(scope="module")
def texts(refine_run):
    texts = real_texts(refine_run, 1000)
    assert len(texts) == 1000
    return texts


def test_directory_has_what_transformers_and_sentencepiece_read(hf_dir, hf_tokenizer):
    names = {p.name for p in hf_dir.iterdir()}
    assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"} <= names
    assert (hf_tokenizer.unk_token_id, hf_tokenizer.bos_token_id,
            hf_tokenizer.eos_token_id) == (0, 1, 2)
    assert (hf_tokenizer.bos_token, hf_tokenizer.eos_token) == ("<s>", "</s>")
    assert len(hf_tokenizer) == spm.SentencePieceProcessor(
        model_file=str(hf_dir / "tokenizer.model")).get_piece_size()


def test_same_ids_as_sentencepiece_on_1000_real_documents(hf_tokenizer, processor, texts):
    mismatched = [t[:40] for t in texts if hf_tokenizer(t)["input_ids"] != processor.encode(t)]
    assert mismatched == []


def test_decode_gives_back_the_documents(hf_tokenizer, processor, texts):
    for text in texts[:300]:
        assert hf_tokenizer.decode(processor.encode(text)) == text


def test_literal_u2581_decodes_exactly_but_encodes_as_sentencepiece_does(
        hf_tokenizer, processor, tokenizer_dir, texts):
    """What pretrain.hf_export's docstring promises for text with a literal U+2581: decode of
    the shards' ids (LosslessTokenizer's) is exact; encode gives plain SentencePiece's ids."""
    from pretrain.codec import META, LosslessTokenizer

    lossless = LosslessTokenizer.load(tokenizer_dir)
    cases = [META, f"{META}x", f"x{META}", f" {META} b", f"{META}{META}  ", f"a\n{META}\nb"]
    cases += [f"{META}{t[:200]}{META}" for t in texts[:50]]
    cases += [t[:100] + f" {META}" + t[100:200] for t in texts[50:100]]
    for text in cases:
        assert hf_tokenizer.decode(lossless.encode(text)) == text, repr(text)
        ids = hf_tokenizer(text)["input_ids"]
        assert ids == processor.encode(text) != lossless.encode(text)
        assert hf_tokenizer.decode(ids) != text  # the literal character came back as a space


@pytest.mark.parametrize("text", LEADING)
def test_leading_whitespace_matches_sentencepiece(hf_tokenizer, processor, text):
    ids = hf_tokenizer(text)["input_ids"]
    assert ids == processor.encode(text)
    assert hf_tokenizer.decode(ids) == text == processor.decode(ids)


def test_real_documents_with_leading_whitespace(hf_tokenizer, processor, texts):
    for prefix in (" ", "  ", "\n", "\n ", "\t"):
        for text in texts[:100]:
            assert hf_tokenizer(prefix + text)["input_ids"] == processor.encode(prefix + text)


def test_why_not_metaspace_first(tokenizer_dir, processor):
    """The pipeline `LlamaTokenizer(legacy=False)` uses (Metaspace, prepend_scheme="first")
    drops SentencePiece's dummy prefix before a leading space; ours keeps it."""
    from tokenizers import pre_tokenizers

    ours = build_tokenizer_json(tokenizer_dir / MODEL_FILE)
    metaspace = build_tokenizer_json(tokenizer_dir / MODEL_FILE)
    metaspace.normalizer = None
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                       prepend_scheme="first", split=False)
    for text in ("Hello world", "\nHello"):
        assert metaspace.encode(text).ids == ours.encode(text).ids == processor.encode(text)
    text = " Hello world"
    assert ours.encode(text).ids == processor.encode(text)
    assert metaspace.encode(text).ids != processor.encode(text)
    assert metaspace.encode(text).ids == processor.encode(text[1:])  # the space is lost


def test_llama_tokenizer_class_loads_the_directory(hf_dir, processor, texts):
    """`LlamaTokenizer.from_pretrained` works too, and agrees on text without a leading space
    (transformers v5 rebuilds it as Metaspace "first"; see pretrain.hf_export)."""
    from transformers import LlamaTokenizer

    llama = LlamaTokenizer.from_pretrained(str(hf_dir), add_bos_token=False)
    plain = [t for t in texts[:200] if not t.startswith(" ")]
    assert all(llama(t)["input_ids"] == processor.encode(t) for t in plain)


def test_config_and_cli(hf_dir, tokenizer_dir, tmp_path):
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["add_bos_token"] is False and config["add_eos_token"] is False
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "pretrain.hf_export", "--tokenizer", str(tokenizer_dir),
                    "--out", str(out), "--quiet"], cwd=ROOT, check=True)
    assert (out / "tokenizer.json").read_bytes() == (hf_dir / "tokenizer.json").read_bytes()
