"""Train a Llama-style SentencePiece BPE tokenizer from a refine run's `data/`.

    python -m pretrain.tokenizer --data RUN/data --out TOK --vocab-size 32000

The sample: documents are read from the Parquet shards in a stream, split into lines (a line
longer than `--max-sentence-bytes` is cut at a space, or at a character boundary, so that
SentencePiece never silently drops it), and each line gets a priority
`blake2b(seed, document id, line number)`. The lines with the smallest priorities are kept, up
to `--max-sentences` lines and `--max-bytes` UTF-8 bytes (a bottom-k sample held in a heap).
That is a uniform sample without replacement that depends only on the seed and the data (not on
shard order), and memory stays bounded by the budget however large the corpus is.

The model (Llama settings): BPE, byte_fallback, split_digits, identity normalisation (no NFKC),
`add_dummy_prefix`, extra whitespace kept, unk/bos/eos = 0/1/2, no pad. Plain SentencePiece
gives decode(encode(text)) == text only for text without U+2581 "▁": it reads that character as
its whitespace symbol, so it comes back as a space (as in Llama's tokenizer). Encode and decode
with `pretrain.codec.LosslessTokenizer` instead, as everything in `pretrain` does: its round
trip is exact for every text (a literal U+2581 becomes the byte pieces <0xE2><0x96><0x81>, which
decode to that character), and its ids for text without U+2581 are SentencePiece's own.

TOK/ holds `tokenizer.model`, `tokenizer.vocab` and `metadata.json` (the source
data and the refine run's config hash, the sample, trainer options, the model's sha256).

`--data` and `--out` may be URLs (`s3://bucket/runs/r1/data`, `gs://...`): the shards are
streamed through fsspec, the model is trained in a local temporary directory and uploaded whole,
`metadata.json` last. Credentials come from the environment (`AWS_*`, `AWS_ENDPOINT_URL`,
profiles, instance roles), never from the command line, and are not recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import os
import posixpath
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from pretrain.files import (
    Location,
    as_location,
    exists,
    is_remote,
    iter_documents,
    parquet_files,
    read_bytes,
    setup_logging,
    source_info,
    storage,
)
from pretrain.files import write_json as _write_json

log = logging.getLogger("pretrain.tokenizer")

MODEL_FILE, VOCAB_FILE, META_FILE = "tokenizer.model", "tokenizer.vocab", "metadata.json"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SENTENCEPIECE_MAX_SENTENCE = 4192  # sentencepiece's default max_sentence_length (bytes)


@dataclass
class SampleStats:
    documents: int = 0
    lines: int = 0  # non-empty lines after cutting long ones
    long_lines_cut: int = 0  # lines that were longer than max_sentence_bytes
    bytes: int = 0
    sampled_lines: int = 0
    sampled_bytes: int = 0


@dataclass
class TrainerOptions:
    """SentencePiece trainer settings; the Llama ones are fixed, the sizes are options."""

    vocab_size: int = 32000
    character_coverage: float = 0.99995
    max_sentence_length: int = SENTENCEPIECE_MAX_SENTENCE
    num_threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    def spm_kwargs(self) -> dict[str, Any]:
        return {
            "model_type": "bpe",
            "vocab_size": self.vocab_size,
            "character_coverage": self.character_coverage,
            "byte_fallback": True,
            "split_digits": True,
            "split_by_unicode_script": True,
            "split_by_whitespace": True,
            "allow_whitespace_only_pieces": True,
            "normalization_rule_name": "identity",
            "add_dummy_prefix": True,
            "remove_extra_whitespaces": False,
            "max_sentencepiece_length": 16,
            "max_sentence_length": self.max_sentence_length,
            "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": -1,
            "unk_surface": " \u2047 ",
            "input_sentence_size": 0,  # we sample ourselves: SentencePiece gets exactly our lines
            "shuffle_input_sentence": False,
            "hard_vocab_limit": False,  # a tiny corpus yields a smaller vocab instead of failing
            "num_threads": self.num_threads,
            "minloglevel": 1,
        }


def cut_line(line: str, max_bytes: int) -> list[str]:
    """Pieces of at most `max_bytes` UTF-8 bytes, cut at the last space (which is dropped)
    or, in a line without spaces, at a character boundary."""
    data = line.encode("utf-8")
    if len(data) <= max_bytes:
        return [line]
    pieces = []
    while len(data) > max_bytes:
        cut = data.rfind(b" ", max_bytes // 2, max_bytes + 1)
        if cut > 0:
            pieces.append(data[:cut].decode("utf-8"))
            data = data[cut + 1:]
            continue
        cut = max_bytes
        while data[cut] & 0xC0 == 0x80:  # do not split a multi-byte character
            cut -= 1
        pieces.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    if data:
        pieces.append(data.decode("utf-8"))
    return pieces


def document_lines(text: str, max_bytes: int, stats: SampleStats) -> Iterator[str]:
    for line in text.split("\n"):
        if not line:
            continue
        pieces = cut_line(line, max_bytes)
        stats.long_lines_cut += len(pieces) > 1
        yield from pieces


def sample_lines(documents: Iterable[tuple[str, str]], seed: int, max_sentences: int,
                 max_bytes: int, max_sentence_bytes: int = SENTENCEPIECE_MAX_SENTENCE,
                 log_every: int = 1_000_000) -> tuple[list[str], SampleStats]:
    """Seeded bottom-k sample of the documents' lines within both budgets.

    Returns the sampled lines ordered by priority (a seeded shuffle) and counts."""
    stats = SampleStats()
    heap: list[tuple[int, int, str]] = []  # (-priority, bytes, line): heap[0] = largest priority
    held = 0
    seed_bytes = seed.to_bytes(8, "little", signed=True)
    next_log = log_every
    for doc_id, text in documents:
        stats.documents += 1
        base = hashlib.blake2b(seed_bytes + doc_id.encode("utf-8"), digest_size=8)
        for number, line in enumerate(document_lines(text, max_sentence_bytes, stats)):
            size = len(line.encode("utf-8"))
            stats.lines += 1
            stats.bytes += size
            digest = base.copy()
            digest.update(number.to_bytes(4, "little"))
            priority = int.from_bytes(digest.digest(), "little")
            full = len(heap) >= max_sentences or held + size > max_bytes
            if full and heap and priority >= -heap[0][0]:
                continue  # would be evicted first anyway
            heapq.heappush(heap, (-priority, size, line))
            held += size
            while heap and (len(heap) > max_sentences or held > max_bytes):
                held -= heapq.heappop(heap)[1]
        if stats.lines >= next_log:
            log.info("read %d documents, %d lines (%.1f MB); holding %d lines (%.1f MB)",
                     stats.documents, stats.lines, stats.bytes / 1e6, len(heap), held / 1e6)
            next_log += log_every
    heap.sort(reverse=True)  # ascending priority
    lines = [line for _, _, line in heap]
    stats.sampled_lines, stats.sampled_bytes = len(lines), held
    return lines, stats


def _drain(lines: list[str]) -> Iterator[str]:
    """Yield the lines and let go of each one, so Python's copy shrinks as SentencePiece's grows."""
    lines.reverse()
    while lines:
        yield lines.pop()


def _drop_machine_details(model_file: Path) -> bytes:
    """The model proto records the trainer's thread count and temporary output path; clear them
    so the model's bytes (and hash) depend on the data and settings only. Returns the bytes."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    proto.trainer_spec.ClearField("num_threads")
    proto.trainer_spec.ClearField("model_prefix")
    model = proto.SerializeToString()
    model_file.write_bytes(model)
    return model


