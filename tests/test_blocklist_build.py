"""The fast cache builder (refine.blocklist_build): its compiled kernel against hashlib/zlib and
the reference implementation, the packed (front-coded) list, and the packaged packed list.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import random
import zlib
from pathlib import Path

import numpy as np
import pytest

from refine import blocklist
from refine.blocklist import PACKAGED_DOMAINS, DomainBlocklist

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
