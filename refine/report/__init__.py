"""`refine report RUN`: RUN/report.html, a self-contained page of what the run removed and why."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from refine.atomic_file import atomic_write
from refine.report.collect import ReportError, collect
from refine.report.render import render

DEFAULT_SAMPLES = 5
log = logging.getLogger("refine.report")

__all__ = ["DEFAULT_SAMPLES", "ReportError", "build_report", "collect", "render"]


def build_report(run_dir: str | Path, output: str | Path | None = None,
                 samples: int = DEFAULT_SAMPLES, seed: int = 0) -> Path:
    run = Path(run_dir)
    started = time.monotonic()
    page = render(collect(run, samples=samples, seed=seed)).encode()
    dest = Path(output) if output is not None else run / "report.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest) as handle:
        handle.write(page)
    log.info("wrote %s (%.1f MB) in %.1f s", dest, len(page) / 1e6, time.monotonic() - started)
    return dest
