"""Updating the blocklists from UT1 (refine.blocklist_update and `refine blocklist`): parsing
UT1 tarballs, writing the lists from a local mirror, errors, and the CLI.
"""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from pathlib import Path

import pytest

from refine import blocklist, cli
from refine.blocklist import reset_loaded_blocklists
from refine.blocklist_update import (
    FINEWEB_UT1_CATEGORIES,
    BlocklistUpdateError,
    parse_ut1_tarball,
    update_blocklist,
)
from refine.filters.url import URLFilter, URLFilterConfig

from .url_helpers import _apply

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
