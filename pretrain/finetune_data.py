"""Fine-tuning data: files to token examples (input_ids, labels) and padded batches.

    sft       JSONL, one {"prompt": ..., "response": ...} per line. Prompt and response are
              tokenized separately and concatenated, EOS at the end; the prompt's positions are
              labelled -100, so only the response (and its EOS) carries loss. No BOS, as in the
              pretraining shards.
    text      plain text, one document per line, or JSONL with a "text" field: each document
              followed by EOS, concatenated and cut into windows of seq_len tokens, every token a
              target (continued pretraining, as pretrain.train's data).
    classify  labelled text or text pairs: JSONL {"text": ..., ["text_pair": ...,] "label": int},
              or MRPC's TSV (header `Quality  #1 ID  #2 ID  #1 String  #2 String`). An example is
              text EOS [text_pair EOS]; the classifier reads the hidden state of the last token.

Labels follow pretrain.model: aligned with input_ids (the model shifts), -100 ignored. Batches
are right-padded with PAD_ID (input) and -100 (labels).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrain.export import EOS_ID
from pretrain.model import IGNORE_INDEX

PAD_ID = 0  # <unk>: never the last token of an example (they end with EOS), so the classifier's
# "rightmost token != pad" (transformers' rule) is always the final EOS

Encode = Callable[[str], list[int]]


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int] | int  # token labels (sft, text) or a class (classify)


def sft_example(prompt: list[int], response: list[int], seq_len: int) -> Example | None:
    """prompt + response + EOS, cut to seq_len; prompt positions labelled -100. None when
    truncation leaves no response token."""
    ids = (prompt + response + [EOS_ID])[:seq_len]
    labels = ([IGNORE_INDEX] * len(prompt) + response + [EOS_ID])[:seq_len]
    if all(label == IGNORE_INDEX for label in labels[1:]):  # position 0 is never a target
        return None
    return Example(ids, labels)


def text_windows(documents: Sequence[list[int]], seq_len: int) -> list[Example]:
    """Documents + EOS each, concatenated, cut into windows of seq_len (the last may be
    shorter, but has at least 2 tokens)."""
    stream = [token for doc in documents for token in [*doc, EOS_ID]]
    windows = [stream[i:i + seq_len] for i in range(0, len(stream), seq_len)]
    return [Example(w, list(w)) for w in windows if len(w) >= 2]


def classify_example(parts: Sequence[list[int]], label: int, seq_len: int) -> Example:
    """part EOS [part EOS], cut to seq_len with the final EOS kept."""
    ids = [token for part in parts for token in [*part, EOS_ID]]
    if len(ids) > seq_len:
        ids = ids[:seq_len - 1] + [EOS_ID]
    return Example(ids, label)


def _jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_sft(path: Path, encode: Encode, seq_len: int) -> list[Example]:
    examples = [sft_example(encode(row["prompt"]), encode(row["response"]), seq_len)
                for row in _jsonl(path)]
    return [e for e in examples if e is not None]


def read_text(path: Path, encode: Encode, seq_len: int) -> list[Example]:
    if path.suffix == ".jsonl":
        docs = [row["text"] for row in _jsonl(path)]
    else:
        docs = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return text_windows([encode(doc) for doc in docs], seq_len)


def read_labelled(path: Path) -> list[tuple[list[str], int]]:
    """(texts, label) rows of a classification file: MRPC TSV or JSONL."""
    if path.suffix == ".jsonl":
        return [([row["text"]] + ([row["text_pair"]] if row.get("text_pair") else []),
                 int(row["label"])) for row in _jsonl(path)]
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or not lines[0].startswith("Quality\t"):
        raise ValueError(f"{path}: neither .jsonl nor MRPC TSV (header 'Quality\\t#1 ID...')")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: {len(fields)} tab-separated fields, MRPC has 5")
        rows.append(([fields[3], fields[4]], int(fields[0])))
    return rows


def read_classify(path: Path, encode: Encode, seq_len: int) -> list[Example]:
    return [classify_example([encode(t) for t in texts], label, seq_len)
            for texts, label in read_labelled(path)]


READERS = {"sft": read_sft, "text": read_text, "classify": read_classify}


def collate(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) right-padded to the longest example: labels (batch, seq) of token
    labels, or (batch,) of classes."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), PAD_ID, dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, :len(example.input_ids)] = torch.tensor(example.input_ids)
    if isinstance(examples[0].labels, int):
        return ids, torch.tensor([e.labels for e in examples], dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        labels[row, :len(example.input_ids)] = torch.tensor(example.labels)
    return ids, labels
