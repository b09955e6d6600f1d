"""Per-language thresholds (`languages:` in the config, refine.languages): a document is judged by
the filters of the language fastText lid.176 (the real model) gives it; without an override, by
the run's own settings. Each overridden threshold is tested on both sides."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from refine.config import ConfigError, RunConfig, load_config, parse_config
from refine.document import Document
from refine.filters.quality import DEFAULT_STOP_WORDS
from refine.languages import FILTERS, config_dict_for, language_chains, language_config
from refine.pipeline import UnitProcessor, build_text_filters
from refine.readers import plan_units
from refine.report import whatif
from refine.shards import metrics_dict

from .conftest import DATA, ROOT

# Real German prose (a local news item), written for this test: three paragraphs, 118 words,
# none of Gopher's English stop words (the, be, to, of, and, that, have, with).
GERMAN = (
    "Die Stadtverwaltung hat am Dienstag beschlossen, im kommenden Frühjahr mit dem Bau der "
    "neuen Grundschule im Norden der Stadt zu beginnen. Nach Angaben des Bürgermeisters sollen "
    "die Arbeiten etwa zwei Jahre dauern und rund zwölf Millionen Euro kosten.\n"
    "Die Eltern im Viertel hatten lange auf diese Entscheidung gewartet, weil die bisherige "
    "Schule seit Jahren zu klein ist. Viele Kinder müssen derzeit mit dem Bus in die "
    "Nachbargemeinde fahren, was für die Familien mit erheblichem Aufwand verbunden ist.\n"
    "Außerdem will die Stadt die Straßen rund um das Gelände erneuern und einen sicheren Radweg "
    "anlegen. Die Anwohner können sich bei einer Informationsveranstaltung im Rathaus über die "
    "Pläne informieren und ihre Fragen an die Verwaltung richten."
)
GERMAN_STOP_WORDS = ["der", "die", "das", "und", "zu", "den", "von", "mit"]
NEWS = DATA / "text" / "lee-news-background.txt"
DEDUP_OFF = {stage: {"enabled": False} for stage in ("fuzzy", "exact", "urls")}
# Both languages through language ID (a multilingual run must let several through).
BASE = {"language": {"languages": ["en", "de"]}}


def english() -> str:
    """Real English news text: the first paragraphs of the Lee background corpus, ~150 words."""
    lines = [line for line in NEWS.read_text().splitlines() if len(line.split()) > 20]
    return "\n".join(lines[:2])


@pytest.fixture(scope="module")
def language_filter():
    return build_text_filters(parse_config({"language": {"languages": []}}))[0][1]


@pytest.fixture(scope="module")
def language_model(language_filter):
    """One fastText model for the module: chains share it (as a worker's chains do)."""
    return language_filter.model


def judge(settings: dict, text: str, language_model) -> tuple[tuple[str, str] | None, Document]:
    """Run the text through the stages as `UnitProcessor._process_batch` does: language ID
    first, then each stage's filter of the document's language. (stage, reason) or None."""
    config = parse_config(settings)
    default = build_text_filters(config)
    default[0][1].model = language_model
    chains = language_chains(config, default)
    doc = Document(id="d", url="", text=text)
    for i, (stage, text_filter) in enumerate(default):
        chosen = chains[doc.language][i][1] if doc.language in chains else text_filter
        reason = chosen.apply(doc)
        if reason is not None:
            return (stage, reason), doc
    return None, doc


def with_de(overrides: dict, top: dict | None = None) -> dict:
    return {**BASE, **(top or {}), "languages": {"de": overrides}}


# --- the stop words: a German page is judged by German rules, an English one as before --------

def test_german_page_fails_english_stop_words_and_is_kept_with_its_own(language_model):
    verdict, doc = judge(BASE, GERMAN, language_model)
    assert doc.language == "de" and doc.language_score >= 0.65
    assert doc.metrics["gopher_quality.stop_words"] == 0
    assert verdict == ("quality", "stop_words")  # English rules: none of the stop words
    german = with_de({"quality": {"stop_words": GERMAN_STOP_WORDS}})
    verdict, doc = judge(german, GERMAN, language_model)
    assert verdict is None and doc.metrics["gopher_quality.stop_words"] == 6
    # an English page is judged by the top-level (English) list, German's section or not
    for settings in (BASE, german):
        verdict, doc = judge(settings, english(), language_model)
        assert verdict is None and doc.language == "en"
        assert doc.metrics["gopher_quality.stop_words"] >= 2


def test_stop_word_count_on_both_sides_of_the_language_threshold(language_model):
    listed = {"stop_words": GERMAN_STOP_WORDS}
    # 6 different German stop words (der die das und zu mit): kept at min 6, dropped at min 7
    assert judge(with_de({"quality": {**listed, "min_stop_words": 6}}), GERMAN,
                 language_model)[0] is None
    assert judge(with_de({"quality": {**listed, "min_stop_words": 7}}), GERMAN,
                 language_model)[0] == ("quality", "stop_words")
    # the English page is not moved by German's threshold
    assert judge(with_de({"quality": {**listed, "min_stop_words": 7}}), english(),
                 language_model)[0] is None


def test_a_language_without_a_section_keeps_the_run_settings(language_model):
    """A French override does nothing to a German page (nor does a section for German to an
    English page: see above)."""
    settings = {"language": {"languages": ["en", "de", "fr"]},
                "languages": {"fr": {"quality": {"min_stop_words": 0}}}}
    assert judge(settings, GERMAN, language_model)[0] == ("quality", "stop_words")


# --- every overridable section: one threshold on both sides ----------------------------------

# (section, key, metric, direction, reason, top-level settings that enable the section's stage)
# direction: "min" keep at metric >= t, "max" keep at metric <= t, "below" keep at metric < t.
CASES = [
    ("quality", "min_words", "gopher_quality.n_words", "min", "too_few_words", {}),
    ("quality", "max_mean_word_len", "gopher_quality.mean_word_len", "max", "mean_word_len", {}),
    ("repetition", "top_2gram_char_frac", "gopher_repetition.top_2gram_char_frac", "max",
     "top_2gram_char_frac", {}),
    ("c4", "min_num_sentences", "c4.sentences", "min", "too_few_sentences",
     {"c4": {"enabled": True, "filter_policy": False}}),
    ("fineweb", "short_line_thr", "fineweb.short_line_ratio", "below", "short_line_ratio",
     {"fineweb": {"enabled": True}}),
    ("lines", "max_removed_word_frac", "line_corrections.removed_word_frac", "max",
     "too_many_words_removed", {}),
]


def _sides(value: float, direction: str, integer: bool) -> tuple[float, float]:
    """(a threshold that keeps `value`, the nearest one that drops it)."""
    if direction == "min":
        return value, value + 1 if integer else math.nextafter(value, math.inf)
    if direction == "max":
        return value, value - 1 if integer else math.nextafter(value, -math.inf)
    return math.nextafter(value, math.inf), value  # "below": dropped at equality


def _german_page(section: str) -> str:
    if section not in ("lines", "fineweb"):
        return GERMAN
    # navigation lines (the line rules drop them; they are short) so the measure is not 0
    return "Startseite\nANMELDEN ZUM NEWSLETTER HEUTE\n" + GERMAN


@pytest.mark.parametrize(("section", "key", "metric", "direction", "reason", "top"), CASES,
                         ids=[f"{c[0]}.{c[1]}" for c in CASES])
def test_language_threshold_on_both_sides(language_model, section, key, metric, direction,
                                          reason, top):
    page = _german_page(section)
    stage = FILTERS[section][0]
    _, measured = judge(with_de({"quality": {"stop_words": GERMAN_STOP_WORDS}}, top), page,
                        language_model)
    value = measured.metrics[metric]
    assert value > 0, metric
    integer = type(getattr(RunConfig(), section)).model_fields[key].annotation is int
    keep, drop = _sides(value, direction, integer)
    german = {"quality": {"stop_words": GERMAN_STOP_WORDS}}
    german.setdefault(section, {})[key] = keep
    # the top-level threshold is the one that would drop it: the language's wins
    top_drop = {**top, section: {**top.get(section, {}), key: drop}}
    verdict, doc = judge(with_de(german, top_drop), page, language_model)
    assert doc.language == "de" and verdict is None, (value, keep)
    german[section][key] = drop
    top_keep = {**top, section: {**top.get(section, {}), key: keep}}
    assert judge(with_de(german, top_keep), page, language_model)[0] == (stage, reason)
    # without the section the top-level value judges the German page too
    assert judge({**BASE, **top_drop, "languages": {"de": {"quality": {
        "stop_words": GERMAN_STOP_WORDS}}}}, page, language_model)[0] == (stage, reason)


# --- config: validated before any work, errors name the key path --------------------------

@pytest.mark.parametrize(("languages", "expected"), [
    ({"de": {"quality": {"min_words": -1}}},
     r"languages\.de\.quality\.min_words: Input should be greater than or equal to 0"),
    ({"de": {"quality": {"min_wrods": 3}}},
     r"languages\.de\.quality\.min_wrods: Extra inputs are not permitted"),
    ({"de": {"quality": {"min_words": 200_000}}},
     r"languages\.de\.quality: Value error, min_words must be <= max_words"),
    ({"de": {"quality": {"stop_words": ["der", ""]}}}, r"languages\.de\.quality\.stop_words"),
    ({"de": {"repetition": {"dup_line_frac": 1.5}}}, r"languages\.de\.repetition\.dup_line_frac"),
    ({"de": {"lines": {"max_removed_word_frac": "a lot"}}},
     r"languages\.de\.lines\.max_removed_word_frac"),
    ({"de": {"quality": {"enabled": False}}},
     r"languages\.de\.quality\.enabled: a language section cannot turn a stage on or off "
     r"\(every language goes through the same stages\)"),
    ({"de": {"url": {"enabled": False}}},
     r"languages\.de\.url: not a per-language section; one of: repetition, quality, c4, "
     r"fineweb, lines"),
    ({"de": {"language": {"min_score": 0.5}}}, r"languages\.de\.language: .*runs first"),
    ({"de": {"quality": 3}}, r"languages\.de\.quality: Input should be a valid dictionary"),
    ({"de": ["quality"]}, r"languages\.de: Input should be a valid dictionary"),
    ({"fr": {"quality": {"min_words": 10}}},
     r"languages\.fr: 'fr' is not in language\.languages \['de', 'en'\]"),
    ({"German": {"quality": {"min_words": 10}}}, r"languages\.German: 'German' is not in"),
])
def test_bad_language_sections_name_the_key_path(languages, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config({**BASE, "languages": languages})


def test_a_run_that_keeps_every_language_checks_the_code():
    with pytest.raises(ConfigError, match=r"languages\.German: not a language code"):
        parse_config({"language": {"languages": []},
                      "languages": {"German": {"quality": {"min_words": 10}}}})


def test_every_problem_is_reported_at_once_with_the_file_name(tmp_path):
    path = tmp_path / "multi.yaml"
    path.write_text("language:\n  languages: [en, de]\nlanguages:\n  de:\n    quality:\n"
                    "      min_words: -5\n    c4:\n      enabled: true\n  en:\n    fineweb:\n"
                    "      short_line_thr: 2\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path} is invalid:")
    for key in ("languages.de.quality.min_words", "languages.de.c4.enabled",
                "languages.en.fineweb.short_line_thr"):
        assert key in message, message


def test_language_sections_need_the_language_stage():
    with pytest.raises(ConfigError, match=r"languages: .*language\.enabled: true"):
        parse_config({"language": {"enabled": False},
                      "languages": {"de": {"quality": {"min_words": 10}}}})
    # any language is allowed when the run keeps every language
    config = parse_config({"language": {"languages": []},
                           "languages": {"ja": {"quality": {"min_words": 10}}}})
    assert language_config(config, "ja").quality.min_words == 10


def test_overrides_are_stored_in_normal_form_and_survive_the_manifest():
    config = parse_config(with_de({"quality": {"stop_words": ["Der", " Und "]},
                                   "lines": {"max_removed_word_frac": 0.1}}))
    assert config.languages == {"de": {"quality": {"stop_words": ["der", "und"]},
                                       "lines": {"max_removed_word_frac": 0.1}}}
    german = language_config(config, "de")
    assert german.quality.stop_words == ["der", "und"] and german.quality.min_words == 50
    assert german.lines.max_removed_word_frac == 0.1 and german.repetition == config.repetition
    assert language_config(config, "en") is config
    # workers get the config as JSON (refine.dag); the hash is the same there
    again = RunConfig.model_validate_json(config.model_dump_json())
    assert again.hash == config.hash and again.languages == config.languages
    merged = config_dict_for(json.loads(config.model_dump_json()), "de")
    assert merged["quality"]["stop_words"] == ["der", "und"]
    assert merged["quality"]["min_words"] == 50


def test_config_hash_is_unchanged_without_languages():
    for config in (RunConfig(), parse_config({}), parse_config({"languages": {}}),
                   load_config(ROOT / "configs" / "refinedweb.yaml"),
                   parse_config({"quality": {"min_words": 10}})):
        data = json.loads(config.canonical_json())
        assert "languages" not in data
    assert parse_config({"languages": {}}).hash == parse_config({}).hash == RunConfig().hash
    with_section = parse_config(with_de({"quality": {"min_words": 10}}))
    assert with_section.hash != parse_config(BASE).hash
    assert json.loads(with_section.canonical_json())["languages"] == {
        "de": {"quality": {"min_words": 10}}}


def test_demo_config_shows_two_languages():
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert set(demo.languages) == {"en", "de"}
    assert {"en", "de"} <= set(demo.language.languages)
    german = language_config(demo, "de").quality
    assert german.min_stop_words == 2 and "und" in german.stop_words
    english_rules = language_config(demo, "en").quality
    assert english_rules.min_stop_words == 2
    assert english_rules.stop_words == list(DEFAULT_STOP_WORDS)
    assert demo.quality.min_stop_words == 0  # the other languages: no stop-word check


# --- the worker: one chain per language, statistics per stage ------------------------------

def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _process(tmp_path: Path, settings: dict, rows: list[dict]) -> tuple[dict, dict, dict]:
    tmp_path.mkdir(parents=True)
    path = _jsonl(tmp_path / "in.jsonl", rows)
    processor = UnitProcessor(parse_config({**settings, "dedup": DEDUP_OFF}),
                              tmp_path / "run")
    try:
        summary = processor.process(plan_units([(str(path), path.stat().st_size)], 1 << 30)[0])
    finally:
        processor.close()
    out = {}
    for sub in ("data", "rejected"):
        files = sorted((tmp_path / "run" / sub).glob("*.parquet"))
        out[sub] = {r["id"]: r for f in files for r in pq.read_table(f).to_pylist()}
    return summary, out["data"], out["rejected"]


def test_worker_judges_each_document_by_its_language(tmp_path):
    rows = [{"id": "de", "text": GERMAN}, {"id": "en", "text": english()}]
    summary, kept, rejected = _process(tmp_path / "plain", BASE, rows)
    assert set(kept) == {"en"} and rejected["de"]["reason"] == "stop_words"
    settings = with_de({"quality": {"stop_words": GERMAN_STOP_WORDS, "min_stop_words": 3}})
    summary, kept, rejected = _process(tmp_path / "german", settings, rows)
    assert set(kept) == {"de", "en"} and not rejected
    assert kept["de"]["language"] == "de"
    assert metrics_dict(kept["de"]["metrics"])["gopher_quality.stop_words"] == 6
    # one funnel: the same stages for both languages, counted together
    assert summary["stages"]["quality"]["in"] == summary["stages"]["quality"]["out"] == 2
    assert summary["stages"]["lines"]["out"] == 2 and summary["kept"] == 2


# --- the report's what-if: each document at its language's thresholds ----------------------

def _sample_rows(language_filter) -> list[dict]:
    """The Common Crawl text sample's English and German documents (real pages)."""
    rows = []
    with gzip.open(DATA / "text" / "cc-main-2019-30-text-sample.jsonl.gz", "rt") as stream:
        for line in stream:
            row = json.loads(line)
            language, _ = language_filter.identify(row["text"])
            if language == "de" or (language == "en" and len(rows) < 140):
                rows.append({"id": row["id"], "text": row["text"]})
    return rows


WHATIF_SETTINGS = {
    "language": {"languages": ["en", "de"]},
    "dedup": DEDUP_OFF,
    "languages": {"de": {"quality": {"stop_words": GERMAN_STOP_WORDS, "min_words": 150},
                         "repetition": {"dup_5gram_char_frac": 0.15}}},
}


@pytest.fixture(scope="module")
def language_run(local_ray, language_filter, tmp_path_factory) -> Path:
    from refine.run import run

    base = tmp_path_factory.mktemp("language-run")
    rows = _sample_rows(language_filter)
    inputs = [str(_jsonl(base / f"part-{i}.jsonl", rows[i::2])) for i in range(2)]
    return run(parse_config(WHATIF_SETTINGS), inputs, base / "run", workers=2).run_dir


@pytest.mark.slow
def test_whatif_at_the_run_settings_is_the_run_kept_count(language_run, tmp_path):
    from refine.report import build_report, collect

    stats = json.loads((language_run / "stats.json").read_text())
    kept = stats["documents"]["kept"]
    assert stats["accounting_ok"] and kept > 0
    data = collect(language_run, samples=2)
    assert data["languages"]["kept"].get("de", 0) >= 3
    for w in data["whatif"]:
        assert w["kept_now"] == kept, (w["stage"], w["config_key"], w["language"])
        assert w["inconsistent"] == 0 and w["missing"] == 0
    cards = {(w["stage"], w["config_key"], w["language"]): w for w in data["whatif"]}
    # German's own threshold has its own control; the top-level one holds German at 150
    assert cards[("quality", "min_words", "de")]["threshold"] == 150
    assert cards[("quality", "min_words", None)]["threshold"] == 50
    assert cards[("repetition", "dup_5gram_char_frac", "de")]["threshold"] == 0.15
    assert ("quality", "min_stop_words", "de") not in cards  # not overridden: one control
    german = cards[("quality", "min_words", "de")]
    assert german["fixed_docs"] == data["languages"]["kept"].get("en", 0)
    # moving German's min_words down to t (the edge nearest 50, the top-level value) adds
    # exactly the German pages dropped for t..149 words that pass the stage's other checks at
    # German's thresholds
    rows = [r for f in sorted((language_run / "rejected").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    short = [r for r in rows if r["stage"] == "quality" and r["reason"] == "too_few_words"
             and r["language"] == "de"]
    assert short, "no German page between the two thresholds: the test would prove nothing"
    config = parse_config(WHATIF_SETTINGS)
    others = [c for c in whatif.STAGE_THRESHOLDS["quality"] if c.config_key != "min_words"]
    rules = language_config(config, "de").quality
    edge = int(np.argmin(np.abs(np.array(german["edges"]) - 50)))
    lowered = german["edges"][edge]
    assert lowered < 150
    gained = sum(
        1 for r in short
        if metrics_dict(r["metrics"])["gopher_quality.n_words"] >= lowered
        and all(whatif.passes(c, np.array([metrics_dict(r["metrics"])[c.metric]]),
                              getattr(rules, c.config_key))[0] for c in others))
    assert gained >= 1
    assert whatif.kept_at(whatif.STAGE_THRESHOLDS["quality"][0], np.array(german["docs"]),
                          edge) + german["fixed_docs"] == kept + gained
    page = build_report(language_run, tmp_path / "report.html").read_text()
    assert 'id="accounting" class="banner ok"' in page
    assert 'id="whatif-quality-min_words-de"' in page and 'id="whatif-quality-min_words"' in page


def test_whatif_without_languages_is_as_before():
    """No `languages`: one control per check, nothing held fixed (the pre-existing numbers)."""
    check = whatif.STAGE_THRESHOLDS["quality"][0]
    config = {"quality": {"enabled": True, **{c.config_key: 0.0 for c in
                                               whatif.STAGE_THRESHOLDS["quality"]}}}
    config["quality"].update(min_words=50, max_words=100_000, max_mean_word_len=10.0,
                             max_hash_word_ratio=0.1, max_ellipsis_word_ratio=0.1,
                             max_bullet_line_frac=0.9, max_ellipsis_line_frac=0.3)
    keys = whatif.metric_keys(config)["quality"]
    kept_metrics = {k: np.full(3, 0.05) for k in keys}  # passes every other check
    kept_metrics[check.metric] = np.array([60.0, 70.0, 80.0])
    rows = whatif.StageRows()
    rows.add(np.array(["too_few_words"], dtype=object), np.array([40]),
             {k: np.array([40.0 if k == check.metric else 0.05]) for k in keys})
    out = whatif.build(config, kept_metrics, np.array([60, 70, 80]), {"quality": rows})
    first = next(w for w in out if w["config_key"] == "min_words")
    assert first["language"] is None and first["fixed_docs"] == 0 and first["kept_now"] == 3
    assert first["eligible"] == 4
    assert whatif.kept_at(check, np.array(first["docs"]), first["edges"].index(40)) == 4
