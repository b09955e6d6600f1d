"""The three RefinedWeb variants of one input, and the held-out split they all exclude.

Two refine passes, one extraction:

1. `raw-run/`: the config with repetition, quality, line corrections and every dedup stage
   disabled, over the inputs: stages 1-4 (read, URL filter, extraction, language ID). Its
   `data/` is the **raw** variant: the extracted text of every page that passed language ID.
2. `run/`: the full config over `raw-run/data/*.parquet` (Parquet rows with a text column skip
   extraction and keep their ids; the URL filter is off because pass 1 applied it, language ID
   runs again on the same text and so keeps every row, which `check_second_pass` verifies).
   `run/filtered/` (after stages 5-7) is the **filtered** variant, `run/data/` (after dedup
   8-10) the **refined** one.

Held out: refined documents whose id hashes (pretrain.encode.is_validation, the same hash as
the pretraining validation split) below `heldout_fraction`. They are removed from every
variant's training set, and so is every document that

- has the same id (the filtered and raw copies of a held-out document),
- was removed by a dedup stage as a duplicate of a held-out document (`duplicate_of` in
  `run/rejected/`), or
- has the same URL as a held-out document under dedup's URL normalisation.

Known leak: a near-duplicate of a held-out document that a filter of stages 5-7 dropped never
reached dedup, so it stays in the raw variant's training set (a page and its own print version
with more boilerplate, say). This can only favour raw on the held-out refined set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pretrain.encode import is_validation
from refine import stages
from refine.config import RunConfig, parse_config
from refine.dedup.fuzzy import url_key
from refine.rundir import REJECTED, RunDir

VARIANTS = ("raw", "filtered", "refined")
RAW_RUN, RUN = "raw-run", "run"
# Pass 1 runs the stages up to language ID (stages 1-4) and turns off every stage after it
# (repetition, quality, C4, FineWeb, lines, the classifier, dedup and PII; the write stays).
RAW_STAGES = (*stages.before(stages.LANGUAGE), stages.LANGUAGE)
RAW_OFF = tuple(stage for stage in stages.after(stages.LANGUAGE) if stage is not stages.WRITE)


def raw_config(config: RunConfig) -> RunConfig:
    """Stages 1-4 only: every stage after language ID off."""
    data = config.model_dump(mode="json")
    for stage in RAW_OFF:
        section = data
        for key in stage.config_key.split("."):
            section = section[key]
        section["enabled"] = False
    data["name"] = f"{config.name}-ablation-raw"
    return parse_config(data, "ablation raw pass")


def second_pass_config(config: RunConfig) -> RunConfig:
    """The full config over pass 1's output: the URL filter already ran."""
    data = config.model_dump(mode="json")
    data[stages.URL.config_key]["enabled"] = False
    data["name"] = f"{config.name}-ablation"
    return parse_config(data, "ablation second pass")


def check_second_pass(stats: dict[str, Any]) -> list[str]:
    """Problems with pass 2: it must not reject anything before stage 5."""
    problems = []
    for stage in (stage.name for stage in RAW_STAGES):
        rejected = stats.get("stages", {}).get(stage, {}).get("rejected", {})
        if sum(rejected.values()):
            problems.append(f"second pass: stage {stage} rejected {dict(rejected)} of the raw "
                            "variant's documents (expected none)")
    return problems


def read_rows(run: RunDir, sub: str,
              columns: tuple[str, ...] = ("id", "url", "text")) -> list[dict]:
    """The rows of RUN/sub/*.parquet (RUN local or in a bucket), in file-name order."""
    return [row for f in run.files(sub)
            for row in run.read_table(f, columns=list(columns)).to_pylist()]


def duplicates_of(run: RunDir, ids: set[str]) -> set[str]:
    """Ids a dedup stage removed as duplicates of one of `ids`."""
    out: set[str] = set()
    for path in run.files(REJECTED):
        table = run.read_table(path, columns=["id", "duplicate_of"])
        for doc_id, original in zip(table.column("id").to_pylist(),
                                    table.column("duplicate_of").to_pylist(), strict=True):
            if original is not None and original in ids:
                out.add(doc_id)
    return out


@dataclass
class Split:
    heldout: list[dict]  # refined rows held out (id, url, text), in run order
    excluded_ids: set[str]
    excluded_urls: set[str]
    counts: dict[str, Any] = field(default_factory=dict)

    def keep(self, row: dict) -> bool:
        return (row["id"] not in self.excluded_ids
                and url_key(row.get("url") or "") not in self.excluded_urls)


def heldout_split(refined: list[dict], duplicate_ids: set[str], fraction: float) -> Split:
    heldout = [r for r in refined if is_validation(r["id"], fraction)]
    ids = {r["id"] for r in heldout}
    urls = {url_key(r["url"]) for r in heldout if r.get("url")}
    return Split(heldout, ids | duplicate_ids, urls,
                 {"heldout_documents": len(heldout), "heldout_fraction": fraction,
                  "duplicates_of_heldout": len(duplicate_ids - ids)})


def training_rows(rows: list[dict], split: Split) -> tuple[list[dict], dict[str, int]]:
    kept, by_id, by_url = [], 0, 0
    for row in rows:
        if row["id"] in split.excluded_ids:
            by_id += 1
        elif not split.keep(row):
            by_url += 1
        else:
            kept.append(row)
    return kept, {"documents": len(rows), "excluded_by_id": by_id, "excluded_by_url": by_url,
                  "train_documents": len(kept),
                  "train_bytes": sum(len(r["text"].encode("utf-8")) for r in kept)}


def write_rows(rows: list[dict], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "train.parquet"
    table = pa.table({"id": [r["id"] for r in rows], "url": [r.get("url") for r in rows],
                      "text": [r["text"] for r in rows]})
    pq.write_table(table, path, compression="zstd")
    return path
