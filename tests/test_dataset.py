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
    assert per_epoch == ranks[0].num_samples  # every sample, whatever the world size
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
        # the last epoch misses its last position when 3 epochs are not whole steps of 2
        assert max(both.values()) == 1
        assert len(both) == per_epoch - (epoch == 2) * (3 * per_epoch % 2)
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


# --- synthetic tokens: fast, and with sample counts chosen to need no luck ---------------------

@pytest.fixture(scope="module")
def odd_tokens(tmp_path_factory):
    """A TOKENS directory whose train split has 1,001 windows of 65: not a multiple of 2, 3, 4
    or 8 ranks, so an epoch never divides into whole steps."""
    from pretrain.dataset import write_synthetic_tokens

    out = write_synthetic_tokens(tmp_path_factory.mktemp("odd") / "tokens", vocab_size=500,
                                 train_tokens=1001 * SEQ_LEN + 1, val_tokens=SEQ_LEN * 4 + 1)
    assert TokenDataset(out, SEQ_LEN).num_samples == 1001
    return out


def global_order(tokens, world: int, consumed: int, count: int, epochs: int = 4) -> list[int]:
    """The samples `world` ranks read from position `consumed` on, in position order."""
    ranks = [TokenDataset(tokens, SEQ_LEN, seed=9, rank=r, world_size=world, epochs=epochs,
                          consumed_samples=consumed) for r in range(world)]
    reads = sorted((d.position(k), d.sample_at(d.position(k)))
                   for d in ranks for k in range(count // world))
    assert [p for p, _ in reads] == list(range(consumed, consumed + count // world * world))
    return [sample for _, sample in reads]


@pytest.mark.parametrize("world", [2, 3, 8])
def test_the_global_order_is_the_same_on_any_number_of_ranks_in_every_epoch(odd_tokens, world):
    """What the module docstring promises: the sequence of samples the job reads does not
    depend on the world size, across epoch boundaries too, and each epoch is a permutation of
    all samples (none sits out because the world size does not divide them)."""
    count = 3000 // world * world  # three epochs of 1,001, less a partial step
    one, many = global_order(odd_tokens, 1, 0, count), global_order(odd_tokens, world, 0, count)
    assert many == one[:len(many)]
    assert sorted(one[:1001]) == sorted(one[1001:2002]) == list(range(1001))
    assert one[:1001] != one[1001:2002]


def test_resume_on_another_number_of_ranks_is_exact_after_the_first_epoch(odd_tokens):
    """2 ranks stop at 1,200 samples (in the second epoch); 3 ranks resume from there (1,200 is
    a multiple of 3) and read what the 2 ranks would have read next, and then 8 ranks from
    2,400 (the third epoch) do."""
    two = global_order(odd_tokens, 2, 0, 3000)
    assert global_order(odd_tokens, 3, 1200, 1200) == two[1200:2400]
    assert global_order(odd_tokens, 8, 2400, 600) == two[2400:3000]
    # every rank holds the same number of items: no rank runs out a step before the others
    lengths = {len(TokenDataset(odd_tokens, SEQ_LEN, rank=r, world_size=8, epochs=1))
               for r in range(8)}
    assert lengths == {1001 // 8}


def test_training_does_not_import_encode():
    """pretrain.dataset states TOKENS' format constants (pretrain.encode imports them from it), so
    pretrain.train and pretrain.export import neither pretrain.encode nor pyarrow/sentencepiece
    (bench/gpu_check.sh's bundle has neither)."""
    import subprocess
    import sys

    script = ("import sys, pretrain.train, pretrain.export; print(sorted(m for m in "
              "('pyarrow', 'sentencepiece', 'ray', 'pretrain.encode', 'pretrain.files') "
              "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
