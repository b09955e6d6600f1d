"""The memmap dataset over real token shards: windows, rank split, seeded order, exact resume."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import numpy as np
import pytest

from pretrain.dataset import TokenDataset

pytestmark = pytest.mark.slow

SEQ_LEN = 64


@pytest.fixture(scope="module")
def stream(tokens_dir) -> np.ndarray:
    """The train split's tokens read independently: shard files in manifest order, joined."""
    manifest = json.loads((tokens_dir / "manifest.json").read_text())
    parts = [np.fromfile(tokens_dir / "train" / f"{s['name']}.bin", dtype=manifest["dtype"])
             for s in manifest["shards"]]
    return np.concatenate(parts).astype(np.int64)


def positions_of(dataset: TokenDataset) -> list[int]:
    return [dataset.position(k) for k in range(len(dataset))]


def test_windows_are_seq_len_plus_one_from_the_token_stream(tokens_dir, stream):
    dataset = TokenDataset(tokens_dir, SEQ_LEN, seed=3)
    assert dataset.total_tokens == len(stream)
    assert dataset.num_samples == (len(stream) - 1) // SEQ_LEN
    crossing = 0
    for sample in range(dataset.num_samples):
        window = dataset.window(sample)
        assert window.dtype == np.int64 and window.shape == (SEQ_LEN + 1,)
        start = sample * SEQ_LEN
        assert np.array_equal(window, stream[start:start + SEQ_LEN + 1])
        crossing += bool(np.any((dataset.starts > start) & (dataset.starts < start + SEQ_LEN + 1)))
    assert crossing > 0, "some windows should cross a shard boundary"
    item = dataset[0]
    assert item.shape == (SEQ_LEN + 1,) and item.dtype == np.int64
    assert np.array_equal(item, dataset.window(dataset.sample_at(0)))


def test_two_ranks_cover_each_sample_once_per_epoch(tokens_dir):
    ranks = [TokenDataset(tokens_dir, SEQ_LEN, seed=5, rank=r, world_size=2, epochs=3)
             for r in range(2)]
    per_epoch = ranks[0].samples_per_epoch
    assert per_epoch == ranks[0].num_samples - ranks[0].num_samples % 2
    assert len(ranks[0]) == len(ranks[1]) == 3 * per_epoch // 2
    seen: dict[int, list[Counter]] = {e: [Counter(), Counter()] for e in range(3)}
    for rank, dataset in enumerate(ranks):
        for k in range(len(dataset)):
            epoch = dataset.position(k) // per_epoch
            sample = dataset.sample_at(dataset.position(k))
            seen[epoch][rank][sample] += 1
            if k % 97 == 0:  # spot-check that items are those samples' windows
                assert np.array_equal(dataset[k], dataset.window(sample))
    orders = []
    for epoch in range(3):
        zero, one = seen[epoch]
        assert not set(zero) & set(one), "ranks overlap"
        both = zero + one
        assert max(both.values()) == 1 and len(both) == per_epoch
        assert set(both) <= set(range(ranks[0].num_samples))
        orders.append(ranks[0].permutation(epoch))
    assert not np.array_equal(orders[0], orders[1]), "each epoch has its own order"


def test_order_is_seeded(tokens_dir):
    first = TokenDataset(tokens_dir, SEQ_LEN, seed=7)
    same = TokenDataset(tokens_dir, SEQ_LEN, seed=7)
    other = TokenDataset(tokens_dir, SEQ_LEN, seed=8)
    take = range(50)
    assert [first.sample_at(p) for p in take] == [same.sample_at(p) for p in take]
    assert [first.sample_at(p) for p in take] != [other.sample_at(p) for p in take]


@pytest.mark.parametrize("consumed", [0, 2, 130, 4000])  # 4000: in the second epoch
def test_resume_with_consumed_samples_yields_exactly_the_rest(tokens_dir, consumed):
    world = 2
    full = [TokenDataset(tokens_dir, SEQ_LEN, seed=1, rank=r, world_size=world, epochs=2)
            for r in range(world)]
    resumed = [TokenDataset(tokens_dir, SEQ_LEN, seed=1, rank=r, world_size=world, epochs=2,
                            consumed_samples=consumed) for r in range(world)]
    for rank in range(world):
        skip = consumed // world
        assert len(resumed[rank]) == len(full[rank]) - skip
        assert positions_of(resumed[rank]) == positions_of(full[rank])[skip:]
        for k in (0, 1, len(resumed[rank]) - 1):
            assert np.array_equal(resumed[rank][k], full[rank][k + skip])


def test_resume_on_another_world_size_continues_the_same_global_order(tokens_dir):
    """4 ranks stopped after 40 samples; 2 ranks read what the 4 would have read next."""
    four = [TokenDataset(tokens_dir, SEQ_LEN, seed=2, rank=r, world_size=4) for r in range(4)]
    two = [TokenDataset(tokens_dir, SEQ_LEN, seed=2, rank=r, world_size=2, consumed_samples=40)
           for r in range(2)]
    would_read = sorted((d.position(k), d.sample_at(d.position(k)))
                        for d in four for k in range(len(d)) if 40 <= d.position(k) < 100)
    reads = sorted((d.position(k), d.sample_at(d.position(k))) for d in two for k in range(30))
    assert reads == would_read and len(reads) == 60


def test_rejects_a_resume_point_that_is_not_a_whole_step(tokens_dir):
    with pytest.raises(ValueError):
        TokenDataset(tokens_dir, SEQ_LEN, rank=0, world_size=2, consumed_samples=3)
    with pytest.raises(ValueError):
        TokenDataset(tokens_dir, SEQ_LEN, rank=2, world_size=2)


def test_pickles_without_the_mapped_data(tokens_dir):
    dataset = TokenDataset(tokens_dir, SEQ_LEN, seed=4, rank=1, world_size=2)
    expected = dataset[5]  # opens the memmaps
    payload = pickle.dumps(dataset)
    assert len(payload) < 20_000
    assert np.array_equal(pickle.loads(payload)[5], expected)


def test_validation_split_reads_too(tokens_dir, stream):
    val = TokenDataset(tokens_dir, 16, split="val")
    manifest = json.loads((tokens_dir / "manifest.json").read_text())
    val_stream = np.concatenate([
        np.fromfile(tokens_dir / "val" / f"{s['name']}.bin", dtype=manifest["dtype"])
        for s in manifest["shards"]]).astype(np.int64)
    assert val.total_tokens == manifest["totals"]["val"]["tokens"] == len(val_stream)
    assert len(val) == val.samples_per_epoch == val.num_samples == (len(val_stream) - 1) // 16
    assert val.num_samples >= 8  # a few real documents, not a window or two
    for sample in range(val.num_samples):  # the val files' tokens, not the train split's
        assert np.array_equal(val.window(sample), val_stream[sample * 16:sample * 16 + 17])
    assert not np.array_equal(val.window(0), stream[:17])


def test_cli_summarises_the_splits(tokens_dir, capsys):
    from pretrain.dataset import main

    assert main(["--tokens", str(tokens_dir), "--seq-len", str(SEQ_LEN), "--world-size", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    dataset = TokenDataset(tokens_dir, SEQ_LEN, world_size=2)
    assert summary["train"] == {"tokens": dataset.total_tokens, "windows": dataset.num_samples,
                                "samples_per_epoch": dataset.samples_per_epoch,
                                "samples_per_rank_per_epoch": len(dataset)}
