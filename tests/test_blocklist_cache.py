"""The domain blocklist's on-disk cache (refine.blocklist): built once, reused by new workers,
rebuilt when the list changes or the cache is corrupt, safe under concurrent builders, in
memory when the cache dir is unwritable. Small temporary lists and their own cache dirs,
except the last test, which builds the packaged list's cache on a "new machine".
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from refine.blocklist import DomainBlocklist, reset_loaded_blocklists
from refine.filters.url import URLFilter, URLFilterConfig

from .url_helpers import _apply

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


def test_unwritable_cache_dir_falls_back_to_memory(tmp_path):
    src = tmp_path / "domains.txt"
    src.write_text("bad.example\n")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    d = DomainBlocklist.load(src, cache_dir=not_a_dir / "cache")
    assert d.built and d.cache_files is None
    assert d.contains_host("www.bad.example") and not d.contains_host("good.example")
    reset_loaded_blocklists()


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