def train_tokenizer(data_dir: Location, out_dir: Location, vocab_size: int = 32000,
                    seed: int = 0, max_sentences: int = 5_000_000, max_bytes: int = 1 << 30,
                    options: TrainerOptions | None = None) -> dict[str, Any]:
    """Sample `data_dir`, train, and write TOK/{tokenizer.model, tokenizer.vocab, metadata.json}.
    Either may be a local path or a URL (s3://...).

    Returns the metadata written to metadata.json."""
    import sentencepiece as spm

    options = replace(options or TrainerOptions(), vocab_size=vocab_size)
    files = parquet_files(data_dir)
    started = time.monotonic()
    lines, stats = sample_lines(iter_documents(files), seed, max_sentences, max_bytes,
                                options.max_sentence_length)
    if not lines:
        raise ValueError(f"no text in {data_dir}")
    sampled_s = time.monotonic() - started
    log.info("sampled %d of %d lines (%.1f of %.1f MB) from %d documents in %.1f s",
             stats.sampled_lines, stats.lines, stats.sampled_bytes / 1e6, stats.bytes / 1e6,
             stats.documents, sampled_s)
    remote = is_remote(out_dir)
    if not remote:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    # remote: trained on a local disk, then each file uploaded whole (an object store has no
    # rename); an earlier metadata.json goes first and the new one comes last
    with tempfile.TemporaryDirectory(dir=None if remote else out_dir, prefix=".train-") as temp:
        prefix = os.path.join(temp, "tokenizer")
        log.info("training SentencePiece BPE (vocab %d, %d threads) on %d lines",
                 vocab_size, options.num_threads, len(lines))
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(sentence_iterator=_drain(lines), model_prefix=prefix,
                                       **options.spm_kwargs())
        model = _drop_machine_details(Path(temp) / MODEL_FILE)
        if remote:
            store = storage(out_dir)
            store.remove(store.path(META_FILE))
            for name in (MODEL_FILE, VOCAB_FILE):
                store.fs.put_file(os.path.join(temp, name), store.path(name))
        else:
            for name in (MODEL_FILE, VOCAB_FILE):
                os.replace(os.path.join(temp, name), out_dir / name)
    train_s = time.monotonic() - started - sampled_s
    processor = spm.SentencePieceProcessor(model_proto=model)
    log.info("trained vocab of %d pieces in %.1f s", processor.get_piece_size(), train_s)
    meta = {
        "model": MODEL_FILE,
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "vocab_size": processor.get_piece_size(),
        "requested_vocab_size": vocab_size,
        "special_ids": {"unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID, "pad": -1},
        "source": {**source_info(data_dir), "files": [posixpath.basename(f) for f in files]},
        "sample": {"seed": seed, "max_sentences": max_sentences, "max_bytes": max_bytes,
                   **asdict(stats)},
        "trainer": {k: v for k, v in options.spm_kwargs().items() if k != "num_threads"},
        "versions": {"sentencepiece": metadata.version("sentencepiece")},
    }
    if remote:
        storage(out_dir).write_json(meta, META_FILE)
    else:
        _write_json(out_dir / META_FILE, meta)
    log.info("wrote %s (sample %.1f s, training %.1f s, peak RSS %.0f MB)", out_dir, sampled_s,
             train_s, peak_rss_mb())
    return meta


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_metadata(tokenizer_dir: Location) -> dict[str, Any]:
    return json.loads(read_bytes(tokenizer_dir, META_FILE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.tokenizer",
        description="Train a Llama-style SentencePiece BPE tokenizer (byte fallback, split "
                    "digits, identity normalisation, unk/bos/eos = 0/1/2) on a seeded, "
                    "streamed, budget-bounded sample of a refine run's kept documents.",
        epilog="--data and --out may be URLs (s3://bucket/runs/r1/data, gs://...), read and "
               "written through fsspec (pip install s3fs or gcsfs); credentials and endpoint "
               "come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
               "AWS_ENDPOINT_URL, a profile or an instance role), never from the command line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=as_location, required=True,
                        help="a refine run's data/ directory (*.parquet with id and text), local "
                             "or a URL")
    parser.add_argument("--out", type=as_location, required=True,
                        help="output directory (local or a URL): tokenizer.model, "
                             "tokenizer.vocab, metadata.json")
    parser.add_argument("--vocab-size", type=int, default=32000,
                        help="number of pieces (a tiny corpus may give fewer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the line sample")
    parser.add_argument("--max-sentences", type=int, default=5_000_000,
                        help="sample at most this many lines")
    parser.add_argument("--max-bytes", type=int, default=1 << 30,
                        help="sample at most this many UTF-8 bytes of lines")
    parser.add_argument("--max-sentence-bytes", type=int, default=SENTENCEPIECE_MAX_SENTENCE,
                        help="cut longer lines into pieces of at most this many bytes")
    parser.add_argument("--character-coverage", type=float, default=0.99995,
                        help="share of characters covered by pieces; the rest fall back to bytes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="SentencePiece trainer threads")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing tokenizer in --out")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    args = parser.parse_args(argv)
    setup_logging(not args.quiet)
    options = TrainerOptions(vocab_size=args.vocab_size,
                             character_coverage=args.character_coverage,
                             max_sentence_length=args.max_sentence_bytes,
                             num_threads=args.threads)
    try:
        if exists(args.out, MODEL_FILE) and not args.overwrite:
            raise FileExistsError(f"{args.out}/{MODEL_FILE} exists (use --overwrite)")
        train_tokenizer(args.data, args.out, args.vocab_size, args.seed, args.max_sentences,
                        args.max_bytes, options)
    except (OSError, ValueError) as error:  # as refine's CLI: one error: line, exit code 2
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
