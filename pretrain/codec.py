"""Lossless encode/decode with our SentencePiece model: decode(encode(text)) == text, always.

"Our model": pretrain.tokenizer's settings (byte_fallback, identity normalisation, extra
whitespace kept). A model that normalises (NFKC, collapsing spaces) loses what its normaliser
changes whatever the encoder does; this class only removes the U+2581 loss.

SentencePiece reads a literal U+2581 "▁" in the input as its whitespace meta symbol, so plain
`SentencePieceProcessor.encode` turns "a▁b" into the ids of "a b" and the character is lost
(Llama's tokenizer does the same). `LosslessTokenizer` splits the text at each literal U+2581,
encodes the first part as usual (with the dummy prefix) and the later parts without a dummy
prefix, and writes each literal U+2581 as the byte-fallback ids of its UTF-8 bytes
<0xE2><0x96><0x81>. Plain SentencePiece never emits those three ids in that order (it always
reads the character as its whitespace symbol, a piece of the vocab), and its `decode` (like
the exported tokenizer.json's) turns them back into the literal character, so decode needs
nothing special.

For a text without U+2581 the ids are exactly `SentencePieceProcessor.encode`'s: token shards of
such text do not change. Batches go through SentencePiece's batched (multi-threaded) call; only
the texts that contain U+2581 are encoded one by one.

Every place in `pretrain` that encodes or decodes text uses this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pretrain.tokenizer import MODEL_FILE

META = "\u2581"  # SentencePiece's whitespace meta symbol
META_BYTES = META.encode("utf-8")  # b"\xe2\x96\x81"
ENCODING = "sentencepiece; literal U+2581 as byte pieces <0xE2><0x96><0x81>"


def _without_dummy_prefix(model_proto: bytes) -> bytes:
    """The same model with add_dummy_prefix off (sentencepiece 0.2.x's Python API has no
    normalizer override, so the proto is edited)."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    proto.normalizer_spec.add_dummy_prefix = False
    return proto.SerializeToString()


class LosslessTokenizer:
    """A SentencePiece model whose encode/decode round trip is exact for every text."""

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.processor: Any = spm.SentencePieceProcessor(model_proto=model_proto)
        self._continuation: Any = spm.SentencePieceProcessor(
            model_proto=_without_dummy_prefix(model_proto))
        self.meta_ids = [self.processor.piece_to_id(f"<0x{byte:02X}>") for byte in META_BYTES]
        if not all(self.processor.is_byte(i) for i in self.meta_ids):
            raise ValueError("the SentencePiece model has no byte pieces (byte_fallback): "
                             "a literal U+2581 cannot be encoded losslessly")

    @classmethod
    def load(cls, path: str | Path) -> LosslessTokenizer:
        """From a TOK/HF_TOKENIZER directory (its tokenizer.model) or a .model file."""
        path = Path(path)
        return cls((path / MODEL_FILE if path.is_dir() else path).read_bytes())

    def piece_size(self) -> int:
        return self.processor.get_piece_size()

    def eos_id(self) -> int:
        return self.processor.eos_id()

    def bos_id(self) -> int:
        return self.processor.bos_id()

    def unk_id(self) -> int:
        return self.processor.unk_id()

    def encode(self, text: str, add_eos: bool = False) -> list[int]:
        """Token ids of `text` (no BOS; EOS at the end with add_eos)."""
        if META not in text:
            return self.processor.encode(text, add_eos=add_eos)
        first, *rest = text.split(META)
        ids = self.processor.encode(first)
        for part in rest:
            ids += self.meta_ids
            ids += self._continuation.encode(part)
        return ids + [self.eos_id()] if add_eos else ids

    def encode_batch(self, texts: Sequence[str], add_eos: bool = False,
                     num_threads: int = -1) -> list[list[int]]:
        """`encode` of each text; those without U+2581 in one batched SentencePiece call."""
        out: list[list[int] | None] = [self.encode(t, add_eos) if META in t else None
                                       for t in texts]
        plain = [i for i, ids in enumerate(out) if ids is None]
        if plain:
            encoded = self.processor.encode([texts[i] for i in plain], add_eos=add_eos,
                                            num_threads=num_threads)
            for i, ids in zip(plain, encoded, strict=True):
                out[i] = ids
        return out  # type: ignore[return-value] (every slot is filled)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode([int(i) for i in ids])
