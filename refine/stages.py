"""The registry of stages: every stage of a run declared once, in run order.

A stage's `name` is what stats.json, the rejected rows' `stage` column and the report call it;
`config_key` its section of the run config (`RunConfig`); `metrics` the namespace of the metric
keys it records in ``doc.metrics`` (``gopher_quality`` for the keys ``gopher_quality.<metric>``:
older than the registry, so not always the stage's name); `thresholds` its thresholded checks
(the `THRESHOLDS` table of its filter module, which the filter applies and the report's what-if
moves); `optional` whether it is off by default and then absent from the statistics and the
config hash; `phase` where it runs: per document before dedup (`DOCUMENT`), the whole-run dedup
stages (`DEDUP`), or per document on the text written, after dedup (`AFTER_DEDUP`). `filter`
names the per-document filter built from the stage's config section (`Stage.build`).

Everything else reads this module: `refine.stats` (stage lists and order), `refine.pipeline`
(the filter chain), `refine.languages`, `refine.config`, `refine.report` and
`pretrain.ablate.variants`. It imports nothing of refine at load time (the filter modules import
their names from it); filters and their tables are imported when first asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refine.document import Filter, Threshold

DOCUMENT, DEDUP, AFTER_DEDUP = "document", "dedup", "after_dedup"


@dataclass(frozen=True, slots=True)
class Stage:
    name: str  # in stats.json and the rejected rows
    config_key: str  # RunConfig section; dotted for a subsection ("dedup.fuzzy")
    metrics: str | None  # namespace of its metric keys ("<metrics>.<metric>"); None: records none
    phase: str = DOCUMENT
    optional: bool = False  # off by default: counted only by runs that enable it
    filter: str | None = None  # "module:Class" of its per-document filter
    overridable: bool = False  # may be set per language (refine.languages)

    @property
    def prefix(self) -> str:
        """What its metric keys start with (``"gopher_quality."``)."""
        assert self.metrics is not None, f"stage {self.name} records no metrics"
        return f"{self.metrics}."

    @property
    def thresholds(self) -> tuple[Threshold, ...]:
        """Its filter module's `THRESHOLDS` (none without a filter or a table)."""
        if self.filter is None:
            return ()
        return getattr(import_module(self.filter.partition(":")[0]), "THRESHOLDS", ())

    def filter_class(self) -> type:
        assert self.filter is not None, f"stage {self.name} has no filter"
        module, _, cls = self.filter.partition(":")
        return getattr(import_module(module), cls)

    def section(self, config: Any) -> Any:
        """Its config section of `config` (a RunConfig)."""
        for key in self.config_key.split("."):
            config = getattr(config, key)
        return config

    def enabled(self, config: Any) -> bool:
        return bool(getattr(self.section(config), "enabled", True))

    def build(self, config: Any) -> Filter:
        """Its filter, built from its section of `config` (a RunConfig)."""
        return self.filter_class()(self.section(config))


READ = Stage("read", "read", "read")
URL = Stage("url", "url", "url", filter="refine.filters.url:URLFilter")
EXTRACT = Stage("extract", "extract", "extract")  # from here on, documents are text, not HTML
LANGUAGE = Stage("language", "language", "language",
                 filter="refine.filters.language:LanguageFilter")
REPETITION = Stage("repetition", "repetition", "gopher_repetition",
                   filter="refine.filters.repetition:RepetitionFilter", overridable=True)
QUALITY = Stage("quality", "quality", "gopher_quality",
                filter="refine.filters.quality:QualityFilter", overridable=True)
# FineWeb's (optional): after Gopher quality, as FineWeb has them
C4 = Stage("c4", "c4", "c4", optional=True, filter="refine.filters.c4:C4Filter",
           overridable=True)
FINEWEB = Stage("fineweb", "fineweb", "fineweb", optional=True,
                filter="refine.filters.fineweb:FineWebQualityFilter", overridable=True)
LINES = Stage("lines", "lines", "line_corrections",
              filter="refine.filters.lines:LineCorrectionFilter", overridable=True)
# the trained quality classifier (optional), on the text the line corrections leave
CLASSIFIER = Stage("classifier", "classifier", "quality", optional=True,
                   filter="refine.filters.classifier:ClassifierFilter")
# Whole-run stages, in the order they are applied: URL dedup is decided before exact substrings,
# so that a passage is only ever cut in favour of a document that stays kept.
FUZZY_DEDUP = Stage("fuzzy_dedup", "dedup.fuzzy", "fuzzy_dedup", DEDUP)
URL_DEDUP = Stage("url_dedup", "dedup.urls", None, DEDUP)
EXACT_DEDUP = Stage("exact_dedup", "dedup.exact", "exact_dedup", DEDUP)
# PII anonymisation (optional): on the text written (after dedup when the run dedups)
PII = Stage("pii", "pii", "pii", AFTER_DEDUP, optional=True)
WRITE = Stage("write", "output", None, AFTER_DEDUP)

STAGES: tuple[Stage, ...] = (READ, URL, EXTRACT, LANGUAGE, REPETITION, QUALITY, C4, FINEWEB,
                             LINES, CLASSIFIER, FUZZY_DEDUP, URL_DEDUP, EXACT_DEDUP, PII, WRITE)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}

ORDER = tuple(stage.name for stage in STAGES)  # every stage, in run order
# counted per work unit (refine.stats.UnitStats), in run order: all but the dedup stages
DOCUMENT_STAGES = tuple(stage.name for stage in STAGES if stage.phase != DEDUP)
DEDUP_STAGES = tuple(stage.name for stage in STAGES if stage.phase == DEDUP)
OPTIONAL_STAGES = tuple(stage.name for stage in STAGES if stage.optional)
# the filters run on a document's text (after extraction, before dedup), in run order
TEXT_FILTER_STAGES = tuple(stage for stage in STAGES[STAGES.index(EXTRACT) + 1 :]
                           if stage.phase == DOCUMENT and stage.filter is not None)


def before(stage: Stage) -> tuple[Stage, ...]:
    """The stages that run before `stage`, in run order."""
    return STAGES[: STAGES.index(stage)]


def after(stage: Stage) -> tuple[Stage, ...]:
    """The stages that run after `stage`, in run order."""
    return STAGES[STAGES.index(stage) + 1 :]


# The report's what-if and the per-language settings look a stage's settings up by its name.
assert all(stage.config_key == stage.name for stage in STAGES
           if stage.overridable or stage.filter is not None), "config key differs from name"
