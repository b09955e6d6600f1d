"""PII anonymisation (FineWeb's PIIFormatter, issue #21): e-mail and public IPv4 addresses become
placeholders, counted per document; private and reserved addresses are left alone."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from refine.filters.pii import (
    EMAIL_PLACEHOLDER,
    IP_PLACEHOLDERS,
    PIIConfig,
    anonymise,
    is_public_ip,
    metrics,
)


@pytest.mark.parametrize("address", [
    "john.smith@example.co.uk", "John.Smith@Example.com", "a+tag@mail.server-1.org",
    "o'brien@uni.ie", "x_y-z@sub.domain.museum", "user@[93.184.216.34]",
])
def test_emails_are_replaced(address):
    text, counts = anonymise(f"Write to {address}, or call.")
    assert text == f"Write to {EMAIL_PLACEHOLDER}, or call."
    assert counts == {"emails": 1.0, "ips": 0.0}


@pytest.mark.parametrize("text", [
    "Follow @refinery on social media", "a @ b", "price: 5@3 for 10", "user@localhost is local",
    "no addresses at all",
])
def test_what_is_not_an_email_is_left(text):
    assert anonymise(text) == (text, {"emails": 0.0, "ips": 0.0})


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "185.199.108.153",
                                     "9.9.9.9", "18.8.8.8", "123.8.8.8"])
def test_public_ips_are_replaced_by_a_placeholder_chosen_by_the_address(address):
    text, counts = anonymise(f"The server at {address}. Ping {address} again")
    assert counts == {"emails": 0.0, "ips": 2.0}
    assert address not in text
    placeholder = text.split()[3].rstrip(".")
    assert placeholder in IP_PLACEHOLDERS and text.count(placeholder) == 2  # same address, same
    assert anonymise(text) == (text, {"emails": 0.0, "ips": 0.0})  # placeholders are not global


@pytest.mark.parametrize("address", [
    "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1",  # private
    "127.0.0.1", "169.254.10.20", "0.0.0.0", "255.255.255.255",  # loopback, link-local, ...
    "224.0.0.251", "239.1.2.3", "100.64.0.1", "240.0.0.1",  # multicast, CGNAT, reserved
    "192.0.2.55", "198.51.100.7", "203.0.113.200",  # documentation
])
def test_private_and_reserved_ips_are_left_alone(address):
    text = f"router at {address} today"
    assert not is_public_ip(address)
    assert anonymise(text) == (text, {"emails": 0.0, "ips": 0.0})


@pytest.mark.parametrize("text", [
    "version 1.2.3.4.5 released", "build 8.8.8.8.1", "v2.8.8.8.8", "1.2.3",
    "256.1.1.1 is no address", "8.8.8.80000", "018.8.8.8", "8.8.8.08",
])
def test_numbers_that_are_not_whole_addresses_are_left(text):
    assert anonymise(text) == (text, {"emails": 0.0, "ips": 0.0})


def test_addresses_at_sentence_ends_and_in_urls():
    text, counts = anonymise("See http://8.8.4.4/path and 1.0.0.1.\nMail me: x@y.com.")
    assert counts == {"emails": 1.0, "ips": 2.0}
    assert "8.8.4.4" not in text and "1.0.0.1" not in text
    assert text.endswith(f"{EMAIL_PLACEHOLDER}.")


def test_settings_and_metrics():
    text = "mail a@b.org from 8.8.8.8 or 10.1.1.1"
    assert anonymise(text, PIIConfig(emails=False))[1] == {"emails": 0.0, "ips": 1.0}
    assert anonymise(text, PIIConfig(ips=False))[0] == "mail email@example.com from 8.8.8.8 " \
                                                       "or 10.1.1.1"
    out, counts = anonymise(text, PIIConfig(only_public_ips=False, ip_placeholders=["0.0.0.0"]))
    assert out == "mail email@example.com from 0.0.0.0 or 0.0.0.0" and counts["ips"] == 2.0
    assert metrics(counts) == {"pii.emails": 1.0, "pii.ips": 2.0}
    with pytest.raises(ValidationError):
        PIIConfig(ip_placeholders=[])
    with pytest.raises(ValidationError):
        PIIConfig(email=True)
    assert not PIIConfig().enabled


def test_deterministic_and_fast_on_long_text():
    import time

    chunk = "Contact admin@site.example.org or 93.184.216.34; internal 10.0.0.1. " * 2000
    started = time.perf_counter()
    one = anonymise(chunk)
    assert time.perf_counter() - started < 2.0
    assert one == anonymise(chunk) and one[1] == {"emails": 2000.0, "ips": 2000.0}
    pathological = "a" * 20000 + "@" + "b." * 5000  # no catastrophic backtracking
    started = time.perf_counter()
    anonymise(pathological)
    assert time.perf_counter() - started < 2.0


def test_hook_in_the_dedup_rewrite_anonymises_only_the_kept_text(tmp_path):
    """refine.dedup.rewrite: kept rows are anonymised after dedup and count what was replaced;
    rejected rows are not touched."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refine.dedup.rewrite import Removal, ShardEdits, rewrite_shard
    from refine.rundir import DATA, FILTERED, REJECTED, RunDir
    from refine.shards import KEPT_SCHEMA, metrics_dict

    run = RunDir(tmp_path / "run")
    texts = ["Mail jo@corp.example.net from 8.8.8.8 or 192.168.0.1 please.",
             "Duplicate: mail jo@corp.example.net now."]
    rows = [{"id": f"d{i}", "url": f"http://x/{i}", "date": "", "text": t, "language": "en",
             "language_score": 1.0, "token_count": len(t.split()), "file_path": "in.warc.gz",
             "offset": i, "metrics": [{"key": "language.score", "value": 1.0}]}
            for i, t in enumerate(texts)]
    source = run.path(FILTERED, "unit-0.parquet")
    run.write_table(pa.Table.from_pylist(rows, schema=KEPT_SCHEMA), source, None)
    edits = ShardEdits(removals={1: Removal("fuzzy_dedup", "duplicate", "d0")},
                       pii=PIIConfig(enabled=True))
    result, _, ids = rewrite_shard(source, run, edits, 2000, "zstd")
    assert result.kept == 1 and ids.to_pylist() == ["d0"]
    kept = pq.read_table(tmp_path / "run" / DATA / "unit-0.parquet").to_pylist()
    assert kept[0]["text"].startswith(f"Mail {EMAIL_PLACEHOLDER} from ")
    assert "8.8.8.8" not in kept[0]["text"] and "192.168.0.1" in kept[0]["text"]
    assert kept[0]["token_count"] == len(kept[0]["text"].split())
    assert metrics_dict(kept[0]["metrics"]) == {"language.score": 1.0, "pii.emails": 1.0,
                                                "pii.ips": 1.0}
    dropped = [r for f in (tmp_path / "run" / REJECTED).glob("*.parquet")
               for r in pq.read_table(f).to_pylist()]
    assert [r["text"] for r in dropped] == [texts[1]]
    # without the setting, the rewrite is as before
    rewrite_shard(source, run, ShardEdits(), 2000, "zstd")
    kept = pq.read_table(tmp_path / "run" / DATA / "unit-0.parquet").to_pylist()
    assert [r["text"] for r in kept] == texts


