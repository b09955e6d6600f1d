"""URLFilter and the UT1 blocklists, on the real packaged lists.

The packaged UT1 domain list (4.56M domains) is hashed into the session's cache dir
(REFINE_CACHE_DIR, set by conftest) the first time a test needs it: ~2 s on a 2-core box,
once per session; loading it from the cache afterwards takes ~10 ms (memory-mapped).
Tests of cache behaviour use small temporary lists and their own cache dirs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import lzma
import multiprocessing
import os
import pickle
import random
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from refine import blocklist, cli
from refine.blocklist import (
    PACKAGED_DOMAINS,
    PACKAGED_URLS,
    DomainBlocklist,
    UrlBlocklist,
    reset_loaded_blocklists,
)
from refine.blocklist_update import (
    FINEWEB_UT1_CATEGORIES,
    BlocklistUpdateError,
    parse_ut1_tarball,
    update_blocklist,
)
from refine.document import Document
from refine.filters.url import DEFAULT_EXCLUDED_DOMAINS, URLFilter, URLFilterConfig
from refine.urlnorm import split_url


def _doc(url: str) -> Document:
    return Document(id="d", url=url, text="")


def _apply(f: URLFilter, url: str) -> tuple[str | None, dict[str, float]]:
    d = _doc(url)
    return f.apply(d), d.metrics


@pytest.fixture(scope="module")
def url_filter() -> URLFilter:
    return URLFilter(URLFilterConfig()).load()


@pytest.fixture(scope="module")
def ut1_head() -> list[str]:
    with lzma.open(PACKAGED_DOMAINS, "rt") as f:
        return [line.strip() for line in itertools.islice(f, 2000)]


# --- real UT1 lists -------------------------------------------------------------------------


def test_ut1_domain_blocked_including_subdomains(url_filter, ut1_head):
    assert "0-secure-paypal.com" in ut1_head  # phishing category
    for url in [
        "http://0-secure-paypal.com/",
        "https://login.0-secure-paypal.com/signin?x=1",
        "https://a.b.0-secure-paypal.com./x",
        "HTTPS://WWW.0-Secure-PayPal.COM:443/",
        "0-secure-paypal.com/no/scheme",
    ]:
        assert _apply(url_filter, url)[0] == "blocklisted_domain", url
    # a registrable domain that merely ends with a listed one is not a subdomain of it
    assert _apply(url_filter, "https://not0-secure-paypal.com/")[0] is None


def test_ut1_lists_whole_adult_tlds(url_filter):
    # UT1 lists the bare TLDs xxx/porn/sex/adult on purpose (squidGuard suffix semantics)
    assert _apply(url_filter, "https://some-site.xxx/")[0] == "blocklisted_domain"
    assert _apply(url_filter, "https://example.com/")[0] is None


def test_unrelated_real_domains_kept(url_filter):
    for url in [
        "https://www.bbc.co.uk/news/world-europe-68123456",
        "https://www.nytimes.com/2023/05/01/technology/ai-chatbots.html",
        "http://example.com",
    ]:
        reason, metrics = _apply(url_filter, url)
        assert reason is None, url
        assert metrics["url.soft_word_hits"] == 0.0


def test_ut1_url_list_blocks_url_and_paths_below_it(url_filter):
    with gzip.open(PACKAGED_URLS, "rt") as f:
        entries = {line.strip() for line in f}
    entry = "m.facebook.com/BenzMafia/photos/my-study-is-complete:-being/1497613343628281"
    assert entry in entries
    assert _apply(url_filter, "https://" + entry)[0] == "blocklisted_url"
    assert _apply(url_filter, "https://" + entry.lower() + "/?ref=x#top")[0] == "blocklisted_url"
    assert _apply(url_filter, "https://" + entry + "/comments")[0] == "blocklisted_url"
    # the rest of the site is not listed
    assert _apply(url_filter, "https://m.facebook.com/BenzMafia/")[0] is None
    # "/" boundaries: aa-mobile.de/movie blocks /movie/..., not /movies
    assert "aa-mobile.de/movie" in entries
    assert _apply(url_filter, "http://www.aa-mobile.de/movie/1234.html")[0] == "blocklisted_url"
    assert _apply(url_filter, "http://aa-mobile.de/movies")[0] is None
    assert _apply(url_filter, "http://aa-mobile.de/")[0] is None


def test_hard_word_blocks_whole_words_only(url_filter):
    assert _apply(url_filter, "https://example.com/videos/porn/123")[0] == "hard_word"
    assert _apply(url_filter, "https://example.com/a?tag=XXX")[0] == "hard_word"
    assert _apply(url_filter, "https://porn.example.com/")[0] == "hard_word"
    assert _apply(url_filter, "https://example.com/a%20porn%20b")[0] == "hard_word"
    # substrings of words are not words
    assert _apply(url_filter, "https://example.com/cockpit-design")[0] is None
    assert _apply(url_filter, "https://example.com/scunthorpe-united")[0] is None


def test_soft_words_need_two_distinct_hits(url_filter):
    reason, metrics = _apply(url_filter, "https://example.com/lingerie-review")
    assert (reason, metrics["url.soft_word_hits"]) == (None, 1.0)
    reason, metrics = _apply(url_filter, "https://example.com/lingerie/naked-photos")
    assert (reason, metrics["url.soft_word_hits"]) == ("soft_words", 2.0)
    # the same soft word twice is one hit
    assert _apply(url_filter, "https://example.com/naked/naked")[0] is None
    strict = URLFilter(URLFilterConfig(soft_word_min_hits=1)).load()
    assert _apply(strict, "https://example.com/lingerie-review")[0] == "soft_words"


def test_strict_substring_matches_anywhere(url_filter):
    # "ball gag" / "2 girls 1 cup": separators and word boundaries do not matter
    assert _apply(url_filter, "https://example.org/shop/ball-gag")[0] == "strict_substring"
    assert _apply(url_filter, "https://example.org/x/aballgagz")[0] == "strict_substring"
    assert _apply(url_filter, "https://example.org/watch?v=2-girls-1-cup")[0] == "strict_substring"
    assert _apply(url_filter, "https://ballgag.example.org/")[0] == "strict_substring"
    # "#hot carl" is a disabled entry in FineWeb's list, not a phrase starting with '#'
    assert _apply(url_filter, "https://example.org/hot-carl")[0] is None


def test_excluded_domains(url_filter):
    assert "wikipedia.org" in DEFAULT_EXCLUDED_DOMAINS
    for url in [
        "https://en.wikipedia.org/wiki/Toulouse",
        "https://en.m.wikipedia.org/wiki/Toulouse",
        "https://arxiv.org/abs/2306.01116",
        "https://math.stackexchange.com/questions/1",
        "https://pubmed.ncbi.nlm.nih.gov/123/",
    ]:
        assert _apply(url_filter, url)[0] == "excluded_domain", url
    assert _apply(url_filter, "https://notwikipedia.org/")[0] is None
    keep_all = URLFilter(URLFilterConfig(excluded_domains=[])).load()
    assert _apply(keep_all, "https://en.wikipedia.org/wiki/Toulouse")[0] is None
    custom = URLFilter(URLFilterConfig(excluded_domains=["www.Example.ORG."])).load()
    assert _apply(custom, "https://docs.example.org/x")[0] == "excluded_domain"


def test_invalid_urls(url_filter):
    for url in [
        "",
        "   ",
        "http://",
        "https:///path-only",
        "mailto:someone@example.com",
        "javascript:alert(1)",
        "http://exa mple.com/",
        "http://example.com:80ab/",
        "http://a..b.com/",
        "http://[::1/",
    ]:
        reason, metrics = _apply(url_filter, url)
        assert reason == "invalid_url", url
        assert metrics == {}


def test_extra_blocked_domains_and_switches():
    f = URLFilter(URLFilterConfig(extra_blocked_domains=["Example.NET"])).load()
    assert _apply(f, "https://a.example.net/")[0] == "blocklisted_domain"
    no_ut1 = URLFilter(URLFilterConfig(use_ut1_blocklist=False, use_url_words=False)).load()
    assert _apply(no_ut1, "http://0-secure-paypal.com/")[0] is None
    assert _apply(no_ut1, "https://example.com/porn")[0] is None
    off = URLFilter(URLFilterConfig(enabled=False))
    assert _apply(off, "")[0] is None


def test_filter_pickles_without_the_blocklist(url_filter):
    data = pickle.dumps(url_filter)
    assert len(data) < 100_000  # the 36 MB hash array is not shipped
    clone = pickle.loads(data)
    assert _apply(clone, "http://0-secure-paypal.com/")[0] == "blocklisted_domain"


# --- URL normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@WWW.Example.COM.:8080/A%20b?q=1#frag", ("example.com", "/A%20b", "q=1")),
        ("//cdn.example.com/x", ("cdn.example.com", "/x", "")),
        ("example.com:8080/x", ("example.com", "/x", "")),
        ("localhost:8080", ("localhost", "", "")),
        ("http://www.com/", ("www.com", "/", "")),
        ("http://bücher.example/x", ("xn--bcher-kva.example", "/x", "")),
        ("http://xn--bcher-kva.example/x", ("xn--bcher-kva.example", "/x", "")),
        ("http://[2001:DB8::1]:80/x", ("[2001:db8::1]", "/x", "")),
        ("http://example.com\\evil", ("example.com", "/evil", "")),
        ("http://mailto:x@example.com/", ("example.com", "/", "")),
        ("http://u:p@ss@host/", ("host", "/", "")),  # the last "@" ends the user info
        ("http://u:p@ss@WWW.Host.org/x", ("host.org", "/x", "")),
    ],
)
def test_split_url(url, expected):
    assert split_url(url) == expected


def test_idna_host_matches_punycode_entry(tmp_path):
    src = tmp_path / "d.txt"
    src.write_text("xn--bcher-kva.example\n")
    d = DomainBlocklist.load(src, cache_dir=tmp_path / "c")
    assert d.contains_host("shop.bücher.example")
    assert d.contains_host("https://www.BÜCHER.example/x")
    assert not d.contains_host("bucher.example")


# --- cache behaviour (small lists) ----------------------------------------------------------


def test_cache_created_reused_and_rebuilt(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("REFINE_CACHE_DIR", str(cache))
    reset_loaded_blocklists()
    src = tmp_path / "domains.txt"
    src.write_text("bad.example\n# comment\n\nWWW.Worse.Example.\n*.wild.example\n")

    d1 = DomainBlocklist.load(src)
    assert d1.built and len(d1) == 3
    hashes_file, bitmap_file = d1.cache_files
    assert hashes_file.parent == cache and hashes_file.is_file() and bitmap_file.is_file()
    assert not list(cache.glob("*.tmp"))
    mtime = hashes_file.stat().st_mtime_ns
    assert d1.contains_host("x.bad.example") and d1.contains_host("worse.example")
    assert d1.contains_host("a.wild.example") and not d1.contains_host("good.example")

    assert DomainBlocklist.load(src) is d1  # memoised in the process
    reset_loaded_blocklists()
    d2 = DomainBlocklist.load(src)  # a "new worker": opens the cache, no rebuild
    assert d2 is not d1 and not d2.built
    assert d2.cache_files == d1.cache_files
    assert hashes_file.stat().st_mtime_ns == mtime
    assert d2.contains_host("x.bad.example")

    time.sleep(0.01)
    src.write_text("other.example\n")  # a new list: new cache key, rebuilt
    d3 = DomainBlocklist.load(src)
    assert d3.built and d3.cache_files != d1.cache_files
    assert d3.contains_host("other.example") and not d3.contains_host("bad.example")
    reset_loaded_blocklists()


def test_filter_with_custom_blocklist_path(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINE_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "domains.txt.gz"
    with gzip.open(src, "wt") as f:
        f.write("mine.example\n")
    f = URLFilter(URLFilterConfig(blocklist_path=str(src))).load()
    assert _apply(f, "https://www.mine.example/")[0] == "blocklisted_domain"
    # only the custom list: a UT1 domain / URL passes the blocklist checks
    assert _apply(f, "http://0-secure-paypal.com/")[0] is None
    assert _apply(f, "http://aa-mobile.de/movie/1")[0] is None
    assert list((tmp_path / "cache").glob("domains-*.hashes.npy"))


def _load_in_child(args):
    src, cache = args
    d = DomainBlocklist.load(src, cache_dir=cache)
    return d.contains_host("x.bad.example"), str(d.cache_files[0])


def test_concurrent_builders(tmp_path):
    src = tmp_path / "domains.txt"
    src.write_text("\n".join(f"d{i}.example" for i in range(20000)) + "\nbad.example\n")
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")  # no fork: Ray may be running in this process
    with ctx.Pool(2) as pool:
        results = pool.map(_load_in_child, [(str(src), str(cache))] * 4)
    assert all(hit for hit, _ in results)
    assert len({p for _, p in results}) == 1
    assert not list(cache.glob("*.tmp"))


def test_corrupt_cache_is_rebuilt(tmp_path):
    src = tmp_path / "domains.txt"
    src.write_text("bad.example\n")
    cache = tmp_path / "cache"
    d = DomainBlocklist.load(src, cache_dir=cache)
    d.cache_files[0].write_bytes(b"garbage")
    reset_loaded_blocklists()
    d2 = DomainBlocklist.load(src, cache_dir=cache)
    assert d2.built and d2.contains_host("bad.example")
    reset_loaded_blocklists()


def test_ip_hosts_match_exactly():
    d = DomainBlocklist.from_domains(["10.1.2.3", "2.3"])
    assert d.contains_host("10.1.2.3")
    assert not d.contains_host("1.1.2.3")
    assert not d.contains_host("9.2.3")  # no "parent domains" of an IP address


def test_url_blocklist_from_lines():
    u = UrlBlocklist.from_lines(["Example.com/Path/", "www.other.example/a/b", "# c", ""])
    assert len(u) == 2
    assert u.contains_url("https://www.example.com/path")
    assert u.contains_url("http://example.com/PATH/x/y?q")
    assert not u.contains_url("http://example.com/pathology")
    assert u.contains_url("other.example/a/b/c")
    assert not u.contains_url("other.example/a")


# --- config ---------------------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValidationError):
        URLFilterConfig(unknown_key=1)
    with pytest.raises(ValidationError):
        URLFilterConfig(soft_word_min_hits=0)
    with pytest.raises(ValidationError):
        URLFilterConfig(extra_blocked_domains=["not a domain"])
    c = URLFilterConfig.model_validate({"excluded_domains": ["WWW.Foo.org"], "enabled": True})
    assert c.excluded_domains == ["foo.org"]


# --- updating from UT1 ----------------------------------------------------------------------


def _make_tarball(path: Path, category: str, domains: str, urls: str | None, prefix: str = ""):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in [("domains", domains), ("urls", urls), ("usage", "black\n")]:
            if text is None:
                continue
            data = text.encode()
            info = tarfile.TarInfo(f"{prefix}{category}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_parse_ut1_tarball(tmp_path):
    tb = tmp_path / "adult.tar.gz"
    _make_tarball(tb, "adult", "a.example\n# x\nWWW.B.example\n\n", "c.example/Path/\n")
    with open(tb, "rb") as f:
        domains, urls = parse_ut1_tarball(f, "adult")
    assert domains == ["a.example", "b.example"]
    assert urls == ["c.example/path"]

    # extra leading dir, a symlinked domains file, no urls member
    tb2 = tmp_path / "chat.tar.gz"
    with tarfile.open(tb2, "w:gz") as tar:
        data = b"chat.example\n"
        real = tarfile.TarInfo("blacklists/chat/domains.real")
        real.size = len(data)
        tar.addfile(real, io.BytesIO(data))
        link = tarfile.TarInfo("blacklists/chat/domains")
        link.type = tarfile.SYMTYPE
        link.linkname = "domains.real"
        tar.addfile(link)
    with open(tb2, "rb") as f:
        assert parse_ut1_tarball(f, "chat") == (["chat.example"], [])

    with open(tb, "rb") as f, pytest.raises(BlocklistUpdateError, match="no dating/domains"):
        parse_ut1_tarball(f, "dating")
    with pytest.raises(BlocklistUpdateError):
        parse_ut1_tarball(io.BytesIO(b"not a tarball"), "adult")


def test_update_blocklist_from_local_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _make_tarball(
        mirror / "adult.tar.gz", "adult", "porn.example\nshared.example\n", "pics.example/nsfw\n"
    )
    _make_tarball(mirror / "phishing.tar.gz", "phishing", "phish.example\nshared.example\n", None)
    dest = tmp_path / "lists"
    out = update_blocklist(
        dest, ["adult", "phishing"], base_url=mirror.as_uri() + "/{category}.tar.gz"
    )
    assert out == dest
    with lzma.open(dest / "ut1-domains.txt.xz", "rt") as f:
        assert f.read().split() == ["phish.example", "porn.example", "shared.example"]
    with gzip.open(dest / "ut1-urls.txt.gz", "rt") as f:
        assert f.read().split() == ["pics.example/nsfw"]

    monkeypatch.setenv("REFINE_CACHE_DIR", str(tmp_path / "cache"))
    f = URLFilter(URLFilterConfig(blocklist_path=str(dest), use_url_words=False)).load()
    assert _apply(f, "https://x.phish.example/")[0] == "blocklisted_domain"
    assert _apply(f, "https://pics.example/nsfw/1.jpg")[0] == "blocklisted_url"
    assert _apply(f, "http://0-secure-paypal.com/")[0] is None


def test_update_blocklist_errors(tmp_path):
    with pytest.raises(BlocklistUpdateError, match="adult"):
        update_blocklist(
            tmp_path / "out",
            ["adult"],
            base_url=(tmp_path / "missing").as_uri() + "/{category}.tar.gz",
        )
    assert not (tmp_path / "out" / "ut1-domains.txt.xz").exists()
    with pytest.raises(ValueError):
        update_blocklist(tmp_path / "out", ["../etc"])
    assert FINEWEB_UT1_CATEGORIES[0] == "adult"
    # the update API stays importable from refine.blocklist
    assert blocklist.update_blocklist is update_blocklist
    assert blocklist.BlocklistUpdateError is BlocklistUpdateError


def test_cli_blocklist_update_and_build_cache(tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _make_tarball(mirror / "chat.tar.gz", "chat", "chat.example\nwww.talk.example\n", None)
    base_url = mirror.as_uri() + "/{category}.tar.gz"
    dest = tmp_path / "lists"
    update = ["blocklist", "update", "--dest", str(dest), "--base-url", base_url]
    assert cli.main([*update, "--categories", "chat"]) == cli.EXIT_OK
    assert f"wrote {dest}" in capsys.readouterr().out
    with lzma.open(dest / "ut1-domains.txt.xz", "rt") as f:
        assert f.read().split() == ["chat.example", "talk.example"]

    assert cli.main([*update, "--categories", "dating"]) == cli.EXIT_ERROR  # not in the mirror
    assert "error:" in capsys.readouterr().err

    monkeypatch.setenv("REFINE_CACHE_DIR", str(tmp_path / "cache"))
    reset_loaded_blocklists()
    assert cli.main(["blocklist", "build-cache", str(dest)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("2 domains, cache ") and " built in " in out
    assert str(tmp_path / "cache") in out
    reset_loaded_blocklists()
    assert cli.main(["blocklist", "build-cache", str(dest)]) == cli.EXIT_OK
    assert " reused in " in capsys.readouterr().out
    reset_loaded_blocklists()


def test_unwritable_cache_dir_falls_back_to_memory(tmp_path):
    src = tmp_path / "domains.txt"
    src.write_text("bad.example\n")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    d = DomainBlocklist.load(src, cache_dir=not_a_dir / "cache")
    assert d.built and d.cache_files is None
    assert d.contains_host("www.bad.example") and not d.contains_host("good.example")
    reset_loaded_blocklists()


# --- the fast cache builder (refine.blocklist_build) ------------------------------------------


def _reference_arrays(src: Path):
    """The cache arrays as the reference implementation builds them (the pre-JIT code path)."""
    with blocklist._open_text(src) as f:
        return blocklist._hash_domains(d for d in map(blocklist.normalize_domain, f) if d)


def _tricky_list(n: int, seed: int = 7) -> bytes:
    """~n lines: plain names plus every kind of line the kernel must leave to Python or take
    only lowercased, CRLF and bare CR line ends, and invalid UTF-8."""
    rnd = random.Random(seed)
    special = [
        b"WWW.Upper.Example", b"www.example.com", b"www.com", b"wwww.example", b"*.wild.example",
        b".lead.example", b"trail.example.", b"a..b", b"-a.b", b"a.-b", b"a-.b", b"_srv.example",
        b"#comment", b"  spaced.example\t", b"b\xc3\xbccher.example", b"xn--bcher-kva.example",
        b"[2001:DB8::1]", b"10.1.2.3", b"bad\xffutf8.example", b"\xef\xbb\xbfbom.example",
        b"x" * 128, b"y" * 129 + b".example", b"a\x0bb.example", b"", b"UPPER.EXAMPLE",
    ]
    chars = rnd.choices(b"abcdefghijklmnopqrstuvwxyz0123456789-.", k=70 * n)
    ends = rnd.choices([b"\n"] * 8 + [b"\r\n", b"\r"], k=n)
    lines = []
    at = 0
    for i in range(n):
        if i % 10 == 0:
            lines.append(rnd.choice(special))
        else:
            size = rnd.randint(1, 135)  # every length of one blake2b block, and longer
            lines.append(bytes(chars[at : at + size]))
            at += size
        lines.append(ends[i])
    return b"".join(lines)


@pytest.fixture
def small_jit(monkeypatch):
    """The JIT path (and threads) for small lists, as for big ones."""
    from refine import blocklist_build

    monkeypatch.setattr(blocklist_build, "_MIN_JIT_BYTES", 1 << 14)
    monkeypatch.setattr(blocklist_build, "_MIN_JIT_FILE_BYTES", 1 << 10)
    return blocklist_build


def _assert_same_arrays(got, expected):
    assert got[0].dtype == expected[0].dtype and got[1].dtype == expected[1].dtype
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


@pytest.fixture(scope="module")
def kernels():
    """The kernel for this CPU (AVX2 where it has it), and for a baseline CPU of its
    architecture (x86-64: SSE2 only), as on a machine without AVX2."""
    from refine import blocklist_build

    host = blocklist_build.kernel()
    assert host is not None  # llvmlite comes with numba
    return {"host": host, "baseline": blocklist_build._compile(cpu="generic", features="")}


@pytest.mark.parametrize("cpu", ["host", "baseline"])
def test_kernel_hashes_every_length_like_hashlib(kernels, cpu):
    from refine import blocklist_build

    rnd = random.Random(5)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789_"
    names = [bytes(rnd.choices(alphabet, k=size)) for size in range(1, 129) for _ in range(3)]
    rnd.shuffle(names)  # lengths mixed in the four lanes
    for count in range(len(names) - 3, len(names) + 1):  # 0..3 lines left in lanes at the end
        hashes, crcs, n, slow = blocklist_build._run(
            kernels[cpu], b"\n".join(names[:count]) + b"\n", False, 1
        )
        digests = [hashlib.blake2b(b, digest_size=8).digest() for b in names[:count]]
        assert n == count and not slow
        assert hashes[:n].tolist() == sorted(int.from_bytes(d, "little") for d in digests)
        assert crcs[:n].tolist() == [zlib.crc32(b) for b in names[:count]]


@pytest.mark.parametrize("cpu", ["host", "baseline"])
def test_fast_builder_matches_reference_on_tricky_lists(tmp_path, small_jit, kernels, cpu,
                                                        monkeypatch):
    blocklist_build = small_jit
    monkeypatch.setattr(blocklist_build, "_KERNEL", [kernels[cpu]])
    data = _tricky_list(8000)
    for name, payload in [("d.txt", data), ("d.txt.gz", gzip.compress(data)),
                          ("d.txt.xz", lzma.compress(data, preset=0))]:
        src = tmp_path / name
        src.write_bytes(payload)
        expected = _reference_arrays(src)
        assert expected[0].size > 5000
        _assert_same_arrays(blocklist_build.build_domain_arrays(src, threads=3), expected)
    packed = tmp_path / "d.fc.zst"
    blocklist_build.write_packed_list(src, packed)
    names = blocklist_build.read_packed(blocklist._file_sha256(src), packed)
    _assert_same_arrays(blocklist_build._from_packed(kernels[cpu], names, 3), expected)
    # the kernel's own answer, before Python handles the lines it left
    hashes, crcs, slow = blocklist_build.hash_lines(b"Abc.Example\nwww.x.example\n\n#c\na.-b\n")
    assert hashes.size == crcs.size == 2 and slow == [b"www.x.example", b"#c"]
    assert sorted(crcs.tolist()) == sorted([zlib.crc32(b"abc.example"), zlib.crc32(b"a.-b")])
    blake = [hashlib.blake2b(b, digest_size=8).digest() for b in [b"abc.example", b"a.-b"]]
    assert hashes.tolist() == sorted(int.from_bytes(d, "little") for d in blake)


def test_fast_builder_small_lists_and_no_kernel(tmp_path, monkeypatch):
    from refine import blocklist_build

    src = tmp_path / "d.txt"
    src.write_bytes(_tricky_list(3000))  # small: the reference implementation itself
    calls = []
    monkeypatch.setattr(blocklist_build, "kernel", lambda: calls.append(1))
    _assert_same_arrays(blocklist_build.build_domain_arrays(src), _reference_arrays(src))
    assert not calls  # not even compiled
    monkeypatch.undo()
    monkeypatch.setattr(blocklist_build, "_MIN_JIT_BYTES", 1 << 14)
    monkeypatch.setattr(blocklist_build, "_KERNEL", [None])  # as without llvmlite
    _assert_same_arrays(blocklist_build.build_domain_arrays(src), _reference_arrays(src))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"# nothing\n")
    hashes, bitmap = blocklist_build.build_domain_arrays(empty)
    assert hashes.size == 0 and bitmap.size == blocklist._MIN_BITMAP_BITS // 8


def test_packed_list_round_trip(tmp_path, monkeypatch, caplog, small_jit):
    blocklist_build = small_jit
    data = _tricky_list(8000, seed=11)
    src = tmp_path / "d.txt.xz"
    src.write_bytes(lzma.compress(data, preset=0))
    expected = _reference_arrays(src)
    packed = tmp_path / "d.fc.zst"
    blocklist_build.write_packed_list(src, packed)
    sha = blocklist._file_sha256(src)
    assert blocklist_build.packed_matches(sha, packed)
    assert blocklist_build.read_packed("0" * 64, packed) is None  # another list
    names = blocklist_build.read_packed(sha, packed)
    assert names.names == expected[0].size and names.long_names  # some over 128 bytes
    k = blocklist_build.kernel()
    _assert_same_arrays(blocklist_build._from_packed(k, names, 3), expected)
    restarts = blocklist_build.front_code([b"a.b", b"a.c", b"a.cd", b"b"], restart=2)
    assert restarts == b"\x00a.b\n\x02c\n\x00a.cd\n\x00b\n"
    # build_domain_arrays uses it for that list, and survives a corrupt one
    monkeypatch.setattr(blocklist_build, "PACKED_DOMAINS", packed)
    from_packed, used = blocklist_build._from_packed, []
    monkeypatch.setattr(blocklist_build, "_from_packed",
                        lambda *args: used.append(1) or from_packed(*args))
    _assert_same_arrays(blocklist_build.build_domain_arrays(src), expected)
    assert used
    raw = packed.read_bytes()
    packed.write_bytes(raw[:-1000])  # truncated zstd frame
    _assert_same_arrays(blocklist_build.build_domain_arrays(src), expected)
    head, _, rest = raw.partition(b"\n")
    for wrong in [b"names=1", b"crc32=1"]:  # the count of names, the checksum
        packed.write_bytes(head.replace(wrong[:-1], wrong) + b"\n" + rest)
        _assert_same_arrays(blocklist_build.build_domain_arrays(src), expected)
    assert "ignoring packed domain list" in caplog.text
    # malformed front coding: a prefix longer than the name before, an unterminated line
    for bad in [b"\x05abc\n", b"\x00abc", b"\x00\n", b"\x00" + b"a" * 129 + b"\n"]:
        with pytest.raises(ValueError, match="malformed"):
            blocklist_build._run(k, bad, True, 1)


def test_packaged_packed_list_is_the_packaged_list(url_filter):
    """The packed copy holds exactly the packaged .xz list's names (same sha256, same arrays
    as the kernel makes of the .xz text); the session cache was built from it."""
    from refine import blocklist_build

    sha = blocklist._file_sha256(PACKAGED_DOMAINS)
    assert blocklist_build.packed_matches(sha), "run: python -m refine.blocklist_build"
    domains = DomainBlocklist.load()
    text = blocklist_build._read_list_bytes(PACKAGED_DOMAINS)
    from_xz = blocklist_build._from_text(blocklist_build.kernel(), text, 2)
    assert np.array_equal(np.asarray(domains._hashes), from_xz[0])
    assert np.array_equal(np.asarray(domains._bitmap), from_xz[1])
    # independently of the kernel: ~20k lines of the .xz list, normalised, crc32 and blake2b
    # by zlib and hashlib (DomainBlocklist.__contains__), are all in it
    step = len(text) // 20000
    sample = []
    for at in range(0, len(text) - step, step):
        lo = text.index(b"\n", at) + 1
        sample.append(text[lo : text.index(b"\n", lo)].decode())
    assert all(line in domains for line in sample if blocklist.normalize_domain(line))


_NEW_MACHINE_CHILD = """
from refine.blocklist import DomainBlocklist
d = DomainBlocklist.load()
print(len(d), d.contains_host("login.0-secure-paypal.com"), d.built, d.cache_files[0])
"""


@pytest.mark.slow
def test_new_machine_two_processes_build_the_default_cache(tmp_path, url_filter):
    """No ~/.cache/refine yet, no REFINE_CACHE_DIR, two workers at once: one builds the cache
    (from the package alone), the other waits for it; both get the session cache's bytes."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "REFINE_CACHE_DIR"}
    env["HOME"] = str(home)
    procs = [
        subprocess.Popen([sys.executable, "-c", _NEW_MACHINE_CHILD], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    session = DomainBlocklist.load()
    assert all(out[:2] == [str(len(session)), "True"] for out in outs)
    assert sorted(out[2] for out in outs) == ["False", "True"]  # built once
    cache = home / ".cache" / "refine"
    assert {out[3] for out in outs} == {str(cache / session.cache_files[0].name)}
    assert sorted(f.name for f in cache.iterdir() if not f.name.endswith(".lock")) == sorted(
        f.name for f in session.cache_files)
    for f in session.cache_files:
        assert (cache / f.name).read_bytes() == f.read_bytes()
