"""Helpers shared by the URL filter and blocklist tests."""

from __future__ import annotations

from refine.document import Document
from refine.filters.url import URLFilter


def _doc(url: str) -> Document:
    return Document(id="d", url=url, text="")


def _apply(f: URLFilter, url: str) -> tuple[str | None, dict[str, float]]:
    d = _doc(url)
    return f.apply(d), d.metrics
