"""Held-out evaluation in bits per byte (tokenizer-independent): the one scoring of text that
`python -m pretrain.ablate` and `python -m pretrain.evaluate` share.

    bpb = sum over the evaluated documents of -log2 p(token | context)
          / sum of the documents' UTF-8 bytes

Every document is evaluated on its own (no context from another document): its token ids are
preceded by EOS, the token that separates documents in the training stream (pretrain.encode
puts EOS after each document and no BOS), so the first token of the text is predicted the way
training saw document starts. Every token of the text is a target exactly once; the closing EOS
is not scored (it encodes no byte of the text).

A document longer than the model's window is read in windows of `seq_len` inputs that advance
by `stride` tokens: window k ends at min(seq_len + k * stride, n) and scores only the targets
after the previous window's end, so each of those has at least seq_len - stride tokens of
context (the usual strided perplexity evaluation). stride == seq_len means no overlap: the
windows of lm-evaluation-harness's rolling log-likelihood (`loglikelihood_rolling`, with EOS
as its prefix token), so the two agree token for token.

Scores add up over documents, so a large set can be scored in chunks (`BPB.plus`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from pretrain.codec import LosslessTokenizer

Logits = Callable[[torch.Tensor], torch.Tensor]  # (batch, seq) int64 -> (batch, seq, vocab)


@dataclass
class EvalText:
    """An evaluation set: documents, their token ids (without EOS) and what identifies them."""

    name: str
    ids: list[str]
    texts: list[str]
    tokens: list[list[int]]

    @property
    def bytes(self) -> int:
        return sum(len(t.encode("utf-8")) for t in self.texts)

    def summary(self) -> dict:
        return {"documents": len(self.texts), "bytes": self.bytes,
                "tokens": sum(map(len, self.tokens)), "sha256": text_sha256(self.texts)}


def text_sha256(texts: Sequence[str]) -> str:
    """Hash of the evaluated text: each document's UTF-8 bytes with its length before it."""
    digest = hashlib.sha256()
    hash_texts(digest, texts)
    return digest.hexdigest()


def hash_texts(digest: hashlib._Hash, texts: Iterable[str]) -> None:
    """Feed `texts` to a sha256 as `text_sha256` does (for a set hashed chunk by chunk)."""
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)


def encode_texts(name: str, ids: list[str], texts: list[str],
                 tokenizer: LosslessTokenizer) -> EvalText:
    """Encode as the token shards are (no BOS, no EOS): every text decodes back exactly."""
    return EvalText(name, list(ids), list(texts),
                    [list(t) for t in tokenizer.encode_batch(list(texts), num_threads=1)])


def windows(n: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows over a sequence [context] + n tokens (positions 0..n; targets are 1..n).

    Returns (begin, end, first): the window's inputs are positions begin..end-1, its targets
    begin+1..end, of which positions first..end are scored. The scored ranges tile 1..n."""
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride {stride} must be in [1, seq_len {seq_len}]")
    out, previous_end, k = [], 0, 0
    while previous_end < n:
        end = min(seq_len + k * stride, n)
        begin = max(0, end - seq_len)
        out.append((begin, end, previous_end + 1))
        previous_end, k = end, k + 1
    return out


@dataclass
class BPB:
    bits: float  # total -log2 p over the scored tokens
    bytes: int  # UTF-8 bytes of the evaluated texts
    tokens: int  # scored tokens (all the texts' tokens)
    documents: int

    @property
    def bpb(self) -> float:
        return self.bits / self.bytes if self.bytes else math.nan

    @property
    def loss(self) -> float:
        """Mean next-token cross-entropy in nats (the training loss's unit)."""
        return self.bits * math.log(2) / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def plus(self, other: BPB) -> BPB:
        """The score of both sets of documents together."""
        return BPB(self.bits + other.bits, self.bytes + other.bytes, self.tokens + other.tokens,
                   self.documents + other.documents)

    def to_dict(self) -> dict:
        return {**asdict(self), "bpb": self.bpb,
                "bits_per_token": self.bits / self.tokens if self.tokens else math.nan}


@torch.no_grad()
def bits_per_byte(logits_fn: Logits, data: EvalText, context_id: int, seq_len: int,
                  stride: int | None = None, batch_size: int = 16,
                  on_batch: Callable[[int], None] | None = None) -> BPB:
    """Bits per byte of `logits_fn` (e.g. `lambda x: model(x).logits`) on `data`.

    `logits_fn` gets CPU ids and may return logits on any device. `on_batch(tokens)` is told
    the number of tokens each batch scored (a progress bar)."""
    stride = stride or seq_len
    pieces: list[tuple[list[int], int, int]] = []  # (window inputs + target, scored from, to)
    for ids in data.tokens:
        sequence = [context_id, *ids]
        for begin, end, first in windows(len(ids), seq_len, stride):
            pieces.append((sequence[begin:end + 1], first - begin - 1, end - begin))
    bits, scored = 0.0, 0
    for start in range(0, len(pieces), batch_size):
        batch = pieces[start:start + batch_size]
        width = max(len(p[0]) for p in batch) - 1
        inputs = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, (window, first, last) in enumerate(batch):
            # right padding: causal attention never lets a real position see it
            inputs[row, :len(window) - 1] = torch.tensor(window[:-1])
            targets[row, :len(window) - 1] = torch.tensor(window[1:])
            mask[row, first:last] = True
        logits = logits_fn(inputs)
        targets, mask = targets.to(logits.device), mask.to(logits.device)
        picked = torch.stack([  # row by row: one row's logits in float64 at a time, not all
            torch.log_softmax(row.double(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            for row, target in zip(logits, targets, strict=True)])
        bits -= float(picked[mask].sum()) / math.log(2)
        scored += int(mask.sum())
        if on_batch is not None:
            on_batch(int(mask.sum()))
    total = sum(map(len, data.tokens))
    if scored != total:  # every token scored exactly once
        raise AssertionError(f"scored {scored} of {total} tokens")
    return BPB(bits, data.bytes, scored, len(data.texts))
