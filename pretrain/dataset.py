"""Fixed windows over TOKENS (see `pretrain.tokenize`), for data-parallel training.

The split's shards (in manifest order) form one token stream of T tokens. Sample s is the
window stream[s * seq_len : s * seq_len + seq_len + 1] (inputs = window[:-1], targets =
window[1:]), so consecutive samples share one token and every token but the first is a target
once; there are N = (T - 1) // seq_len samples. Windows may cross document and shard
boundaries (documents are separated by EOS).

Order: a global stream of sample positions p = 0, 1, 2, ... Epoch e = p // E covers
E = N - N % world_size positions, in the order `permutation(seed, e)` (numpy's PCG64 seeded
with (seed, e)); the N % world_size samples last in an epoch's permutation sit that epoch out.
Rank r's k-th item is position consumed_samples + k * world_size + r, so the ranks together
read each block of world_size positions once, and a dataset built with `consumed_samples` =
the number of samples the whole job has consumed (a multiple of world_size) continues exactly
where training stopped, on any number of ranks.

`TokenDataset` is map-style (`__len__`, `__getitem__` -> int64 array of seq_len + 1), so a
`torch.utils.data.DataLoader(dataset, batch_size=..., shuffle=False)` can wrap it; memmaps open
lazily, so it pickles cheaply into DataLoader workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pretrain.tokenize import MANIFEST


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
        self.manifest: dict[str, Any] = json.loads((self.tokens_dir / MANIFEST).read_text())
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.seq_len, self.split, self.seed = seq_len, split, seed
        self.rank, self.world_size = rank, world_size
        self.consumed_samples, self.epochs = consumed_samples, epochs
        shards = [s for s in self.manifest["shards"] if s[split]["tokens"] > 0]
        self.paths = [self.tokens_dir / split / f"{s['name']}.bin" for s in shards]
        sizes = np.asarray([s[split]["tokens"] for s in shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # stream offset of each shard
        self.total_tokens = int(self.starts[-1])
        self.num_samples = max(0, (self.total_tokens - 1) // seq_len)
        self.samples_per_epoch = self.num_samples - self.num_samples % world_size
        if self.samples_per_epoch == 0:
            raise ValueError(f"{self.total_tokens} {split} tokens make no window of "
                             f"{seq_len + 1} for {world_size} ranks")
        self._maps: list[np.memmap] | None = None
        self._permutation: tuple[int, np.ndarray] | None = None

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
        remaining = self.epochs * self.samples_per_epoch - self.consumed_samples - self.rank
        return max(0, -(-remaining // self.world_size))

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
    summary: dict[str, Any] = {}
    for split in ("train", "val"):
        try:
            dataset = TokenDataset(args.tokens, args.seq_len, split, world_size=args.world_size)
        except ValueError as error:
            summary[split] = {"error": str(error)}
            continue
        summary[split] = {"tokens": dataset.total_tokens, "windows": dataset.num_samples,
                          "samples_per_epoch": dataset.samples_per_epoch,
                          "samples_per_rank_per_epoch": len(dataset)}
    print(json.dumps({"seq_len": args.seq_len, "world_size": args.world_size, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
