"""Export the SentencePiece tokenizer as a directory that `transformers` loads.

    python -m pretrain.hf_export --tokenizer TOK --out HF_TOKENIZER

HF_TOKENIZER/ holds `tokenizer.model` (the SentencePiece model, for `LlamaTokenizer` and for
SentencePiece users), `tokenizer.json` (a `tokenizers` pipeline equivalent to SentencePiece),
`tokenizer_config.json` and `special_tokens_map.json`. Load it with
`transformers.AutoTokenizer.from_pretrained(HF_TOKENIZER)` (or `load_hf_tokenizer`).

Leading whitespace, explicitly. SentencePiece's `add_dummy_prefix` puts one "▁" before *every*
text, so " Hi" -> "▁▁Hi". The pipeline `LlamaTokenizer(legacy=False)` builds (Metaspace with
prepend_scheme="first") only prepends "▁" when the text does not already start with one, so
" Hi" -> "▁Hi": different ids, and decode drops the space. tokenizer.json therefore uses the
normaliser Prepend("▁") + Replace(" ", "▁") and no pre-tokeniser (the original Llama
`tokenizer.json`, what the converter calls legacy=True), which gives SentencePiece's ids for
text starting with spaces, newlines or tabs alike (tested). Its decoder strips the one dummy
space, so decode(encode(" Hi")) == " Hi".

Because transformers v5's `LlamaTokenizer` class rebuilds its pipeline from vocab and merges
(Metaspace "first", ignoring tokenizer.json's normaliser), tokenizer_config.json names
`PreTrainedTokenizerFast`, which loads tokenizer.json as written in transformers v4 and v5.
Checked on real documents and leading-whitespace cases (ids equal to SentencePiece's?):

    AutoTokenizer (PreTrainedTokenizerFast)    v4.57: yes   v5: yes
    LlamaTokenizerFast.from_pretrained         v4.57: yes   v5: no, for text starting with " "
    LlamaTokenizer (slow, SentencePiece)       v4.57: yes   v5 (= the fast class): as above

tokenizer.json is built with `tokenizers` directly from the model proto: vocab = pieces in id
order; merges = every split of a normal piece into two pieces, ranked by the piece's score
(what transformers' SentencePiece extractor does; its v5 `LlamaConverter` path fails on BPE
models). No BOS/EOS is added by default: the token shards hold documents followed by EOS and
no BOS, so `tokenizer(text).input_ids` equals `sp.encode(text)`.

A literal U+2581 "▁" in the text. `pretrain.codec.LosslessTokenizer` (how the token shards are
made) encodes it as the byte pieces <0xE2><0x96><0x81>; tokenizer.json's decoder turns those back
into the literal character (tested), so decode is exact for our ids. Its encode cannot do the
same: like SentencePiece's own encode, it reads a literal U+2581 as a space, so for text that
contains U+2581 `tokenizer(text).input_ids` equals `sp.encode(text)`, not the shards' ids, and
decodes with spaces in its place. For text without U+2581 all three agree.

Special tokens: "<unk>", "<s>", "</s>" written literally in a text are matched as special tokens
by `transformers` (as in chat templates), whereas SentencePiece spells them out piece by piece.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from pretrain.files import write_json
from pretrain.tokenizer import MODEL_FILE

log = logging.getLogger("pretrain.hf_export")

SPIECE_UNDERLINE = "\u2581"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4  # SentencePiece ModelProto piece types


def _load_proto(model_file: Path) -> Any:
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return proto


def bpe_vocab_and_merges(proto: Any) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocab in id order and merges ranked by the merged piece's score (highest first)."""
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    ranked: list[tuple[float, int, int, int, str, str]] = []
    for index, piece in enumerate(proto.pieces):
        if piece.type != NORMAL or len(piece.piece) < 2:
            continue
        text = piece.piece
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in vocab and right in vocab:
                ranked.append((-piece.score, index, vocab[left], vocab[right], left, right))
    ranked.sort()
    return vocab, [(left, right) for *_, left, right in ranked]


