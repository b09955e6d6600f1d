"""A corpus with known duplicates, to measure what dedup finds (tests, `bench/dedup.py`).

From real documents, `inject_duplicates` adds: near-duplicates (a copy with a fraction of its
words replaced, under its own URL), exact copies under a new URL, a page re-crawled under the
same URL with a new text (its words reversed), and documents that quote a long passage of
another. The truth says which original each added document copies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class InjectedCorpus:
    docs: list[dict[str, str]]  # id, url, text
    near: dict[str, str] = field(default_factory=dict)  # near-duplicate id -> original id
    exact: dict[str, str] = field(default_factory=dict)  # exact copy id -> original id
    same_url: dict[str, str] = field(default_factory=dict)  # re-crawl id -> original id
    quoting: dict[str, str] = field(default_factory=dict)  # quoting id -> quoted original id


def edit_words(text: str, fraction: float, rng: random.Random) -> str:
    """Replace about `fraction` of the words (whitespace kept) with words drawn from the text."""
    words = text.split(" ")
    replaced = max(1, round(len(words) * fraction))
    for index in rng.sample(range(len(words)), min(replaced, len(words))):
        words[index] = rng.choice(words) + "x"
    return " ".join(words)


def inject_duplicates(originals: list[dict[str, str]], seed: int = 0, near: int = 0,
                      exact: int = 0, same_url: int = 0, quoting: int = 0,
                      edit_fraction: float = 0.02, quote_words: int = 120) -> InjectedCorpus:
    """Originals (each with id, url, text) plus the requested numbers of each kind of copy."""
    rng = random.Random(seed)
    corpus = InjectedCorpus([dict(d) for d in originals])
    long_enough = [d for d in originals if len(d["text"].split()) >= quote_words + 20]
    for k in range(near):
        source = rng.choice(originals)
        new = {"id": f"{source['id']}-near{k}", "url": f"{source['url']}?near={k}",
               "text": edit_words(source["text"], edit_fraction, rng)}
        corpus.docs.append(new)
        corpus.near[new["id"]] = source["id"]
    for k in range(exact):
        source = rng.choice(originals)
        new = {"id": f"{source['id']}-copy{k}", "url": f"{source['url']}?copy={k}",
               "text": source["text"]}
        corpus.docs.append(new)
        corpus.exact[new["id"]] = source["id"]
    for k in range(same_url):
        source = rng.choice(originals)  # new text: the words reversed share no 5-gram
        new = {"id": f"{source['id']}-recrawl{k}", "url": source["url"],
               "text": " ".join(reversed(source["text"].split(" ")))}
        corpus.docs.append(new)
        corpus.same_url[new["id"]] = source["id"]
    for k in range(quoting):
        quoted, host = rng.sample(long_enough, 2)
        words = quoted["text"].split(" ")
        start = rng.randrange(0, len(words) - quote_words)
        passage = " ".join(words[start : start + quote_words])
        new = {"id": f"{host['id']}-quote{k}", "url": f"{host['url']}?quote={k}",
               "text": f"{host['text']}\n\nAs quoted elsewhere: {passage}"}
        corpus.docs.append(new)
        corpus.quoting[new["id"]] = quoted["id"]
    rng.shuffle(corpus.docs)
    return corpus
