import gzip
import io
import random
import zlib
from pathlib import Path

import pytest

from refine.readers import plan_units, read_unit
from refine.warc import iter_records

DATA = Path(__file__).parent / "data" / "warc"
SAMPLE = DATA / "cc-main-2020-34-sample.warc.gz"
REAL = DATA / "real-html-00-head35.warc.gz"


def members(path: Path) -> list[bytes]:
    """Split a gzip-per-record file into its raw members (independently of refine.warc)."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        decomp = zlib.decompressobj(31)
        decomp.decompress(data[pos:])
        end = len(data) - len(decomp.unused_data)
        out.append(data[pos:end])
        pos = end
    return out


def test_offsets_point_at_gzip_members_and_types_are_read():
    raw = members(SAMPLE)
    with SAMPLE.open("rb") as f:
        records = list(iter_records(f))
    assert len(records) == len(raw) == 50
    offsets = [sum(len(m) for m in raw[:i]) for i in range(len(raw))]
    assert [r.offset for r in records] == offsets
    assert sum(r.type == "response" for r in records) == 16
    assert all(r.problem is None for r in records)
    first = next(r for r in records if r.type == "response")
    assert first.block.startswith(b"HTTP/")
    assert len(first.block) == int(first.headers["content-length"])


def test_truncated_record_is_flagged_not_passed_on_as_whole():
    with (DATA / "truncated-record.warc.gz").open("rb") as f:
        records = list(iter_records(f))
    assert [r.problem for r in records] == ["truncated_record"]
    assert records[0].headers["warc-type"] == "response"


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_a_member_cut_short_gives_zlibs_partial_block_byte_for_byte(cut):
    # ISA-L, which reads whole members, may hold back the last bytes of a cut stream: such a
    # member is read again by zlib, so a truncated record's block is what it was before ISA-L
    raw = members(SAMPLE)
    last = max(range(len(raw)), key=lambda i: len(raw[i]))  # a large response member
    cut_member = raw[last][: int(len(raw[last]) * cut)]
    data = b"".join(raw[:last]) + cut_member
    with io.BytesIO(data) as f:
        records = list(iter_records(f))
    partial = zlib.decompressobj(31).decompress(cut_member)
    block = partial[partial.index(b"\r\n\r\n") + 4:]  # after the WARC headers
    assert records[-1].problem == "truncated_record"
    assert records[-1].block == block and len(block) > 0
    assert [r.problem for r in records[:-1]] == [None] * last


def test_corrupt_member_in_the_middle_costs_only_that_record(tmp_path):
    raw = members(REAL)
    broken = bytearray(raw[3])
    broken[40:400] = bytes(360)  # zero the deflate stream in the middle of the member
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(b"".join(raw[:3]) + bytes(broken) + b"".join(raw[4:]))
    with path.open("rb") as f:
        records = list(iter_records(f))
    problems = [r.problem for r in records]
    assert problems.count("corrupt_record") == 1
    good = [r for r in records if r.problem is None]
    assert len(good) == len(raw) - 1
    with REAL.open("rb") as f:
        expected = [r.headers["warc-record-id"] for i, r in enumerate(iter_records(f)) if i != 3]
    assert [r.headers["warc-record-id"] for r in good] == expected


def test_uncompressed_warc_matches_gzip_reading(tmp_path):
    plain = tmp_path / "sample.warc"
    plain.write_bytes(gzip.decompress(SAMPLE.read_bytes()))
    with SAMPLE.open("rb") as f:
        zipped = [(r.headers, r.block) for r in iter_records(f)]
    with plain.open("rb") as f:
        unzipped = [(r.headers, r.block) for r in iter_records(f)]
    assert unzipped == zipped


def test_decompression_bomb_is_bounded(tmp_path):
    payload = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + b"a" * (20 << 20)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:bomb>\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    bomb = gzip.compress(head + payload + b"\r\n\r\n")
    path = tmp_path / "bomb.warc.gz"
    path.write_bytes(bomb + members(SAMPLE)[2])
    with path.open("rb") as f:
        records = list(iter_records(f, max_record_bytes=1 << 20))
    assert records[0].problem == "record_too_large"
    assert records[0].headers["warc-record-id"] == "<urn:uuid:bomb>"
    assert records[1].problem is None and records[1].offset == len(bomb)


@pytest.mark.parametrize("chunk", [64 << 10, 200 << 10, 1 << 20])
def test_byte_range_units_read_every_record_exactly_once(chunk):
    size = REAL.stat().st_size
    units = plan_units([(str(REAL), size)], max(chunk, 1))
    assert len(units) == -(-size // chunk) if size > chunk else len(units) == 1
    ids = [rec.doc.id for unit in units for rec in read_unit(unit, 1 << 30)]
    whole = [rec.doc.id for rec in read_unit(plan_units([(str(REAL), size)], 1 << 40)[0],
                                             1 << 30)]
    assert len(whole) == 35
    assert ids == whole


def test_read_stage_rejects_non_html_and_keeps_html(tmp_path):
    def record(uri: str, ctype: str, body: bytes) -> bytes:
        http = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\r\n".encode() + body
        head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {uri}\r\n"
                f"WARC-Record-ID: <urn:uuid:{uri[-1]}>\r\nContent-Length: {len(http)}\r\n\r\n")
        return gzip.compress(head.encode() + http + b"\r\n\r\n")

    garbage = bytes(random.Random(0).randrange(0, 9) for _ in range(3000))  # binary
    html = b"<html><head><title>x</title></head><body><p>caf\xc3\xa9</p></body></html>"
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(
        record("http://a.example/1", "text/html; charset=utf-8", html)
        + record("http://a.example/2", "application/pdf", b"%PDF-1.4 binary")
        + record("http://a.example/3", "", html)  # no Content-Type: sniffed
        + record("http://a.example/4", "image/png", b"\x89PNG\r\n")
        + record("http://a.example/5", "text/html", b"<html><body>" + garbage)
    )
    unit = plan_units([(str(path), path.stat().st_size)], 1 << 30)[0]
    out = {r.doc.id: r for r in read_unit(unit, 1 << 20)}
    assert out["1"].reason is None and "café" in out["1"].html
    assert out["2"].reason == "not_html"
    assert out["3"].reason is None
    assert out["4"].reason == "not_html"
    assert out["5"].reason == "undecodable"


def _warc_record(uri: str, block: bytes, warc_type: str = "") -> bytes:
    type_line = f"Content-Type: {warc_type}\r\n" if warc_type else ""
    return (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {uri}\r\n"
            f"WARC-Record-ID: <urn:uuid:{uri[-1]}>\r\n{type_line}"
            f"Content-Length: {len(block)}\r\n\r\n").encode() + block + b"\r\n\r\n"


def test_response_records_without_an_http_header_block_are_read(tmp_path):
    # Wayback exports store the body alone; the WARC Content-Type gives its type.
    html = b"<html><head><title>t</title></head><body><p>caf\xc3\xa9 au lait</p></body></html>"
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + html
    path = tmp_path / "wayback.warc.gz"
    path.write_bytes(b"".join(gzip.compress(r) for r in (
        _warc_record("http://a.example/1", html, "text/html; charset=utf-8"),
        _warc_record("http://a.example/2", http, "application/http; msgtype=response"),
        _warc_record("http://a.example/3", html, "application/http; msgtype=response"),
        _warc_record("http://a.example/4", html),  # no type at all: not taken on trust
        _warc_record("http://a.example/5", b"%PDF-1.4 binary", "application/pdf"),
    )))
    unit = plan_units([(str(path), path.stat().st_size)], 1 << 30)[0]
    out = {r.doc.id: r for r in read_unit(unit, 1 << 20)}
    assert out["1"].reason is None and "café au lait" in out["1"].html
    assert out["2"].reason is None and "café au lait" in out["2"].html
    assert out["3"].reason == "bad_http_response"  # says HTTP, holds none
    assert out["4"].reason == "bad_http_response"
    assert out["5"].reason == "not_html"


def test_one_gzip_member_holding_many_records_is_read_whole(tmp_path):
    # Every record in a single gzip member: a reader that stopped after the first would pass
    # the per-record tests.
    raw = [zlib.decompress(m, 31) for m in members(SAMPLE)]
    path = tmp_path / "one-member.warc.gz"
    path.write_bytes(gzip.compress(b"".join(raw)))
    with path.open("rb") as f:
        records = list(iter_records(f))
    with SAMPLE.open("rb") as f:
        expected = list(iter_records(f))
    assert len(records) == len(expected) == 50
    assert [r.headers.get("warc-record-id") for r in records] == [
        r.headers.get("warc-record-id") for r in expected]
    assert [r.block for r in records] == [r.block for r in expected]
    assert all(r.problem is None for r in records)
    unit = plan_units([(str(path), path.stat().st_size)], 1 << 30)[0]
    read = [r for r in read_unit(unit, 1 << 20) if r.reason is None]
    assert len(read) == 16  # every HTML response


def test_jsonl_reader_reports_bad_lines_and_keeps_the_rest(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "hello"}\nnot json\n{"text": "no id"}\n[1, 2]\n')
    unit = plan_units([(str(path), path.stat().st_size)], 1 << 30)[0]
    out = list(read_unit(unit, 1 << 20))
    assert [r.reason for r in out] == [None, "corrupt_record", None, "corrupt_record"]
    assert out[0].doc.id == "a" and out[0].html is None and out[0].doc.text == "hello"
    assert out[2].doc.id != out[0].doc.id


def test_wet_conversion_records_are_text(tmp_path):
    unit = plan_units([(str(DATA / "cc-main-2024-22-one-page.warc.wet.gz"), 3006)], 1 << 30)[0]
    out = list(read_unit(unit, 1 << 20))
    assert len(out) == 1 and out[0].html is None and out[0].reason is None
    assert out[0].doc.url == "https://an.wikipedia.org/wiki/Escopete"
    assert len(out[0].doc.text) > 1000


def test_bytes_io_stream_works():
    with SAMPLE.open("rb") as f:
        data = f.read()
    assert len(list(iter_records(io.BytesIO(data)))) == 50


def test_remote_paths_and_globs_go_through_fsspec():
    import fsspec

    from refine.readers import expand_inputs

    fs = fsspec.filesystem("memory")
    for name in ("a.warc.gz", "b.warc.gz", "notes.txt"):
        fs.pipe(f"/bucket/crawl/{name}", SAMPLE.read_bytes())
    found = expand_inputs(["memory://bucket/crawl/*.warc.gz"])
    # fsspec's memory filesystem roots paths at "/", so it writes memory:///bucket/...
    assert [p.replace(":///", "://") for p, _ in found] == ["memory://bucket/crawl/a.warc.gz",
                                                            "memory://bucket/crawl/b.warc.gz"]
    assert all(size == SAMPLE.stat().st_size for _, size in found)
    units = plan_units(found, 1 << 30)
    assert sum(r.doc.file_path == units[0].path for r in read_unit(units[0], 1 << 30)) == 16
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs(["memory://bucket/crawl/*.parquet"])


def test_a_file_named_like_a_glob_is_taken_literally(tmp_path):
    from refine.readers import expand_inputs

    for name in ("crawl[1].warc.gz", "crawl1.warc.gz", "crawl?.warc.gz", "crawlX.warc.gz"):
        (tmp_path / name).write_bytes(SAMPLE.read_bytes())
    assert [Path(p).name for p, _ in expand_inputs([str(tmp_path / "crawl[1].warc.gz")])] == [
        "crawl[1].warc.gz"]
    assert [Path(p).name for p, _ in expand_inputs([str(tmp_path / "crawl?.warc.gz")])] == [
        "crawl?.warc.gz"]
    # no file of that name: still a glob
    assert sorted(Path(p).name for p, _ in expand_inputs([str(tmp_path / "crawl[1X].warc.gz")])
                  ) == ["crawl1.warc.gz", "crawlX.warc.gz"]
