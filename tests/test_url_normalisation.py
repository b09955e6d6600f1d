"""URL normalisation (refine.urlnorm.split_url) and how the blocklists match normalised hosts
and URLs: IDNA and punycode, IP addresses, path boundaries.
"""

from __future__ import annotations

import pytest

from refine.blocklist import DomainBlocklist, UrlBlocklist
from refine.urlnorm import split_url

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
