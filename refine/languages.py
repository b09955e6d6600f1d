"""Per-language settings (FineWeb-2 style): `languages.<code>` overrides the thresholds and word
lists of the filters that run after language ID, for the documents identified as that language.

    languages:
      de:
        quality: {stop_words: [der, die, und, ...], min_stop_words: 2}
        lines: {max_removed_word_frac: 0.08}

An override is partial: every key it leaves out keeps the run's value (the top-level section),
so a document of a language without a section is judged exactly as before. Overridable
sections: `OVERRIDABLE`. An override may not change `enabled`: every language goes through the
same stages, which keeps the per-stage statistics one funnel. Validation happens before any
work starts and names each bad key by its full path (`languages.de.quality.min_words`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from refine import stages
from refine.configfile import ConfigError, parse
from refine.document import Filter

if TYPE_CHECKING:
    from refine.config import RunConfig

# config section -> (stage name in the filter chain and stats, filter class), in run order: the
# stages of the registry (refine.stages) that may be set per language
FILTERS: dict[str, tuple[str, type]] = {stage.config_key: (stage.name, stage.filter_class())
                                        for stage in stages.STAGES if stage.overridable}
OVERRIDABLE = tuple(FILTERS)
_CODE = re.compile(r"^[a-z]{2,3}$")  # lid.176's labels: ISO 639 codes, lowercase


def _fail(source: str, problems: list[str]) -> ConfigError:
    return ConfigError(f"{source} is invalid:\n" + "\n".join(f"  {p}" for p in problems))


def _section(config: RunConfig, language: str, name: str, override: Any,
             source: str) -> BaseModel:
    """The top-level section `name` with `override` applied, validated (errors as
    `languages.<language>.<name>.<key>: why`)."""
    path = f"languages.{language}.{name}"
    base = getattr(config, name)
    if not isinstance(override, dict):
        raise _fail(source, [f"{path}: expected a mapping of {name} settings to override"])
    if "enabled" in override:
        raise _fail(source, [
            f"{path}.enabled: a language section cannot turn a stage on or off (every language "
            f"goes through the same stages); set {name}.enabled at the top level"])
    merged = {**base.model_dump(), **override}
    return parse(type(base), merged, source, prefix=path)


def validate(config: RunConfig, source: str = "config") -> dict[str, dict[str, dict[str, Any]]]:
    """The `languages` section checked against the rest of `config`, in normal form: each
    override holds only the keys it sets, with their validated values (e.g. stop words
    lowercased). Raises ConfigError naming every bad key by its path."""
    problems: list[str] = []
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if config.languages and not config.language.enabled:
        problems.append("languages: per-language settings need the language stage "
                        "(language.enabled: true), which decides each document's language")
    selected = set(config.language.languages)
    for language, sections in config.languages.items():
        if selected and language not in selected:
            problems.append(
                f"languages.{language}: {language!r} is not in language.languages "
                f"{sorted(selected)}: no document of it would reach these filters")
            continue
        if not selected and not _CODE.match(language):  # any language kept: a plausible code
            problems.append(f"languages.{language}: not a language code of the language "
                            "stage (lowercase ISO 639 code as fastText lid.176 gives, e.g. de)")
            continue
        out[language] = {}
        for name, override in sections.items():
            if name not in FILTERS:
                why = (" (language ID itself runs first, with one setting for all languages)"
                       if name == stages.LANGUAGE.config_key else "")
                problems.append(f"languages.{language}.{name}: not a per-language section{why}; "
                                f"one of: {', '.join(OVERRIDABLE)}")
                continue
            try:
                section = _section(config, language, name, override, source)
            except ConfigError as error:
                problems.extend(line.strip() for line in str(error).splitlines()[1:])
                continue
            dumped = section.model_dump(mode="json")
            out[language][name] = {key: dumped[key] for key in override}
    if problems:
        raise _fail(source, problems)
    return out


def language_config(config: RunConfig, language: str) -> RunConfig:
    """The config the documents of `language` are judged by (the run's own without an
    override)."""
    sections = config.languages.get(language)
    if not sections:
        return config
    update = {name: _section(config, language, name, override, "config")
              for name, override in sections.items()}
    return config.model_copy(update=update)


def language_chains(config: RunConfig, default: list[tuple[str, Filter]]
                    ) -> dict[str, list[tuple[str, Filter]]]:
    """One filter chain per language with an override: `default` (the run's chain, as
    `refine.pipeline.build_text_filters` makes it) with the overridden stages' filters rebuilt
    from the language's settings; every other stage shares the default's filter (language ID
    and its model included). Same stages, same order, so statistics stay per stage."""
    chains = {}
    for language, sections in config.languages.items():
        lang_config = language_config(config, language)
        rebuilt = {FILTERS[name][0]: FILTERS[name][1](getattr(lang_config, name))
                   for name in sections}
        chains[language] = [(stage, rebuilt.get(stage, text_filter))
                            for stage, text_filter in default]
    return chains


def config_dict_for(config: dict[str, Any], language: str | None) -> dict[str, Any]:
    """A run's resolved config (manifest.json's `config`) as the documents of `language` were
    judged: the top-level sections with that language's overrides applied."""
    sections = (config.get("languages") or {}).get(language or "")
    if not sections:
        return config
    return {**config, **{name: {**config.get(name, {}), **override}
                         for name, override in sections.items()}}


def threshold_for(config: dict[str, Any], stage: str, key: str, language: str | None) -> Any:
    """The value of `stage.key` that judged a document of `language`."""
    override = (config.get("languages") or {}).get(language or "", {}).get(stage, {})
    return override[key] if key in override else config[stage][key]
