"""The `languages:` config section (refine.config, refine.languages): validated before any work,
errors name the key path, normal form, manifest, config hash, the demo config.
"""

from __future__ import annotations

import json

import pytest

from refine.config import ConfigError, RunConfig, load_config, parse_config
from refine.filters.quality import DEFAULT_STOP_WORDS
from refine.languages import config_dict_for, language_config

from .conftest import ROOT
from .language_pages import BASE, with_de

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
