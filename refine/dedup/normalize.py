"""Text normalisation and word shingles for fuzzy dedup (RefinedWeb / FineWeb style).

`normalize_text`: lowercase; NFD with combining marks (Unicode category ``Mn``) removed, so
"Café" becomes "cafe"; punctuation (every Unicode ``P*`` character plus ASCII
`string.punctuation`, which also holds symbols such as ``$+<=>^`|~``) replaced by a space, as
datatrove's ``simplify_text`` does, so "state-of-the-art" gives four words; whitespace runs
collapsed to one space, ends stripped.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from functools import cache

# ASCII punctuation -> space on the UTF-8 bytes (C speed); bytes >= 0x80 are left alone
_ASCII_PUNCTUATION = bytes.maketrans(string.punctuation.encode(),
                                     b" " * len(string.punctuation))
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


KEEP, SEPARATOR, DROP = 0, 1, 2  # what normalisation does with a character (after NFD)
_PUNCTUATION = frozenset(string.punctuation)


def char_class(char: str) -> int:
    """SEPARATOR for punctuation (every ``P*`` category plus ASCII `string.punctuation`) and
    whitespace (`str.isspace`), DROP for combining marks (``Mn``), else KEEP: the rules, once
    (`textkernels.code_point_classes` tabulates them for the compiled path)."""
    if char.isspace() or char in _PUNCTUATION:
        return SEPARATOR
    if char.isascii():
        return KEEP
    category = unicodedata.category(char)
    return DROP if category == "Mn" else SEPARATOR if category[0] == "P" else KEEP


@cache
def _translation() -> dict[int, str | None]:
    """Non-ASCII separators -> space, combining marks -> removed (built once, on first use)."""
    table: dict[int, str | None] = {}
    for code in range(128, sys.maxunicode + 1):
        kind = char_class(chr(code))
        if kind != KEEP:
            table[code] = None if kind == DROP else " "
    return table


def _translate_run(match: re.Match[str]) -> str:
    return match.group().translate(_translation())


def normalize_text(text: str) -> str:
    text = text.lower()
    if not text.isascii():  # only the non-ASCII runs go through the (slow) per-char table
        text = _NON_ASCII_RUN.sub(_translate_run, unicodedata.normalize("NFD", text))
    return " ".join(text.encode().translate(_ASCII_PUNCTUATION).decode().split())


def word_shingles(text: str, n: int = 5, normalized: bool = False) -> list[str]:
    """Word n-grams of the normalised text, in order (repeats kept), joined by one space.

    A text of fewer than `n` words (but at least one) gives one shingle of all its words; an
    empty text gives none. Pass ``normalized=True`` when `text` went through `normalize_text`.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    words = (text if normalized else normalize_text(text)).split()
    if len(words) <= n:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
