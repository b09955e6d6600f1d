"""Run extraction in a child process so a slow or crashing page cannot take a worker down.

The child is spawned once per worker and reused; a page that exceeds the time limit gets the
child killed and a fresh one started. Each answer carries the child's CPU seconds since its last
answer (the first: since it started), so the worker accounts all of the child's CPU to
extraction: the page's extraction, and reading the page from the worker and answering it.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

OK, TIMEOUT, CRASHED, FAILED = "ok", "extraction_timeout", "extraction_crashed", "extraction_error"


def _serve(conn: Connection, config: dict[str, Any]) -> None:
    from refine.extract import ExtractConfig, extract_text

    cfg = ExtractConfig(**config)
    conn.send("ready")
    # import trafilatura now, while the worker loads its own models;
    # its CPU is billed to the first page, so all extraction CPU is still accounted
    extract_text("<html><body><p>warm-up</p></body></html>", cfg)
    conn.send("warm")  # a page's time limit starts after this, never during the imports
    billed = 0.0  # each answer bills all CPU since the last: the imports, reading the page
    while True:
        try:
            html = conn.recv()
        except EOFError:
            return
        if html is None:
            return
        try:
            text, error = extract_text(html, cfg), None
        except Exception as exc:  # noqa: BLE001 - any extractor failure becomes a rejection
            text, error = "", f"{type(exc).__name__}: {exc}"[:200]
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        now = time.process_time()
        conn.send((text, error, now - billed, peak_kb))
        billed = now  # sending this answer is billed to the next page


class ExtractionSandbox:
    def __init__(self, config: dict[str, Any], timeout_s: float):
        self.config, self.timeout_s = config, timeout_s
        self.context = mp.get_context("spawn")
        self.process: Any = None
        self.conn: Connection | None = None
        self.restarts = 0
        self.warm = False
        self.child_peak_rss_kb = 0
        self.child_cpu_s = 0.0  # all extraction CPU of this sandbox's children

    def start(self) -> None:
        parent, child = self.context.Pipe()
        self.process = self.context.Process(
            target=_serve, args=(child, self.config), daemon=True, name="refine-extract"
        )
        self.process.start()
        child.close()
        self.conn = parent
        self.warm = False
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("extraction child did not start")

    def _wait_warm(self) -> None:
        """The child's imports and warm-up are done (they overlap the worker's own model loading
        at the first start; after a restart they are not charged to the next page's limit)."""
        assert self.conn is not None
        if not self.conn.poll(120) or self.conn.recv() != "warm":
            raise OSError("extraction child did not warm up")  # counted as a crash
        self.warm = True

    def extract(self, html: str) -> tuple[str, str, float, str | None]:
        """Returns (status, text, child CPU seconds, error detail)."""
        if self.process is None or not self.process.is_alive():
            self.start()
        assert self.conn is not None
        started = time.monotonic()
        try:
            if not self.warm:
                self._wait_warm()
                started = time.monotonic()
            self.conn.send(html)
            if self.conn.poll(self.timeout_s):
                text, error, cpu, peak_kb = self.conn.recv()
                self.child_peak_rss_kb = max(self.child_peak_rss_kb, peak_kb)
                self.child_cpu_s += cpu
                return (FAILED if error else OK), text, cpu, error
            status = TIMEOUT
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            status = CRASHED
        self._kill()
        elapsed = time.monotonic() - started
        self.child_cpu_s += elapsed
        return status, "", elapsed, None

    def _kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join(5)
            self.restarts += 1
        self.process = self.conn = None

    def close(self) -> None:
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)  # type: ignore[union-attr]
                self.process.join(2)
            except (BrokenPipeError, OSError):
                pass
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        self.process = self.conn = None
