"""WARC framing: records with exact offsets, truncation detection and resync after corruption.

Common Crawl writes one gzip member per record. We frame members ourselves (warcio and fastwarc
silently hand back a record whose gzip member or block was cut short), so that every record
has an exact byte offset, a truncated record is reported instead of passed on as if whole, a
corrupt member costs only that member (we resync at the next gzip header that decodes to a WARC
record), and a decompression bomb is bounded by `max_record_bytes`.
Uncompressed WARC files are framed by Content-Length; after a corrupt header we resync at the
next line that starts a record. Header sections are bounded (`MAX_HEADER_BYTES`), so a file with
no line breaks costs no more memory than a record. Internet Archive ARC files (v1 and v2 header
lines, one gzip member per record or plain) are read the same way: each ARC record becomes a
`WarcRecord` with WARC-style headers (`filedesc://` as warcinfo, every other URL as response).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from isal import isal_zlib  # ISA-L's inflate: the same output as zlib's, in about half the CPU

GZIP_MAGIC = b"\x1f\x8b\x08"
READ_CHUNK = 1 << 20
MAX_HEADER_BYTES = 1 << 16  # a WARC header section or ARC header line longer than this: corrupt
# ARC v1 header line: URL IP-address Archive-date Content-type Archive-length; v2 adds five
# fields (Result-code Checksum Location Offset Filename) before the length. Split from the
# right, as a URL may contain spaces.
_ARC_URL = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*:")
_ARC_DATE = re.compile(rb"\d{14}")
_WARC_VERSION = re.compile(rb"WARC/\d+\.\d+\r?\n")


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


def parse_arc_header(data: bytes) -> tuple[dict[str, str], int] | None:
    """An ARC record's header line at the start of `data` as WARC-style headers, or None."""
    end = data.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0 or not _ARC_URL.match(data):
        return None
    line = data[:end].rstrip(b"\r")
    for fields in (10, 5):  # v2, then v1
        parts = line.rsplit(b" ", fields - 1)
        if (len(parts) == fields and _ARC_URL.match(parts[0]) and b" " not in parts[1]
                and _ARC_DATE.fullmatch(parts[2]) and parts[-1].isdigit()):
            break
    else:
        return None
    url = parts[0].decode("utf-8", "replace")
    d = parts[2].decode()
    return {
        "warc-type": "warcinfo" if url.startswith("filedesc:") else "response",
        "warc-target-uri": url,
        "warc-date": f"{d[:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:]}Z",
        "warc-ip-address": parts[1].decode("latin-1"),
        "content-length": parts[-1].decode(),
        "arc-content-type": parts[3].decode("latin-1"),
    }, end + 1


def parse_record_headers(data: bytes) -> tuple[dict[str, str], int]:
    """WARC header section or ARC header line at the start of `data`; headers, block start."""
    if data.startswith(b"WARC/"):
        return parse_warc_headers(data)
    arc = parse_arc_header(data)
    if arc is None:
        raise CorruptMember("no WARC or ARC header")
    return arc


def _content_length(headers: dict[str, str]) -> int:
    try:
        length = int(headers.get("content-length", ""))
    except ValueError as error:
        raise CorruptMember("bad Content-Length") from error
    if length < 0:
        raise CorruptMember("negative Content-Length")
    return length


def starts_record(head: bytes) -> bool:
    return bool(_WARC_VERSION.match(head)) or parse_arc_header(head) is not None


def _records_in(data: bytes, offset: int, complete: bool) -> Iterator[WarcRecord]:
    """Records in one decompressed member (normally exactly one)."""
    pos = 0
    while pos < len(data):
        while pos < len(data) and data[pos] in b"\r\n":  # WARC: CRLF CRLF; ARC: LF
            pos += 1
        if pos >= len(data):
            return
        headers, block_start = parse_record_headers(data[pos : pos + MAX_HEADER_BYTES])
        block_start += pos
        length = _content_length(headers)
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

    def __init__(self, stream: BinaryIO, pending: bytes, max_bytes: int, inflate: Any):
        decomp = inflate.decompressobj(31)
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


def _read_member(stream: BinaryIO, pending: bytes, position: int, max_bytes: int,
                 ) -> _Member | None:
    """The member at `position` (`pending`: its first bytes, read already); None if corrupt.
    ISA-L reads it; one that is corrupt or cut short is read again by zlib, so its partial
    output is byte for byte what zlib gives (ISA-L may hold back a cut stream's last bytes)."""
    try:
        member = _Member(stream, pending, max_bytes, isal_zlib)
        if member.eof:
            return member
    except isal_zlib.error:  # not a zlib.error
        pass
    stream.seek(position)
    try:
        return _Member(stream, stream.read(READ_CHUNK), max_bytes, zlib)
    except zlib.error:
        return None


def find_member_start(stream: BinaryIO, position: int, end: int | None = None) -> int | None:
    """First offset >= position where a gzip member decodes to a WARC or ARC record, or None."""
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
            head = zlib.decompressobj(31).decompress(window[hit : hit + MAX_HEADER_BYTES],
                                                     MAX_HEADER_BYTES)
        except zlib.error:
            head = b""
        if starts_record(head):
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
        member = _read_member(stream, pending, position, max_record_bytes)
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
        headers, _ = parse_record_headers(data[:MAX_HEADER_BYTES])
    except CorruptMember:
        headers = {}
    return WarcRecord(offset, headers, b"", problem)


def iter_plain_records(stream: BinaryIO, max_record_bytes: int = 1 << 30) -> Iterator[WarcRecord]:
    """Records of an uncompressed WARC or ARC file, framed by Content-Length (Archive-length).

    A corrupt header costs that record: reading goes on at the next line that starts one.
    """
    position = 0
    line = stream.readline(MAX_HEADER_BYTES)
    while line:
        if line in (b"\r\n", b"\n"):
            position += len(line)
            line = stream.readline(MAX_HEADER_BYTES)
            continue
        start = position
        headers, raw = _plain_headers(stream, line)
        position += len(raw)
        try:
            if headers is None:
                raise CorruptMember("no WARC or ARC header")
            length = _content_length(headers)
        except CorruptMember:
            yield WarcRecord(start, {}, b"", "corrupt_record")
            line = stream.readline(MAX_HEADER_BYTES)
            while line and not starts_record(line):
                position += len(line)
                line = stream.readline(MAX_HEADER_BYTES)
            continue
        if length > max_record_bytes:
            stream.seek(length, 1)
            position += length
            yield WarcRecord(start, headers, b"", "record_too_large")
        else:
            block = stream.read(length)
            position += len(block)
            problem = None if len(block) == length else "truncated_record"
            yield WarcRecord(start, headers, block, problem)
            if problem:
                return
        line = stream.readline(MAX_HEADER_BYTES)


def _plain_headers(stream: BinaryIO, line: bytes) -> tuple[dict[str, str] | None, bytes]:
    """Headers (None if corrupt) of the record whose first line is `line`, and the bytes read."""
    if not line.startswith(b"WARC/"):
        arc = parse_arc_header(line)
        return (arc[0] if arc else None), line
    head, size = [line], len(line)
    while line not in (b"", b"\r\n", b"\n"):
        if size > MAX_HEADER_BYTES:
            return None, b"".join(head)
        line = stream.readline(MAX_HEADER_BYTES)
        head.append(line)
        size += len(line)
    raw = b"".join(head)
    try:
        headers, _ = parse_warc_headers(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    except CorruptMember:
        return None, raw
    return headers, raw


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
