"""Writers of the records the hostile input cases (tests/hostile_cases.py) are made of: WARC and ARC
records, good pages that every stage keeps, a gzip bomb, a 50 MB page, and real text in French,
Russian and Japanese for the charset cases."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from pathlib import Path

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

