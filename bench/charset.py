"""Charset decoding of HTML payloads, before and after issue 22 (refine.payload.decode_html).

Prints one JSON line per measurement; each compares the old decode path (declared charset,
UTF-8, then charset-normalizer's best guess, kept verbatim below) with the current one:

- ``as_is``: every real page with its own HTTP header and <meta>: pages whose decoded text
  changed, and why (``changes``: the page, each side's result and the declared charsets);
- ``legacy_undeclared``: real pages in a legacy charset (declared, not valid UTF-8, decoding
  cleanly as declared) with every declaration stripped; label = the text a browser shows for
  the declaration (WHATWG: ISO-8859-1 is read as windows-1252, GB2312 as GB18030, ...);
- ``reencoded``: real UTF-8 text re-encoded in the legacy charsets of its language (found by
  fastText lid.176), one line per charset: ``declared: none`` with every declaration stripped,
  ``declared: utf-8`` with a wrong ``charset=utf-8`` HTTP header; label = the re-encoded text
  read back in the charset it was written in. Characters a charset lacks become numeric
  character references, as browsers submit them (a page needs >= 3 non-ASCII characters in the
  charset and <= 1% missing to be used); ``reencoded_all``: all charsets together.

Also ``declared_latin1_with_c1``: real pages declared ISO-8859-1 holding bytes 0x80-0x9F, which
the declared-charset path (unchanged) reads as C1 controls, not as browsers do (windows-1252).

Accuracy = decoded text equal to the label (an `undecodable` rejection counts as wrong); the
text is compared, not the charset name (German text is the same bytes in cp1252 and cp1250).
ms/page = mean decode time per page (single process, same pages, old and new interleaved).
``changes`` (<= 10 of them, or all for ``as_is``) and ``broken_pages`` (right before, wrong now)
show 30 characters of each side's text at the first difference.

    .venv/bin/python bench/charset.py                     # ../shared/data
    .venv/bin/python bench/charset.py --data DIR --limit 300
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from charset_normalizer import from_bytes

from refine.payload import (
    _HEADER_CHARSET,
    _META_CHARSET,
    PayloadError,
    _checked,
    _known,
    decode_html,
    is_html,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

Decoder = Callable[[bytes, str], str]

# legacy charsets a page in each language was commonly written in (lid.176 codes)
LEGACY: dict[str, tuple[str, ...]] = {
    "cp1252": ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "ca", "is",
               "ga", "eu", "gl", "af", "id", "ms", "sw"),
    "cp1250": ("pl", "cs", "sk", "hu", "hr", "sl", "ro", "sq", "bs"),
    "iso8859_2": ("pl", "cs", "sk", "hu", "hr", "sl"),
    "cp1251": ("ru", "uk", "bg", "sr", "mk", "be"),
    "koi8_r": ("ru",),
    "iso8859_7": ("el",),
    "cp1254": ("tr",),
    "cp1257": ("lt", "lv", "et"),
    "cp1255": ("he",),
    "cp1256": ("ar", "fa"),
    "cp874": ("th",),
    "shift_jis": ("ja",),
    "euc_jp": ("ja",),
    "gbk": ("zh",),
    "big5": ("zh",),
    "euc_kr": ("ko",),
}
# label -> the codec browsers decode it with (WHATWG Encoding Standard), where Python differs
_WHATWG = {"iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030", "iso8859-9": "cp1254",
           "tis-620": "cp874", "euc_kr": "cp949"}
_DECLARATION = re.compile(
    r"""<meta[^>]+charset\s*=[^>]*>|<\?xml[^>]*encoding[^>]*\?>""", re.I
)
_TAG = re.compile(r"<script.*?</script>|<style.*?</style>|<[^>]*>", re.I | re.S)


@dataclass(slots=True)
class Page:
    name: str
    header: str  # HTTP Content-Type
    body: bytes


# -- the decode path before issue 22, verbatim ----------------------------------------------


def old_decode_html(body: bytes, content_type_header: str) -> str:
    header = _HEADER_CHARSET.search(content_type_header)
    meta = _META_CHARSET.search(body[:4096])
    candidates = [_known(header.group(1)) if header else None,
                  _known(meta.group(1)) if meta else None]
    wide = any(c and c.startswith(("utf-16", "utf-32")) for c in candidates)
    first = [] if wide or body.isascii() else ["utf-8"]
    for encoding in [*first, *candidates, "utf-8"]:
        if encoding:
            try:
                return _checked(body, body.decode(encoding), encoding)
            except UnicodeDecodeError:
                continue
    guess = from_bytes(body[:200_000]).best()
    if guess is None or guess.encoding is None:
        raise PayloadError("undecodable", "no charset decodes the payload")
    return _checked(body, body.decode(guess.encoding, errors="replace"), guess.encoding)


# -- pages -----------------------------------------------------------------------------------


def warc_pages(paths: Iterable[str]) -> list[Page]:
    from refine.readers import _response_of
    from refine.warc import iter_records

    pages = []
    for path in paths:
        with open(path, "rb") as stream:
            for record in iter_records(stream, max_record_bytes=1 << 26):
                if record.problem or record.type != "response":
                    continue
                try:
                    response = _response_of(record.block, record.headers, 1 << 26)
                except PayloadError:
                    continue
                ctype = response.headers.get("content-type", "")
                if response.status == 200 and is_html(response.content_type, "", response.body):
                    url = record.headers.get("warc-target-uri", "")
                    pages.append(Page(f"{Path(path).name}:{url}", ctype, response.body))
    return pages


def gold_pages(folder: Path) -> list[Page]:
    return [Page(p.name, "", gzip.decompress(p.read_bytes()))
            for p in sorted(folder.glob("*.html.gz"))]


def text_pages(path: Path) -> list[Page]:
    """Documents of a plain-text sample (real text) wrapped in minimal HTML, as UTF-8."""
    pages = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            paras = [p for p in row["text"].split("\n") if p.strip()]
            if not paras:
                continue
            html = (f"<html><head><title>{_escape(paras[0][:80])}</title></head><body>"
                    + "".join(f"<p>{_escape(p)}</p>\n" for p in paras) + "</body></html>")
            pages.append(Page(f"text:{row['id']}", "text/html", html.encode("utf-8")))
    return pages


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def load_pages(data: Path, limit: int | None) -> tuple[list[Page], list[Page]]:
    """(real pages with their own headers, text-sample pages)."""
    warcs = sorted(glob.glob(str(data / "warc" / "*.warc.gz")))
    warcs += sorted(glob.glob(str(data / "warc" / "real-html" / "*.warc.gz")))
    real = warc_pages(warcs) + gold_pages(data / "extraction" / "html")
    texts = text_pages(data / "text" / "cc-main-2019-30-text-sample.jsonl.gz")
    return real[:limit], texts[:limit]


# -- measurements ----------------------------------------------------------------------------


def run(decode: Decoder, body: bytes, header: str) -> tuple[str, float]:
    """(text or 'REJECTED:reason', seconds)."""
    start = time.perf_counter()
    try:
        out = decode(body, header)
    except PayloadError as error:
        out = f"REJECTED:{error.reason}"
    return out, time.perf_counter() - start


def compare(name: str, cases: list[tuple[Page, str | None]], extra: dict | None = None) -> dict:
    """Old vs new over (page, label) pairs; a None label only counts changes."""
    right, seconds, changes = Counter(), Counter(), []
    for page, label in cases:
        results = {}
        for side, decode in (("old", old_decode_html), ("new", decode_html)):
            results[side], took = run(decode, page.body, page.header)
            seconds[side] += took
            right[side] += label is not None and results[side] == label
        if results["old"] != results["new"]:
            changes.append(describe(page, results["old"], results["new"], label))
    n = len(cases)
    out = {"bench": "charset", "measurement": name, **(extra or {}), "pages": n,
           "changed": len(changes)}
    labelled = any(label is not None for _, label in cases)
    if labelled:
        out |= {"accuracy_old": _ratio(right["old"], n), "accuracy_new": _ratio(right["new"], n),
                "fixed": sum(c["new_right"] and not c["old_right"] for c in changes),
                "broken": sum(c["old_right"] and not c["new_right"] for c in changes)}
    out |= {"ms_per_page_old": _ms(seconds["old"], n), "ms_per_page_new": _ms(seconds["new"], n)}
    if changes and (not labelled or len(changes) <= 10):
        out["changes"] = changes
    elif changes and labelled:
        out["broken_pages"] = [c for c in changes if c["old_right"] and not c["new_right"]]
    return out


def latin1_with_c1(real: list[Page]) -> dict:
    """Pages declared ISO-8859-1 whose bytes hold 0x80-0x9F: read as declared (old and new
    alike), they get C1 control characters where browsers show windows-1252 punctuation."""
    declared = [p for p in real if _declared(p) == "iso8859-1" and not _is_utf8(p.body)]
    with_c1 = [p.name[:120] for p in declared if re.search(rb"[\x80-\x9f]", p.body)]
    return {"bench": "charset", "measurement": "declared_latin1_with_c1",
            "pages": len(declared), "with_c1": len(with_c1), "examples": with_c1[:10]}


def _declared(page: Page) -> str | None:
    header = _HEADER_CHARSET.search(page.header)
    meta = _META_CHARSET.search(page.body[:4096])
    return (_known(header.group(1)) if header else None) or (
        _known(meta.group(1)) if meta else None)


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def describe(page: Page, old: str, new: str, label: str | None) -> dict:
    header = _HEADER_CHARSET.search(page.header)
    meta = _META_CHARSET.search(page.body[:4096])
    return {
        "page": page.name[:120],
        "declared": [header.group(1) if header else None,
                     meta.group(1).decode("ascii", "replace") if meta else None],
        "old": _diff_sample(old, new), "new": _diff_sample(new, old),
        **({} if label is None else {"old_right": old == label, "new_right": new == label}),
    }


def _diff_sample(text: str, other: str) -> str:
    """30 characters of `text` around its first difference from `other`."""
    if text.startswith("REJECTED:"):
        return text
    at = next((i for i, (a, b) in enumerate(zip(text, other, strict=False)) if a != b),
              min(len(text), len(other)))
    return text[max(0, at - 10) : at + 20]


def _ratio(k: int, n: int) -> float:
    return round(k / n, 4) if n else 0.0


def _ms(seconds: float, n: int) -> float:
    return round(1000 * seconds / n, 3) if n else 0.0


def strip_declarations(html: str) -> str:
    return _DECLARATION.sub("", html)


def legacy_cases(real: list[Page]) -> list[tuple[Page, str | None]]:
    """Real pages declared in a legacy charset that is right, every declaration stripped;
    label = the stripped bytes read as browsers read the declared charset."""
    cases = []
    for page in real:
        declared = _declared_legacy(page)
        if declared:
            body = strip_declarations(page.body.decode("latin-1")).encode("latin-1")
            cases.append((Page(page.name, "text/html", body), body.decode(declared)))
    return cases


def _declared_legacy(page: Page) -> str | None:
    """The codec a browser reads the page with, if its declared charset is a legacy one that
    reads the bytes cleanly and they are not valid UTF-8 (so the declaration is right)."""
    declared = _declared(page)
    if not declared or declared.startswith(("utf", "ascii")) or _is_utf8(page.body):
        return None
    for codec in (_WHATWG.get(declared), declared):
        try:
            if codec:
                _checked(page.body, page.body.decode(codec), codec)
                return codec
        except (UnicodeDecodeError, PayloadError):
            continue
    return None


def reencoded_cases(
    texts: list[str], names: list[str], languages: list[str], charset: str, declare_utf8: bool
) -> list[tuple[Page, str | None]]:
    cases = []
    wanted = set(LEGACY[charset])
    for text, name, language in zip(texts, names, languages, strict=True):
        if language not in wanted:
            continue
        body = _encode_for(text, charset)
        if body is None:
            continue
        header = "text/html; charset=utf-8" if declare_utf8 else "text/html"
        cases.append((Page(f"{name} as {charset}", header, body), body.decode(charset)))
    return cases


def _encode_for(text: str, charset: str) -> bytes | None:
    """The text in `charset` (missing characters as &#N;), or None if it is a poor fit."""
    non_ascii = [ch for ch in text if ord(ch) > 127]
    lacking = {ch for ch in set(non_ascii) if not _encodable(ch, charset)}
    missing = sum(1 for ch in non_ascii if ch in lacking) if lacking else 0
    if len(non_ascii) - missing < 3 or missing > 0.01 * len(non_ascii):
        return None
    return text.encode(charset, "xmlcharrefreplace")


def _encodable(ch: str, charset: str) -> bool:
    try:
        ch.encode(charset)
        return True
    except UnicodeEncodeError:
        return False


def utf8_texts(pages: list[Page]) -> tuple[list[str], list[str], list[str]]:
    """(text with declarations stripped, name, language) of pages that are valid UTF-8."""
    from refine.filters.language import LanguageConfig, LanguageFilter

    identify = LanguageFilter(LanguageConfig()).identify
    texts, names, languages = [], [], []
    for page in pages:
        try:
            html = page.body.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if html.isascii():
            continue
        visible = " ".join(_TAG.sub(" ", html).split())[:5000]
        texts.append(strip_declarations(html))
        names.append(page.name)
        languages.append(identify(visible)[0])
    return texts, names, languages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--limit", type=int, default=None, help="pages per source (quick runs)")
    args = ap.parse_args()
    real, text_sample = load_pages(args.data, args.limit)
    emit(compare("as_is", [(p, None) for p in real]))
    emit(compare("legacy_undeclared", legacy_cases(real)))
    emit(latin1_with_c1(real))
    texts, names, languages = utf8_texts(real + text_sample)
    total: dict[str, list] = defaultdict(list)
    for charset in LEGACY:
        for declared in ("none", "utf-8"):
            cases = reencoded_cases(texts, names, languages, charset, declared == "utf-8")
            if cases:
                emit(compare("reencoded", cases, {"charset": charset, "declared": declared}))
                total[declared] += cases
    for declared, cases in total.items():
        line = compare("reencoded_all", cases, {"declared": declared})
        line.pop("changes", None)
        emit(line)


def emit(line: dict) -> None:
    print(json.dumps(line, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