def build_tokenizer_json(model_file: Path) -> Any:
    """A `tokenizers.Tokenizer` whose ids equal SentencePiece's for any text."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    proto = _load_proto(model_file)
    spec = proto.trainer_spec
    if spec.model_type != 2:  # BPE
        raise ValueError(f"{model_file} is not a BPE model")
    vocab, merges = bpe_vocab_and_merges(proto)
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=spec.unk_piece,
                              fuse_unk=True, byte_fallback=spec.byte_fallback, dropout=None))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Prepend(SPIECE_UNDERLINE),  # add_dummy_prefix, also before leading spaces
        normalizers.Replace(" ", SPIECE_UNDERLINE),
    ])
    tokenizer.pre_tokenizer = None
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace(SPIECE_UNDERLINE, " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0),  # the dummy prefix
    ])
    specials = [piece.piece for piece in proto.pieces if piece.type in (CONTROL, UNKNOWN)]
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True)
                                  for token in specials])
    # User-defined symbols are atomic in SentencePiece; transformers' converter adds them the
    # same way (our trainer defines none).
    symbols = [piece.piece for piece in proto.pieces if piece.type == USER_DEFINED]
    tokenizer.add_tokens([AddedToken(token, normalized=False, special=False)
                          for token in symbols])
    return tokenizer


def export_hf_tokenizer(tokenizer: Path, out_dir: Path, model_max_length: int = 4096) -> Path:
    """Write HF_TOKENIZER from TOK (a directory holding tokenizer.model, or the model file)."""
    tokenizer = Path(tokenizer)
    model_file = tokenizer / MODEL_FILE if tokenizer.is_dir() else tokenizer
    out_dir.mkdir(parents=True, exist_ok=True)
    proto = _load_proto(model_file)
    spec = proto.trainer_spec
    names = {"unk_token": spec.unk_piece, "bos_token": spec.bos_piece,
             "eos_token": spec.eos_piece}
    backend = build_tokenizer_json(model_file)
    temp = out_dir / ".tokenizer.json.tmp"
    backend.save(str(temp))
    temp.replace(out_dir / "tokenizer.json")
    shutil.copyfile(model_file, out_dir / ".tokenizer.model.tmp")
    (out_dir / ".tokenizer.model.tmp").replace(out_dir / "tokenizer.model")
    added = {str(index): {"content": piece.piece, "lstrip": False, "normalized": False,
                          "rstrip": False, "single_word": False, "special": True}
             for index, piece in enumerate(proto.pieces) if piece.type in (CONTROL, UNKNOWN)}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # loads tokenizer.json as written
        **names,
        "pad_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "legacy": True,  # the converter's name for this pipeline (Prepend normaliser)
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "added_tokens_decoder": added,
        "sp_model_kwargs": {},
    }
    write_json(out_dir / "tokenizer_config.json", config)
    write_json(out_dir / "special_tokens_map.json", names)
    log.info("wrote %s (%d pieces, %d merges)", out_dir, len(proto.pieces),
             len(json.loads(backend.to_str())["model"]["merges"]))
    return out_dir


def load_hf_tokenizer(path: Path) -> Any:
    """The exported tokenizer as `transformers` loads it (AutoTokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.hf_export",
        description="Write a transformers-loadable tokenizer directory (tokenizer.model, "
                    "tokenizer.json, tokenizer_config.json, special_tokens_map.json) whose ids "
                    "equal SentencePiece's, leading whitespace included.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True,
                        help="TOK directory from `python -m pretrain.tokenizer` (or a .model file)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--model-max-length", type=int, default=4096,
                        help="model_max_length written to tokenizer_config.json")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    args = parser.parse_args(argv)
    from pretrain.files import setup_logging

    setup_logging(not args.quiet)
    export_hf_tokenizer(args.tokenizer, args.out, args.model_max_length)
    return 0


if __name__ == "__main__":
    sys.exit(main())
