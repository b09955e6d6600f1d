"""Stages 8-10 on a real local Ray: fuzzy, exact-substring and URL dedup over a whole run."""

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from refine.config import parse_config
from refine.configfile import ConfigError
from refine.dedup.components import connected_components
from refine.dedup.fuzzy import choose_survivors, preference_order
from refine.dedup.normalize import word_shingles
from refine.dedup.urls import decide
from refine.run import run
from refine.shards import metrics_dict
from testkit.synthetic import inject_duplicates

from .conftest import cc_documents

FILTERS_OFF = {name: {"enabled": False}
               for name in ("url", "language", "repetition", "quality", "lines")}


def python_components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


def test_connected_components_match_union_find():
    rng = random.Random(3)
    for n in (1, 2, 10, 500):
        edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(n // 2)]
        chain = [(i, i + 1) for i in range(0, n - 1, 3)]  # long paths need several rounds
        edges += chain
        labels = connected_components(n, np.array(edges, dtype=np.int64).reshape(-1, 2))
        assert labels.tolist() == python_components(n, edges)


def test_survivor_is_chosen_by_content_not_position():
    chars = np.array([100, 300, 300, 50, 70])
    id_hash = np.array([5, 9, 2, 1, 1], dtype=np.uint64)
    offsets = np.array([0, 5])
    edges = np.array([[0, 1], [1, 2], [3, 4]], dtype=np.uint64)  # shard 0, rows 0..4
    result = choose_survivors(edges, offsets, preference_order(chars, id_hash))
    # cluster {0,1,2}: 1 and 2 are longest, 2 has the smaller id hash; cluster {3,4}: 4 longest
    assert result.survivor.tolist() == [2, 2, 2, 4, 4]
    assert result.clusters == 2
    # the same documents in another order get the same survivors
    perm = np.array([4, 2, 0, 3, 1])
    where = np.argsort(perm)
    moved = np.array([[where[a], where[b]] for a, b in edges.tolist()], dtype=np.uint64)
    again = choose_survivors(moved, offsets, preference_order(chars[perm], id_hash[perm]))
    assert perm[again.survivor].tolist() == result.survivor[perm].tolist()


def test_length_beats_id_hash_when_they_disagree():
    # the longest member has the largest id hash: it survives all the same
    chars = np.array([400, 500, 450])
    id_hash = np.array([1, 99, 2], dtype=np.uint64)
    edges = np.array([[0, 1], [1, 2]], dtype=np.uint64)
    result = choose_survivors(edges, np.array([0, 3]), preference_order(chars, id_hash))
    assert result.survivor.tolist() == [1, 1, 1]
    # equal lengths: the smaller id hash decides, whatever the position
    tied = preference_order(np.array([500, 500, 450]), np.array([99, 1, 2], dtype=np.uint64))
    assert choose_survivors(edges, np.array([0, 3]), tied).survivor.tolist() == [1, 1, 1]


def test_url_decision_keeps_best_ranked_and_rejects_earlier_runs():
    url_hash = np.array([7, 7, 7, 8, 0, 0, 9], dtype=np.uint64)
    alive = np.array([True, True, True, True, True, True, False])
    rank = np.array([3, 1, 2, 0, 4, 5, 6])
    earlier = (np.array([8], dtype=np.uint64), ["old-doc"])
    decision = decide(url_hash, alive, rank, earlier)
    assert decision.duplicate_of.tolist() == [1, -1, 1, -1, -1, -1, -1]  # no URL: never dups
    assert decision.earlier_run_id == {3: "old-doc"}


def originals(count: int) -> list[dict]:
    return cc_documents(count, min_words=150)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    injected = inject_duplicates(originals(160), seed=1, near=20, exact=8, same_url=6,
                                 quoting=6)
    directory = tmp_path_factory.mktemp("dedup-corpus")
    halves = (injected.docs[::2], injected.docs[1::2])  # two inputs: dups cross files
    paths = []
    for k, docs in enumerate(halves):
        path = directory / f"part-{k}.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        paths.append(str(path))
    return injected, paths


def dedup_config(**dedup):
    return parse_config({"name": "dedup-test", **FILTERS_OFF, "dedup": dedup,
                         "output": {"shard_bytes": 200_000}})


def rows(run_dir: Path, sub: str) -> list[dict]:
    files = sorted((run_dir / sub).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def dedup_run(local_ray, corpus, tmp_path_factory):
    _, paths = corpus
    return run(dedup_config(), paths, tmp_path_factory.mktemp("dedup") / "run", workers=2)


def cluster_of(doc_id: str, injected) -> str:
    truth = {**injected.near, **injected.exact}
    return truth.get(doc_id, doc_id)


@pytest.mark.slow
def test_injected_duplicates_are_removed_with_their_reason(dedup_run, corpus):
    injected, paths = corpus
    run_dir = dedup_run.run_dir
    kept = {r["id"]: r for r in rows(run_dir, "data")}
    rejected = {r["id"]: r for r in rows(run_dir, "rejected")}
    assert len(kept) + len(rejected) == len(injected.docs)
    fuzzy = {i: r for i, r in rejected.items() if r["stage"] == "fuzzy_dedup"}
    # every exact copy and near-duplicate cluster keeps exactly one member
    for copy, original in {**injected.near, **injected.exact}.items():
        members = [copy, original]
        assert not (copy in kept and original in kept)
        gone = [m for m in members if m in fuzzy]
        assert gone, f"{copy} ~ {original}: neither removed"
        for m in gone:
            assert fuzzy[m]["reason"] == "near_duplicate"
            assert cluster_of(fuzzy[m]["duplicate_of"], injected) == original
            assert fuzzy[m]["duplicate_of"] in kept
    # a URL is kept once: the re-crawl or its original, not both
    url_pairs = 0
    for recrawl, original in injected.same_url.items():
        assert not (recrawl in kept and original in kept)
        if any(rejected.get(d, {}).get("stage") in ("fuzzy_dedup", "exact_dedup")
               for d in (recrawl, original)):
            continue  # removed before URL dedup: the other one may keep the URL
        loser = rejected[recrawl if original in kept else original]
        assert (loser["stage"], loser["reason"]) == ("url_dedup", "duplicate_url")
        assert {loser["id"], loser["duplicate_of"]} == {recrawl, original}
        url_pairs += 1
    assert url_pairs >= 3
    # a quoted passage stays in one of the two documents and is cut from the other
    spans = rows(run_dir, "spans")
    links = {(s["id"], s["duplicate_of"]) for s in spans} | {
        (i, r["duplicate_of"]) for i, r in rejected.items() if r["stage"] == "exact_dedup"}
    found = 0
    for quoting, quoted in injected.quoting.items():
        holder = fuzzy[quoted]["duplicate_of"] if quoted in fuzzy else quoted
        found += (quoting, holder) in links or (holder, quoting) in links
    assert found >= len(injected.quoting) - 1, spans
    before = {r["id"]: r["text"] for r in rows(run_dir, "filtered")}
    for span in spans:
        cut_doc = kept[span["id"]]
        cut = before[span["id"]][span["start"] : span["end"]]
        assert cut.startswith(span["text"]) and span["text"]  # stored text: at most 2,000 chars
        assert before[span["id"]].count(cut) > cut_doc["text"].count(cut)
        assert cut_doc["metrics"] and metrics_dict(cut_doc["metrics"])["exact_dedup.chars_cut"] > 0
    # anything else fuzzy dedup removed is a real near-duplicate (the sample has a few)
    copied = set(injected.near.values()) | set(injected.exact.values())
    for doc_id, row in fuzzy.items():
        if doc_id in injected.near or doc_id in injected.exact or doc_id in copied:
            continue
        mine = set(word_shingles(before[doc_id]))
        theirs = set(word_shingles(before[row["duplicate_of"]]))
        assert len(mine & theirs) / len(mine | theirs) >= 0.5, row


@pytest.mark.slow
def test_every_kept_document_records_the_size_of_the_cluster_it_survived(dedup_run):
    run_dir = dedup_run.run_dir
    removed_for = Counter(r["duplicate_of"] for r in rows(run_dir, "rejected")
                          if r["stage"] == "fuzzy_dedup")
    kept = rows(run_dir, "data")
    sizes = {r["id"]: metrics_dict(r["metrics"])["fuzzy_dedup.cluster_size"] for r in kept}
    assert sizes == {r["id"]: 1.0 + removed_for[r["id"]] for r in kept}
    assert sum(s > 1 for s in sizes.values()) >= 5  # the injected clusters


@pytest.mark.slow
def test_dedup_accounting_per_input(dedup_run, corpus):
    _, paths = corpus
    stats = dedup_run.stats
    kept, rejected = rows(dedup_run.run_dir, "data"), rows(dedup_run.run_dir, "rejected")
    assert stats["accounting_ok"]
    assert stats["documents"]["kept"] == len(kept)
    by_reason = Counter((r["file_path"], f"{r['stage']}.{r['reason']}") for r in rejected)
    for path in paths:
        entry = stats["inputs"][path]
        assert entry["read"] == entry["kept"] + entry["rejected"]
        assert entry["kept"] == sum(r["file_path"] == path for r in kept)
        for reason, count in entry["by_reason"].items():
            assert by_reason[(path, reason)] == count
    for name in ("fuzzy_dedup", "exact_dedup", "url_dedup"):
        stage = stats["stages"][name]
        assert stage["in"] == stage["out"] + sum(stage["rejected"].values())
    assert stats["stages"]["fuzzy_dedup"]["rejected"]["near_duplicate"] >= 28
    assert stats["stages"]["exact_dedup"]["spans_cut"] >= 5


def outcome(run_dir: Path) -> tuple:
    kept = sorted((r["id"], r["text"]) for r in rows(run_dir, "data"))
    rejected = sorted((r["id"], r["stage"], r["reason"], r["duplicate_of"] or "")
                      for r in rows(run_dir, "rejected"))
    spans = sorted((s["id"], s["start"], s["end"], s["duplicate_of"])
                   for s in rows(run_dir, "spans"))
    return kept, rejected, spans


@pytest.mark.slow
def test_survivors_same_with_one_and_two_workers_and_on_rerun(dedup_run, corpus, tmp_path):
    _, paths = corpus
    one = run(dedup_config(), paths, tmp_path / "one", workers=1)
    assert outcome(one.run_dir) == outcome(dedup_run.run_dir)
    again = run(dedup_config(), list(reversed(paths)), tmp_path / "again", workers=2)
    assert outcome(again.run_dir) == outcome(dedup_run.run_dir)
    for path in sorted((dedup_run.run_dir / "data").glob("*.parquet")):
        assert (one.run_dir / "data" / path.name).read_bytes() == path.read_bytes()


@pytest.mark.slow
def test_interrupted_dedup_is_redone_on_resume(dedup_run, corpus, tmp_path):
    _, paths = corpus
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(dedup_run.run_dir, copy)
    (copy / "stats" / "dedup.json").unlink()  # as if killed before the stage finished
    next(iter(sorted((copy / "data").glob("*.parquet")))).unlink()
    result = run(dedup_config(), paths, copy, workers=2, resume=True)
    assert result.units_skipped == result.units_total
    assert outcome(copy) == outcome(dedup_run.run_dir)


@pytest.mark.slow
def test_urls_kept_by_an_earlier_run_are_not_kept_again(dedup_run, corpus, tmp_path):
    injected, _ = corpus
    earlier = {r["url"]: r["id"] for r in rows(dedup_run.run_dir, "data")}
    sample = list(earlier.items())[:5]
    def fresh(k: int) -> str:
        return " ".join(f"word{k}x{i}" for i in range(80))

    later_docs = [{"id": f"later-{k}", "url": url, "text": fresh(k)}
                  for k, (url, _) in enumerate(sample)]
    later_docs.append({"id": "later-new", "url": "https://example.org/new", "text": fresh(9)})
    path = tmp_path / "later.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in later_docs))
    config = dedup_config(urls={"previous_runs": [str(dedup_run.run_dir)]})
    result = run(config, [str(path)], tmp_path / "later", workers=1)
    rejected = {r["id"]: r for r in rows(result.run_dir, "rejected")}
    for k, (_, earlier_id) in enumerate(sample):
        row = rejected[f"later-{k}"]
        assert (row["stage"], row["reason"], row["duplicate_of"]) == (
            "url_dedup", "url_in_earlier_run", earlier_id)
    assert [r["id"] for r in rows(result.run_dir, "data")] == ["later-new"]


def test_previous_run_without_url_set_fails_before_work(tmp_path):
    with pytest.raises(ConfigError, match="previous_runs"):
        dedup_config(urls={"previous_runs": [str(tmp_path)]})


def test_presets_refinedweb_is_the_default_and_fineweb_differs_in_dedup_and_its_filters():
    from refine.config import OPTIONAL_SECTIONS, RunConfig, load_config
    from refine.filters.c4 import C4Config
    from refine.filters.fineweb import FineWebQualityConfig

    from .conftest import ROOT

    refinedweb = load_config(ROOT / "configs" / "refinedweb.yaml")
    assert refinedweb.hash == RunConfig(name="refinedweb").hash
    # FineWeb's filter stages are off in RefinedWeb and leave its hash as it was before them
    assert not refinedweb.c4.enabled and not refinedweb.fineweb.enabled
    assert not set(OPTIONAL_SECTIONS) & set(json.loads(refinedweb.canonical_json()))
    fineweb = load_config(ROOT / "configs" / "fineweb.yaml")
    assert (fineweb.dedup.fuzzy.num_bands, fineweb.dedup.fuzzy.rows_per_band) == (14, 8)
    assert not fineweb.dedup.exact.enabled
    for preset in (refinedweb.dedup.fuzzy, fineweb.dedup.fuzzy):  # 50% at 0.72 and 0.69
        assert preset.candidate_probability(0.65) < 0.5 < preset.candidate_probability(0.75)
    # C4's filters as FineWeb ran them (all but the terminal-punctuation rule), FineWeb's own
    assert fineweb.c4 == C4Config(enabled=True, filter_no_terminal_punct=False)
    assert fineweb.fineweb == FineWebQualityConfig(enabled=True)
    assert fineweb.pii.enabled and not refinedweb.pii.enabled  # FineWeb anonymises, as datatrove
    same = fineweb.model_dump(exclude={"name", "dedup", *OPTIONAL_SECTIONS})
    assert same == refinedweb.model_dump(exclude={"name", "dedup", *OPTIONAL_SECTIONS})


def _words(tag: str, n: int) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


@pytest.mark.slow
def test_url_dedup_never_removes_the_kept_copy_of_a_cut_passage(local_ray, tmp_path):
    # S and X share passage P, S is longer: P is cut from X in favour of S. T has S's URL and is
    # longer still, so URL dedup removes S. P must then stay in some kept text, and every span
    # row must name a kept document that holds the span.
    passage = _words("p", 80)
    docs = [
        {"id": "S", "url": "https://example.org/s", "text": passage + " " + _words("s", 300)},
        {"id": "X", "url": "https://example.org/x", "text": _words("x", 100) + " " + passage},
        {"id": "T", "url": "https://example.org/s", "text": _words("t", 500)},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    result = run(dedup_config(), [str(path)], tmp_path / "run", workers=1)
    kept = {r["id"]: r["text"] for r in rows(result.run_dir, "data")}
    rejected = {r["id"]: r for r in rows(result.run_dir, "rejected")}
    assert "S" in rejected and rejected["S"]["stage"] == "url_dedup"
    assert rejected["S"]["duplicate_of"] == "T"
    assert any(passage in text for text in kept.values()), "the passage is in no kept text"
    for span in rows(result.run_dir, "spans"):
        assert span["duplicate_of"] in kept, f"span points at a rejected document: {span}"
        assert span["text"] in kept[span["duplicate_of"]]
    for row in rejected.values():  # whatever a rejected row duplicates is kept
        assert row["duplicate_of"] in kept
