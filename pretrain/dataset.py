"""Fixed windows over TOKENS (see `pretrain.encode`), for data-parallel training.

The split's shards (in manifest order) form one token stream of T tokens. Sample s is the
window stream[s * seq_len : s * seq_len + seq_len + 1] (inputs = window[:-1], targets =
window[1:]), so consecutive samples share one token and every token but the first is a target
once; there are N = (T - 1) // seq_len samples. Windows may cross document and shard
boundaries (documents are separated by EOS).

Order: a global stream of sample positions p = 0, 1, 2, ... that does not depend on the
number of ranks. Epoch e = p // N covers all N samples, in the order `permutation(seed, e)`
(numpy's PCG64 seeded with (seed, e)). Rank r's k-th item is position consumed_samples +
k * world_size + r, so the ranks together read each block of world_size positions once (a block
may straddle two epochs), and a dataset built with `consumed_samples` = the number of samples
the whole job has consumed (a multiple of world_size) continues exactly where training stopped,
on any number of ranks that divides consumed_samples, in any epoch: the global sequence of
samples is the same for 1, 2 or 8 ranks, only who reads which position differs.
(Before: an epoch held N - N % world_size positions, so after the first epoch the order
depended on the number of ranks.)

`TokenDataset` is map-style (`__len__`, `__getitem__` -> int64 array of seq_len + 1), so a
`torch.utils.data.DataLoader(dataset, batch_size=..., shuffle=False)` can wrap it; memmaps open
lazily, so it pickles cheaply into DataLoader workers.

`read_manifest` checks TOKENS before anything is read from it: a missing directory, a refine run
directory, a damaged manifest or shard file is a TokensError (a ConfigError) that names it and
the `python -m pretrain.encode` command that makes TOKENS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from refine.configfile import ConfigError  # = pretrain.config's, without importing torch

# TOKENS' format, stated here rather than in pretrain.encode (which imports these): encode's
# imports (pyarrow, fsspec, sentencepiece) are not needed to train, nor installed by
# bench/gpu_check.sh
FORMAT = "pretrain-tokens/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val")

MAKE_TOKENS = "python -m pretrain.encode --data RUN/data --tokenizer TOK --out TOKENS"
REFINE_RUN_KIND = "refine-run"  # refine.run.KIND: the manifest.json of a refine run


class TokensError(ConfigError):
    """A TOKENS directory that is missing, of another kind (a refine run) or damaged."""


def read_manifest(tokens_dir: Path) -> dict[str, Any]:
    """TOKENS' manifest, checked to be `pretrain.encode`'s and to hold what is read from it
    (TokensError otherwise, naming the directory and the command that makes one)."""
    manifest = _load_manifest(tokens_dir)
    problem = _manifest_problem(manifest)
    if problem:
        raise TokensError(f"{tokens_dir / MANIFEST} is damaged: {problem}; make TOKENS again "
                          f"with `{MAKE_TOKENS} --overwrite`")
    return manifest


def _load_manifest(tokens_dir: Path) -> dict[str, Any]:
    if not tokens_dir.is_dir():
        what = "is not a directory" if tokens_dir.exists() else "does not exist"
        raise TokensError(f"{tokens_dir} {what}: TOKENS is the directory of token shards "
                          f"that `{MAKE_TOKENS}` makes")
    path = tokens_dir / MANIFEST
    if not path.is_file():
        make = MAKE_TOKENS
        if any(tokens_dir.glob("*.parquet")):  # a refine run's data/
            make = make.replace("RUN/data", str(tokens_dir))
        raise TokensError(f"{tokens_dir} has no {MANIFEST}, so it is not a directory of token "
                          f"shards; make one with `{make}`")
    try:
        manifest = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokensError(f"{path} is damaged (not JSON: {error}); make TOKENS again with "
                          f"`{MAKE_TOKENS} --overwrite`") from None
    if isinstance(manifest, dict) and manifest.get("kind") == REFINE_RUN_KIND:
        raise TokensError(f"{tokens_dir} is a refine run directory, not token shards: make them "
                          f"with `python -m pretrain.encode --data {tokens_dir / 'data'} "
                          "--tokenizer TOK --out TOKENS` and pass TOKENS")
    return manifest


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed manifest, or None."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    if manifest.get("format", FORMAT) != FORMAT:
        return f"format {manifest['format']!r}, this version reads {FORMAT!r}"
    for key in ("dtype", "shards"):
        if key not in manifest:
            return f"no {key!r}"
    try:
        dtype = np.dtype(manifest["dtype"])
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "ui":
        return f"'dtype' {manifest['dtype']!r} is not an integer dtype"
    if not isinstance(manifest["shards"], list):
        return "'shards' is not a list"
    return next(filter(None, (_shard_problem(i, s) for i, s in enumerate(manifest["shards"]))),
                None)


def _shard_problem(index: int, shard: Any) -> str | None:
    if not isinstance(shard, dict) or not isinstance(shard.get("name"), str):
        return f"shards[{index}] has no 'name'"
    for split in SPLITS:
        counts = shard.get(split)
        tokens = counts.get("tokens") if isinstance(counts, dict) else None
        if not isinstance(tokens, int) or tokens < 0:
            return f"shards[{index}] ({shard['name']}) has no {split!r} token count"
    return None


class TokenDataset:
    def __init__(self, tokens_dir: Path | str, seq_len: int, split: str = "train", seed: int = 0,
                 rank: int = 0, world_size: int = 1, consumed_samples: int = 0,
                 epochs: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        if seq_len < 1 or epochs < 1 or consumed_samples < 0:
            raise ValueError("seq_len and epochs must be >= 1, consumed_samples >= 0")
        if consumed_samples % world_size:
            raise ValueError("consumed_samples must be a multiple of world_size (whole steps)")
        self.tokens_dir = Path(tokens_dir)
        self.manifest: dict[str, Any] = read_manifest(self.tokens_dir)
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.seq_len, self.split, self.seed = seq_len, split, seed
        self.rank, self.world_size = rank, world_size
        self.consumed_samples, self.epochs = consumed_samples, epochs
        shards = [s for s in self.manifest["shards"] if s[split]["tokens"] > 0]
        self.paths = [self.tokens_dir / split / f"{s['name']}.bin" for s in shards]
        sizes = np.asarray([s[split]["tokens"] for s in shards], dtype=np.int64)
        self._check_shards(sizes)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # stream offset of each shard
        self.total_tokens = int(self.starts[-1])
        self.num_samples = max(0, (self.total_tokens - 1) // seq_len)
        self.samples_per_epoch = self.num_samples  # every epoch, whatever the world size
        if self.samples_per_epoch < world_size:
            raise ValueError(f"{self.total_tokens} {split} tokens make {self.num_samples} "
                             f"windows of {seq_len + 1}, fewer than {world_size} ranks")
        self._maps: list[np.memmap] | None = None
        self._permutation: tuple[int, np.ndarray] | None = None

    def _check_shards(self, sizes: np.ndarray) -> None:
        """Every shard file is there with the manifest's number of tokens."""
        for path, tokens in zip(self.paths, sizes.tolist(), strict=True):
            expected = tokens * self.dtype.itemsize
            found = path.stat().st_size if path.is_file() else None
            if found != expected:
                what = "is missing" if found is None else f"holds {found} bytes"
                raise TokensError(f"{path} {what}, {self.tokens_dir / MANIFEST} says {tokens} "
                                  f"tokens of {self.dtype.name} ({expected} bytes): TOKENS is "
                                  f"damaged; make it again with `{MAKE_TOKENS} --overwrite`")

    # --- order -------------------------------------------------------------------------------

    def permutation(self, epoch: int) -> np.ndarray:
        """Sample ids of an epoch, in order (cached for the current epoch)."""
        if self._permutation is None or self._permutation[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._permutation = (epoch, rng.permutation(self.num_samples))
        return self._permutation[1]

    def position(self, index: int) -> int:
        """Global position (counted over all ranks) of this rank's index-th item."""
        return self.consumed_samples + index * self.world_size + self.rank

    def sample_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.samples_per_epoch)
        return int(self.permutation(epoch)[offset])

    def __len__(self) -> int:
        # whole blocks of world_size positions only: every rank has the same length
        remaining = self.epochs * self.samples_per_epoch - self.consumed_samples
        return max(0, remaining // self.world_size)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.window(self.sample_at(self.position(index)))

    # --- tokens ------------------------------------------------------------------------------

    def window(self, sample: int) -> np.ndarray:
        """Tokens of sample `sample`: seq_len + 1 of them, as int64."""
        start = sample * self.seq_len
        return self.tokens(start, start + self.seq_len + 1)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """stream[start:stop] across shard boundaries, as int64."""
        maps = self._open()
        out = np.empty(stop - start, dtype=np.int64)
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while start + filled < stop:
            local = start + filled - int(self.starts[shard])
            take = min(stop - start - filled, int(self.starts[shard + 1]) - start - filled)
            out[filled:filled + take] = maps[shard][local:local + take]
            filled += take
            shard += 1
        return out

    def _open(self) -> list[np.memmap]:
        if self._maps is None:
            self._maps = [np.memmap(path, dtype=self.dtype, mode="r") for path in self.paths]
        return self._maps

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = None  # reopen in the worker instead of pickling mapped data
        state["_permutation"] = None
        return state


def write_synthetic_tokens(out: Path | str, vocab_size: int = 32000,
                           train_tokens: int = 1 << 20, val_tokens: int = 1 << 16,
                           seed: int = 0) -> Path:
    """A TOKENS directory of made-up text (benchmarks and tests, no tokenizer needed):
    "documents" of 64-512 tokens strung together from a bank of 256 random 8-token phrases, 10%
    of tokens replaced by random ones, EOS (2) after each document, so a model's loss falls
    within a few steps. The manifest has what TokenDataset and pretrain.train read (vocab_size;
    no tokenizer)."""
    from refine.atomic_file import write_json_atomic as write_json

    out = Path(out)
    rng = np.random.default_rng(seed)
    dtype = np.dtype("uint16" if vocab_size <= 1 << 16 else "uint32").newbyteorder("<")
    bank = rng.integers(3, vocab_size, (256, 8))
    shards: list[dict[str, Any]] = [{"name": "synthetic-00000", "source": "synthetic"}]
    for split, count in (("train", train_tokens), ("val", val_tokens)):
        (out / split).mkdir(parents=True, exist_ok=True)
        tokens = bank[rng.integers(0, len(bank), count // 8 + 1)].reshape(-1)[:count]
        noise = rng.random(count) < 0.1
        tokens[noise] = rng.integers(3, vocab_size, int(noise.sum()))
        ends = np.cumsum(rng.integers(64, 513, count // 64 + 1))
        tokens[ends[ends < count]] = 2
        tokens.astype(dtype).tofile(out / split / f"{shards[0]['name']}.bin")
        shards[0][split] = {"documents": int((tokens == 2).sum()), "tokens": count}
    write_json(out / MANIFEST, {
        "format": FORMAT, "dtype": dtype.name, "byte_order": "little", "eos_id": 2, "bos_id": 1,
        "bos_added": False, "vocab_size": vocab_size, "tokenizer": None,
        "source": {"kind": "synthetic", "seed": seed}, "shards": shards,
        "totals": {split: {key: shards[0][split][key] for key in ("documents", "tokens")}
                   for split in SPLITS}})
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pretrain.dataset",
        description="Summarise what TokenDataset reads from TOKENS: tokens, windows of "
                    "seq_len + 1 and samples per rank per epoch, for each split (JSON).")
    parser.add_argument("--tokens", type=Path, required=True, help="TOKENS directory")
    parser.add_argument("--seq-len", type=int, default=2048, help="window length minus one")
    parser.add_argument("--world-size", type=int, default=1, help="data-parallel ranks")
    args = parser.parse_args(argv)
    try:
        summary = summarise(args.tokens, args.seq_len, args.world_size)
    except TokensError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"seq_len": args.seq_len, "world_size": args.world_size, **summary}))
    return 0


def summarise(tokens: Path, seq_len: int, world_size: int) -> dict[str, Any]:
    """Per split: tokens, windows and samples per epoch (or why there are none)."""
    summary: dict[str, Any] = {}
    for split in SPLITS:
        try:
            dataset = TokenDataset(tokens, seq_len, split, world_size=world_size)
        except TokensError:
            raise
        except ValueError as error:
            summary[split] = {"error": str(error)}
            continue
        summary[split] = {"tokens": dataset.total_tokens, "windows": dataset.num_samples,
                          "samples_per_epoch": dataset.samples_per_epoch,
                          "samples_per_rank_per_epoch": len(dataset)}
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
