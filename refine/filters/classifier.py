"""A quality classifier you trained (`refine classifier train`, see `refine.quality_classifier`):
scores every document and keeps those at or above a threshold (DCLM's fastText filter).

The stage runs after the line corrections, on the text the run would keep, and before dedup.
Its metric is ``quality.classifier_score`` (P(curated), in [0, 1]); its one reason is
``low_classifier_score`` (score < threshold).

``threshold``
    keep a document when its score is >= this;
``top_fraction``
    instead: keep the documents scoring in the top fraction of the *negatives the model was
    trained against* (the model file keeps their score quantiles), as DCLM kept its top 10%: a
    fixed threshold computed once, so that each document is judged alone and a run's output does
    not depend on what else it holds. It is not a quantile of this run's own documents (that would
    need a pass over the whole run before any document is written). The config resolves it into
    ``threshold`` when it is read (the resolved config stored in the run shows both); a config
    giving both must have them agree.

The model file is checked when the config is read, before any work: a missing or unreadable file
fails it with ``classifier.model`` and the reason. Its SHA-256 is filled into ``model_sha256``
(a value given must match), so the run's config hash names the model and resuming a run after
retraining its model fails. No weights ship with refine.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from refine.document import Document, Threshold, first_failure
from refine.stages import CLASSIFIER

STAGE = CLASSIFIER.name
METRIC = f"{CLASSIFIER.prefix}classifier_score"  # as the issue names it
REASON = "low_classifier_score"
TOLERANCE = 1e-12  # a threshold written back from a resolved top_fraction


class ClassifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False  # off in every preset: it needs a model you trained
    model: str | None = Field(None, validate_default=True)  # the .npz 'classifier train' wrote
    threshold: float | None = Field(None, ge=0.0, le=1.0)  # keep when the score is >= this
    top_fraction: float | None = Field(None, gt=0.0, le=1.0)  # or: resolve to the threshold
    # Filled in when the config is read (a value given must match): the run's config, and so its
    # hash, names the exact model, and resuming with a retrained one fails.
    model_sha256: str | None = Field(None, validate_default=True)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str | None, info: ValidationInfo) -> str | None:
        if not info.data.get("enabled"):
            return v
        from refine.quality_classifier import ClassifierError, read_meta

        if not v:
            raise ValueError("required when the classifier stage is enabled (train one with "
                             "'refine classifier train')")
        try:
            read_meta(v)
        except ClassifierError as error:
            raise ValueError(str(error)) from None
        return v

    @field_validator("model_sha256")
    @classmethod
    def _digest(cls, v: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model")
        if not info.data.get("enabled") or not model:  # off, or the model failed already
            return v
        from refine.quality_classifier import file_sha256

        digest = file_sha256(model)
        if v is not None and v != digest:
            raise ValueError(f"{model} has changed (sha256 {digest}, the config says {v}): was "
                             "the model retrained since?")
        return digest

    @model_validator(mode="after")
    def _resolve(self) -> ClassifierConfig:
        if not self.enabled:
            return self
        from refine.quality_classifier import read_meta, top_fraction_threshold

        if self.threshold is None and self.top_fraction is None:
            raise ValueError("threshold or top_fraction: one is required")
        if self.top_fraction is not None:
            assert self.model is not None  # checked by _model
            resolved = top_fraction_threshold(read_meta(self.model), self.top_fraction)
            if self.threshold is not None and abs(self.threshold - resolved) > TOLERANCE:
                raise ValueError(f"threshold and top_fraction exclude each other: top_fraction "
                                 f"{self.top_fraction} is threshold {resolved:.6g} with this "
                                 f"model, threshold says {self.threshold}")
            self.threshold = resolved
        return self


# Keep at score >= threshold (`ClassifierFilter.apply`; the report's what-if moves it).
THRESHOLDS = (Threshold(METRIC, "threshold", "min", REASON),)


class ClassifierFilter:
    """Scores each document with the trained model. Metric: `METRIC`. Reason: `REASON`."""

    name = STAGE

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        self.config = config or ClassifierConfig()
        self.model = None
        if self.config.enabled:
            from refine.quality_classifier import load_model

            assert self.config.model is not None  # checked by the config
            assert self.config.threshold is not None  # resolved by the config
            self.model = load_model(self.config.model)

    def apply(self, doc: Document) -> str | None:
        if self.model is None:
            return None
        score = self.model.score(doc.text)
        doc.metrics[METRIC] = score
        return first_failure(THRESHOLDS, doc.metrics, self.config)


__all__ = ["METRIC", "REASON", "STAGE", "THRESHOLDS", "ClassifierConfig", "ClassifierFilter"]
