"""Stage 3 (RefinedWeb): main-content extraction with trafilatura, then URL/whitespace cleanup.

Defaults chosen by measurement: ``bench/extraction_quality.py --repeat 3`` on the 181-page
ScrapingHub article-extraction-benchmark gold set (trafilatura 2.3.1, one process on this shared
2-core machine; full ``extract_text`` path incl. decoding). P/R/F1 are the benchmark's: 4-token
shingles, P and R averaged over pages, F1 of the two means. ms = mean per page (median of 3
timings); in brackets a second, interleaved run (all sets per page in turn, min of 3-5).

    option set                   P      R      F1     ms/page        p99 / max ms
    default (balanced)           0.942  0.974  0.958  17.4 (18.5)    86 / 88
    favor_precision              0.956  0.967  0.962  17.0 (18.7)    49 / 57
    favor_precision, no tables   0.954  0.954  0.954  19.8           69 / 93
    favor_precision + fast       0.946  0.942  0.944  13.1 (11.2)    42 / 48
    fast                         0.946  0.975  0.960  15.2 (12.8)    54 / 58
    favor_recall                 0.940  0.974  0.957  11.2 (12.5)    29 / 42
    favor_recall + fast          0.947  0.975  0.961   9.5 (10.4)    25 / 36   <- defaults
    favor_recall + fast, no tab. 0.946  0.968  0.957  12.6 (10.3)    35 / 36

(Timings above are trafilatura's own XPath expressions; ``fast_xpaths``, on by default, evaluates
equivalent forms of them: the same output for ~25% less CPU, see ``refine/xpath_rewrite.py``.)

Chosen: favor_recall + fast + include_tables, the fastest set with F1 >= 0.95 (margin 0.011;
no page below F1 0.5); favor_precision is 0.001 better but ~1.8x slower, and favor_precision +
fast falls under 0.95 (5 pages score F1 0). Tables off: no faster, F1 -0.004.
At ~10 ms/page extraction alone allows ~200 pages/s on 2 cores. Caveat: the gold set is
news/blog articles only; on non-article pages favor_recall keeps more boilerplate, which the
later line-level filters and dedup have to remove.

``deduplicate`` is pinned to False: trafilatura's dedup keeps a process-wide LRU cache, so a
page's output would depend on what else the worker had processed. ``max_html_bytes``: a larger
page first loses its <script>/<style>/comment blocks (unused by extraction; gold pages up to
1.5 MB shrink to <= 250 kB, with identical output), and only if still too large is truncated at
a UTF-8 boundary. Plain truncation at 1 MiB emptied both CNN gold pages (article after ~1 MiB
of inline scripts). Dense 1 MB pages (tables, link lists) take ~1-1.5 s, well under timeout_s.

Deep nesting: libxml2 stops parsing at element depth 256 ("Excessive depth in document"), so
everything after the 256th nested element was lost. When trafilatura's parse reports that, the
page is extracted again with the elements nested deeper than ``DEPTH_CAP`` flattened (their
tags dropped, block tags becoming line breaks, their text kept: ``cap_depth``); an oversized page
is flattened the same way before it would be truncated. Pages that parse whole are untouched.

Engine ``resiliparse`` (``extract.engine``, ``configs/fast.yaml``; trafilatura stays the default):
resiliparse's main-content heuristics over lexbor's HTML5 tree. Side by side with the defaults
above (``bench/extraction_quality.py --sets recall_fast resiliparse``, same gold set, a loaded
2-core machine): F1 0.931 (P 0.891, R 0.976) vs 0.961; 13.5 vs 54.4, 11.2 vs 52.6 and 5.9 vs
26.7 ms/page in three runs: 4-4.7x faster. It loses precision on bylines, captions, related links.
Options, by F1 on that set: blocks and <br> become lines, then blank lines and indentation are
dropped (one block per line, as trafilatura writes text); list bullets kept ("•", "1.", like
trafilatura's "- " for the bullet-line filter); alt texts (-0.018), post meta such as bylines and
dates (-0.007), links, form fields and <noscript> off; comments follow ``include_comments``
(on: -0.011), tables ``include_tables`` (off: -0.009). Without main-content selection F1 is 0.68.
trafilatura's own options (``TRAFILATURA_ONLY``) must keep their defaults with it: a config that
sets one otherwise fails validation naming the key. Same contract: text only (neither engine
returns a title or other metadata), the same ``max_html_bytes`` fitting, ``timeout_s`` enforced by
the sandbox, URL/whitespace cleanup and ``min_text_chars``. lexbor has no depth limit, but the
main-content pass costs ~ elements x depth, so a tree deeper than 100 is parsed again flattened
past 64 (``cap_depth``). Unlike trafilatura, it returns the text of a page with no markup at all
(plain text sent as HTML) rather than ""; the language and quality filters judge that text.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

if TYPE_CHECKING:
    from resiliparse.parse.html import HTMLTree

# trafilatura logs a warning per discarded page; keep it quiet whatever logging the app sets up.
logging.getLogger("trafilatura").setLevel(logging.CRITICAL)


# Options only the trafilatura engine reads; with engine resiliparse they must keep their defaults.
TRAFILATURA_ONLY = (
    "favor_precision", "favor_recall", "fast", "include_links", "include_images", "fast_xpaths")


class ExtractConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # trafilatura (RefinedWeb's extractor) or resiliparse (faster, lower F1: see module doc).
    # First field: the option validators below read it.
    engine: Literal["trafilatura", "resiliparse"] = "trafilatura"
    favor_precision: bool = False
    favor_recall: bool = True
    fast: bool = True
    include_comments: bool = False
    include_tables: bool = True
    include_links: bool = False
    include_images: bool = False
    deduplicate: bool = False
    # trafilatura's XPath expressions in equivalent, faster forms (refine/xpath_rewrite.py):
    # same output, ~25% less extraction CPU; false runs trafilatura's own expressions
    fast_xpaths: bool = True
    timeout_s: float = Field(default=5.0, gt=0)  # enforced by the caller's sandbox, not here
    max_html_bytes: int = Field(default=1 << 20, gt=0)  # UTF-8 bytes; see module doc
    # Shorter extractions become "". Stays below the Gopher minimum (50 words >= ~200 chars),
    # so it only drops early what a later stage would drop anyway.
    min_text_chars: int = Field(default=100, ge=0)

    @field_validator("deduplicate")
    @classmethod
    def _no_dedup(cls, v: bool) -> bool:
        if v:
            raise ValueError(
                "deduplicate=True is not supported: trafilatura's dedup uses a process-wide "
                "cache, making output depend on the other pages a worker processed"
            )
        return v

    @field_validator(*TRAFILATURA_ONLY)
    @classmethod
    def _read_by_engine(cls, value: bool, info: ValidationInfo) -> bool:
        engine = info.data.get("engine")
        default = cls.model_fields[str(info.field_name)].default
        if engine not in (None, "trafilatura") and value != default:
            raise ValueError(
                f"a trafilatura option, not read by engine {engine!r}: remove it, "
                "or set engine: trafilatura"
            )
        return value

    @model_validator(mode="after")
    def _one_focus(self) -> ExtractConfig:
        if self.favor_precision and self.favor_recall:
            if "favor_recall" in self.model_fields_set:
                raise ValueError("favor_precision and favor_recall are mutually exclusive")
            self.favor_recall = False  # an explicit favor_precision overrides the default
        return self


# "http(s)://" at a word start, or "www." not inside a word, host or e-mail address; spelled to
# begin with a plain character so the regex engine skips ahead to [hw] (2.4x faster)
_URL_RE = re.compile(
    r"(?:h(?<=\bh)ttps?://|w(?<![\w.@-]w)ww\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]}]", re.I
)
_HSPACE_RE = re.compile(r"[ \t]{2,}")
_TRAILING_WS_RE = re.compile(r"[ \t\r\f\v]+$", re.M)
_NEWLINES_RE = re.compile(r"\n{3,}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_OPEN_RE = re.compile(r"<(?:(script|style)\b|!--)", re.I)
_TAG_SPLIT_RE = re.compile(r"(<(/?)([a-zA-Z][^\s/>]*)[^>]*>)")
DEPTH_CAP = 200  # nested elements kept by cap_depth; libxml2 stops parsing at depth 256
_DEPTH_CAPS = (DEPTH_CAP, 64)  # the second applies if libxml2 nests deeper than we counted
# resiliparse's main-content pass costs ~ elements x depth (4,000 nested <div>s: 0.8 s); real pages
# nest < 64 deep (gold set), so a tree deeper than 100 is parsed again, flattened past 64.
_LEXBOR_TOO_DEEP = ":root" + " > *" * 100  # CSS: an element 100 levels below <html>
_LEXBOR_DEPTH_CAP = 64
_VOID = frozenset(
    ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"])
_INLINE = frozenset(
    ["a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "dfn", "em", "font", "i",
     "kbd", "mark", "nobr", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup",
     "time", "tt", "u", "var"])
_IMPLIED_END = frozenset(["p", "li", "dt", "dd", "tr", "td", "th", "option"])  # <li><li>
_CLOSE_RE = {
    "script": re.compile(r"</script[\s/>]", re.I),
    "style": re.compile(r"</style[\s/>]", re.I),
    "": re.compile(r"-->"),
}


def _utf8_len_over(html: str, max_bytes: int) -> bool:
    # cheap bound first: a char is at most 4 UTF-8 bytes
    return len(html) * 4 > max_bytes and len(html.encode("utf-8", "surrogatepass")) > max_bytes


def _strip_non_text(html: str) -> str:
    """Drop <script>/<style> elements and comments in one linear scan; an unclosed one runs
    to the end of the page, as in an HTML parser."""
    parts, pos = [], 0
    while m := _OPEN_RE.search(html, pos):
        parts.append(html[pos : m.start()])
        end = _CLOSE_RE[(m.group(1) or "").lower()].search(html, m.end())
        if end is None:
            return "".join(parts)
        pos = html.find(">", end.start()) + 1 or len(html)
    parts.append(html[pos:])
    return "".join(parts)


def _fit(html: str, max_bytes: int) -> str:
    """Oversized page: drop script/style/comment blocks (unused by text extraction), then
    truncate what is still over the limit at a UTF-8 character boundary."""
    if not _utf8_len_over(html, max_bytes):
        return html
    html = _strip_non_text(html)
    if not _utf8_len_over(html, max_bytes):
        return html
    html = cap_depth(html)
    if not _utf8_len_over(html, max_bytes):
        return html
    return html.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")


def cap_depth(html: str, cap: int = DEPTH_CAP) -> str:
    """`html` with the elements nested deeper than `cap` flattened: their start and end tags
    dropped (a block tag after text becomes a line break), their text kept.

    Depth is counted on the tags as written, with a stack of open element names: void elements
    do not nest, an end tag closes up to its open element (and is ignored without one), and a
    <p>, <li>, <td>, ... ends an open one of the same name at the top, as in an HTML parser.
    One pass over the tags; an end tag looks its element up in a count, not in the stack."""
    parts = _TAG_SPLIT_RE.split(html)  # text, tag, "/" or "", name, text, tag, ...
    stack: list[str] = []
    open_count: dict[str, int] = {}
    excess = 0  # elements open beyond the cap: their tags are dropped
    for i in range(1, len(parts), 4):
        closing, name = parts[i + 1], parts[i + 2].lower()
        parts[i + 1] = parts[i + 2] = ""
        if name in _VOID:
            continue
        if not excess:
            if closing:
                _close(stack, open_count, name)
                continue
            if stack and stack[-1] == name and name in _IMPLIED_END:
                _close(stack, open_count, name)
            if len(stack) < cap:
                stack.append(name)
                open_count[name] = open_count.get(name, 0) + 1
                continue
        excess += -1 if closing else 1
        parts[i] = "" if name in _INLINE or not parts[i - 1].strip() else "\n"
    return "".join(parts)


def _close(stack: list[str], open_count: dict[str, int], name: str) -> None:
    """Pop `stack` up to and including the innermost open `name`, if one is open."""
    if not open_count.get(name):
        return
    while True:
        top = stack.pop()
        open_count[top] -= 1
        if top == name:
            return


def _parse_hit_depth_limit() -> bool:
    """Whether trafilatura's last parse stopped at libxml2's depth limit (the rest of the page
    was never parsed). trafilatura parses with its module parser in load_html, and only there."""
    from trafilatura.utils import HTML_PARSER

    last = HTML_PARSER.error_log.last_error
    return last is not None and "depth" in last.message.lower()


def clean_text(text: str) -> str:
    """RefinedWeb post-processing: drop URLs, trailing spaces, and runs of 3+ newlines."""
    text = _URL_RE.sub("", text)
    text = _HSPACE_RE.sub(" ", text)
    text = _TRAILING_WS_RE.sub("", text)
    text = _NEWLINES_RE.sub("\n\n", text)
    return text.strip()


def extract_text(html: str, config: ExtractConfig) -> str:
    """Main text of one decoded HTML page, or "" if none (no state shared across pages)."""
    if not html or not html.strip():
        return ""
    html = _fit(html, config.max_html_bytes)
    if config.engine == "resiliparse":
        text = _resiliparse(html, config)
    else:
        text = _trafilatura_whole_page(html, config)
    if not text:
        return ""
    text = clean_text(text)
    return text if len(text) >= config.min_text_chars else ""


def _trafilatura_whole_page(html: str, config: ExtractConfig) -> str | None:
    """trafilatura's text, parsed again with deep nesting flattened if libxml2 stopped early."""
    # trafilatura is imported here, not at the top: the config is read where no page is extracted
    from refine.xpath_rewrite import use_rewritten_xpaths

    use_rewritten_xpaths(config.fast_xpaths)
    text = _trafilatura(html, config)
    for cap in _DEPTH_CAPS:  # bounded: at most two more parses, of flattened pages
        if not _parse_hit_depth_limit():
            break
        text = _trafilatura(cap_depth(_strip_non_text(html), cap), config)
    return text


