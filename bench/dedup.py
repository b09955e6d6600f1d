"""Fuzzy-dedup benchmark, signature part: MinHash signatures per second on one core.

Texts come from a refine run's RUN/data Parquet (--run) or are extracted from the real-html
WARCs with refine's reader and `extract_text`. Every text is shingled once (5-word shingles of
the normalised text, UTF-8), then for each preset refine's `MinHasher.signatures` and
datasketch's `MinHash.bulk` (scheme "legacy", same seed) sign the same shingle lists (outputs
checked equal), and so does refine with ``shingle_hash="poly64"``; the ``*_from_text`` rates
include normalising and shingling (datasketch gets refine's shingles). Single-threaded CPU
time (`time.process_time`), runs alternating, best of --repeat. One JSON line per preset.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from refine.dedup import FINEWEB, REFINEDWEB, MinHashConfig, MinHasher, word_shingles

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def run_texts(run: Path, limit: int) -> list[str]:
    import pyarrow.parquet as pq

    texts: list[str] = []
    for path in sorted((run / "data").glob("**/*.parquet")):
        texts += [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
        if len(texts) >= limit:
            break
    return texts[:limit]


def warc_texts(data: Path, limit: int) -> list[str]:
    from refine.extract import ExtractConfig, extract_text
    from refine.readers import plan_units, read_unit

    config = ExtractConfig()
    paths = sorted(data.glob("*.warc.gz"))
    texts: list[str] = []
    for unit in plan_units([(str(p), p.stat().st_size) for p in paths], 1 << 40):
        for record in read_unit(unit, 1 << 26):
            text = extract_text(record.html, config) if record.html else ""
            if text:
                texts.append(text)
                if len(texts) >= limit:
                    return texts
    return texts


def best_rates(count: int, fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):  # alternate, so both see the same load from the other processes
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    return {name: count / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, help="a refine run directory (uses RUN/data)")
    parser.add_argument("--data", type=Path, default=SHARED / "warc" / "real-html")
    parser.add_argument("--texts", type=int, default=300, help="texts for the 14x8 preset")
    parser.add_argument("--texts-large", type=int, default=40, help="texts for 450x20")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    limit = max(args.texts, args.texts_large)
    texts = run_texts(args.run, limit) if args.run else warc_texts(args.data, limit)
    source = str(args.run or args.data)
    for name, config, count in (
        ("fineweb", FINEWEB, args.texts),
        ("refinedweb", REFINEDWEB, args.texts_large),
    ):
        print(json.dumps(measure(name, config, texts[:count], args.repeat, source)), flush=True)


def measure(name: str, config: MinHashConfig, texts: list[str], repeat: int, source: str) -> dict:
    from datasketch import MinHash

    def shingle(text: str) -> list[bytes]:
        return [s.encode() for s in word_shingles(text, config.ngram)]

    docs = [shingle(t) for t in texts]
    exact, fast = MinHasher(config), MinHasher(config.model_copy(update={"shingle_hash": "poly64"}))
    kwargs: dict = {"num_perm": config.num_perm, "seed": config.seed}
    if "scheme" in inspect.signature(MinHash).parameters:  # datasketch >= 2.0 (legacy before)
        kwargs["scheme"] = config.scheme
    theirs = MinHash.bulk(docs, **kwargs)
    equal = all(
        (o == t.hashvalues).all() for o, t in zip(exact.signatures(docs), theirs, strict=True)
    )
    rates = best_rates(
        len(docs),
        {
            "refine": lambda: exact.signatures(docs),
            "datasketch": lambda: MinHash.bulk(docs, **kwargs),
            "refine_poly64": lambda: fast.signatures(docs),
            "refine_from_text": lambda: exact.text_signatures(texts),
            "datasketch_from_text": lambda: MinHash.bulk([shingle(t) for t in texts], **kwargs),
            "refine_poly64_from_text": lambda: fast.text_signatures(texts),
        },
        repeat,
    )
    line: dict = {
        "bench": "dedup_minhash_signatures",
        "preset": name,
        "bands_x_rows": f"{config.num_bands}x{config.rows_per_band}",
        "num_perm": config.num_perm,
        "docs": len(docs),
        "mean_shingles": round(sum(map(len, docs)) / max(1, len(docs)), 1),
    }
    line.update({f"{k}_docs_per_s_per_core": round(v, 1) for k, v in rates.items()})
    line["ratio"] = round(rates["refine"] / rates["datasketch"], 2)
    line["ratio_poly64"] = round(rates["refine_poly64"] / rates["datasketch"], 2)
    line["ratio_from_text"] = round(rates["refine_from_text"] / rates["datasketch_from_text"], 2)
    line["ratio_poly64_from_text"] = round(
        rates["refine_poly64_from_text"] / rates["datasketch_from_text"], 2
    )
    line["signatures_equal_datasketch"] = equal
    line["timer"] = f"process_time, best of {repeat}, runs alternating"
    line["loadavg_1m"] = round(os.getloadavg()[0], 2)
    line["source"] = source
    return line


if __name__ == "__main__":
    main()
