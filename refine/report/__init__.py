"""`refine report RUN`: RUN/report.html, a self-contained page of what the run removed and why."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import fsspec

from refine.atomic_file import atomic_write
from refine.report.ablation import find_ablation, load_ablation
from refine.report.collect import ReportError, collect
from refine.report.render import render
from refine.rundir import REPORT, as_run_dir

DEFAULT_SAMPLES = 5
log = logging.getLogger("refine.report")

__all__ = ["DEFAULT_SAMPLES", "ReportError", "build_report", "collect", "render"]


def build_report(run_dir: str | Path, output: str | Path | None = None,
                 samples: int = DEFAULT_SAMPLES, seed: int = 0,
                 ablation: str | Path | None = None) -> Path | str:
    """RUN/report.html (RUN local or a URL); with a data-quality ablation section when
    `ablation` (a `python -m pretrain.ablate` DIR or its ablation.json) is given or
    DIR/ablation.json lies in RUN or its parent (local runs). `output`, a path or URL, puts the
    page elsewhere."""
    run = as_run_dir(run_dir)
    started = time.monotonic()
    data = collect(run, samples=samples, seed=seed)
    local_run = Path(run.root) if run.local else None
    wanted = Path(ablation) if ablation is not None else None
    found = find_ablation(local_run, wanted) if local_run is not None or wanted else None
    if ablation is not None and found is None:
        raise ReportError(f"no ablation.json in {ablation}")
    data["ablation"] = load_ablation(found) if found is not None else None
    page = render(data).encode()
    if output is None:
        run.write_bytes(run.path(REPORT), page)
        dest: Path | str = Path(run.path(REPORT)) if run.local else run.url(REPORT)
    elif "://" in str(output):
        with fsspec.open(str(output), "wb") as handle:
            handle.write(page)
        dest = str(output)
    else:
        dest = Path(output)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest) as handle:
            handle.write(page)
    log.info("wrote %s (%.1f MB) in %.1f s", dest, len(page) / 1e6, time.monotonic() - started)
    return dest
