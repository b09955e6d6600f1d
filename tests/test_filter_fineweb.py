"""FineWeb's own heuristics (arXiv 2406.17557, section 3.3): each on both sides of its threshold,
equality included (the paper drops at <= 0.12, >= 0.67, >= 0.1)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from refine.config import parse_config
from refine.document import Document
from refine.filters.fineweb import (
    CHECKS,
    FineWebQualityConfig,
    FineWebQualityFilter,
    quality_metrics,
)

from .test_report import browser  # noqa: F401  (the Chromium fixture)

DATA = Path(__file__).parent / "data" / "text"


def cc_texts() -> list[str]:
    """The 697 Common Crawl documents of the text sample, as extracted."""
    with gzip.open(DATA / "cc-main-2019-30-text-sample.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]

# Real lines: sentences from news text (longer than 30 characters, ending in a full stop) and
# navigation from web pages (longer than 30 characters, no end punctuation).
SENTENCES = [
    "The council met on Tuesday to discuss the new budget for local schools and roads.",
    "Several residents asked why the library would close two days a week.",
    "The mayor said the cuts were needed to balance the accounts this year.",
    "A final vote is expected at the next meeting in March.",
    "Members of the public may attend and speak for three minutes each.",
    "Firefighters spent the night containing the blaze on the edge of the national park.",
    "Police have closed the highway between the two towns until further notice.",
    "The company said its profit for the half year had risen by eight per cent.",
    "Officials expect the new bridge to open to traffic late next year.",
    "Rain is forecast for most of the state over the weekend.",
]
NAVIGATION = [
    "Home | News | Sport | Weather | Business | Contact",
    "Related articles from the same author and category",
    "Posted in Community, Local Government, Transport",
    "Sign up for our weekly newsletter and special offers",
    "Previous article: Schools reopen after the holidays",
    "Next article: Council approves the new parking plan",
    "Share this story on Facebook, Twitter or by email",
    "Photo gallery: the flood in pictures from readers",
]
SHORT = ["Contact us", "Log in", "Sitemap", "Advertise", "Careers", "About", "Terms", "Help"]


def fineweb(**settings) -> FineWebQualityFilter:
    return FineWebQualityFilter(FineWebQualityConfig(enabled=True, **settings))


def judge(lines: list[str], **settings) -> tuple[str | None, Document]:
    doc = Document("id", "https://example.org/", "\n".join(lines))
    return fineweb(**settings).apply(doc), doc


def metric(doc: Document, name: str) -> float:
    return doc.metrics[f"fineweb.{name}"]


def test_prose_is_kept_with_its_metrics():
    reason, doc = judge(SENTENCES)
    assert reason is None
    assert doc.metrics == {"fineweb.lines": 10.0, "fineweb.line_punct_ratio": 1.0,
                           "fineweb.short_line_ratio": 0.0, "fineweb.char_dup_ratio": 0.0}


def test_disabled_does_nothing():
    doc = Document("id", "u", "\n".join(NAVIGATION))
    assert FineWebQualityFilter(FineWebQualityConfig()).apply(doc) is None
    assert doc.metrics == {}


# --- line_punct_ratio: drop when <= 0.12 --------------------------------------------------------


@pytest.mark.parametrize(
    ("punctuated", "other", "reason"),
    [
        (3, 22, "line_punct_ratio"),  # 3 / 25 = 0.12: dropped at equality
        (4, 25, None),  # 4 / 29 = 0.138
        (2, 20, "line_punct_ratio"),  # 2 / 22 = 0.091
        (0, 8, "line_punct_ratio"),
    ],
)
def test_line_punct_ratio(punctuated, other, reason):
    lines = (SENTENCES * 3)[:punctuated] + (NAVIGATION * 4)[:other]
    got, doc = judge(lines, char_duplicates_ratio=1.0)  # repeats are not judged here
    assert metric(doc, "line_punct_ratio") == pytest.approx(punctuated / (punctuated + other))
    assert got == reason


def test_line_punct_threshold_and_stop_chars_are_config():
    lines = SENTENCES[:3] + (NAVIGATION * 4)[:22]  # 0.12
    assert judge(lines, char_duplicates_ratio=1.0, line_punct_thr=0.11)[0] is None
    navigation_only = NAVIGATION[:5]
    assert judge(navigation_only)[0] == "line_punct_ratio"
    with_pipe = [line + " |" for line in navigation_only]
    assert judge(with_pipe, stop_chars=["|"])[0] is None


@pytest.mark.parametrize(
    ("line", "ends"),
    [
        ("The results were published on Monday.", True),
        ("Was it worth the wait for the new station?", True),
        ('She called it "a disaster for the town"', True),
        ("They called it 'the long winter'", True),
        ("What a day it was for everyone involved!", True),
        ("The results were published on Monday:", False),
        ("The results were published on Monday. ", False),  # lines are not stripped
        ("Read the full report here (PDF)", False),
    ],
)
def test_what_ends_in_punctuation(line, ends):
    _, doc = judge([line])
    assert metric(doc, "line_punct_ratio") == float(ends)


# --- short_line_ratio: drop when >= 0.67 (lines of <= 30 characters) ----------------------------


@pytest.mark.parametrize(
    ("short", "long", "reason"),
    [
        (67, 33, "short_line_ratio"),  # 0.67: dropped at equality
        (66, 34, None),
        (2, 1, None),  # 0.667 < 0.67
        (7, 3, "short_line_ratio"),
    ],
)
def test_short_line_ratio(short, long, reason):
    lines = (SHORT * 10)[:short] + (SENTENCES * 4)[:long]
    # every line ends in punctuation so that only the short-line check can drop the page
    lines = [line if line.endswith(".") else line + "." for line in lines]
    got, doc = judge(lines, char_duplicates_ratio=1.0)
    assert metric(doc, "short_line_ratio") == pytest.approx(short / (short + long))
    assert got == reason


@pytest.mark.parametrize(("length", "short"), [(30, True), (31, False)])
def test_short_line_length(length, short):
    line = ("Rain is forecast for most of the state over the weekend " * 2)[: length - 1] + "."
    assert len(line) == length
    _, doc = judge([line])
    assert metric(doc, "short_line_ratio") == float(short)
    _, doc = judge([line], short_line_length=length - 1)
    assert metric(doc, "short_line_ratio") == 0.0


# --- char_dup_ratio: drop when >= 0.1 -----------------------------------------------------------


def test_char_dup_ratio_counts_every_repeat_after_the_first():
    text = "\n".join([SENTENCES[0], SENTENCES[1], SENTENCES[0], SENTENCES[0]])
    _, doc = judge(text.split("\n"), char_duplicates_ratio=1.0)
    chars = len(text) - text.count("\n")
    assert metric(doc, "char_dup_ratio") == pytest.approx(2 * len(SENTENCES[0]) / chars)


def test_char_dup_ratio_on_both_sides_of_the_threshold():
    repeated = "Share this story on Facebook."
    base = SENTENCES + NAVIGATION  # no line twice
    chars = sum(map(len, base))

    def ratio(copies: int) -> float:  # the first copy is not a duplicate
        return (copies - 1) * len(repeated) / (chars + copies * len(repeated))

    copies = next(k for k in range(1, 100) if ratio(k) >= 0.1)
    got, doc = judge(base + [repeated] * (copies - 1))
    assert metric(doc, "char_dup_ratio") == pytest.approx(ratio(copies - 1))
    assert ratio(copies - 1) < 0.1 and got is None
    got, doc = judge(base + [repeated] * copies)
    assert metric(doc, "char_dup_ratio") == pytest.approx(ratio(copies))
    assert got == "char_dup_ratio"


def test_char_dup_ratio_is_dropped_at_equality():
    line = "The bridge will open to traffic soon."  # 37 characters
    other = "x" * 295 + "."  # 296 characters: 37 / (37 + 296 + 37) = 0.1
    _, doc = judge([line, other, line])
    assert metric(doc, "char_dup_ratio") == pytest.approx(0.1)
    assert judge([line, other, line])[0] == "char_dup_ratio"
    assert judge([line, other, line], char_duplicates_ratio=0.11)[0] is None


def test_blank_lines_are_not_lines():
    reason, doc = judge(["", SENTENCES[0], "   ", "", SENTENCES[1], ""])
    assert reason is None and metric(doc, "lines") == 2 and metric(doc, "short_line_ratio") == 0


def test_a_page_without_text_is_empty():
    assert judge(["", "  ", ""])[0] == "empty"


def test_checks_in_order():
    # navigation only: fails all three; the first check names it
    assert judge(SHORT * 3)[0] == "line_punct_ratio"
    assert judge([s + "." for s in SHORT * 3])[0] == "short_line_ratio"


def test_metrics_match_a_reference_computation_on_real_pages():
    cc = cc_texts()
    stop = (".", "'", '"', "!", "?")
    reasons = []
    for text in cc:
        lines = [line for line in text.split("\n") if line.strip() != ""]
        n, got = quality_metrics(text, stop, 30)
        assert n == len(lines)
        if not lines:
            continue
        seen: set[str] = set()
        dup = 0
        for line in lines:  # datatrove's find_duplicates
            if line in seen:
                dup += len(line)
            seen.add(line)
        assert got == pytest.approx({
            "line_punct_ratio": sum(line.endswith(stop) for line in lines) / len(lines),
            "short_line_ratio": sum(len(line) <= 30 for line in lines) / len(lines),
            "char_dup_ratio": dup / len(text.replace("\n", "")),
        })
        reasons.append(fineweb().apply(Document("id", "u", text)))
    assert set(reasons) <= {None, *CHECKS}
    assert 0.3 < reasons.count(None) / len(reasons) < 0.9


def test_config_section_in_a_run_config():
    config = parse_config({"fineweb": {"enabled": True, "line_punct_thr": 0.2}})
    assert config.fineweb.enabled and config.fineweb.line_punct_thr == 0.2
    assert not parse_config({}).fineweb.enabled
    with pytest.raises(Exception, match="line_punct_ratio"):
        parse_config({"fineweb": {"line_punct_ratio": 0.2}})
    with pytest.raises(ValidationError):
        FineWebQualityConfig(short_line_thr=1.5)
    with pytest.raises(ValidationError):
        FineWebQualityConfig(stop_chars=[])


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
def test_strict_what_ifs_in_chromium(fineweb_run, tmp_path, browser):  # noqa: F811
    """FineWeb's checks drop at equality ("above"/"below" thresholds): at every edge the page
    offers, its count is the documents an independent reading of the rows keeps."""
    import pyarrow.parquet as pq

    from refine.report import build_report
    from refine.shards import metrics_dict

    from .test_report import _open, _set_whatif

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
