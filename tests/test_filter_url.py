"""URLFilter and the UT1 blocklists, on the real packaged lists.

The packaged UT1 domain list (4.56M domains) is hashed into the session's cache dir
(REFINE_CACHE_DIR, set by conftest) the first time a test needs it: ~15 s on a 2-core box,
once per session; loading it from the cache afterwards takes ~10 ms (memory-mapped).
Tests of cache behaviour use small temporary lists and their own cache dirs.
"""

from __future__ import annotations

import gzip
import io
import itertools
import lzma
import multiprocessing
import pickle
import tarfile
import time
from pathlib import Path

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
