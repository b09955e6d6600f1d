"""Run configuration: one pydantic model per stage, validated before any work starts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from refine import stages
from refine.configfile import ConfigError, parse, read_yaml
from refine.dedup.config import DedupConfig
from refine.extract import ExtractConfig
from refine.filters.c4 import C4Config
from refine.filters.classifier import ClassifierConfig
from refine.filters.fineweb import FineWebQualityConfig
from refine.filters.language import LanguageConfig
from refine.filters.lines import LineCorrectionConfig
from refine.filters.pii import PIIConfig
from refine.filters.quality import QualityConfig
from refine.filters.repetition import RepetitionConfig
from refine.filters.url import URLFilterConfig

MiB = 1 << 20
# Stages added after RefinedWeb's (off by default). A config that leaves one at its defaults hashes
# as if the stage did not exist, so adding it changed no earlier run's hash (runs stay resumable).
OPTIONAL_SECTIONS = tuple(stage.config_key for stage in stages.STAGES if stage.optional)


class ReadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_bytes: int = Field(16 * MiB, ge=MiB)  # split gzip WARCs larger than this into units
    max_record_bytes: int = Field(50 * MiB, ge=1024)  # bigger records: "record_too_large"


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shard_bytes: int = Field(256 * MiB, ge=1024)  # approximate uncompressed text per shard
    compression: str = Field("zstd", pattern="^(zstd|snappy|gzip|none)$")
    rejected_text_chars: int = Field(2000, ge=0)  # text kept per rejected row (0: none)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "refinedweb"
    read: ReadConfig = Field(default_factory=ReadConfig)
    url: URLFilterConfig = Field(default_factory=URLFilterConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    c4: C4Config = Field(default_factory=C4Config)
    fineweb: FineWebQualityConfig = Field(default_factory=FineWebQualityConfig)
    lines: LineCorrectionConfig = Field(default_factory=LineCorrectionConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)  # after dedup, on the text written
    output: OutputConfig = Field(default_factory=OutputConfig)
    # per-language overrides of the filters after language ID (refine.languages): code -> section
    # -> {key: value}
    languages: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        for name in OPTIONAL_SECTIONS:  # left at their defaults (off): as if they did not exist
            if getattr(self, name) == type(getattr(self, name))():
                del data[name]
        if not self.languages:  # none: hashes as before per-language settings existed
            del data["languages"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


def parse_config(data: Any, source: str = "config") -> RunConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of stage names to settings")
    config = parse(RunConfig, data, source)
    if config.languages:  # checked against the sections they override
        from refine.languages import validate

        config = config.model_copy(update={"languages": validate(config, source)})
    return config


def load_config(path: str | Path) -> RunConfig:
    return parse_config(read_yaml(path), str(path))
