"""The hostile input cases of tests/test_hostile_input.py (issue 7), as a table: CASES lists them,
one builder per case. A builder writes its input file (good records before and after the bad one
where the format allows, so "a bad record costs only itself" is checked too) and returns what
must happen to that file's records in the run: `expect(read, kept, rejected, **more)`, where
`more` may hold ids={id: (stage, reason)} of rejected records, texts={id: fragment of the kept
text}, independent=True (warcio must count the same records) and, for ARC files, whose records
have no id, arc=True and urls={the kept records' URLs}.

README "Hostile input" documents each outcome.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .hostile_records import (
    ESCAPE,
    FR_A,
    FR_B,
    JA,
    MAX_RECORD,
    RU,
    arc_filedesc,
    arc_record,
    charset_page,
    good,
    http,
    page,
    prose,
    warc,
    write_big_page,
    write_bomb,
)


def expect(read: int, kept: set[str], rejected: dict[str, int] | None = None, **more) -> dict:
    """What must happen to one input file's records: `read` records, the ids `kept`, the
    rejected ones counted per "stage.reason", and the checks in `more` (see above)."""
    return {"read": read, "kept": kept, "rejected": rejected or {}, **more}


# -- truncated gzip: the last member is cut in half; a cut member in the middle ---------------

def truncated_gzip(path: Path) -> dict:
    cut = good("trunc", 2)
    path.write_bytes(good("trunc", 0) + good("trunc", 1) + cut[: len(cut) // 2])
    return expect(3, {"trunc-good-0", "trunc-good-1"}, {"read.truncated_record": 1},
                  ids={"trunc-good-2": ("read", "truncated_record")})


def cut_member_in_the_middle(path: Path) -> dict:
    mid = good("midcut", 1)  # the cut member runs into the next one: corrupt, then resync
    path.write_bytes(
        good("midcut", 0) + mid[: len(mid) // 2] + good("midcut", 2) + good("midcut", 3))
    return expect(4, {"midcut-good-0", "midcut-good-2", "midcut-good-3"},
                  {"read.corrupt_record": 1})


# -- random bytes, with and without a gzip header in front --------------------------------------

def noise() -> bytes:
    """1 MiB of random bytes, not starting with a gzip header."""
    data = bytearray(random.Random(7).randbytes(1 << 20))
    data[0] = 0x00
    return bytes(data)


def random_bytes(path: Path) -> dict:
    path.write_bytes(noise())
    return expect(1, set(), {"read.corrupt_record": 1})


def random_after_gzip_magic(path: Path) -> dict:
    path.write_bytes(b"\x1f\x8b\x08\x00" + noise())
    return expect(1, set(), {"read.corrupt_record": 1})


def random_without_newlines(path: Path) -> dict:
    path.write_bytes(noise().replace(b"\n", b"x"))
    return expect(1, set(), {"read.corrupt_record": 1})


# -- an empty file --------------------------------------------------------------------------------

def empty_file(path: Path) -> dict:
    path.write_bytes(b"")
    return expect(0, set())


# -- a 50 MB page: read (under read.max_record_bytes), extracted from its first MiB --------------

def page_50mb(path: Path) -> dict:
    big_block = write_big_page(path)
    assert big_block < MAX_RECORD
    return expect(3, {"big-good-0", "big-good-1", "big"})


# -- gzip bombs: a 1 GiB WARC record in ~1 MB; HTTP Content-Encoding expanding to 64 MiB --------

def gzip_bomb(path: Path) -> dict:
    write_bomb(path, good("bomb", 0), good("bomb", 1))
    return expect(3, {"bomb-good-0", "bomb-good-1"}, {"read.record_too_large": 1},
                  ids={"bomb": ("read", "record_too_large")})


def http_gzip_bomb(path: Path) -> dict:
    zipped = zlib.compressobj(9, zlib.DEFLATED, 31)
    http_bomb = zipped.compress(bytes(64 << 20)) + zipped.flush()
    path.write_bytes(
        good("hbomb", 0)
        + gzip.compress(warc("http://hbomb.example.org/", http(
            http_bomb, "text/html", "Content-Encoding: gzip\r\n"), "hbomb"))
        + good("hbomb", 1))
    return expect(3, {"hbomb-good-0", "hbomb-good-1"}, {"read.record_too_large": 1},
                  ids={"hbomb": ("read", "record_too_large")})


# -- charsets: undeclared, declared wrong, binary that claims to be text -------------------------

def charsets(path: Path) -> dict:
    rng = random.Random(3)
    control = bytes(rng.randrange(1, 9) for _ in range(3000))  # no NUL: that would be binary
    charset_records = [
        ("undeclared-cp1252", charset_page(FR_A).encode("cp1252"), "text/html"),
        ("utf8-claims-cp1251", charset_page(RU).encode("cp1251"), "text/html; charset=utf-8"),
        ("utf8-claims-sjis", charset_page(JA).encode("shift_jis"), "text/html; charset=utf-8"),
        ("latin1-claims-utf8", charset_page(FR_B, '<meta charset="iso-8859-1">').encode(),
         "text/html; charset=iso-8859-1"),
        ("control-bytes", b"<html><body><p>" + control, "text/html; charset=utf-8"),
    ]
    path.write_bytes(
        good("charset", 0) + b"".join(
            gzip.compress(warc(f"http://charset.example.org/{rid}", http(body, ctype), rid))
            for rid, body, ctype in charset_records) + good("charset", 1))
    return expect(7, {"charset-good-0", "charset-good-1", "undeclared-cp1252",
                      "utf8-claims-cp1251", "utf8-claims-sjis", "latin1-claims-utf8"},
                  {"read.undecodable": 1},
                  texts={"undeclared-cp1252": FR_A[:60], "utf8-claims-cp1251": RU[:40],
                         "utf8-claims-sjis": JA[:20], "latin1-claims-utf8": FR_B[:60]},
                  ids={"control-bytes": ("read", "undecodable")})


# -- deeply nested HTML: lxml caps the tree depth, so extraction neither recurses nor dies -------

def nested_html(path: Path) -> dict:
    nested = [
        ("nested-div", "<div>" * 100_000 + "deep" + "</div>" * 100_000),
        ("nested-span-text", "<span>word " * 100_000 + "</span>" * 100_000),
        ("nested-table", "<table><tr><td>" * 20_000 + "cell" + "</td></tr></table>" * 20_000),
    ]
    path.write_bytes(
        good("nested", 0) + b"".join(
            gzip.compress(warc(f"http://nested.example.org/{rid}", http(page(rid, extra)), rid))
            for rid, extra in nested) + good("nested", 1))
    return expect(5, {"nested-good-0", "nested-good-1", *(rid for rid, _ in nested)},
                  texts={rid: prose(f"{rid}/0", 60)[:60] for rid, _ in nested})


# -- non-HTML payloads ----------------------------------------------------------------------------

def binary_payloads(path: Path) -> dict:
    png = b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(4000)
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 20
    binary = [("pdf", pdf, "application/pdf"), ("png", png, "image/png"),
              ("pdf-says-html", pdf, "text/html"), ("jpeg-untyped",
              b"\xff\xd8\xff\xe0" + random.Random(2).randbytes(3000), "")]
    path.write_bytes(
        good("binary", 0) + b"".join(
            gzip.compress(warc(f"http://binary.example.org/{rid}", http(body, ctype), rid))
            for rid, body, ctype in binary) + good("binary", 1))
    return expect(6, {"binary-good-0", "binary-good-1"}, {"read.not_html": 4},
                  ids={rid: ("read", "not_html") for rid, _, _ in binary})


# -- WARC/0.18 (Heritrix 1.x era): same named headers, read like 1.0 ----------------------------

def v018(prefix: str) -> list[bytes]:
    records = [warc("", b"software: Heritrix/1.14.4\r\nformat: WARC file version 0.18\r\n",
                    f"{prefix}-info", "0.18", "warcinfo"),
               warc(f"http://{prefix}.example.org/a", b"GET /a HTTP/1.0\r\n\r\n",
                    f"{prefix}-req", "0.18", "request")]
    for k in range(2):
        rid = f"{prefix}-{k}"
        records.append(warc(f"http://{prefix}.example.org/{k}", http(page(rid)), rid, "0.18"))
    return records


def warc_018_gzip(path: Path) -> dict:
    path.write_bytes(b"".join(gzip.compress(r) for r in v018("v018")))
    return expect(2, {"v018-0", "v018-1"}, independent=True)


def warc_018_plain(path: Path) -> dict:
    path.write_bytes(b"".join(v018("v018p")))
    return expect(2, {"v018p-0", "v018p-1"}, independent=True)


# -- plain WARC with corrupt headers in the middle: resync at the next record ------------------

def plain_corrupt_headers(path: Path) -> dict:
    bad_length = warc("http://plainbad.example.org/x", b"garbage " * 40, "plainbad-neg") \
        .replace(b"Content-Length: 320", b"Content-Length: -20")
    plain_good = [warc(f"http://plain.example.org/{k}", http(page(f"plain-{k}")), f"plain-{k}")
                  for k in range(3)]
    path.write_bytes(
        plain_good[0] + bad_length + plain_good[1] + b"this is not\na WARC header\n\n"
        + plain_good[2])
    return expect(5, {"plain-0", "plain-1", "plain-2"}, {"read.corrupt_record": 2})


# -- ARC v1, one gzip member per record, split into two work units by a 1.5 MB image; ARC v2 ----

def arc_v1_gzip(path: Path) -> dict:
    jpeg = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0" + \
        random.Random(5).randbytes(1_500_000)
    arc_members = [arc_filedesc(), arc_record("http://arc.example.org/0", "text/html",
                                              http(page("arc-0"))),
                   arc_record("http://arc.example.org/img.jpg", "image/jpeg", jpeg)]
    arc_members += [arc_record(f"http://arc.example.org/{k}", "text/html", http(page(f"arc-{k}")))
                    for k in (1, 2)]
    path.write_bytes(b"".join(gzip.compress(m) for m in arc_members))
    return expect(4, set(), {"read.not_html": 1}, independent=True, arc=True,
                  urls={f"http://arc.example.org/{k}" for k in range(3)})


def arc_v2_plain(path: Path) -> dict:
    arc2 = [arc_filedesc(v2=True)] + [
        arc_record(f"http://arc2.example.org/{k}", "text/html", http(page(f"arc2-{k}")), v2=True)
        for k in range(2)]
    path.write_bytes(b"".join(arc2))
    return expect(2, set(), independent=True, arc=True,
                  urls={f"http://arc2.example.org/{k}" for k in range(2)})


# -- ids and URLs crafted to escape the output directory ----------------------------------------

HOSTILE_IDS = [f"../../{ESCAPE}/etc/passwd", f"/{ESCAPE}/abs/path", f"nul\x00{ESCAPE}",
               f"{ESCAPE}" + "L" * 4000, f"..\\..\\{ESCAPE}\\win"]
HOSTILE_URLS = [f"http://escape.example.org/../../../{ESCAPE}/etc/passwd",
                f"http://escape.example.org/%2e%2e/%2e%2e/{ESCAPE}",
                f"http://escape.example.org/{ESCAPE}/a", f"http://escape.example.org/{ESCAPE}/b",
                f"http://escape.example.org/{ESCAPE}/c"]


def escaping_ids_and_urls_warc(path: Path) -> dict:
    escape = [warc(url, http(page(f"escape-{k}")), rid)
              for k, (rid, url) in enumerate(zip(HOSTILE_IDS, HOSTILE_URLS, strict=True))]
    escape.append(warc(f"file:///{ESCAPE}/etc/passwd", http(page("escape-file")), "escape-file"))
    huge_header = warc("http://escape.example.org/huge", http(page("huge")), "H" * 70_000)
    path.write_bytes(
        good("escape", 0) + b"".join(gzip.compress(r) for r in escape)
        + gzip.compress(huge_header) + good("escape", 1))
    return expect(9, {"escape-good-0", "escape-good-1", *HOSTILE_IDS},
                  {"url.invalid_url": 1, "read.corrupt_record": 1},
                  ids={"escape-file": ("url", "invalid_url")})


def escaping_ids_and_urls_jsonl(path: Path) -> dict:
    rows = [{"id": f"{rid}-jsonl", "url": f"{url}?jsonl", "text": prose(f"jsonl-{k}")}
            for k, (rid, url) in enumerate(zip(HOSTILE_IDS, HOSTILE_URLS, strict=True))]
    path.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode())
    return expect(5, {r["id"] for r in rows})


# -- an input file whose own name is odd (output names come from a sanitised stem + hash) ------

def odd_file_name(path: Path) -> dict:
    path.write_bytes(good("oddname", 0))
    return expect(1, {"oddname-good-0"})


# -- the table -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One hostile input: the file `name` in the inputs directory, written by `build`."""

    name: str
    build: Callable[[Path], dict]

    @property
    def id(self) -> str:
        """The test id: the builder's name."""
        return self.build.__name__


