"""Score a trained model on text: documents, tokens, bytes, mean loss, perplexity, bits per byte.

    python -m pretrain.evaluate MODEL --data FILE_OR_RUN_DATA [--max-docs N] [--out JSON]

MODEL is an exported transformers directory (pretrain.export) or a pretrain.train checkpoint
directory (see pretrain.inference); both give the same numbers. --data is plain text (one
document per line), JSONL (a "text" field), a Parquet file, or a refine run's data/ directory,
local or remote (s3://, gs://, ...; see pretrain.documents).

The scoring is the ablation's (`pretrain.ablate.bpb.bits_per_byte`): every document on its
own, preceded by EOS (the document separator of the training stream), every token of its text
a target once, in windows of --seq-len inputs that advance by --stride (default: no overlap,
lm-evaluation-harness's rolling windows). Then

    loss        mean next-token cross-entropy in nats over the scored tokens
    perplexity  exp(loss)
    bits_per_byte   sum of -log2 p(token) / UTF-8 bytes of the texts (tokenizer-independent)

The result is printed as JSON and written to --out. Documents stream through in chunks, so the
data may be larger than memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from pretrain.ablate.bpb import BPB, bits_per_byte, encode_texts, hash_texts
from pretrain.documents import DataError, read_documents
from pretrain.files import describe, is_remote, setup_logging, storage
from pretrain.inference import (
    LoadedModel,
    ModelError,
    add_model_arguments,
    load_model,
)

log = logging.getLogger("pretrain.evaluate")

CONTEXT = "EOS, then each document alone"
CHUNK_DOCUMENTS = 64  # documents encoded and scored together (memory stays bounded)


def _chunks(documents: Iterator[tuple[str, str]],
            size: int) -> Iterator[list[tuple[str, str]]]:
    while chunk := list(islice(documents, size)):
        yield chunk


def score(loaded: LoadedModel, documents: Iterator[tuple[str, str]], seq_len: int,
          stride: int, batch_size: int, progress: bool = True) -> tuple[BPB, str]:
    """The summed score of every document and the sha256 of their text (`text_sha256`)."""
    from tqdm import tqdm

    model, device = loaded.model, loaded.device

    def logits(ids: torch.Tensor) -> torch.Tensor:
        return model(ids.to(device)).logits

    total, digest = BPB(0.0, 0, 0, 0), hashlib.sha256()
    bar = tqdm(unit="tok", unit_scale=True, desc="evaluate", dynamic_ncols=True,
               disable=None if progress else True)  # None: off when stderr is no terminal
    with bar:
        for chunk in _chunks(documents, CHUNK_DOCUMENTS):
            ids, texts = [d[0] for d in chunk], [d[1] for d in chunk]
            data = encode_texts("evaluate", ids, texts, loaded.tokenizer)
            total = total.plus(bits_per_byte(logits, data, loaded.tokenizer.eos_id(), seq_len,
                                             stride, batch_size, on_batch=bar.update))
            hash_texts(digest, texts)
            bar.set_postfix(docs=total.documents, bpb=f"{total.bpb:.4f}")
    return total, digest.hexdigest()


def check_window(seq_len: int | None, stride: int | None, max_positions: int) -> tuple[int, int]:
    seq_len = seq_len or max_positions
    if not 1 <= seq_len <= max_positions:
        raise ModelError(f"--seq-len {seq_len} must be in [1, the model's "
                         f"max_position_embeddings {max_positions}]")
    stride = stride or seq_len
    if not 1 <= stride <= seq_len:
        raise ModelError(f"--stride {stride} must be in [1, --seq-len {seq_len}]")
    return seq_len, stride


def evaluate(model: str | Path, data: str, max_docs: int | None = None,
             seq_len: int | None = None, stride: int | None = None, batch_size: int = 8,
             tokenizer: str | Path | None = None, tag: str | None = None,
             device: str | None = None, dtype: str = "float32",
             progress: bool = False) -> dict[str, Any]:
    """Score MODEL on the documents at `data` (see the module doc); returns the result dict.
    Raises DataError or ModelError (both ValueErrors) with a message for the user; the data
    is checked before the model is loaded, so that a wrong path fails at once."""
    started = time.monotonic()
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, not {batch_size}")
    documents = read_documents(data, max_docs)
    first = next(documents, None)  # the first document read before the (slow) model load
    if first is None:
        raise DataError(f"no documents in {data}")
    loaded = load_model(model, tokenizer, tag, device, dtype)
    seq_len, stride = check_window(seq_len, stride,
                                   loaded.model.config.max_position_embeddings)
    log.info("scoring %s with %s (%s, %s, %s): windows of %d tokens, stride %d", data,
             loaded.path, loaded.kind, loaded.device, dtype, seq_len, stride)
    total, sha256 = score(loaded, _prepend(first, documents), seq_len, stride, batch_size,
                          progress)
    if total.tokens == 0:
        raise DataError(f"the {total.documents} documents in {data} hold no text to score")
    return {"model": str(loaded.path.resolve()), "model_kind": loaded.kind,
            "tokenizer": str(loaded.tokenizer_dir.resolve()), "data": describe_data(data),
            "max_docs": max_docs, "documents": total.documents, "tokens": total.tokens,
            "bytes": total.bytes, "loss": total.loss, "perplexity": total.perplexity,
            "bits_per_byte": total.bpb, "bits_per_token": total.bits / total.tokens,
            "sha256": sha256, "context": CONTEXT, "seq_len": seq_len, "stride": stride,
            "device": str(loaded.device), "dtype": dtype,
            "wall_s": round(time.monotonic() - started, 3)}


def _prepend(first: tuple[str, str],
             rest: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    yield first
    yield from rest


def describe_data(data: str) -> str:
    return describe(data if is_remote(data) else Path(data.removeprefix("file://")))


def write_result(result: dict[str, Any], out: str) -> None:
    """JSON to a local path (atomically) or a URL."""
    text = json.dumps(result, indent=2) + "\n"
    if is_remote(out):
        store = storage(out.rsplit("/", 1)[0])
        store.write_bytes(store.path(out.rsplit("/", 1)[1]), text.encode())
        return
    from pretrain.files import write_json

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(out), result)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.evaluate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="exported transformers directory or pretrain.train "
                                      "checkpoint directory")
    parser.add_argument("--data", required=True,
                        help="text file (one document per line), JSONL ('text'), Parquet, or a "
                             "refine run's data/ directory; a path or a URL")
    parser.add_argument("--max-docs", type=int, default=None,
                        help="score only the first N documents (default: all)")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="window of input tokens (default: max_position_embeddings)")
    parser.add_argument("--stride", type=int, default=None,
                        help="tokens a window advances; < seq-len gives later windows more "
                             "context (default: seq-len, no overlap)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward "
                                                                  "(default: 8)")
    add_model_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no log lines, no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(not args.quiet)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    try:
        result = evaluate(args.model, args.data, args.max_docs, args.seq_len, args.stride,
                          args.batch_size, args.tokenizer, args.tag, args.device, args.dtype,
                          progress=not args.quiet)
    except (DataError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if args.out:
        try:
            write_result(result, args.out)
        except OSError as error:
            print(f"error: cannot write --out {args.out}: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
