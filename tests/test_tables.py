"""Per-code-point lookup tables cached on disk (`refine.dedup.tables`): written once, loaded
identical, rebuilt when the file is bad, built in memory when the cache dir is unusable."""

import logging
import os

import numpy as np
import pytest

from refine.dedup import textkernels, windows
from refine.dedup.tables import TABLE_SHAPE, table_dir

# (public cached function, undecorated builder)
TABLES = {
    "code_point_classes": (textkernels.code_point_classes,
                           textkernels._build_code_point_classes),
    "char_classes": (windows.char_classes, windows._build_char_classes),
}


@pytest.fixture(scope="module")
def built():
    """Each table as built from scratch, no cache involved."""
    return {name: build() for name, (_, build) in TABLES.items()}


def _load_uncached(name):
    """The public function without its per-process memo: cache file or build, every call."""
    return TABLES[name][0].__wrapped__()


@pytest.mark.parametrize("name", TABLES)
def test_first_call_writes_the_file_and_a_new_load_returns_the_same_table(
        name, built, tmp_path, monkeypatch):
    monkeypatch.setenv("REFINE_CACHE_DIR", str(tmp_path))
    first = _load_uncached(name)
    files = list(table_dir().glob(f"{name}-*.npy"))
    assert len(files) == 1
    assert table_dir() == tmp_path / "tables"
    assert first.dtype == np.uint8 and first.shape == TABLE_SHAPE == (0x110000,)
    np.testing.assert_array_equal(first, built[name])
    assert list(tmp_path.joinpath("tables").iterdir()) == files  # no temp file left behind

    mtime = files[0].stat().st_mtime_ns
    second = _load_uncached(name)
    np.testing.assert_array_equal(second, built[name])
    np.testing.assert_array_equal(np.load(files[0], allow_pickle=False), built[name])
    assert files[0].stat().st_mtime_ns == mtime  # loaded, not rewritten

    TABLES[name][0].cache_clear()  # the public function goes through the same file
    try:
        np.testing.assert_array_equal(TABLES[name][0](), built[name])
    finally:
        TABLES[name][0].cache_clear()


@pytest.mark.parametrize("name", TABLES)
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "wrong shape"])
def test_a_bad_cache_file_is_replaced(name, damage, built, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("REFINE_CACHE_DIR", str(tmp_path))
    _load_uncached(name)
    (path,) = table_dir().glob(f"{name}-*.npy")
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"not a numpy file at all" * 100)
    else:
        np.save(path, built[name][:1000], allow_pickle=False)

    with caplog.at_level(logging.WARNING, logger="refine.dedup.tables"):
        table = _load_uncached(name)
    np.testing.assert_array_equal(table, built[name])
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == good  # rewritten whole
    np.testing.assert_array_equal(_load_uncached(name), built[name])


@pytest.mark.parametrize("name", TABLES)
def test_an_unusable_cache_dir_still_gives_the_table(name, built, tmp_path, monkeypatch):
    # A regular file where the cache directory should be: no directory can be made under it,
    # even as root (chmod would not stop root).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("REFINE_CACHE_DIR", str(blocker))
    np.testing.assert_array_equal(_load_uncached(name), built[name])
    assert blocker.is_file() and blocker.read_text() == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.parametrize("name", TABLES)
def test_a_read_only_cache_dir_still_gives_the_table(name, built, tmp_path, monkeypatch):
    monkeypatch.setenv("REFINE_CACHE_DIR", str(tmp_path))
    table_dir().mkdir()
    table_dir().chmod(0o500)
    try:
        np.testing.assert_array_equal(_load_uncached(name), built[name])
        assert list(table_dir().iterdir()) == []
    finally:
        table_dir().chmod(0o700)