CASES = [
    Case("truncated.warc.gz", truncated_gzip),
    Case("cut-member-in-the-middle.warc.gz", cut_member_in_the_middle),
    Case("random.warc.gz", random_bytes),
    Case("random-after-gzip-magic.warc.gz", random_after_gzip_magic),
    Case("random-no-newlines.warc", random_without_newlines),
    Case("empty.warc.gz", empty_file),
    Case("page-50mb.warc.gz", page_50mb),
    Case("bomb.warc.gz", gzip_bomb),
    Case("http-gzip-bomb.warc.gz", http_gzip_bomb),
    Case("charsets.warc.gz", charsets),
    Case("nested.warc.gz", nested_html),
    Case("binary.warc.gz", binary_payloads),
    Case("warc-0.18.warc.gz", warc_018_gzip),
    Case("warc-0.18-plain.warc", warc_018_plain),
    Case("plain-corrupt.warc", plain_corrupt_headers),
    Case("sample.arc.gz", arc_v1_gzip),
    Case("sample-v2.arc", arc_v2_plain),
    Case("escape.warc.gz", escaping_ids_and_urls_warc),
    Case("escape.jsonl", escaping_ids_and_urls_jsonl),
    Case("we ird ü name;$x.warc.gz", odd_file_name),
]


def build_cases(inputs: Path) -> dict[str, dict]:
    """Write every case; return per file name what must happen to its records."""
    inputs.mkdir(parents=True)
    return {case.name: case.build(inputs / case.name) for case in CASES}
