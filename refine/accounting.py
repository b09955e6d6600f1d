"""The accounting law, checked in one place: for every input, every unit processed and
read == kept + rejected, and the rows in data/ and rejected/ agree with those counts.

`refine run` (stats.json and its summary), `refine stats` and the report all take their
"accounting OK" from `check`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from refine.rundir import DATA, REJECTED, RunDir, as_run_dir


def rows_per_input(run_dir: RunDir, sub: str) -> Counter[str]:
    """Rows per `file_path` in the Parquet files of `sub` (one column is read)."""
    counts: Counter[str] = Counter()
    for path in run_dir.files(sub):
        with run_dir.parquet(path) as parquet:  # only this column's chunks are fetched
            column = parquet.read(columns=["file_path"]).column("file_path")
        for entry in column.value_counts().to_pylist():
            counts[entry["values"]] += entry["counts"]
    return counts


def check(stats: dict[str, Any], kept_rows: Counter[str],
          rejected_rows: Counter[str]) -> dict[str, Any]:
    """{"ok", "problems", "files"}: the verdict, what is wrong, and one row per input."""
    files, problems = [], []
    for path, entry in stats["inputs"].items():
        complete = entry.get("complete", False)
        adds_up = entry["read"] == entry["kept"] + entry["rejected"]
        rows_agree = entry["kept"] == kept_rows[path] and entry["rejected"] == rejected_rows[path]
        if not complete:
            problems.append(f"{path}: incomplete ({entry.get('units_done')} of "
                            f"{entry.get('units')} units done)")
        if not adds_up:
            problems.append(f"{path}: read {entry['read']} != kept {entry['kept']} + rejected "
                            f"{entry['rejected']}")
        if not rows_agree:
            problems.append(f"{path}: kept {entry['kept']} (rows in data/: {kept_rows[path]}), "
                            f"rejected {entry['rejected']} (rows in rejected/: "
                            f"{rejected_rows[path]})")
        files.append({"input": path, "read": entry["read"], "kept": entry["kept"],
                      "rejected": entry["rejected"], "kept_rows": kept_rows[path],
                      "rejected_rows": rejected_rows[path], "complete": complete,
                      "units": entry.get("units"), "units_done": entry.get("units_done"),
                      "ok": complete and adds_up and rows_agree})
    for path in sorted((set(kept_rows) | set(rejected_rows)) - set(stats["inputs"])):
        problems.append(f"{path}: rows in data/ or rejected/ for an input the run does not list")
        files.append({"input": path, "read": 0, "kept": 0, "rejected": 0,
                      "kept_rows": kept_rows[path], "rejected_rows": rejected_rows[path],
                      "complete": False, "units": None, "units_done": None, "ok": False})
    if not files:
        problems.append("the run lists no inputs")
    return {"ok": not problems, "problems": problems, "files": files}


def record(stats: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    """Write `verdict` into `stats` (accounting_ok, accounting_problems, per input); returns
    `stats`."""
    stats["accounting_ok"] = verdict["ok"]
    stats["accounting_problems"] = verdict["problems"]
    for row in verdict["files"]:
        if row["input"] in stats["inputs"]:
            stats["inputs"][row["input"]]["accounting_ok"] = row["ok"]
    return stats


def check_run(run_dir: RunDir | str | Path, stats: dict[str, Any]) -> dict[str, Any]:
    """`check` with the rows counted from the run directory, recorded into `stats`."""
    run_dir = as_run_dir(run_dir)
    verdict = check(stats, rows_per_input(run_dir, DATA), rows_per_input(run_dir, REJECTED))
    record(stats, verdict)
    return verdict
