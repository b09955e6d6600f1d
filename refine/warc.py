"""WARC framing: records with exact offsets, truncation detection and resync after corruption.

Common Crawl writes one gzip member per record. We frame members ourselves (warcio and fastwarc
silently hand back a record whose gzip member or block was cut short), so that every record
has an exact byte offset, a truncated record is reported instead of passed on as if whole, a
corrupt member costs only that member (we resync at the next gzip header that decodes to a WARC
record), and a decompression bomb is bounded by `max_record_bytes`.
Uncompressed WARC files are framed by Content-Length.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b\x08"
READ_CHUNK = 1 << 20


@dataclass(slots=True)
class WarcRecord:
    offset: int
    headers: dict[str, str]  # WARC headers, lower-cased names
    block: bytes
    problem: str | None = None  # "truncated_record", "record_too_large", "corrupt_record"

    @property
    def type(self) -> str:
        return self.headers.get("warc-type", "")


class CorruptMember(Exception):
    pass


def parse_warc_headers(data: bytes) -> tuple[dict[str, str], int]:
    """Parse the header section at the start of `data`; return headers and the block start."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or not data.startswith(b"WARC/"):
        raise CorruptMember("no WARC header")
    headers: dict[str, str] = {}
    for line in data[:end].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode(
                "utf-8", "replace"
            )
    return headers, end + 4


def _records_in(data: bytes, offset: int, complete: bool) -> Iterator[WarcRecord]:
    """Records in one decompressed member (normally exactly one)."""
    pos = 0
    while pos < len(data):
        while data.startswith(b"\r\n", pos):
            pos += 2
        if pos >= len(data):
            return
        headers, block_start = parse_warc_headers(data[pos : pos + 65536])
        block_start += pos
        try:
            length = int(headers.get("content-length", ""))
        except ValueError as error:
            raise CorruptMember("bad Content-Length") from error
        block = data[block_start : block_start + length]
        problem = None if complete and len(block) == length else "truncated_record"
        yield WarcRecord(offset if pos == 0 else offset + pos, headers, block, problem)
        pos = block_start + length


READ_OUT = 1 << 20


class _Member:
    """Decompress one gzip member from `pending` + the stream that follows it.

    Output beyond `max_bytes` is dropped (but the input is still consumed to find the member's
    end), so a decompression bomb costs CPU, not memory.
    """

    def __init__(self, stream: BinaryIO, pending: bytes, max_bytes: int):
        decomp = zlib.decompressobj(31)
        out: list[bytes] = []
        size = consumed = 0
        data, exhausted = pending, False
        while not decomp.eof:
            if not data and not exhausted:
                data = stream.read(READ_CHUNK)
                exhausted = not data
            chunk = decomp.decompress(data, READ_OUT)
            tail = decomp.unused_data if decomp.eof else decomp.unconsumed_tail
            consumed += len(data) - len(tail)
            data = tail
            if size + len(chunk) <= max_bytes:
                out.append(chunk)
            size += len(chunk)
            if exhausted and not chunk and not data:
                break
        self.eof = decomp.eof
        self.too_large = size > max_bytes
        self.data = b"".join(out)
        self.rest = data
        self.length = consumed


def find_member_start(stream: BinaryIO, position: int, end: int | None = None) -> int | None:
    """First offset >= position where a gzip member decodes to a WARC record, or None."""
    while end is None or position < end:
        stream.seek(position)
        window = stream.read(READ_CHUNK)
        if not window:
            return None
        hit = window.find(GZIP_MAGIC)
        if hit < 0:
            position += max(1, len(window) - len(GZIP_MAGIC) + 1)
            continue
        candidate = position + hit
        if end is not None and candidate >= end:
            return None
        try:
            head = zlib.decompressobj(31).decompress(window[hit : hit + 65536], 16)
        except zlib.error:
            head = b""
        if head.startswith(b"WARC/"):
            return candidate
        position = candidate + 1
    return None


def iter_gzip_records(
    stream: BinaryIO, start: int = 0, end: int | None = None, max_record_bytes: int = 1 << 30
) -> Iterator[WarcRecord]:
    """Records of members that start in [start, end). `start` must be a member start."""
    position = start
    stream.seek(position)
    pending = b""
    while end is None or position < end:
        if not pending:
            pending = stream.read(READ_CHUNK)
            if not pending:
                return
        try:
            member = _Member(stream, pending, max_record_bytes)
        except zlib.error:
            member = None
        if member is None or (member.length == 0 and not member.eof):
            yield WarcRecord(position, {}, b"", "corrupt_record")
            nxt = find_member_start(stream, position + 1, end)
            if nxt is None:
                return
            position, pending = nxt, b""
            stream.seek(position)
            continue
        if member.too_large:
            yield _header_only(member.data, position, "record_too_large")
        else:
            try:
                yield from _records_in(member.data, position, member.eof)
            except CorruptMember:
                yield WarcRecord(position, {}, b"", "corrupt_record")
        if not member.eof:
            return
        position += member.length
        pending = member.rest


def _header_only(data: bytes, offset: int, problem: str) -> WarcRecord:
    try:
        headers, _ = parse_warc_headers(data[:65536])
    except CorruptMember:
        headers = {}
    return WarcRecord(offset, headers, b"", problem)


def iter_plain_records(stream: BinaryIO, max_record_bytes: int = 1 << 30) -> Iterator[WarcRecord]:
    """Records of an uncompressed WARC file, framed by Content-Length."""
    position = 0
    while True:
        line = stream.readline()
        while line in (b"\r\n", b"\n"):
            position += len(line)
            line = stream.readline()
        if not line:
            return
        start = position
        head = [line]
        while line and line not in (b"\r\n", b"\n"):
            line = stream.readline()
            head.append(line)
        raw = b"".join(head)
        position += len(raw)
        try:
            headers, _ = parse_warc_headers(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
            length = int(headers.get("content-length", ""))
        except (CorruptMember, ValueError):
            yield WarcRecord(start, {}, b"", "corrupt_record")
            return
        if length > max_record_bytes:
            stream.seek(length, 1)
            position += length
            yield WarcRecord(start, headers, b"", "record_too_large")
            continue
        block = stream.read(length)
        position += len(block)
        problem = None if len(block) == length else "truncated_record"
        yield WarcRecord(start, headers, block, problem)
        if problem:
            return


def is_gzip(stream: BinaryIO) -> bool:
    stream.seek(0)
    magic = stream.read(2)
    stream.seek(0)
    return magic == GZIP_MAGIC[:2]


def iter_records(
    stream: BinaryIO, start: int = 0, end: int | None = None, max_record_bytes: int = 1 << 30
) -> Iterator[WarcRecord]:
    if is_gzip(stream):
        yield from iter_gzip_records(stream, start, end, max_record_bytes)
    elif start == 0:
        yield from iter_plain_records(stream, max_record_bytes)
