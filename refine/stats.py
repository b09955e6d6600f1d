"""Stage statistics: counted per work unit, written per unit, merged into RUN/stats.json.

Merging always starts from every unit file on disk, so a resumed run reports all its inputs,
not only the last launch's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from refine import stages as registry
from refine.rundir import PARTS, RunDir

# Stage names from the registry (refine.stages), in run order. The optional ones (off by default)
# are counted only by runs that enable them, so a run without them writes the same statistics as
# before they existed.
OPTIONAL_STAGES = registry.OPTIONAL_STAGES
DOCUMENT_STAGES = registry.DOCUMENT_STAGES  # counted per work unit
STAGES = tuple(name for name in DOCUMENT_STAGES if name not in OPTIONAL_STAGES)  # always counted
DEDUP_STAGES = registry.DEDUP_STAGES  # whole-run stages, in the order they are applied
ORDER = registry.ORDER  # every stage, in run order


def new_stage() -> dict[str, Any]:
    return {"in": 0, "out": 0, "rejected": {}, "cpu_s": 0.0, "bytes_in": 0, "bytes_out": 0}


class UnitStats:
    def __init__(self, unit_id: str, path: str, optional: Iterable[str] = ()):
        """`optional`: the stages the run enables; those of `OPTIONAL_STAGES` are counted."""
        self.unit_id, self.path = unit_id, path
        wanted = set(STAGES).union(optional)
        self.stages = {name: new_stage() for name in DOCUMENT_STAGES if name in wanted}
        self.records_by_type: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.kept = 0
        self.read = 0
        self.rejected: Counter[str] = Counter()  # "stage.reason" -> count
        self.wall_s = 0.0

    def reject(self, stage: str, reason: str) -> None:
        counts = self.stages[stage]["rejected"]
        counts[reason] = counts.get(reason, 0) + 1
        self.rejected[f"{stage}.{reason}"] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit_id,
            "input": self.path,
            "read": self.read,
            "kept": self.kept,
            "rejected": dict(sorted(self.rejected.items())),
            "stages": self.stages,
            "records_by_type": dict(sorted(self.records_by_type.items())),
            "warnings": self.warnings,
            "wall_s": round(self.wall_s, 3),
        }


def _new_input(units: int) -> dict[str, Any]:
    return {"units": units, "units_done": 0, "read": 0, "kept": 0, "rejected": 0, "by_reason": {}}


def load_parts(run_dir: RunDir) -> list[dict[str, Any]]:
    """Every committed unit's statistics (RUN/stats/units/*.json)."""
    out = []
    for path in run_dir.files(PARTS, suffix=".json"):
        with run_dir.open(path) as handle:
            out.append(json.loads(handle.read()))
    return out


def merge(parts: list[dict[str, Any]], units_per_input: dict[str, int],
          dedup: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge unit files; `dedup` (RUN/stats/dedup.json) moves its removals from kept to rejected."""
    stages = {name: new_stage() for name in STAGES}
    inputs = {path: _new_input(n) for path, n in units_per_input.items()}
    records_by_type: Counter[str] = Counter()
    warnings: list[str] = []
    for part in parts:
        for name, stage in part["stages"].items():
            total = stages.setdefault(name, new_stage())
            for key, value in stage.items():  # the counters, and a stage's own (pii: emails)
                if key != "rejected":
                    total[key] = total.get(key, 0) + value
            for reason, count in stage["rejected"].items():
                total["rejected"][reason] = total["rejected"].get(reason, 0) + count
        entry = inputs.setdefault(part["input"], _new_input(0))
        entry["units_done"] += 1
        entry["read"] += part["read"]
        entry["kept"] += part["kept"]
        for reason, count in part["rejected"].items():
            entry["rejected"] += count
            entry["by_reason"][reason] = entry["by_reason"].get(reason, 0) + count
        records_by_type.update(part["records_by_type"])
        warnings.extend(part["warnings"])
    if dedup is not None:
        _apply_dedup(dedup, stages, inputs)
    for stage in stages.values():
        stage["cpu_s"] = round(stage["cpu_s"], 3)
        stage["docs_per_cpu_s"] = round(stage["in"] / stage["cpu_s"], 1) if stage["cpu_s"] else None
        stage["rejected"] = dict(sorted(stage["rejected"].items()))
    for entry in inputs.values():
        entry["complete"] = entry["units_done"] == entry["units"]
        entry["by_reason"] = dict(sorted(entry["by_reason"].items()))
    order = {name: i for i, name in enumerate(ORDER)}
    stages = dict(sorted(stages.items(), key=lambda item: order.get(item[0], len(order))))
    read = sum(e["read"] for e in inputs.values())
    kept = sum(e["kept"] for e in inputs.values())
    rejected = sum(e["rejected"] for e in inputs.values())
    return {
        "documents": {"read": read, "kept": kept, "rejected": rejected},
        "stages": stages,
        "inputs": dict(sorted(inputs.items())),
        "records_by_type": dict(sorted(records_by_type.items())),
        "warnings": warnings,
    }


def _apply_dedup(dedup: dict[str, Any], stages: dict[str, Any], inputs: dict[str, Any]) -> None:
    for name, stage in dedup["stages"].items():
        stages[name] = {**new_stage(), **stage}
    write = stages[registry.WRITE.name]
    write["in"] = write["out"] = dedup["documents_out"]  # written after dedup
    for path, by_reason in dedup["inputs"].items():
        entry = inputs.setdefault(path, _new_input(0))
        for reason, count in by_reason.items():
            entry["kept"] -= count
            entry["rejected"] += count
            entry["by_reason"][reason] = entry["by_reason"].get(reason, 0) + count
