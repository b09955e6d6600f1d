"""Fetch current lists from UT1 (Université Toulouse Capitole) into a blocklist directory.

The directory gets ``ut1-domains.txt.xz`` and ``ut1-urls.txt.gz``, the layout of the packaged
lists, so it can be passed wherever a blocklist path is taken (``url.blocklist_path``,
`DomainBlocklist.load`, `UrlBlocklist.load`).
"""

from __future__ import annotations

import gzip
import io
import logging
import lzma
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from refine.atomic_file import atomic_write
from refine.urlnorm import normalize_domain, normalize_url_entry

log = logging.getLogger(__name__)

DOMAINS_FILENAME = "ut1-domains.txt.xz"
URLS_FILENAME = "ut1-urls.txt.gz"

#: The UT1 categories FineWeb's URL filter blocks.
FINEWEB_UT1_CATEGORIES: tuple[str, ...] = (
    "adult",
    "phishing",
    "dating",
    "gambling",
    "filehosting",
    "ddos",
    "hate",
    "chat",
    "mixed_adult",
    "arjel",
)
UT1_DOWNLOAD_URL = "https://dsi.ut-capitole.fr/blacklists/download/{category}.tar.gz"

_CATEGORY_RE = re.compile(r"[a-z0-9_\-]+")


class BlocklistUpdateError(RuntimeError):
    """Downloading or unpacking a UT1 category failed."""


def parse_ut1_tarball(fileobj: IO[bytes], category: str) -> tuple[list[str], list[str]]:
    """Read ``<category>/domains`` and ``<category>/urls`` from a UT1 category tarball.

    Returns ``(domains, urls)`` normalised (invalid and comment lines dropped). Members may sit
    under extra leading directories (``blacklists/adult/domains``) and may be symlinks inside
    the archive; nothing is extracted to disk. A tarball without a ``domains`` member for the
    category raises `BlocklistUpdateError`; a missing ``urls`` member gives an empty list.
    """
    found: dict[str, list[str]] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            for member in tar.getmembers():
                parts = [p for p in member.name.replace("\\", "/").split("/") if p not in ("", ".")]
                if len(parts) < 2 or parts[-2] != category or parts[-1] not in ("domains", "urls"):
                    continue
                if not (member.isfile() or member.issym() or member.islnk()):
                    continue
                f = tar.extractfile(member)  # follows in-archive links
                if f is None:
                    continue
                with f:
                    text = io.TextIOWrapper(f, encoding="utf-8", errors="replace")
                    norm = normalize_domain if parts[-1] == "domains" else normalize_url_entry
                    found[parts[-1]] = [x for x in map(norm, text) if x]
    except (tarfile.TarError, EOFError, OSError, KeyError) as e:
        raise BlocklistUpdateError(f"bad UT1 tarball for category {category!r}: {e}") from e
    if "domains" not in found:
        raise BlocklistUpdateError(f"UT1 tarball has no {category}/domains member")
    return found["domains"], found.get("urls", [])


def _download(url: str, dest: IO[bytes], timeout: float) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "refine-blocklist-updater/1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = getattr(resp, "status", None)
            if status is not None and status >= 400:
                raise BlocklistUpdateError(f"downloading {url}: HTTP {status}")
            while chunk := resp.read(1 << 20):
                dest.write(chunk)
    except urllib.error.HTTPError as e:
        raise BlocklistUpdateError(f"downloading {url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise BlocklistUpdateError(
            f"downloading {url} failed ({e.reason}); is this machine online? "
            "Download the tarballs elsewhere and pass base_url='file:///dir/{category}.tar.gz'"
        ) from e
    except (TimeoutError, OSError) as e:
        raise BlocklistUpdateError(f"downloading {url} failed: {e}") from e


def update_blocklist(
    dest_dir: str | os.PathLike[str],
    categories: Iterable[str] = FINEWEB_UT1_CATEGORIES,
    *,
    base_url: str = UT1_DOWNLOAD_URL,
    timeout: float = 120.0,
) -> Path:
    """Download UT1 category tarballs and write ``ut1-domains.txt.xz`` and ``ut1-urls.txt.gz``.

    ``base_url`` is formatted with ``category=`` (a ``file://`` template works offline).
    All categories are fetched and parsed before anything is written; each output file is
    replaced atomically. Returns `dest_dir`. Raises `BlocklistUpdateError` on failure.
    """
    cats = list(dict.fromkeys(categories))
    if not cats:
        raise ValueError("no categories given")
    for c in cats:
        if not _CATEGORY_RE.fullmatch(c):
            raise ValueError(f"invalid UT1 category name {c!r}")
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    domains: set[str] = set()
    urls: set[str] = set()
    for cat in cats:
        url = base_url.format(category=cat)
        log.info("downloading UT1 category %s from %s", cat, url)
        with tempfile.TemporaryFile() as tmp:
            _download(url, tmp, timeout)
            tmp.seek(0)
            d, u = parse_ut1_tarball(tmp, cat)  # type: ignore[arg-type]
        log.info("UT1 %s: %d domains, %d urls", cat, len(d), len(u))
        domains.update(d)
        urls.update(u)
    dom_bytes = ("\n".join(sorted(domains)) + "\n").encode()
    url_bytes = ("\n".join(sorted(urls)) + "\n").encode() if urls else b""
    with atomic_write(dest / DOMAINS_FILENAME) as f:
        f.write(lzma.compress(dom_bytes, preset=6))
    with atomic_write(dest / URLS_FILENAME) as f:
        f.write(gzip.compress(url_bytes, mtime=0))
    return dest
