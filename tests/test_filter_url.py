"""URLFilter (refine.filters.url) on the real packaged UT1 lists: blocked domains and URLs, URL
words, excluded domains, invalid URLs, switches, pickling and its config.

The packaged UT1 domain list (4.56M domains) is hashed into the session's cache dir
(REFINE_CACHE_DIR, set by conftest) the first time a test needs it: ~2 s on a 2-core box,
once per session; loading it from the cache afterwards takes ~10 ms (memory-mapped).
The `url_filter` fixture (URLFilter with its default config) is in conftest.
"""

from __future__ import annotations

import gzip
import itertools
import lzma
import pickle

import pytest
from pydantic import ValidationError

from refine.blocklist import PACKAGED_DOMAINS, PACKAGED_URLS
from refine.filters.url import DEFAULT_EXCLUDED_DOMAINS, URLFilter, URLFilterConfig

from .url_helpers import _apply


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
