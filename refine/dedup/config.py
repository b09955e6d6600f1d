"""Settings of the dedup stages (design stages 8-10), the `dedup:` section of a run config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from refine.dedup.minhash import MinHashConfig, Scheme, ShingleHash
from refine.rundir import URL_SET  # a run's kept URLs, read by later runs' URL dedup

MiB = 1 << 20


class FuzzyDedupConfig(MinHashConfig):
    """Stage 8. Defaults: RefinedWeb's 450 bands x 20 rows on word 5-grams, signed by fast
    similarity sketching over poly64 shingle hashes (~10x faster than datasketch's scheme, the
    same S-curve; ``scheme: legacy`` + ``shingle_hash: sha1`` give datasketch's signatures)."""

    enabled: bool = True
    scheme: Scheme = "sketch"
    shingle_hash: ShingleHash = "poly64"
    # memory of one grouping task: band keys (32 bytes each) are shuffled into buckets that,
    # sorted, fit in about this many bytes
    bucket_bytes: int = Field(256 * MiB, ge=MiB)


class ExactDedupConfig(BaseModel):
    """Stage 9: spans of `min_tokens` or more tokens seen earlier in the run are cut."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_tokens: int = Field(50, ge=2)
    min_chars: int = Field(20, ge=0)  # documents left shorter than this are dropped
    # memory of one task that finds repeats: hashes of token windows are split into partitions
    # of about this size (each window costs ~130 bytes there, 30 per character of text)
    task_bytes: int = Field(512 * MiB, ge=1024)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values: Any) -> Any:
        if isinstance(values, dict) and "partition_bytes" in values:
            raise ValueError("partition_bytes is gone: exact dedup now compares the whole run; "
                             "bound each task's memory with task_bytes")
        return values


class URLDedupConfig(BaseModel):
    """Stage 10: a normalised URL is kept once in a run, and never again after `previous_runs`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    previous_runs: list[str] = Field(default_factory=list)  # run directories, or their urls.parquet
    # URL hashes are split into ranges of about this many bytes (32 per document), one task each
    task_bytes: int = Field(256 * MiB, ge=1024)

    @field_validator("previous_runs")
    @classmethod
    def _url_sets_exist(cls, runs: list[str]) -> list[str]:
        for run in runs:
            if not _is_file(url_set_path(run)):
                raise ValueError(f"{run}: no URL set ({URL_SET}); is it a finished refine run "
                                 "with URL dedup?")
        return runs


def url_set_path(run: str | Path) -> str:
    """A run's URL set (the run may be a local path or a URL), or `run` itself if a .parquet."""
    run = str(run)
    return run if run.endswith(".parquet") else f"{run.rstrip('/')}/{URL_SET}"


def _is_file(location: str) -> bool:
    fs, path = fsspec.core.url_to_fs(location)
    return fs.isfile(path)


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fuzzy: FuzzyDedupConfig = Field(default_factory=FuzzyDedupConfig)
    exact: ExactDedupConfig = Field(default_factory=ExactDedupConfig)
    urls: URLDedupConfig = Field(default_factory=URLDedupConfig)

    @property
    def enabled(self) -> bool:
        return self.fuzzy.enabled or self.exact.enabled or self.urls.enabled
