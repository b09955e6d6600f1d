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

Files are UTF-8 (a BOM is fine). A file not in its task's format raises DataError (a
pretrain.config.ConfigError) naming the file, the line and what was expected there.

Labels follow pretrain.model: aligned with input_ids (the model shifts), -100 ignored. Batches
are right-padded with PAD_ID (input) and -100 (labels).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pretrain.documents import DataError, json_object
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


SFT_JSONL = 'JSONL, one {"prompt": "...", "response": "..."} per line (--task sft)'
TEXT_JSONL = 'JSONL, one {"text": "..."} per line (--task text)'
CLASSIFY_JSONL = ('JSONL, one {"text": "...", ["text_pair": "...",] "label": 0, 1, ...} per line '
                  '(--task classify)')
MRPC_TSV = "MRPC's TSV (a header line of tab-separated Quality, #1 ID, #2 ID, #1 String, #2 String)"




def read_file(path: Path) -> str:
    """The text of a data file: UTF-8, with or without a BOM."""
    if not path.is_file():
        raise DataError(f"{path} {'is not a file' if path.exists() else 'does not exist'}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte 0x{data[error.start]:02x} is not UTF-8; save the "
                        "file as UTF-8") from None


def _jsonl(path: Path, expected: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line. Lines end at \\n only: a JSON string may
    hold U+2028 and other characters str.splitlines() would split at."""
    rows = []
    for number, line in enumerate(read_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        hint = (" (MRPC's TSV, which --task classify reads from a file not named .jsonl)"
                if line.startswith("Quality\t") else "")
        rows.append((number, json_object(line, f"{path}:{number}", expected, hint)))
    return rows


def _strings(path: Path, number: int, row: dict[str, Any], keys: Sequence[str],
             expected: str) -> list[str]:
    """row[key] for each key, which must be strings."""
    missing = [key for key in keys if not isinstance(row.get(key), str)]
    if missing:
        names = " and ".join(json.dumps(key) for key in missing)
        raise DataError(f"{path}:{number}: {names} missing or not a string (keys: "
                        f"{sorted(row)}); expected {expected}")
    return [row[key] for key in keys]


def _label(path: Path, number: int, value: Any, expected: str) -> int:
    """A class label: a non-negative integer (1, "1" or 1.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{path}:{number}: label {value!r} is not a class (0, 1, ...); "
                        f"expected {expected}")
    return value


def read_sft(path: Path, encode: Encode, seq_len: int) -> list[Example]:
    pairs = [_strings(path, number, row, ("prompt", "response"), SFT_JSONL)
             for number, row in _jsonl(path, SFT_JSONL)]
    examples = [sft_example(encode(prompt), encode(response), seq_len)
                for prompt, response in pairs]
    return [e for e in examples if e is not None]


def read_text(path: Path, encode: Encode, seq_len: int) -> list[Example]:
    if path.suffix == ".jsonl":
        docs = [_strings(path, number, row, ("text",), TEXT_JSONL)[0]
                for number, row in _jsonl(path, TEXT_JSONL)]
    else:
        docs = [line for line in read_file(path).splitlines() if line.strip()]
    return text_windows([encode(doc) for doc in docs], seq_len)


def _classify_row(path: Path, number: int, row: dict[str, Any]) -> tuple[list[str], int]:
    texts = _strings(path, number, row, ("text",), CLASSIFY_JSONL)
    if row.get("text_pair"):
        texts += _strings(path, number, row, ("text_pair",), CLASSIFY_JSONL)
    if "label" not in row:
        raise DataError(f'{path}:{number}: no "label" (keys: {sorted(row)}); '
                        f"expected {CLASSIFY_JSONL}")
    return texts, _label(path, number, row["label"], CLASSIFY_JSONL)


def _mrpc_rows(path: Path, lines: list[str]) -> list[tuple[list[str], int]]:
    if not lines or not lines[0].startswith("Quality\t"):
        hint = " (it holds JSON: name it .jsonl)" if lines and lines[0].startswith("{") else ""
        raise DataError(f"{path}:1: not the header of MRPC's TSV{hint}; expected {MRPC_TSV}, "
                        f"or {CLASSIFY_JSONL} in a .jsonl file")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise DataError(f"{path}:{number}: {len(fields)} tab-separated fields; expected 5 "
                            f"tab-separated fields, {MRPC_TSV}")
        rows.append(([fields[3], fields[4]], _label(path, number, fields[0], MRPC_TSV)))
    return rows


def read_labelled(path: Path) -> list[tuple[list[str], int]]:
    """(texts, label) rows of a classification file: MRPC TSV or JSONL."""
    if path.suffix == ".jsonl":
        return [_classify_row(path, number, row)
                for number, row in _jsonl(path, CLASSIFY_JSONL)]
    return _mrpc_rows(path, read_file(path).splitlines())


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
