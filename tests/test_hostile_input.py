"""Hostile input (issue 7): every case is generated here, goes through ONE real refine run (Ray,
two workers) and must end as README "Hostile input" documents: kept, rejected with its stage
and reason, or a clear error, with read == kept + rejected (per reason) for every input, in
stats.json and in the rows of RUN/data and RUN/rejected, and nothing written outside RUN.

Each case has its own input file, with good records before and after the bad one where the
format allows, so "a bad record costs only itself" is checked too.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import struct
import time
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from refine.config import parse_config
from refine.run import run
from refine.shards import metrics_dict
from refine.warc import iter_records

pytestmark = pytest.mark.slow

MAX_RECORD = 50 * 1024 * 1024  # read.max_record_bytes default
ESCAPE = "ESCAPED"  # marks hostile ids and URLs; no input file name contains it

_VOCABULARY = """the river city people music garden window paper forest ocean mountain morning
evening light water stone bread market street teacher student library museum bridge train station
summer winter autumn spring village harbour field letter kitchen table doctor painter island valley
farmer engine castle"""
WORDS = _VOCABULARY.split()


def prose(seed: str, words: int = 150) -> str:
    """Distinct English-like text per seed (distinct, so dedup keeps every good page)."""
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < words:
        n = rng.randrange(8, 16)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        count += n
    return " ".join(sentences)


def page(seed: str, extra: str = "") -> bytes:
    paragraphs = "".join(f"<p>{prose(f'{seed}/{k}', 60)}</p>" for k in range(3))
    return (f"<html><head><title>{seed}</title></head><body><article><h1>{seed}</h1>"
            f"{paragraphs}{extra}</article></body></html>").encode()


def http(body: bytes, ctype: str = "text/html; charset=utf-8", headers: str = "") -> bytes:
    ct = f"Content-Type: {ctype}\r\n" if ctype else ""
    return f"HTTP/1.1 200 OK\r\n{ct}{headers}\r\n".encode() + body


def warc(uri: str, block: bytes, record_id: str, version: str = "1.0",
         warc_type: str = "response", extra: str = "") -> bytes:
    """One uncompressed WARC record (header, block, CRLF CRLF)."""
    content_type = "application/http; msgtype=response" if warc_type == "response" else \
        "application/http; msgtype=request" if warc_type == "request" else "text/plain"
    head = (f"WARC/{version}\r\nWARC-Type: {warc_type}\r\nWARC-Target-URI: {uri}\r\n"
            f"WARC-Date: 2024-05-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:{record_id}>\r\n"
            f"Content-Type: {content_type}\r\n{extra}Content-Length: {len(block)}\r\n\r\n")
    return head.encode("utf-8", "surrogateescape") + block + b"\r\n\r\n"


def good(case: str, k: int) -> bytes:
    """A gzip member holding a page that every stage keeps; its id is f"{case}-good-{k}"."""
    rid = f"{case}-good-{k}"
    return gzip.compress(warc(f"http://{case}.example.org/good/{k}", http(page(rid)), rid))


def arc_record(url: str, ctype: str, content: bytes, v2: bool = False) -> bytes:
    fields = [url, "192.0.2.1", "20080430204825", ctype]
    if v2:
        fields += ["200", "-", "-", "0", "sample.arc"]
    return " ".join([*fields, str(len(content))]).encode() + b"\n" + content + b"\n"


def arc_filedesc(v2: bool = False) -> bytes:
    names = ("URL IP-address Archive-date Content-type Result-code Checksum Location Offset "
             "Filename Archive-length" if v2 else
             "URL IP-address Archive-date Content-type Archive-length")
    body = f"{2 if v2 else 1} 0 Hostile Tests\n{names}\n".encode()
    return arc_record("filedesc://sample.arc", "text/plain", body, v2)


def write_bomb(path: Path, before: bytes, after: bytes, zeros: int = 1 << 30) -> None:
    """A gzip member whose WARC record declares and expands to `zeros` zero bytes (a 1 GiB
    record in ~1 MB), written without ever compressing 1 GiB: after a full flush deflate
    forgets its history, so the compressed form of one MiB of zeros can be repeated."""
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://bomb.example.org/\r\n"
            f"WARC-Record-ID: <urn:uuid:bomb>\r\nContent-Length: {zeros}\r\n\r\n").encode()
    http_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
    first = head + http_head
    mib = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = deflate.compress(first) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    count = (zeros - len(http_head)) // len(mib)
    tail_zeros = zeros - len(http_head) - count * len(mib)
    end = deflate.compress(bytes(tail_zeros)) + deflate.flush()
    crc = zlib.crc32(first)
    for _ in range(count):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(bytes(tail_zeros), crc)
    size = (len(first) + count * len(mib) + tail_zeros) & 0xFFFFFFFF
    with path.open("wb") as out:
        out.write(before)
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + start)
        for _ in range(count):
            out.write(block)
        out.write(end + struct.pack("<II", crc, size))
        out.write(after)


def write_big_page(path: Path, size: int = 50_000_000) -> int:
    """good, a `size`-byte HTML page (one record, streamed into its gzip member), good."""
    top = f"<html><head><title>big</title></head><body><h1>BIGPAGE</h1><p>{prose('big')}</p>"
    filler = "".join(f"<p>{prose(f'filler/{k}', 50)}</p>\n" for k in range(40))
    repeats = (size - len(top) - 14) // len(filler)
    rest = size - len(top) - 14 - repeats * len(filler)
    body_len = len(top) + repeats * len(filler) + rest + 14
    assert body_len == size
    http_head = http(b"")
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://big.example.org/\r\n"
            f"WARC-Record-ID: <urn:uuid:big>\r\nContent-Length: {len(http_head) + size}\r\n"
            "\r\n").encode()
    member = zlib.compressobj(1, zlib.DEFLATED, 31)
    filler_bytes = filler.encode()
    with path.open("wb") as out:
        out.write(good("big", 0))
        out.write(member.compress(head + http_head + top.encode()))
        for _ in range(repeats):
            out.write(member.compress(filler_bytes))
        out.write(member.compress(b" " * rest + b"</body></html>\r\n\r\n"))
        out.write(member.flush())
        out.write(good("big", 1))
    return len(http_head) + size


FR_A = ("Le café de la rue était fermé pendant l'été, mais les élèves préféraient la "
        "bibliothèque où règne un calme délicieux. À côté, une boulangerie célèbre vendait des "
        "gâteaux à la crème et des pâtisseries dorées. Ça coûte cher, déclare Hélène en riant.")
FR_B = ("Après la fête, nous sommes allés à la plage près du phare. Les pêcheurs réparaient "
        "leurs filets sous un soleil brûlant, et un garçon âgé de dix ans nous a montré où "
        "trouver les coquillages. Le goûter était prêt à l'hôtel, où l'on servait du thé glacé.")
RU = ("Москва является столицей России и крупнейшим городом страны. В городе много музеев, "
      "театров и парков, а также университетов и библиотек. Жители любят гулять по набережной "
      "реки, особенно летом, когда вечера длинные и тёплые.")
JA = ("東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。多くの観光客が訪れ、"
      "寺院や神社、美術館を見学します。電車はとても便利で、時間通りに運行されています。"
      "春には桜が咲き、公園は花見を楽しむ人々でいっぱいになります。")


def charset_page(text: str, meta: str = "") -> str:
    return (f"<html><head>{meta}<title>t</title></head><body><article>"
            + "".join(f"<p>{text}</p>" for _ in range(2)) + "</article></body></html>")


def build_cases(inputs: Path) -> dict[str, dict]:
    """Write every case; return per file name what must happen to its records."""
    inputs.mkdir(parents=True)
    cases: dict[str, dict] = {}

    def case(name: str, data: bytes | None, read: int, kept: set[str],
             rejected: dict[str, int] | None = None, **more) -> None:
        if data is not None:
            (inputs / name).write_bytes(data)
        cases[name] = {"read": read, "kept": kept, "rejected": rejected or {}, **more}

    # -- truncated gzip: the last member is cut in half; a cut member in the middle -----------
    cut = good("trunc", 2)
    case("truncated.warc.gz", good("trunc", 0) + good("trunc", 1) + cut[: len(cut) // 2],
         3, {"trunc-good-0", "trunc-good-1"}, {"read.truncated_record": 1},
         ids={"trunc-good-2": ("read", "truncated_record")})
    mid = good("midcut", 1)  # the cut member runs into the next one: corrupt, then resync
    case("cut-member-in-the-middle.warc.gz",
         good("midcut", 0) + mid[: len(mid) // 2] + good("midcut", 2) + good("midcut", 3),
         4, {"midcut-good-0", "midcut-good-2", "midcut-good-3"}, {"read.corrupt_record": 1})
    # -- random bytes, with and without a gzip header in front ----------------------------------
    noise = bytearray(random.Random(7).randbytes(1 << 20))
    noise[0] = 0x00
    case("random.warc.gz", bytes(noise), 1, set(), {"read.corrupt_record": 1})
    case("random-after-gzip-magic.warc.gz", b"\x1f\x8b\x08\x00" + bytes(noise), 1, set(),
         {"read.corrupt_record": 1})
    case("random-no-newlines.warc", bytes(noise).replace(b"\n", b"x"), 1, set(),
         {"read.corrupt_record": 1})
    # -- an empty file ----------------------------------------------------------------------------
    case("empty.warc.gz", b"", 0, set())
    # -- a 50 MB page: read (under read.max_record_bytes), extracted from its first MiB ----------
    big_block = write_big_page(inputs / "page-50mb.warc.gz")
    assert big_block < MAX_RECORD
    case("page-50mb.warc.gz", None, 3, {"big-good-0", "big-good-1", "big"})
    # -- gzip bombs: a 1 GiB WARC record in ~1 MB; HTTP Content-Encoding expanding to 64 MiB ----
    write_bomb(inputs / "bomb.warc.gz", good("bomb", 0), good("bomb", 1))
    case("bomb.warc.gz", None, 3, {"bomb-good-0", "bomb-good-1"}, {"read.record_too_large": 1},
         ids={"bomb": ("read", "record_too_large")})
    zipped = zlib.compressobj(9, zlib.DEFLATED, 31)
    http_bomb = zipped.compress(bytes(64 << 20)) + zipped.flush()
    case("http-gzip-bomb.warc.gz",
         good("hbomb", 0)
         + gzip.compress(warc("http://hbomb.example.org/", http(
             http_bomb, "text/html", "Content-Encoding: gzip\r\n"), "hbomb"))
         + good("hbomb", 1),
         3, {"hbomb-good-0", "hbomb-good-1"}, {"read.record_too_large": 1},
         ids={"hbomb": ("read", "record_too_large")})
    # -- charsets: undeclared, declared wrong, binary that claims to be text ---------------------
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
    case("charsets.warc.gz",
         good("charset", 0) + b"".join(
             gzip.compress(warc(f"http://charset.example.org/{rid}", http(body, ctype), rid))
             for rid, body, ctype in charset_records) + good("charset", 1),
         7, {"charset-good-0", "charset-good-1", "undeclared-cp1252", "utf8-claims-cp1251",
             "utf8-claims-sjis", "latin1-claims-utf8"}, {"read.undecodable": 1},
         texts={"undeclared-cp1252": FR_A[:60], "utf8-claims-cp1251": RU[:40],
                "utf8-claims-sjis": JA[:20], "latin1-claims-utf8": FR_B[:60]},
         ids={"control-bytes": ("read", "undecodable")})
    # -- deeply nested HTML: lxml caps the tree depth, so extraction neither recurses nor dies ----
    nested = [
        ("nested-div", "<div>" * 100_000 + "deep" + "</div>" * 100_000),
        ("nested-span-text", "<span>word " * 100_000 + "</span>" * 100_000),
        ("nested-table", "<table><tr><td>" * 20_000 + "cell" + "</td></tr></table>" * 20_000),
    ]
    case("nested.warc.gz",
         good("nested", 0) + b"".join(
             gzip.compress(warc(f"http://nested.example.org/{rid}", http(page(rid, extra)), rid))
             for rid, extra in nested) + good("nested", 1),
         5, {"nested-good-0", "nested-good-1", *(rid for rid, _ in nested)},
         texts={rid: prose(f"{rid}/0", 60)[:60] for rid, _ in nested})
    # -- non-HTML payloads ------------------------------------------------------------------------
    png = b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(4000)
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 20
    binary = [("pdf", pdf, "application/pdf"), ("png", png, "image/png"),
              ("pdf-says-html", pdf, "text/html"), ("jpeg-untyped",
              b"\xff\xd8\xff\xe0" + random.Random(2).randbytes(3000), "")]
    case("binary.warc.gz",
         good("binary", 0) + b"".join(
             gzip.compress(warc(f"http://binary.example.org/{rid}", http(body, ctype), rid))
             for rid, body, ctype in binary) + good("binary", 1),
         6, {"binary-good-0", "binary-good-1"}, {"read.not_html": 4},
         ids={rid: ("read", "not_html") for rid, _, _ in binary})
    # -- WARC/0.18 (Heritrix 1.x era): same named headers, read like 1.0 --------------------------
    def v018(prefix: str) -> list[bytes]:
        records = [warc("", b"software: Heritrix/1.14.4\r\nformat: WARC file version 0.18\r\n",
                        f"{prefix}-info", "0.18", "warcinfo"),
                   warc(f"http://{prefix}.example.org/a", b"GET /a HTTP/1.0\r\n\r\n",
                        f"{prefix}-req", "0.18", "request")]
        for k in range(2):
            rid = f"{prefix}-{k}"
            records.append(warc(f"http://{prefix}.example.org/{k}", http(page(rid)), rid, "0.18"))
        return records

    case("warc-0.18.warc.gz", b"".join(gzip.compress(r) for r in v018("v018")), 2,
         {"v018-0", "v018-1"}, independent=True)
    case("warc-0.18-plain.warc", b"".join(v018("v018p")), 2, {"v018p-0", "v018p-1"},
         independent=True)
    # -- plain WARC with corrupt headers in the middle: resync at the next record ----------------
    bad_length = warc("http://plainbad.example.org/x", b"garbage " * 40, "plainbad-neg") \
        .replace(b"Content-Length: 320", b"Content-Length: -20")
    plain_good = [warc(f"http://plain.example.org/{k}", http(page(f"plain-{k}")), f"plain-{k}")
                  for k in range(3)]
    case("plain-corrupt.warc",
         plain_good[0] + bad_length + plain_good[1] + b"this is not\na WARC header\n\n"
         + plain_good[2], 5, {"plain-0", "plain-1", "plain-2"}, {"read.corrupt_record": 2})
    # -- ARC v1, one gzip member per record, split into two work units by a 1.5 MB image -------
    jpeg = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0" + \
        random.Random(5).randbytes(1_500_000)
    arc_members = [arc_filedesc(), arc_record("http://arc.example.org/0", "text/html",
                                              http(page("arc-0"))),
                   arc_record("http://arc.example.org/img.jpg", "image/jpeg", jpeg)]
    arc_members += [arc_record(f"http://arc.example.org/{k}", "text/html", http(page(f"arc-{k}")))
                    for k in (1, 2)]
    case("sample.arc.gz", b"".join(gzip.compress(m) for m in arc_members), 4,
         set(), {"read.not_html": 1}, independent=True, arc=True,
         urls={f"http://arc.example.org/{k}" for k in range(3)})
    arc2 = [arc_filedesc(v2=True)] + [
        arc_record(f"http://arc2.example.org/{k}", "text/html", http(page(f"arc2-{k}")), v2=True)
        for k in range(2)]
    case("sample-v2.arc", b"".join(arc2), 2, set(), independent=True, arc=True,
         urls={f"http://arc2.example.org/{k}" for k in range(2)})
    # -- ids and URLs crafted to escape the output directory -------------------------------------
    hostile_ids = [f"../../{ESCAPE}/etc/passwd", f"/{ESCAPE}/abs/path", f"nul\x00{ESCAPE}",
                   f"{ESCAPE}" + "L" * 4000, f"..\\..\\{ESCAPE}\\win"]
    hostile_urls = [f"http://escape.example.org/../../../{ESCAPE}/etc/passwd",
                    f"http://escape.example.org/%2e%2e/%2e%2e/{ESCAPE}",
                    f"http://escape.example.org/{ESCAPE}/a", f"http://escape.example.org/{ESCAPE}/b",
                    f"http://escape.example.org/{ESCAPE}/c"]
    escape = [warc(url, http(page(f"escape-{k}")), rid)
              for k, (rid, url) in enumerate(zip(hostile_ids, hostile_urls, strict=True))]
    escape.append(warc(f"file:///{ESCAPE}/etc/passwd", http(page("escape-file")), "escape-file"))
    huge_header = warc("http://escape.example.org/huge", http(page("huge")), "H" * 70_000)
    case("escape.warc.gz",
         good("escape", 0) + b"".join(gzip.compress(r) for r in escape)
         + gzip.compress(huge_header) + good("escape", 1),
         9, {"escape-good-0", "escape-good-1", *hostile_ids},
         {"url.invalid_url": 1, "read.corrupt_record": 1},
         ids={"escape-file": ("url", "invalid_url")})
    rows = [{"id": f"{rid}-jsonl", "url": f"{url}?jsonl", "text": prose(f"jsonl-{k}")}
            for k, (rid, url) in enumerate(zip(hostile_ids, hostile_urls, strict=True))]
    case("escape.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode(), 5,
         {r["id"] for r in rows})
    # -- an input file whose own name is odd (output names come from a sanitised stem + hash) --
    case("we ird ü name;$x.warc.gz", good("oddname", 0), 1, {"oddname-good-0"})
    return cases


def config():
    return parse_config({
        "name": "hostile",
        "read": {"chunk_bytes": 1 << 20},  # the bigger inputs become several work units
        "language": {"languages": [], "min_score": 0.0},  # any language, fastText still runs
        "repetition": {"enabled": False},
        "quality": {"enabled": False},
        "lines": {"enabled": False},
        "output": {"shard_bytes": 1 << 22},
    })


def rows_of(run_dir: Path, sub: str) -> list[dict]:
    files = sorted((run_dir / sub).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under `root` outside `skip`, with size and mtime for files (a directory's
    mtime changes when RUN is made in it)."""
    return {str(p): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.fixture(scope="module")
def hostile(local_ray, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    started = time.monotonic()
    cases = build_cases(base / "inputs")
    generated = time.monotonic() - started
    run_dir = base / "deep" / "er" / "run"  # "../../x" from RUN/data would still land in base
    run_dir.parent.mkdir(parents=True)
    before = snapshot(base, run_dir)
    inputs = sorted(str(base / "inputs" / name) for name in cases)
    started = time.monotonic()
    result = run(config(), inputs, run_dir, workers=2)
    print(f"\nhostile corpus: generated in {generated:.1f} s, "
          f"refined in {time.monotonic() - started:.1f} s")
    after = snapshot(base, run_dir)
    return {"base": base, "cases": cases, "result": result, "run_dir": run_dir,
            "before": before, "after": after}


def test_every_case_ends_as_documented(hostile):
    run_dir, cases = hostile["run_dir"], hostile["cases"]
    stats = json.loads((run_dir / "stats.json").read_text())
    kept, rejected = rows_of(run_dir, "data"), rows_of(run_dir, "rejected")
    base = hostile["base"] / "inputs"
    problems = []
    for name, want in cases.items():
        path = str(base / name)
        entry = stats["inputs"][path]
        mine_kept = [r for r in kept if r["file_path"] == path]
        mine_rejected = [r for r in rejected if r["file_path"] == path]
        reasons = Counter(f"{r['stage']}.{r['reason']}" for r in mine_rejected)
        got = {"read": entry["read"], "kept": {r["id"] for r in mine_kept},
               "rejected": dict(reasons)}
        if want.get("arc"):  # ARC records have no id: refine derives one from path and offset
            ok = ({r["url"] for r in mine_kept} == want["urls"] and got["rejected"]
                  == want["rejected"] and got["read"] == want["read"])
        else:
            ok = got == {k: want[k] for k in ("read", "kept", "rejected")}
        if not ok:
            problems.append((name, got, {k: want.get(k) for k in ("read", "kept", "rejected")}))
        by_id = {r["id"]: (r["stage"], r["reason"]) for r in mine_rejected}
        for rid, outcome in want.get("ids", {}).items():
            if by_id.get(rid) != outcome:
                problems.append((name, rid, by_id.get(rid), outcome))
        texts = {r["id"]: r["text"] for r in mine_kept}
        for rid, fragment in want.get("texts", {}).items():
            if fragment not in texts.get(rid, ""):
                problems.append((name, rid, "text", texts.get(rid, "")[:80], fragment))
    assert problems == []
    # the 50 MB page: read whole, extracted from its first MiB (extract.max_html_bytes)
    big = next(r for r in kept if r["id"] == "big")
    assert metrics_dict(big["metrics"])["extract.html_chars"] >= 50_000_000
    assert prose("big")[:60] in big["text"] and len(big["text"].encode()) <= 1 << 20
    # bombs and corrupt records are warnings (`--strict` fails on them); no worker died
    warnings = "\n".join(stats["warnings"])
    for reason in ("record_too_large", "corrupt_record", "truncated_record"):
        assert reason in warnings
    assert not any(w for w in stats["warnings"] if "extraction_crashed" in w)


def test_accounting_law_holds_for_every_input(hostile):
    run_dir, cases = hostile["run_dir"], hostile["cases"]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["accounting_ok"]
    kept, rejected = rows_of(run_dir, "data"), rows_of(run_dir, "rejected")
    kept_by = Counter(r["file_path"] for r in kept)
    rejected_by = Counter(r["file_path"] for r in rejected)
    reasons_by = Counter((r["file_path"], f"{r['stage']}.{r['reason']}") for r in rejected)
    base = hostile["base"] / "inputs"
    assert set(stats["inputs"]) == {str(base / name) for name in cases}
    for name, want in cases.items():
        path = str(base / name)
        entry = stats["inputs"][path]
        assert entry["complete"] and entry["accounting_ok"], name
        assert entry["read"] == entry["kept"] + entry["rejected"], name
        assert entry["kept"] == kept_by[path], name
        assert entry["rejected"] == rejected_by[path] == sum(entry["by_reason"].values()), name
        for reason, count in entry["by_reason"].items():
            assert reasons_by[(path, reason)] == count, (name, reason)
        if want.get("independent"):  # warcio (ARC: converted to WARC) sees the same records
            assert entry["read"] == independent_count(path), name
    for stage in stats["stages"].values():
        assert stage["in"] == stage["out"] + sum(stage["rejected"].values())
    ids = [r["id"] for r in kept] + [r["id"] for r in rejected]
    assert len(ids) == len(set(ids)), "a record landed twice"


def independent_count(path: str) -> int:
    with open(path, "rb") as stream:
        return sum(r.rec_type == "response"
                   for r in ArchiveIterator(stream, arc2warc=path.endswith((".arc", ".arc.gz"))))


SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def test_nothing_is_written_outside_the_run_and_names_never_come_from_ids(hostile):
    assert hostile["after"] == hostile["before"], "files appeared or changed outside RUN"
    assert not Path(f"/{ESCAPE}").exists()
    run_dir = hostile["run_dir"]
    for path in run_dir.rglob("*"):
        part = path.relative_to(run_dir)
        assert all(SAFE_NAME.fullmatch(p) for p in part.parts), part
        assert ESCAPE not in str(part) and "passwd" not in str(part), part
    kept = {r["id"] for r in rows_of(run_dir, "data")}
    assert f"../../{ESCAPE}/etc/passwd" in kept and f"nul\x00{ESCAPE}" in kept  # ids are data


def test_plain_reader_memory_is_bounded_without_line_breaks():
    """A file with no line break is not read into memory as one line."""
    blob = io.BytesIO(b"x" * (32 << 20))
    tracemalloc.start()
    try:
        problems = [r.problem for r in iter_records(blob)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems == ["corrupt_record"]
    assert peak < 4 << 20, peak
