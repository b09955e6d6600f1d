"""Dedup as tasks that exchange files: components by star rounds, repeats by window hashes over
the whole run (not one partition), with the suffix array and an in-memory union-find as oracles."""

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from refine.config import parse_config
from refine.dedup.exact import find_duplicate_spans
from refine.dedup.fuzzy import stable_hash64
from refine.dedup.shuffle import NODE, gather, node_order
from refine.dedup.stars import DECISION, connect, star_decisions, write_pairs
from refine.dedup.windows import find_duplicate_spans_hashed
from refine.run import run
from refine.rundir import RunDir

from .conftest import cc_documents
from .test_dedup_stage import FILTERS_OFF, python_components


def plain_map(step, fn, arguments):
    return [fn(*args) for args in arguments]


@pytest.mark.parametrize("seed", range(40))
def test_window_hashes_find_what_the_suffix_array_finds(seed):
    rng = random.Random(seed)
    k = rng.choice([2, 3, 5, 8])
    words = ["a", "b", "c", "d", "é", "x.y", "«", "42"]
    docs = [" ".join(rng.choice(words[: rng.randrange(2, 8)]) for _ in range(rng.randrange(80)))
            for _ in range(rng.randrange(1, 8))]
    assert find_duplicate_spans_hashed(docs, k) == find_duplicate_spans(docs, k)


def test_window_hashes_on_real_text_with_quoted_passages():
    docs = [d["text"] for d in cc_documents(40, min_words=100)]
    rng = random.Random(5)
    for i in range(10):  # passages of 50-120 words quoted in other documents
        words = docs[rng.randrange(len(docs))].split()
        start = rng.randrange(max(1, len(words) - 120))
        docs[rng.randrange(len(docs))] += " " + " ".join(words[start : start + 50 + 7 * i])
    assert find_duplicate_spans_hashed(docs, 50) == find_duplicate_spans(docs, 50)


@pytest.mark.parametrize("seed", range(6))
def test_star_rounds_give_the_components_and_the_best_ranked_survivor(seed, tmp_path):
    rng = random.Random(seed)
    n = rng.choice([2, 30, 400])
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(n // 2)]
    edges += [(i, i + 1) for i in range(0, n - 1, 2)]  # long chains need several rounds
    edges = [(a, b) for a, b in edges if a != b]
    nodes = np.zeros(n, dtype=NODE)
    nodes["neg_chars"] = [rng.randrange(3) for _ in range(n)]  # many ties on length
    nodes["id_hash"] = [rng.randrange(1 << 64) for _ in range(n)]
    nodes["doc"] = [(i % 3) << 32 | i for i in range(n)]  # three shards
    run_dir = RunDir(tmp_path)
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    write_pairs(run_dir, "cc/0", nodes[a], nodes[b], 5, "edges")
    graph, rounds, _ = connect(run_dir, "cc", 5, plain_map)
    for p in range(5):
        star_decisions(run_dir, "work", graph, "fuzzy", p, 3)
    decisions = np.concatenate([gather(run_dir, "fuzzy", s, DECISION) for s in range(3)])

    labels = python_components(n, edges)
    rank = np.empty(n, dtype=np.int64)
    rank[node_order(nodes)] = np.arange(n)
    best: dict[int, int] = {}
    for i in range(n):
        if labels[i] not in best or rank[i] < rank[best[labels[i]]]:
            best[labels[i]] = i
    size = {label: labels.count(label) for label in set(labels)}
    expected = {int(nodes["doc"][i]): (int(nodes["doc"][best[labels[i]]]), size[labels[i]])
                for i in range(n) if size[labels[i]] > 1}
    got = {d: (s, z) for d, s, z in decisions.tolist()}
    assert got == expected


def test_a_long_chain_takes_several_rounds_and_ends_as_one_star(tmp_path):
    n = 64
    rng = random.Random(7)
    nodes = np.zeros(n, dtype=NODE)
    nodes["neg_chars"] = [rng.randrange(1000) for _ in range(n)]
    nodes["id_hash"] = [rng.randrange(1 << 64) for _ in range(n)]
    nodes["doc"] = [(i % 2) << 32 | i for i in range(n)]
    run_dir = RunDir(tmp_path)
    order = rng.sample(range(n), n)  # a path through the documents in random order
    a, b = np.array(order[:-1]), np.array(order[1:])
    write_pairs(run_dir, "cc/0", nodes[a], nodes[b], 4, "edges")
    graph, rounds, _ = connect(run_dir, "cc", 4, plain_map)
    assert rounds >= 2  # one large-star/small-star round cannot contract a 64-node path
    for p in range(4):
        star_decisions(run_dir, "work", graph, "fuzzy", p, 2)
    decisions = np.concatenate([gather(run_dir, "fuzzy", s, DECISION) for s in range(2)])
    best = int(nodes["doc"][node_order(nodes)[0]])
    # every member (the survivor too, for its cluster size) names the best-ranked document
    assert sorted(decisions.tolist()) == sorted((int(d), best, n) for d in nodes["doc"])


def test_a_passage_in_documents_of_different_shards_is_cut_from_all_but_one(local_ray,
                                                                            tmp_path):
    hosts = cc_documents(30, min_words=200)
    passage = " ".join(hosts[0]["text"].split()[:70])
    rng = random.Random(2)
    quoting = rng.sample(range(1, 30), 8)
    for i in quoting:
        hosts[i]["text"] += "\n\n" + passage
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in hosts))
    config = parse_config({"name": "passages", **FILTERS_OFF, "output": {"shard_bytes": 20_000},
                           "dedup": {"exact": {"task_bytes": 1024}, "fuzzy": {"enabled": False}}})
    result = run(config, [str(path)], tmp_path / "run", workers=2)
    run_dir = result.run_dir
    shards = sorted((run_dir / "data").glob("*.parquet"))
    kept = {r["id"]: r for f in shards for r in pq.read_table(f).to_pylist()}
    holders = [i for i in [0, *quoting] if passage in kept[hosts[i]["id"]]["text"]]
    assert len(holders) == 1  # one copy stays, in the document that sorts first
    shard_of_doc = {r["id"]: f.name for f in shards for r in pq.read_table(f).to_pylist()}
    assert len({shard_of_doc[hosts[i]["id"]] for i in [0, *quoting]}) >= 3
    stats = json.loads((run_dir / "stats" / "dedup.json").read_text())["stages"]["exact_dedup"]
    assert stats["partitions"] >= 8

    # the oracle: the suffix array over all documents, best-ranked first
    order = sorted(range(len(hosts)), key=lambda i: (-len(hosts[i]["text"]),
                                                     stable_hash64(hosts[i]["id"]), i))
    expected = find_duplicate_spans([hosts[i]["text"] for i in order], 50)
    spans = [r for f in sorted((run_dir / "spans").glob("*.parquet"))
             for r in pq.read_table(f).to_pylist()]
    got = sorted((r["id"], r["start"], r["end"], r["duplicate_of"]) for r in spans)
    want = sorted((hosts[order[d]]["id"], s.start, s.end, hosts[order[s.source]]["id"])
                  for d, doc_spans in enumerate(expected) for s in doc_spans)
    assert got == want and len(got) >= len(quoting)
