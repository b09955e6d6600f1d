"""Extraction quality (ScrapingHub benchmark P/R/F1) and speed per trafilatura option set.

Prints one JSON line per option set. Timing covers the full ``extract_text`` path
(bytes decoding, trafilatura, URL/whitespace post-processing), single process.

    .venv/bin/python bench/extraction_quality.py                  # all preset option sets
    .venv/bin/python bench/extraction_quality.py --sets precision precision_fast
    .venv/bin/python bench/extraction_quality.py --options '{"fast": true, "include_tables": false}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from refine.extract import ExtractConfig
from refine.extract_eval import evaluate

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "extraction"

# Explicit on every knob we compare, so the sets do not drift when ExtractConfig defaults change.
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
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="dir with html/ + ground-truth.json"
    )
    ap.add_argument("--sets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--options", action="append", default=[], help="extra set, JSON overrides")
    ap.add_argument("--repeat", type=int, default=3, help="timings per page (median kept)")
    args = ap.parse_args()

    runs = [(name, {**_BASE, **PRESETS[name]}) for name in args.sets]
    runs += [("custom", {**_BASE, **json.loads(o)}) for o in args.options]
    for name, overrides in runs:
        config = ExtractConfig(**overrides)
        res = evaluate(args.data / "html", args.data / "ground-truth.json", config, args.repeat)
        options = config.model_dump(exclude={"timeout_s", "deduplicate"})
        print(
            json.dumps({"bench": "extraction_quality", "name": name, "options": options, **res}),
            flush=True,
        )


if __name__ == "__main__":
    main()
