"""The curated evaluation set: clean, edited English text no web crawl variant was trained on.

Shipped as `refine/data/ablation-curated.jsonl.gz` (one JSON object per line: id, source,
text), built once by

    python -m pretrain.ablate.curated --wiki ../shared/data/text/enwiki-excerpt.xml.bz2 \
        --news ../shared/data/text/lee-news-background.txt \
        --out refine/data/ablation-curated.jsonl.gz

from the first articles of a Wikipedia dump excerpt (main namespace, no redirects, wiki markup
stripped by the rules below: templates, tables, references, files and categories go, links keep
their label, headings keep their title; each article cut to its leading paragraphs within
8,000 bytes) and the Lee news corpus (one article per line). Each source is cut at whole
documents to about `--bytes-per-source` UTF-8 bytes.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

CURATED = "ablation-curated.jsonl.gz"


def curated_path() -> Path:
    return Path(str(files("refine").joinpath("data", CURATED)))


def load_curated(path: Path | None = None) -> list[dict]:
    with gzip.open(path or curated_path(), "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def _drop_nested(text: str, opening: str, closing: str) -> str:
    """Remove balanced opening...closing spans (templates {{ }}, tables {| |})."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(opening, i):
            depth, i = depth + 1, i + len(opening)
        elif depth and text.startswith(closing, i):
            depth, i = depth - 1, i + len(closing)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def _drop_media_links(text: str) -> str:
    """Remove [[File:...]], [[Image:...]], [[Category:...]] links, nested brackets included."""
    out, i = [], 0
    pattern = re.compile(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):", re.IGNORECASE)
    while True:
        match = pattern.search(text, i)
        if match is None:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:match.start()])
        depth, j = 0, match.start()
        while j < len(text):
            if text.startswith("[[", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("]]", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    break
            else:
                j += 1
        i = j


def strip_wikitext(text: str) -> str:
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"<(math|gallery|timeline|score|chem|syntaxhighlight)\b[^>]*>.*?</\1>", "",
                  text, flags=re.DOTALL)
    text = re.sub(r"<ref[^>]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.DOTALL)
    text = _drop_nested(text, "{{", "}}")
    text = _drop_nested(text, "{|", "|}")
    text = _drop_media_links(text)
    text = re.sub(r"\[\[([^\]|]*)\|([^\]]*)\]\]", r"\2", text)
    text = re.sub(r"\[\[([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.MULTILINE)
    text = text.replace("&nbsp;", " ").replace("&ndash;", "–").replace("&mdash;", "—")
    lines = [line.rstrip() for line in text.split("\n")]
    lines = [line for line in lines if not line.startswith(("|", "!", "*", "#", ":", ";"))]
    text = "\n".join(lines)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def wiki_articles(path: Path, min_chars: int = 2000) -> Iterator[tuple[str, str]]:
    """(title, plain text) of main-namespace, non-redirect pages of a MediaWiki XML dump."""
    with bz2.open(path, "rb") as stream:
        for _, element in ET.iterparse(stream):
            if not element.tag.endswith("}page"):
                continue
            ns = element.findtext("{*}ns")
            redirect = element.find("{*}redirect")
            text = element.findtext("{*}revision/{*}text") or ""
            title = element.findtext("{*}title") or ""
            element.clear()
            if ns != "0" or redirect is not None or text.lower().startswith("#redirect"):
                continue
            plain = strip_wikitext(text)
            if len(plain) >= min_chars:
                yield title, plain


def cut_paragraphs(text: str, max_bytes: int) -> str:
    """The leading whole paragraphs of `text` within max_bytes (at least the first one)."""
    kept: list[str] = []
    size = 0
    for paragraph in text.split("\n\n"):
        size += len(paragraph.encode("utf-8")) + 2
        if kept and size > max_bytes:
            break
        kept.append(paragraph)
    return "\n\n".join(kept)


def build(wiki: Path, news: Path, out: Path, bytes_per_source: int,
          max_article_bytes: int = 8000) -> dict[str, int]:
    rows, sizes = [], {"wikipedia": 0, "news": 0}
    for title, full in wiki_articles(wiki):
        if sizes["wikipedia"] >= bytes_per_source:
            break
        text = cut_paragraphs(full, max_article_bytes)
        rows.append({"id": f"wikipedia/{title}", "source": "wikipedia", "text": text})
        sizes["wikipedia"] += len(text.encode("utf-8"))
    lines = [line.strip() for line in news.read_text(encoding="utf-8").split("\n")]
    for number, line in enumerate(lines):
        if not line or sizes["news"] >= bytes_per_source:
            continue
        rows.append({"id": f"lee-news/{number}", "source": "news", "text": line})
        sizes["news"] += len(line.encode("utf-8"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(out, "wb", mtime=0) as stream:  # mtime 0: the same bytes every build
        for row in rows:
            stream.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.ablate.curated",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wiki", type=Path, required=True)
    parser.add_argument("--news", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=curated_path())
    parser.add_argument("--bytes-per-source", type=int, default=150_000)
    args = parser.parse_args(argv)
    print(json.dumps(build(args.wiki, args.news, args.out, args.bytes_per_source)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
