"""extract.engine: trafilatura (the default) or resiliparse, on real pages and in real configs."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from refine.config import ConfigError, RunConfig, load_config, parse_config
from refine.extract import ExtractConfig, extract_text
from refine.pipeline import UnitProcessor
from refine.readers import plan_units, read_unit
from testkit.extract_eval import evaluate

from .conftest import DATA, ROOT

RESILIPARSE = ExtractConfig(engine="resiliparse")
ATLANTIC_WARC = DATA / "warc" / "real-html-03-head35.warc.gz"
ATLANTIC_URL = (
    "https://www.theatlantic.com/ideas/archive/2020/08/"
    "californias-disasters-are-a-warning-climate-change-is-here/615610/"
)


def html_pages(warc: Path) -> dict[str, str]:
    """{url: decoded html} of the HTML records of a real WARC, read by refine's reader."""
    unit = plan_units([(str(warc), warc.stat().st_size)], 1 << 40)[0]
    return {rec.doc.url: rec.html for rec in read_unit(unit, 1 << 30) if rec.html}


def test_resiliparse_keeps_the_article_and_drops_the_navigation_of_a_real_page():
    from resiliparse.extract.html2text import extract_plain_text

    html = html_pages(ATLANTIC_WARC)[ATLANTIC_URL]
    text = extract_text(html, RESILIPARSE)
    assert text.startswith("When I moved to California five years ago, I planted a tree")
    assert "I’m still planting fruit trees in my backyard." in text
    assert "\n\n" not in text  # one block per line, as the trafilatura engine writes it
    navigation = ["Skip to content", "Crossword Puzzle", "Manage Subscription", "Dear Therapist",
                  "Do Not Sell My Personal Information"]
    whole_page = extract_plain_text(html)  # all visible text: the navigation is there
    for link in navigation:
        assert link in whole_page and link not in text


def test_resiliparse_f1_on_gold_sample():
    res = evaluate(DATA / "extraction" / "html", DATA / "extraction" / "ground-truth.json",
                   RESILIPARSE)
    assert res["pages"] == 10 and res["empty_pages"] == 0
    assert res["f1"] >= 0.85  # measured 0.93; trafilatura 0.97 (tests/test_extract.py)


def test_resiliparse_shares_the_size_limit_and_deep_nesting_handling():
    article = "The council met on Tuesday and voted to approve the revised budget for next year. "
    body = f"<p>{article * 3}</p>" + "<div>" * 50_000 + "deep inside" + "</div>" * 50_000
    html = f"<html><body><article>{body}<p>After the nesting, {article}</p></article></body></html>"
    text = extract_text(html, RESILIPARSE)  # ~0.3 s: flattened past 64 deep, not ~minutes
    assert article.strip() in text and "deep inside" in text and "After the nesting" in text
    big = html.replace("<body>", "<body><script>" + "x" * 2_000_000 + "</script>")
    assert extract_text(big, RESILIPARSE.model_copy(update={"max_html_bytes": 1 << 20})) == text
    assert extract_text("<html><body><nav>Home</nav></body></html>", RESILIPARSE) == ""


def test_resiliparse_reads_include_tables():
    article = "The council met on Tuesday and voted to approve the revised budget for next year. "
    table = "<table><tr><th>Department budget line</th><td>1,200,000 dollars</td></tr></table>"
    html = f"<html><body><article><p>{article * 3}</p>{table}<p>{article}</p></article></body>"
    assert "\nDepartment budget line 1,200,000 dollars\n" in extract_text(html, RESILIPARSE)
    no_tables = RESILIPARSE.model_copy(update={"include_tables": False})
    assert "Department budget line" not in extract_text(html, no_tables)


def test_engine_selection_end_to_end_through_the_extraction_child(tmp_path):
    """Stages 1-7 over a real WARC with the fast preset: each kept text is resiliparse's
    extraction of its page (the filters after extraction off, so texts are compared whole)."""
    warc = DATA / "warc" / "real-html-00-head35.warc.gz"
    pages = html_pages(warc)
    off = {"enabled": False}
    settings = {"extract": {"engine": "resiliparse"}, "url": off, "language": off,
                "repetition": off, "quality": off, "lines": off}
    config = parse_config(settings)
    assert config.extract.engine == "resiliparse"
    processor = UnitProcessor(config, tmp_path / "run")
    try:
        processor.process(plan_units([(str(warc), warc.stat().st_size)], 1 << 40)[0])
    finally:
        processor.close()
    kept_files = sorted((tmp_path / "run" / processor.kept_dir).glob("*.parquet"))
    kept = [row for f in kept_files for row in pq.read_table(f).to_pylist()]
    assert len(kept) >= 20
    trafilatura = ExtractConfig()
    for row in kept:
        assert row["text"] == extract_text(pages[row["url"]], RESILIPARSE)
    assert sum(row["text"] != extract_text(pages[row["url"]], trafilatura) for row in kept) >= 10


def test_bad_engine_name_fails_config_validation_naming_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("extract:\n  engine: lxml\n")
    with pytest.raises(ConfigError, match=r"extract\.engine: Input should be 'trafilatura' or "):
        load_config(path)


def test_trafilatura_options_are_errors_with_resiliparse_unless_left_at_their_defaults():
    with pytest.raises(ConfigError) as error:
        parse_config({"extract": {"engine": "resiliparse", "favor_precision": True,
                                  "fast": False, "include_tables": False}})
    message = str(error.value)
    assert "extract.favor_precision: Value error, a trafilatura option" in message
    assert "extract.fast: Value error" in message and "include_tables" not in message
    # refinedweb.yaml's extract section with only the engine changed: its values are defaults
    refinedweb = load_config(ROOT / "configs" / "refinedweb.yaml").extract.model_dump()
    config = parse_config({"extract": {**refinedweb, "engine": "resiliparse"}})
    assert config.extract == RESILIPARSE
    assert ExtractConfig.model_validate(RESILIPARSE.model_dump()) == RESILIPARSE  # round-trips
    assert ExtractConfig(favor_precision=True).favor_precision  # still fine for trafilatura
    assert RunConfig().extract.engine == "trafilatura"


def test_fast_preset_is_fineweb_with_resiliparse():
    fast = load_config(ROOT / "configs" / "fast.yaml")
    fineweb = load_config(ROOT / "configs" / "fineweb.yaml")
    assert fast.name == "fast" and fast.extract == RESILIPARSE
    assert fineweb.extract.engine == "trafilatura"
    assert fast.model_dump(exclude={"name", "extract"}) == fineweb.model_dump(
        exclude={"name", "extract"})
    assert fast.hash != fineweb.model_copy(update={"name": "fast"}).hash