def _pii_docs() -> list[dict]:
    filler = " ".join(f"word{i}" for i in range(60))
    return [
        {"id": "a", "url": "https://example.org/a",
         "text": f"Write to Jane.Doe@Mail.example.com or ping 8.8.4.4 today. {filler}"},
        {"id": "b", "url": "https://example.org/b",
         "text": f"Our router is 192.168.1.1 and nothing else is here. {filler} b"},
        {"id": "c", "url": "https://example.org/c",  # a near copy of a, shorter: removed
         "text": f"Write to Jane.Doe@Mail.example.com or ping 8.8.4.4 today. {filler[:-7]}"},
    ]


@pytest.mark.parametrize("dedup", [True, False], ids=["after-dedup", "no-dedup"])
def test_a_run_anonymises_what_it_writes_and_counts_it(local_ray, tmp_path, dedup):
    import json

    import pyarrow.parquet as pq

    from refine.config import parse_config
    from refine.run import run
    from refine.shards import metrics_dict

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in _pii_docs()))
    off = {name: {"enabled": False} for name in ("url", "language", "repetition", "quality",
                                                 "lines")}
    settings = {"name": "pii-test", **off, "dedup": {"exact": {"enabled": False}}}
    if not dedup:
        settings["dedup"] = {step: {"enabled": False} for step in ("fuzzy", "exact", "urls")}
    with_pii = parse_config({**settings, "pii": {"enabled": True}})
    result = run(with_pii, [str(source)], tmp_path / "run", workers=1)
    kept = {r["id"]: r for f in sorted((result.run_dir / "data").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}
    assert set(kept) == ({"a", "b"} if dedup else {"a", "b", "c"})
    assert kept["a"]["text"].startswith(f"Write to {EMAIL_PLACEHOLDER} or ping ")
    assert "8.8.4.4" not in kept["a"]["text"] and "192.168.1.1" in kept["b"]["text"]
    assert metrics_dict(kept["a"]["metrics"])["pii.emails"] == 1.0
    assert metrics_dict(kept["b"]["metrics"])["pii.ips"] == 0.0
    stats = json.loads((result.run_dir / "stats.json").read_text())
    stage = stats["stages"]["pii"]
    assert (stage["in"], stage["out"], stage["rejected"]) == (len(kept), len(kept), {})
    assert (stage["emails"], stage["ips"]) == (len(kept) - 1, len(kept) - 1)
    assert stage["documents_changed"] == len(kept) - 1
    from refine.stats import ORDER

    assert ORDER[-2:] == ("pii", "write") and ORDER.index("exact_dedup") < ORDER.index("pii")
    if dedup:
        rejected = [r for f in (result.run_dir / "rejected").glob("*.parquet")
                    for r in pq.read_table(f).to_pylist()]
        assert [r["id"] for r in rejected] == ["c"] and "Jane.Doe@" in rejected[0]["text"]
    # off (the default): nothing replaced, no pii stage, no pii metrics
    plain = run(parse_config(settings), [str(source)], tmp_path / "plain", workers=1)
    texts = {r["id"]: r for f in (plain.run_dir / "data").glob("*.parquet")
             for r in pq.read_table(f).to_pylist()}
    assert "Jane.Doe@Mail.example.com" in texts["a"]["text"]
    assert not any(k.startswith("pii.") for k in metrics_dict(texts["a"]["metrics"]))
    assert "pii" not in json.loads((plain.run_dir / "stats.json").read_text())["stages"]
