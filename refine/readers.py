"""Inputs: resolve paths and globs, split them into work units, read units into records.

A work unit is a file, or a byte range of a gzip-per-record WARC file. Units are named by
content (file path hash and range index), never by scheduling, so reruns are reproducible.
WARC `response` records carry HTML to extract; WET `conversion` records and JSONL/Parquet rows
carry text that skips extraction.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

import fsspec
import pyarrow.parquet as pq

from refine import arrowfile
from refine.document import Document
from refine.payload import (
    HttpResponse,
    PayloadError,
    decode_html,
    is_html,
    parse_http_response,
)
from refine.stages import READ
from refine.warc import find_member_start, is_gzip, iter_records

TEXT_RECORD_TYPES = ("conversion",)
DOCUMENT_RECORD_TYPES = ("response", *TEXT_RECORD_TYPES)
HTTP_BLOCK_TYPES = ("application/http",)  # WARC Content-Type of a block that is an HTTP message
PAYLOAD_BYTES = f"{READ.prefix}payload_bytes"  # a record's bytes, before extraction
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class Unit:
    path: str
    format: str  # "warc", "jsonl", "parquet"
    index: int
    start: int = 0
    end: int | None = None

    @property
    def id(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.rstrip("/").rsplit("/", 1)[-1])[:80]
        digest = hashlib.sha1(self.path.encode()).hexdigest()[:10]
        return f"{stem.lstrip('.') or 'input'}.{digest}.{self.index:04d}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class SourceRecord:
    """What the read stage hands on: a document, HTML to extract, or a rejection reason."""

    doc: Document
    html: str | None = None
    reason: str | None = None
    record_type: str = "response"


def detect_format(path: str) -> str:
    name = path.lower().removesuffix(".gz").removesuffix(".zst")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".warc", ".wet", ".arc")):
        return "warc"
    raise ValueError(f"unknown input format for {path!r} (expected .warc[.gz], .wet[.gz], "
                     ".jsonl[.gz] or .parquet)")


def expand_inputs(patterns: list[str]) -> list[tuple[str, int]]:
    """Paths (with protocol for remote ones) and sizes, sorted; a glob matching nothing fails."""
    found: dict[str, int] = {}
    for pattern in patterns:
        fs, root = fsspec.core.url_to_fs(pattern)
        # a file whose name holds glob characters (crawl[1].warc.gz) is taken as it is
        literal = not _GLOB.search(root) or fs.exists(root)
        paths = [root] if literal else sorted(fs.glob(root))
        if not paths:
            raise FileNotFoundError(f"input {pattern!r} matches no file")
        for path in paths:
            if not fs.exists(path):
                raise FileNotFoundError(f"input {pattern!r} does not exist")
            if fs.isdir(path):
                raise IsADirectoryError(f"input {path!r} is a directory; use a glob like {path}/*")
            full = path if fs.protocol in ("file", ("file", "local")) else fs.unstrip_protocol(path)
            found[full] = fs.size(path)
    return sorted(found.items())


def plan_units(inputs: list[tuple[str, int]], chunk_bytes: int) -> list[Unit]:
    units = []
    for path, size in inputs:
        fmt = detect_format(path)
        splittable = fmt == "warc" and path.endswith(".gz") and size > chunk_bytes
        if not splittable:
            units.append(Unit(path, fmt, 0))
            continue
        for index, start in enumerate(range(0, size, chunk_bytes)):
            units.append(Unit(path, fmt, index, start, min(start + chunk_bytes, size)))
    return units


def read_unit(unit: Unit, max_record_bytes: int) -> Iterator[SourceRecord]:
    if unit.format == "parquet":
        fs, path = fsspec.core.url_to_fs(unit.path)
        with arrowfile.parquet_file(fs, path) as parquet:
            yield from _read_parquet(unit, parquet)
        return
    with fsspec.open(unit.path, "rb") as stream:
        if unit.format == "warc":
            yield from _read_warc(unit, stream, max_record_bytes)
        else:
            yield from _read_jsonl(unit, stream)


def _fallback_id(path: str, offset: int) -> str:
    return f"{hashlib.sha1(path.encode()).hexdigest()[:16]}-{offset}"


def _read_warc(unit: Unit, stream: BinaryIO, max_record_bytes: int) -> Iterator[SourceRecord]:
    start = unit.start
    if start > 0:
        if not is_gzip(stream):
            return
        found = find_member_start(stream, start, unit.end)
        if found is None:
            return
        start = found
    for record in iter_records(stream, start, unit.end, max_record_bytes):
        if record.problem is None and record.type not in DOCUMENT_RECORD_TYPES:
            continue
        headers = record.headers
        record_id = headers.get("warc-record-id", "").strip("<>").removeprefix("urn:uuid:")
        doc = Document(
            id=record_id or _fallback_id(unit.path, record.offset),
            url=headers.get("warc-target-uri", ""),
            text="",
            date=headers.get("warc-date", ""),
            file_path=unit.path,
            offset=record.offset,
        )
        if record.problem:
            yield SourceRecord(doc, reason=record.problem, record_type=record.type or "unknown")
        elif record.type in TEXT_RECORD_TYPES:
            yield _text_record(doc, record.block, record.type)
        else:
            yield _html_record(doc, record.block, headers, max_record_bytes)


def _text_record(doc: Document, block: bytes, record_type: str) -> SourceRecord:
    try:
        doc.text = block.decode("utf-8")
    except UnicodeDecodeError:
        return SourceRecord(doc, reason="undecodable", record_type=record_type)
    return SourceRecord(doc, record_type=record_type)


def _html_record(
    doc: Document, block: bytes, headers: dict[str, str], max_record_bytes: int
) -> SourceRecord:
    try:
        response = _response_of(block, headers, max_record_bytes)
        if not 200 <= response.status < 300:
            raise PayloadError("http_status")
        identified = headers.get("warc-identified-payload-type", "").split(";")[0].strip().lower()
        if not is_html(response.content_type, identified, response.body):
            raise PayloadError("not_html")
        html = decode_html(response.body, response.headers.get("content-type", ""))
    except PayloadError as error:
        doc.metrics[PAYLOAD_BYTES] = float(len(block))
        return SourceRecord(doc, reason=error.reason)
    doc.metrics[PAYLOAD_BYTES] = float(len(response.body))
    return SourceRecord(doc, html=html)


def _response_of(block: bytes, headers: dict[str, str], max_record_bytes: int) -> HttpResponse:
    """The HTTP response a response record holds. Some writers (Wayback exports among them) store
    the body alone, with its type in the WARC Content-Type: that is read as a 200 response."""
    warc_type = headers.get("content-type", "")
    media_type = warc_type.split(";")[0].strip().lower()
    if block.startswith(b"HTTP/") or not media_type or media_type in HTTP_BLOCK_TYPES:
        return parse_http_response(block, max_record_bytes)
    return HttpResponse(200, {"content-type": warc_type}, block)


def _read_jsonl(unit: Unit, stream: BinaryIO) -> Iterator[SourceRecord]:
    raw = gzip.GzipFile(fileobj=stream) if unit.path.endswith(".gz") else stream
    offset = 0
    try:
        for line_number, line in enumerate(io.BufferedReader(raw)):
            offset = line_number
            if not line.strip():
                continue
            yield _row_record(unit, line_number, line)
    except (OSError, EOFError):  # truncated gzip: keep what was read, report the rest
        doc = Document(_fallback_id(unit.path, offset + 1), "", "", file_path=unit.path,
                       offset=offset + 1)
        yield SourceRecord(doc, reason="truncated_record", record_type="row")


def _row_record(unit: Unit, line_number: int, line: bytes) -> SourceRecord:
    try:
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError("row is not an object")
    except ValueError:
        doc = Document(_fallback_id(unit.path, line_number), "", "", file_path=unit.path,
                       offset=line_number)
        return SourceRecord(doc, reason="corrupt_record", record_type="row")
    return _row_to_record(unit, line_number, row)


def _row_to_record(unit: Unit, offset: int, row: dict) -> SourceRecord:
    text = row.get("text")
    doc = Document(
        id=str(row.get("id") or _fallback_id(unit.path, offset)),
        url=str(row.get("url") or _metadata(row).get("warc_url") or ""),
        text=text if isinstance(text, str) else "",
        date=str(row.get("date") or ""),
        file_path=unit.path,
        offset=offset,
    )
    if not isinstance(text, str):
        return SourceRecord(doc, reason="no_text", record_type="row")
    return SourceRecord(doc, record_type="row")


def _metadata(row: dict) -> dict:
    """Dolma-style rows keep the URL under ``metadata`` (``warc_url``, ``url``)."""
    metadata = row.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _read_parquet(unit: Unit, parquet: pq.ParquetFile) -> Iterator[SourceRecord]:
    columns = [c for c in ("id", "url", "date", "text") if c in parquet.schema_arrow.names]
    offset = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        for row in batch.to_pylist():
            yield _row_to_record(unit, offset, row)
            offset += 1
