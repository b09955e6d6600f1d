"""Extraction quality (ScrapingHub benchmark P/R/F1) and speed per engine and option set.

Prints one JSON line per set: each trafilatura option set, and the resiliparse engine. The sets
run side by side (each page goes through every set in turn, so a busy moment of a shared machine
slows them alike). Timing covers the full ``extract_text`` path (bytes decoding, extraction,
URL/whitespace post-processing), single process.

    .venv/bin/python bench/extraction_quality.py                  # all sets
    .venv/bin/python bench/extraction_quality.py --sets recall_fast resiliparse  # the two engines
    .venv/bin/python bench/extraction_quality.py --options '{"fast": true, "include_tables": false}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # testkit

from refine.extract import TRAFILATURA_ONLY, ExtractConfig  # noqa: E402
from testkit.extract_eval import evaluate_side_by_side  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "extraction"

# Explicit on every knob we compare, so the sets do not drift when ExtractConfig defaults change
# (the resiliparse engine takes only the knobs that are not trafilatura's alone).
_BASE = {"favor_precision": False, "favor_recall": False, "fast": False, "include_tables": True}
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},  # trafilatura's own balanced mode
    "precision": {"favor_precision": True},
    "precision_fast": {"favor_precision": True, "fast": True},
    "fast": {"fast": True},
    "recall": {"favor_recall": True},
    "recall_fast": {"favor_recall": True, "fast": True},  # the ExtractConfig defaults
    # the defaults with trafilatura's own XPath expressions: same P/R/F1, more ms per page
    "recall_fast_stock_xpaths": {"favor_recall": True, "fast": True, "fast_xpaths": False},
    "recall_fast_notables": {"favor_recall": True, "fast": True, "include_tables": False},
    "precision_notables": {"favor_precision": True, "include_tables": False},
    "resiliparse": {"engine": "resiliparse"},  # configs/fast.yaml's extractor
}


def with_base(overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` over the explicit base knobs that its engine reads."""
    trafilatura = overrides.get("engine", "trafilatura") == "trafilatura"
    base = {k: v for k, v in _BASE.items() if trafilatura or k not in TRAFILATURA_ONLY}
    return {**base, **overrides}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="dir with html/ + ground-truth.json"
    )
    ap.add_argument("--sets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--options", action="append", default=[], help="extra set, JSON overrides")
    ap.add_argument("--repeat", type=int, default=3, help="timings per page (median kept)")
    args = ap.parse_args()

    runs = [(name, with_base(PRESETS[name])) for name in args.sets]
    runs += [(f"custom{i or ''}", with_base(json.loads(o))) for i, o in enumerate(args.options)]
    configs = {name: ExtractConfig(**overrides) for name, overrides in runs}
    results = evaluate_side_by_side(
        args.data / "html", args.data / "ground-truth.json", configs, args.repeat
    )
    for name, config in configs.items():
        unread = set(TRAFILATURA_ONLY) if config.engine != "trafilatura" else set()
        options = config.model_dump(exclude={"timeout_s", "deduplicate", *unread})
        line = {"bench": "extraction_quality", "name": name, "engine": config.engine,
                "options": options, **results[name]}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
