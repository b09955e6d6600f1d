"""Real, mutually distinct texts for the dedup scaling benchmark, and filtered shards of them.

Sources, in this order: the CC-MAIN-2019-30 text sample (Dolma JSONL, 697 web pages), the
sections of the English Wikipedia excerpt (wiki markup stripped roughly: templates, refs,
tables, link targets), and the Lee news background corpus (one article a line). Texts shorter
than `min_words` are skipped. Every document gets a unique id and URL.
"""

from __future__ import annotations

import bz2
import gzip
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refine.shards import KEPT_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
SHARED_TEXT = ROOT.parent / "shared" / "data" / "text"
CC_SAMPLE = ROOT / "tests" / "data" / "text" / "cc-main-2019-30-text-sample.jsonl.gz"
ENWIKI = SHARED_TEXT / "enwiki-excerpt.xml.bz2"
LEE = SHARED_TEXT / "lee-news-background.txt"
MW = "{http://www.mediawiki.org/xml/export-0.10/}"

_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S)
_TAG = re.compile(r"<[^>]+>")
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]")
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXTERNAL = re.compile(r"\[https?://\S+ ?([^\]]*)\]")
_SECTION = re.compile(r"\n==+\s*([^=\n]+?)\s*==+\s*\n")


def clean_wiki(markup: str) -> str:
    text = _REF.sub("", markup)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    for _ in range(5):  # nested templates, innermost first
        text, count = _TEMPLATE.subn("", text)
        if not count:
            break
    text = _TABLE.sub("", text)
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXTERNAL.sub(r"\1", text)
    text = _TAG.sub("", text).replace("'''", "").replace("''", "")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line.lstrip("*#:; ") for line in lines if line and not line.startswith(("|", "!"))]
    return "\n".join(lines)


def cc_docs() -> Iterator[dict[str, str]]:
    with gzip.open(CC_SAMPLE, "rt") as stream:
        for line in stream:
            row = json.loads(line)
            yield {"id": f"cc-{row['id']}", "url": row["metadata"]["warc_url"],
                   "text": row["text"]}


def wiki_docs() -> Iterator[dict[str, str]]:
    if not ENWIKI.exists():
        return
    with bz2.open(ENWIKI) as stream:
        pages = []
        for _, page in ET.iterparse(stream):
            if page.tag == f"{MW}page":
                pages.append((page.findtext(f"{MW}title") or "",
                              page.findtext(f"{MW}revision/{MW}text") or ""))
                page.clear()
    for title, markup in pages:
        if markup.lower().startswith("#redirect"):
            continue
        parts = _SECTION.split("\n" + markup)  # text, (heading, text)*
        sections = [("", parts[0])] + list(zip(parts[1::2], parts[2::2], strict=True))
        slug = title.replace(" ", "_")
        for k, (_, body) in enumerate(sections):  # URL dedup ignores #fragments: a query
            yield {"id": f"enwiki-{slug}-{k}", "text": clean_wiki(body),
                   "url": f"https://en.wikipedia.org/wiki/{slug}?section={k}"}


def lee_docs() -> Iterator[dict[str, str]]:
    if not LEE.exists():
        return
    for k, line in enumerate(LEE.read_text(encoding="utf-8").splitlines()):
        yield {"id": f"lee-{k}", "url": f"https://news.example.org/lee/{k}", "text": line.strip()}


def split_long(doc: dict[str, str], chunk_chars: int) -> Iterator[dict[str, str]]:
    """A text longer than twice `chunk_chars` is cut at line ends into parts of at least
    `chunk_chars` characters (the last may be shorter), each a document with its own URL."""
    if len(doc["text"]) < 2 * chunk_chars:
        yield doc
        return
    part: list[str] = []
    size = k = 0
    lines = doc["text"].split("\n")
    rest = len(doc["text"])
    glue = "&" if "?" in doc["url"] else "?"
    for index, line in enumerate(lines):
        part.append(line)
        size += len(line) + 1
        rest -= len(line) + 1
        if (size >= chunk_chars and rest >= chunk_chars // 2) or index == len(lines) - 1:
            yield {"id": f"{doc['id']}-p{k}", "url": f"{doc['url']}{glue}part={k}",
                   "text": "\n".join(part)}
            part, size, k = [], 0, k + 1


def load_originals(limit: int | None = None, min_words: int = 50,
                   chunk_chars: int = 2500) -> list[dict[str, str]]:
    """Up to `limit` documents of at least `min_words` words (long texts split, see
    `split_long`), exact-duplicate texts dropped."""
    docs: list[dict[str, str]] = []
    seen: set[str] = set()
    for source in (cc_docs(), wiki_docs(), lee_docs()):
        for whole in source:
            for doc in split_long(whole, chunk_chars):
                if len(doc["text"].split()) < min_words or doc["text"] in seen:
                    continue
                seen.add(doc["text"])
                docs.append(doc)
                if limit is not None and len(docs) >= limit:
                    return docs
    return docs


def write_filtered(docs: list[dict[str, str]], run_dir: Path, shards: int = 0,
                   shard_chars: int = 0) -> int:
    """Writes `docs` as ``RUN/filtered/part-NNNNN.parquet`` (KEPT_SCHEMA): `shards` shards of
    equal document counts or, with `shard_chars`, shards of about that much text; returns the
    number of shards."""
    out = run_dir / "filtered"
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"id": doc["id"], "url": doc["url"], "date": "2019-07-20T00:00:00Z",
             "text": doc["text"], "language": "en", "language_score": 0.99,
             "token_count": len(doc["text"].split()), "file_path": "bench-corpus.jsonl",
             "offset": offset, "metrics": []} for offset, doc in enumerate(docs)]
    groups: list[list[dict]] = []
    if shard_chars:
        chars = shard_chars
        for row in rows:
            if chars >= shard_chars:
                groups.append([])
                chars = 0
            groups[-1].append(row)
            chars += len(row["text"])
    else:
        count = max(1, min(shards, len(rows)))
        bounds = [len(rows) * k // count for k in range(count + 1)]
        groups = [rows[lo:hi] for lo, hi in zip(bounds, bounds[1:], strict=False)]
    for k, group in enumerate(groups):
        table = pa.Table.from_pylist(group, schema=KEPT_SCHEMA)
        pq.write_table(table, out / f"part-{k:05d}.parquet", compression="zstd")
    return len(groups)
