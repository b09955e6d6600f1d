"""Charset detection for HTML bytes whose declared charset is missing or wrong.

The detector is uchardet (through resiliparse's ``detect_encoding``, on up to 64 KiB from each
end of the page), made for web text; its answer is mapped to what browsers decode (the WHATWG
Encoding Standard): ISO-8859-1 is read as windows-1252, GB2312/GBK as GB18030, EUC-KR as
cp949, TIS-620 as windows-874. Measured in ``bench/charset.py`` against charset-normalizer,
which read windows-1252 pages with few accented letters as cp1250 ("crème" as "crčme").

Two corrections to the detector, both for windows-1252 text it mistakes for another code page:

- DOS and Mac code pages (cp437, cp850, cp865, ...; never a web page's charset, and not in
  the WHATWG list) and "no answer" become windows-1252, the web's default;
- a page whose ``<html lang>`` names a Western European language, detected as a Central or
  Northern European Latin code page (cp1250, ISO-8859-2/4/10/13, ...), is read as windows-1252
  when that decodes it.

Callers try the candidates in order and should skip a decoding that yields C1 control
characters (U+0080..U+009F): they are the windows-125x punctuation (curly quotes, dashes,
bullets) read through an ISO-8859 code page, never text.
"""

from __future__ import annotations

import codecs
import re

from resiliparse.parse.encoding import detect_encoding

SAMPLE_BYTES = 1 << 17  # fed to the detector: the first and the last 64 KiB
WEB_DEFAULT = "cp1252"

# uchardet's answer -> codecs to try, in order (WHATWG: what a browser decodes for that label)
_BROWSER = {
    "ascii": ("cp1252",),
    "utf-8": ("cp1252",),  # "UTF-8" for bytes that are not: nothing was detected
    "iso8859-1": ("cp1252", "iso8859-1"),
    "iso8859-9": ("cp1254", "iso8859-9"),
    "tis-620": ("cp874", "tis-620"),
    "iso8859-11": ("cp874", "iso8859-11"),
    "euc_kr": ("cp949",),
    "cp949": ("cp949",),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "shift_jis": ("shift_jis", "cp932"),
    "big5": ("big5", "big5hkscs"),
}
# code pages of DOS and classic Mac OS: uchardet's answer for a few stray windows-1252 bytes
_NOT_WEB = ("cp437", "cp737", "cp775", "cp85", "cp860", "cp861", "cp862", "cp863", "cp864",
            "cp865", "cp869", "mac-roman", "mac-latin2", "mac-iceland", "mac-turkish")
# Latin code pages uchardet confuses with windows-1252 on Western text with few accents
_OTHER_LATIN = frozenset({"cp1250", "iso8859-2", "iso8859-3", "iso8859-4", "iso8859-10",
                          "iso8859-13", "iso8859-14", "iso8859-16", "cp1257"})
_WESTERN = frozenset({"en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "nb", "nn",
                      "fi", "ca", "is", "ga", "eu", "gl", "af", "id", "ms", "sw", "oc", "br"})
_HTML_LANG = re.compile(rb"<html\b[^>]*?\blang\s*=\s*[\"']?\s*([a-zA-Z]{2,3})\b", re.I)


def _codec(name: str | None) -> str | None:
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def page_language(body: bytes) -> str | None:
    """The primary language subtag of ``<html lang=...>`` in the first 4 KiB, lower-cased."""
    match = _HTML_LANG.search(body[:4096])
    return match.group(1).decode("ascii").lower() if match else None


def detect(body: bytes) -> str | None:
    """uchardet's answer as a Python codec name (None: no answer, or a name Python lacks)."""
    return _codec(detect_encoding(body, max_len=SAMPLE_BYTES, html5_compatible=False))


def candidates(body: bytes) -> list[str]:
    """Codec names to try on `body`, most likely first; windows-1252 is always among them."""
    detected = detect(body)
    if detected is None or detected.startswith(_NOT_WEB):
        names = [WEB_DEFAULT, *([detected] if detected else [])]
    else:
        names = list(_BROWSER.get(detected, (detected,)))
        if detected in _OTHER_LATIN and page_language(body) in _WESTERN:
            names.insert(0, WEB_DEFAULT)
    return list(dict.fromkeys([*names, WEB_DEFAULT]))
