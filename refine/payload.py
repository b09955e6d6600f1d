"""HTTP payloads of WARC response records: status, content type, HTML sniffing and decoding."""

from __future__ import annotations

import codecs
import re
import zlib
from dataclasses import dataclass

from refine import charset

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
_HTML_SNIFF = re.compile(rb"<!doctype\s+html|<html|<head|<body|<title|<meta|<div|<p[\s>]", re.I)
_BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"RIFF")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([a-zA-Z0-9_\-:.]+)", re.I)
_GARBAGE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")
_C1 = re.compile("[\x80-\x9f]")  # C1 controls: windows-125x punctuation read as ISO-8859
_CONTROL = {*range(9), 11, *range(14, 32), 127}
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)  # bytes.translate deletes these
_ASCII = bytes(range(128))


class PayloadError(Exception):
    """A payload we cannot turn into text; `reason` is the rejection reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_http_response(block: bytes, max_bytes: int) -> HttpResponse:
    end = block.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = block.find(b"\n\n"), 2
    if end < 0 or not block.startswith(b"HTTP/"):
        raise PayloadError("bad_http_response", "no HTTP status line")
    lines = block[:end].decode("latin-1").splitlines()
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError) as error:
        raise PayloadError("bad_http_response", lines[0][:80]) from error
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    body = block[end + sep :]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        body = _inflate(body, max_bytes, gzip=encoding != "deflate")
    elif encoding not in ("", "identity", "none"):
        raise PayloadError("unsupported_content_encoding", encoding)
    return HttpResponse(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        line_end = body.find(b"\r\n", pos)
        if line_end < 0:
            return body  # not really chunked (crawlers often decode and keep the header)
        try:
            size = int(body[pos:line_end].split(b";")[0], 16)
        except ValueError:
            return body
        if size == 0:
            return b"".join(out)
        out.append(body[line_end + 2 : line_end + 2 + size])
        pos = line_end + 2 + size + 2


def _inflate(body: bytes, max_bytes: int, gzip: bool) -> bytes:
    try:
        decomp = zlib.decompressobj(31 if gzip else 15)
        out = decomp.decompress(body, max_bytes + 1)
    except zlib.error:
        if body[:2] == b"\x1f\x8b" or not gzip:
            raise PayloadError("undecodable", "bad content-encoding stream") from None
        return body  # header says gzip, bytes are plain: the crawler already decoded it
    if len(out) > max_bytes:
        raise PayloadError("record_too_large", "content-encoding expands past max_record_bytes")
    return out


def is_html(content_type: str, identified_type: str, body: bytes) -> bool:
    """HTML by WARC-Identified-Payload-Type, then HTTP Content-Type, then sniffing the bytes."""
    head = body[:2048].lstrip()
    if head.startswith(_BINARY_MAGIC) or b"\x00" in head[:512]:
        return False
    for declared in (identified_type, content_type):
        if declared:
            if declared in HTML_TYPES:
                return bool(_HTML_SNIFF.search(head)) or declared != "application/xml"
            if not declared.startswith("text/") and declared != "application/octet-stream":
                return False
    return bool(_HTML_SNIFF.search(head))


def _known(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.decode("ascii") if isinstance(name, bytes) else name).name
    except (LookupError, UnicodeDecodeError):
        return None


def decode_html(body: bytes, content_type_header: str) -> str:
    """Bytes to text: declared charset (HTTP, then <meta>), UTF-8, then detection.

    Non-ASCII bytes that are valid UTF-8 are read as UTF-8 whatever the declaration says (text
    in a legacy 8-bit or CJK charset is practically never valid UTF-8, while UTF-8 pages
    declared as ISO-8859-1 or windows-1252 are common), unless UTF-16/32 is declared. A declared
    ISO-8859-1 or ASCII is read as windows-1252, as browsers do. A
    declared charset that does not decode the bytes is ignored, as is a missing one: the
    charset is detected (`refine.charset`).
    Raises PayloadError("undecodable") when no charset decodes the bytes cleanly.
    """
    header = _HEADER_CHARSET.search(content_type_header)
    meta = _META_CHARSET.search(body[:4096])
    candidates = [_known(header.group(1)) if header else None,
                  _known(meta.group(1)) if meta else None]
    wide = any(c and c.startswith(("utf-16", "utf-32")) for c in candidates)
    first = [] if wide or body.isascii() else ["utf-8"]
    for encoding in [*first, *_as_browsers_read(candidates), "utf-8"]:
        if encoding:
            try:
                return _checked(body, body.decode(encoding), encoding)
            except UnicodeDecodeError:
                continue
    return _detected(body)


def _as_browsers_read(declared: list[str | None]) -> list[str | None]:
    """Declared labels as the WHATWG Encoding Standard reads them: ISO-8859-1 and ASCII mean
    windows-1252 (its 0x80-0x9F are curly quotes and dashes, not C1 controls); the label itself
    stays as the next try for the five bytes windows-1252 leaves undefined."""
    out: list[str | None] = []
    for name in declared:
        if name in ("iso8859-1", "ascii"):
            out.append("cp1252")
        out.append(name)
    return out


def _detected(body: bytes) -> str:
    """UTF-8 with a few invalid bytes as UTF-8 with replacement marks; else the first detected
    charset that decodes `body` without C1 controls; else the first that decodes it; else the
    likeliest one with replacement marks (which `_checked` bounds).

    "A few": at most one invalid sequence per 10 non-ASCII bytes. Real UTF-8 pages with stray
    bytes have one per 50-1,000; text in legacy charsets one per 1-4.3 (EUC-JP and GBK byte
    pairs are often valid UTF-8 by chance; bench/charset.py's pages)."""
    lossy = body.decode("utf-8", errors="replace")
    if lossy.count("\ufffd") * 10 <= len(body.translate(None, _ASCII)):
        return _checked(body, lossy, "utf-8")
    names = charset.candidates(body)
    fallback = None
    for encoding in names:
        try:
            text = body.decode(encoding)
        except UnicodeDecodeError:
            continue
        if not _C1.search(text):
            return _checked(body, text, encoding)
        fallback = fallback or (text, encoding)
    if fallback:
        return _checked(body, *fallback)
    return _checked(body, body.decode(names[0], errors="replace"), names[0])


def _checked(body: bytes, text: str, encoding: str) -> str:
    """Text that is mostly control characters or replacement marks is binary, not HTML."""
    if encoding.startswith(("utf_16", "utf_32", "utf-16", "utf-32")):
        garbage = len(_GARBAGE.findall(text[:100_000]))
    else:  # control bytes are never part of a multi-byte character here: count them fast
        garbage = len(body[:100_000].translate(None, _NOT_CONTROL)) + text.count("\ufffd")
    if garbage > max(10, min(len(body), 100_000) // 100):
        raise PayloadError("undecodable", f"control characters or invalid bytes as {encoding}")
    return text
