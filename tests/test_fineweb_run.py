"""FineWeb's heuristics (refine.filters.fineweb, with C4's) in a real run of the fineweb preset:
stats, rejected rows, accounting, the report and its strict what-ifs in Chromium; and a
refinedweb run, which has neither stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refine.config import parse_config
from refine.filters.fineweb import CHECKS

from .chromium import _open, _set_whatif

# --- in a run: stats, rejected rows, accounting and the report -----------------------------------


@pytest.fixture(scope="module")
def fineweb_run(local_ray, tmp_path_factory) -> Path:
    """The fineweb preset over the bundled WARCs, with the demo's languages (the sample is half
    German: English alone leaves the new stages too few documents to judge)."""
    from refine.config import load_config
    from refine.run import run

    from .conftest import DATA as TEST_DATA
    from .conftest import ROOT

    data = load_config(ROOT / "configs" / "fineweb.yaml").model_dump(mode="json")
    data["language"]["languages"] = ["en", "de", "fr", "es", "nl", "pl", "pt", "it"]
    data["quality"]["min_stop_words"] = 0
    inputs = sorted(str(p) for p in (TEST_DATA / "warc").glob("*.gz"))
    out = tmp_path_factory.mktemp("fineweb-run") / "run"
    run(parse_config(data), inputs, out, workers=2)
    return out


@pytest.mark.slow
def test_fineweb_run_counts_and_writes_the_new_stages(fineweb_run):
    import pyarrow.parquet as pq

    from refine.shards import metrics_dict

    stats = json.loads((fineweb_run / "stats.json").read_text())
    stages = stats["stages"]
    docs = stats["documents"]
    assert docs["read"] == docs["kept"] + docs["rejected"] and stats["accounting_ok"]
    # in run order, after Gopher quality and before the line corrections
    assert stages["c4"]["in"] == stages["quality"]["out"]
    assert stages["fineweb"]["in"] == stages["c4"]["out"]
    assert stages["lines"]["in"] == stages["fineweb"]["out"]
    rows = {sub: [r for f in sorted((fineweb_run / sub).glob("*.parquet"))
                  for r in pq.read_table(f).to_pylist()] for sub in ("data", "rejected")}
    for stage, reasons in (("c4", {"too_few_sentences", "curly_bracket", "lorem_ipsum"}),
                           ("fineweb", {"empty", *CHECKS})):
        counts = stages[stage]["rejected"]
        assert sum(counts.values()) >= 1, f"{stage} rejected nothing in the sample"
        assert set(counts) <= reasons
        assert stages[stage]["in"] == stages[stage]["out"] + sum(counts.values())
        assert stages[stage]["cpu_s"] > 0
        dropped = [r for r in rows["rejected"] if r["stage"] == stage]
        assert {r["reason"] for r in dropped} == set(counts)
        assert len(dropped) == sum(counts.values())
        for row in dropped:
            assert any(k.startswith(f"{stage}.") for k in metrics_dict(row["metrics"]))
    for row in rows["data"]:
        metrics = metrics_dict(row["metrics"])
        assert metrics["c4.sentences"] >= 5 and metrics["fineweb.line_punct_ratio"] > 0.12


@pytest.mark.slow
def test_report_shows_the_new_stages_with_examples_and_what_ifs(fineweb_run, tmp_path):
    from refine.report import build_report, collect

    data = collect(fineweb_run, samples=3)
    stats = data["stats"]
    assert [row["stage"] for row in data["funnel"]].index("c4") \
        == list(stats["stages"]).index("c4")
    whatifs = {(w["stage"], w["config_key"]): w for w in data["whatif"]}
    assert set(whatifs) >= {("c4", "min_num_sentences"), ("fineweb", "line_punct_thr"),
                            ("fineweb", "short_line_thr"), ("fineweb", "char_duplicates_ratio")}
    for w in whatifs.values():  # at the run's thresholds, the what-if keeps what the run kept
        if w["stage"] in ("c4", "fineweb"):
            assert w["inconsistent"] == 0 and w["missing"] == 0
            assert w["kept_now"] == stats["documents"]["kept"]
    for stage in ("c4", "fineweb"):
        for reason in stats["stages"][stage]["rejected"]:
            examples = data["examples"][f"{stage}.{reason}"]
            assert examples and all(ex["metrics"] for ex in examples)
            assert all(k.startswith(f"{stage}.") for ex in examples for k in ex["metrics"])
    page = build_report(fineweb_run, tmp_path / "report.html").read_text()
    assert 'id="accounting" class="banner ok"' in page
    for stage, key in whatifs:
        if stage in ("c4", "fineweb"):
            assert f'id="whatif-{stage}-{key}"' in page
    for stage in ("c4", "fineweb"):
        for reason in stats["stages"][stage]["rejected"]:
            assert f'data-reason="{stage}.{reason}"' in page
    assert "keep when <code>fineweb.line_punct_ratio</code> &gt; threshold" in page


def test_a_refinedweb_run_has_neither_stage(tmp_path):
    """The refinedweb preset, stages 1-7 over one bundled WARC (no Ray): the statistics and
    rows it writes hold nothing of the new stages."""
    import pyarrow.parquet as pq

    from refine.config import load_config
    from refine.pipeline import UnitProcessor
    from refine.readers import plan_units
    from refine.shards import metrics_dict
    from refine.stats import STAGES

    from .conftest import DATA as TEST_DATA
    from .conftest import ROOT

    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    path = TEST_DATA / "warc" / "real-html-00-head35.warc.gz"
    processor = UnitProcessor(config, tmp_path / "run")
    try:
        summary = processor.process(plan_units([(str(path), path.stat().st_size)], 1 << 30)[0])
    finally:
        processor.close()
    assert list(summary["stages"]) == list(STAGES)
    assert [name for name, _ in processor.text_filters] == ["language", "repetition", "quality",
                                                             "lines"]
    rows = [r for sub in ("filtered", "rejected")
            for f in sorted((tmp_path / "run" / sub).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert rows and summary["read"] == len(rows)
    for row in rows:
        assert not any(k.startswith(("c4.", "fineweb.")) for k in metrics_dict(row["metrics"]))


@pytest.mark.slow
def test_strict_what_ifs_in_chromium(fineweb_run, tmp_path, browser):
    """FineWeb's checks drop at equality ("above"/"below" thresholds): at every edge the page
    offers, its count is the documents an independent reading of the rows keeps."""
    import pyarrow.parquet as pq

    from refine.report import build_report
    from refine.shards import metrics_dict

    page = build_report(fineweb_run, tmp_path / "report.html")
    _open(browser, page)
    data = json.loads(browser.execute_script(
        "return document.getElementById('report-data').textContent"))
    config = json.loads((fineweb_run / "manifest.json").read_text())["config"]["fineweb"]
    rows = {sub: [metrics_dict(r["metrics"]) | {"stage": r.get("stage"), "reason": r.get("reason")}
                  for f in sorted((fineweb_run / sub).glob("*.parquet"))
                  for r in pq.read_table(f, columns=["metrics", *(["stage", "reason"]
                                                                  if sub == "rejected" else [])]
                                         ).to_pylist()]
            for sub in ("data", "rejected")}
    keep = {"line_punct_thr": ("line_punct_ratio", float.__gt__),
            "short_line_thr": ("short_line_ratio", float.__lt__),
            "char_duplicates_ratio": ("char_dup_ratio", float.__lt__)}
    for key, (metric, kept) in keep.items():
        w = next(w for w in data["whatif"] if w["stage"] == "fineweb" and w["config_key"] == key)
        others = [(m, op, config[k]) for k, (m, op) in keep.items() if k != key]
        counted = rows["data"] + [
            r for r in rows["rejected"] if r["stage"] == "fineweb" and r["reason"] in CHECKS
            and all(op(r[f"fineweb.{m}"], t) for m, op, t in others)]
        for index, edge in enumerate(w["edges"]):
            threshold, docs, _ = _set_whatif(browser, f"whatif-fineweb-{key}", index)
            assert threshold == edge
            assert docs == sum(kept(r[f"fineweb.{metric}"], edge) for r in counted), (key, edge)
