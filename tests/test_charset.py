"""Charset decoding of HTML payloads (refine.payload.decode_html, refine.charset), issue 22.

Fixtures: real text re-encoded in legacy charsets, nothing declared (tests/data/charset/README.md).
Against the decoder before issue 22 (charset-normalizer), these fail: the French, German and
Spanish pages (read as cp1250 / a Baltic code page), the repetitive Shift_JIS page declared
UTF-8 (`undecodable`), and UTF-8 with a stray byte (read as a legacy charset: mojibake).
"""

import random
from pathlib import Path

import pytest

from refine import charset
from refine.payload import PayloadError, decode_html

DATA = Path(__file__).parent / "data" / "charset"
OLD_SAMPLE_BYTES = 200_000  # where the old decoder cut the bytes it gave charset-normalizer


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize(
    "name, codec",
    [
        ("fr-windows-1252.html", "cp1252"),  # old: "Sévčrement" (cp1250)
        ("de-windows-1252.html", "cp1252"),  # old: "700 m˛" (cp1250)
        ("es-windows-1252.html", "cp1252"),  # old: "Ģ R4" for "• R4"; uchardet says ISO-8859-7
        ("pl-windows-1250.html", "cp1250"),  # detection is not just "always windows-1252"
        ("ja-shift_jis.html", "shift_jis"),
    ],
)
def test_undeclared_charset_is_detected(name, codec):
    body = fixture(name)
    assert decode_html(body, "text/html") == body.decode(codec)
    assert decode_html(body, "") == body.decode(codec)


def test_western_text_is_not_read_as_central_european():
    text = decode_html(fixture("fr-windows-1252.html"), "text/html")
    assert "Sévèrement endommagée" in text and "Benoît XVI" in text
    assert "č" not in text
    text = decode_html(fixture("de-windows-1252.html"), "text/html")
    assert "Öffentlichkeit" in text and "700 m² Ausstellungsfläche" in text


def repetitive_shift_jis(meta: bytes = b"") -> bytes:
    """The Shift_JIS page with its paragraph repeated past 200 kB, padded so that a two-byte
    character straddles byte 200,000 (the old decoder's sample then failed to decode)."""
    page = fixture("ja-shift_jis.html").replace(b"<head>", b"<head>" + meta)
    start, end = page.index(b"<p>"), page.index(b"</p>\n") + len(b"</p>\n")
    head, para, tail = page[:start], page[start:end], page[end:]
    repeats = OLD_SAMPLE_BYTES // len(para) + 100
    for pad in range(len(para)):
        body = head + b" " * pad + para * repeats + tail
        try:
            body[:OLD_SAMPLE_BYTES].decode("shift_jis")
        except UnicodeDecodeError:
            return body
    raise AssertionError("no padding splits a character at the sample boundary")


@pytest.mark.parametrize(
    "header, meta",
    [("text/html; charset=utf-8", b""), ("text/html", b'<meta charset="utf-8">')],
)
def test_repetitive_shift_jis_declared_utf8_is_detected(header, meta):
    body = repetitive_shift_jis(meta)
    assert len(body) > OLD_SAMPLE_BYTES
    text = decode_html(body, header)
    assert text == body.decode("shift_jis")
    assert text.count("ミニマムでシンプルなデザイン") > 1000


def test_declared_valid_charset_wins():
    body = fixture("fr-windows-1252.html")  # detected as windows-1252
    assert decode_html(body, "text/html; charset=iso-8859-2") == body.decode("iso8859-2")
    with_meta = body.replace(b"<head>", b'<head><meta charset="windows-1250">')
    assert decode_html(with_meta, "text/html") == with_meta.decode("cp1250")
    # the HTTP header comes before <meta>
    assert decode_html(with_meta, "text/html; charset=iso-8859-15") == with_meta.decode(
        "iso8859-15")
    # valid non-ASCII UTF-8 still wins over a declared 8-bit charset
    utf8 = with_meta.decode("cp1252").encode("utf-8")
    assert decode_html(utf8, "text/html; charset=iso-8859-1") == utf8.decode("utf-8")


def test_declared_charset_that_fails_falls_through_to_detection():
    body = fixture("pl-windows-1250.html")
    for header in ("text/html; charset=utf-8", "text/html; charset=shift_jis",
                   "text/html; charset=no-such-charset"):
        assert decode_html(body, header) == body.decode("cp1250")


def test_utf8_with_a_stray_byte_stays_utf8():
    text = fixture("de-windows-1252.html").decode("cp1252")
    body = text.encode("utf-8").replace("Größe".encode(), "Größe".encode("cp1252"), 1)
    decoded = decode_html(body, "text/html")
    assert "Gr\ufffd\ufffde" in decoded  # two invalid bytes marked, as a browser shows them
    assert decoded.replace("Gr\ufffd\ufffde", "Größe") == text  # the rest is intact


@pytest.mark.parametrize("header", ["text/html; charset=utf-8", "text/html", ""])
def test_binary_garbage_is_undecodable(header):
    rng = random.Random(3)
    control = bytes(rng.randrange(1, 9) for _ in range(3000))
    noise = rng.randbytes(20_000)
    for body in (b"<html><body><p>" + control, b"<html><body><p>" + noise):
        with pytest.raises(PayloadError) as error:
            decode_html(body, header)
        assert error.value.reason == "undecodable"


def test_candidates_follow_what_browsers_decode():
    fr = fixture("fr-windows-1252.html")
    assert charset.candidates(fr)[0] == "cp1252"
    assert charset.candidates(fixture("ja-shift_jis.html"))[:1] == ["shift_jis"]
    assert "cp1252" in charset.candidates(fixture("ja-shift_jis.html"))  # the web's default
    # <html lang> of a Western language: windows-1252 first whatever the detector says
    assert charset.page_language(b'<!doctype html><html class="x" lang="fr-CA">') == "fr"
    assert charset.page_language(b"<html><body>") is None


def test_declared_iso_8859_1_is_read_as_windows_1252_as_browsers_do():
    body = "<html><body><p>\u201cQuoted\u201d \u2013 caf\u00e9 \u2026</p></body></html>".encode(
        "cp1252")
    text = decode_html(body, "text/html; charset=ISO-8859-1")
    assert "\u201cQuoted\u201d \u2013 caf\u00e9 \u2026" in text
    assert not any("\x80" <= c <= "\x9f" for c in text)
    # a byte windows-1252 leaves undefined: the declared label still decodes it
    assert "\x81" in decode_html(b"<p>caf\xe9 \x81</p>", "text/html; charset=iso-8859-1")