def _resiliparse(html: str, config: ExtractConfig) -> str:
    """resiliparse's main-content text, one block per line as trafilatura writes it."""
    from resiliparse.extract.html2text import extract_plain_text

    tree = _lexbor_tree(html)
    if tree.document.query_selector(_LEXBOR_TOO_DEEP) is not None:
        tree = _lexbor_tree(cap_depth(_strip_non_text(html), _LEXBOR_DEPTH_CAP))
    text = extract_plain_text(
        tree,
        preserve_formatting=True,  # block elements and <br> become line breaks
        main_content=True,
        list_bullets=True,  # "•" / "1." as trafilatura's "- ": Gopher's bullet-line check
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
        comments=config.include_comments,
        post_meta=False,  # bylines, dates, tags around an article
        skip_elements=None if config.include_tables else ["table"],
    )
    # control characters dropped (trafilatura's XML tree cannot hold them), then blank lines and
    # indentation (list items, table cells): one block per line
    text = _CONTROL_RE.sub("", text)
    return "\n".join(filter(None, map(str.strip, text.split("\n"))))


def _lexbor_tree(html: str) -> HTMLTree:
    from resiliparse.parse.html import HTMLTree

    try:
        return HTMLTree.parse(html)
    except UnicodeEncodeError:  # lone surrogates: lexbor takes UTF-8
        return HTMLTree.parse(html.encode("utf-8", "replace").decode("utf-8"))


def _trafilatura(html: str, config: ExtractConfig) -> str | None:
    import trafilatura

    return trafilatura.extract(
        html,
        output_format="txt",
        fast=config.fast,
        favor_precision=config.favor_precision,
        favor_recall=config.favor_recall,
        include_comments=config.include_comments,
        include_tables=config.include_tables,
        include_links=config.include_links,
        include_images=config.include_images,
        include_formatting=False,
        deduplicate=False,
        with_metadata=False,
    )
