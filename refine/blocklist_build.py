"""Fast builder of the domain blocklist's cache arrays (`refine.blocklist`): a JIT-compiled
hashing kernel, and a packaged, pre-normalised copy of the UT1 list.

The cache holds, for every normalised domain, ``blake2b(name, digest_size=8)`` (sorted,
unique) and one bit per ``crc32(name)`` in a bitmap. The reference implementation,
`refine.blocklist._hash_domains` (`refine.urlnorm.normalize_domain`, hashlib and zlib per
line), takes ~30 s for the 4.56M names of the packaged list; this module computes the same
arrays, bit for bit, in ~2 s of CPU:

* **The kernel** (`hash_lines`), written in LLVM IR below and compiled at first use (~0.15 s)
  by llvmlite, the code generator numba is built on (numba itself needs ~3 s to compile an
  equivalent kernel, and a new machine has no numba cache). It splits a buffer into lines
  and takes each line whose `normalize_domain` is its ASCII lowercasing (``[a-z0-9_]`` then
  ``[a-z0-9_-]`` labels joined by single dots, no ``www.`` prefix, at most 128 bytes: nearly
  every line of a list): the crc32 (slicing by 8) and the blake2b of the lowercased line, four
  lines at a time in SIMD lanes (one 128-byte block each; AVX2 where the CPU has it, see
  `_compile`). The other lines go back to Python, which normalises and hashes them as the
  reference does. ~0.2 µs a line; it releases the GIL, so threads hash ranges of the list in
  parallel.
* **The packed list** `PACKED_DOMAINS` (``ut1-domains.fc.zst``, 5.1 MB): the normalised,
  sorted, unique names of the packaged ``ut1-domains.txt.xz``, front-coded (`front_code`;
  the kernel decodes it as it hashes) and zstd-compressed (pyarrow's codec), tagged with the
  sha256 of the ``.xz`` file. It decompresses in ~0.1 s, where the ``.xz`` list takes
  ~1.8 s, and needs no normalisation. It is used only for a list file with that sha256; any
  other list (``refine blocklist update``, ``url.blocklist_path``) is read and normalised
  itself. Regenerate it when the packaged list changes: ``python -m refine.blocklist_build``
  (a test checks the sha256).

Where there is no kernel (no llvmlite, a big-endian machine, a failed compilation),
`build_domain_arrays` falls back to the reference implementation (~30 s for the packaged
list), as it does for list files under 1 MB (64 KB compressed), for which compiling would
cost more than it saves.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import hashlib
import itertools
import logging
import lzma
import os
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from refine.atomic_file import atomic_write
from refine.blocklist import (
    DATA_DIR,
    PACKAGED_DOMAINS,
    _bitmap_bits,
    _file_sha256,
    _hash_domains,
    _open_text,
)
from refine.urlnorm import normalize_domain

__all__ = [
    "PACKED_DOMAINS",
    "build_domain_arrays",
    "front_code",
    "hash_lines",
    "kernel",
    "write_packed_list",
]

log = logging.getLogger(__name__)

PACKED_DOMAINS = DATA_DIR / "ut1-domains.fc.zst"
_PACKED_MAGIC = b"refine-domains-fc-zstd-v1"

# List files smaller than _MIN_JIT_BYTES (_MIN_JIT_FILE_BYTES compressed) are hashed by the
# reference implementation (~5 µs a line): the JIT compilation (~0.15 s) would cost more than
# it saves. Text smaller than _MIN_JIT_BYTES is hashed in one thread.
_MIN_JIT_BYTES = 1 << 20
_MIN_JIT_FILE_BYTES = 1 << 16
_MAX_THREADS = 8
_T = TypeVar("_T")

# ---------------------------------------------------------------------------------------------
# The kernel: LLVM IR
# ---------------------------------------------------------------------------------------------

_IV = (
    0x6A09E667F3BCC908,
    0xBB67AE8584CAA73B,
    0x3C6EF372FE94F82B,
    0xA54FF53A5F1D36F1,
    0x510E527FADE682D1,
    0x9B05688C2B3E6C1F,
    0x1F83D9ABFB41BD6B,
    0x5BE0CD19137E2179,
)
# h[0] of an unkeyed 8-byte digest: IV[0] ^ (digest_length | key_length << 8 | fanout << 16 |
# depth << 24)
_H0 = _IV[0] ^ 0x01010008
_SIGMA = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
)
_V = "<4 x i64>"

# ---------------------------------------------------------------------------------------------
# hash_lines and set_bits: written by hand (compress4 and the crc32 step: generated)

_KERNEL_IR = r"""
; void hash_lines(buf, lo, hi, front, out_hash, out_crc, slow, counts, crctab, cls, lower)
;
; The lines of buf[lo:hi], lo at a line start. Each line is first put into `cur`:
; * front == 0: a list line. Read a byte at a time, classified through `cls` and lowercased
;   through `lower` (the tables of `_verify_tables`). It is taken if normalize_domain is its
;   lowercasing: only [a-z0-9_-] and dots, the first byte a letter, digit or "_", no ".."
;   or trailing dot, no "www." prefix, at most 128 bytes. Otherwise its span goes to
;   slow[2k], slow[2k + 1] for Python. Empty lines are skipped.
; * front != 0: front-coded names (`front_code`): a byte, the length of the prefix shared
;   with the line before (kept in `cur`), then the rest of the line. All are taken; a
;   malformed line (a prefix longer than the line before, an empty or unterminated line, one
;   over 128 bytes) stops the kernel with counts[0] = -1.
; Then a taken line's 8-byte words go into its lane of `scratch` (word i of lane l at
; i * 4 + l, so that compress4 hashes the four lanes' messages as vectors) and through crc32;
; out_hash[n] <- its blake2b, out_crc[n] <- its crc32, n counting the taken lines. At the end
; counts <- (n, k).
define void @hash_lines(ptr noalias %buf, i64 %lo, i64 %hi, i64 %front, ptr noalias %out_hash,
                        ptr noalias %out_crc, ptr noalias %slow, ptr noalias %counts,
                        ptr noalias %crctab, ptr noalias %cls, ptr noalias %lower) {
entry:
  %scratch = alloca [64 x i64], align 32
  %cur = alloca [144 x i8], align 8
  %lane_idx = alloca [4 x i64], align 32
  %lane_len = alloca [4 x i64], align 32
  %p.a = alloca i64
  %nok.a = alloca i64
  %k.a = alloca i64
  %lane.a = alloca i64
  %len.a = alloca i64
  %bad.a = alloca i64
  %pdot.a = alloca i64
  %prevlen.a = alloca i64
  store i64 %lo, ptr %p.a
  store i64 0, ptr %nok.a
  store i64 0, ptr %k.a
  store i64 0, ptr %lane.a
  store i64 0, ptr %prevlen.a
  %isfront = icmp ne i64 %front, 0
  br label %line_head

line_head:
  %p = load i64, ptr %p.a
  %done = icmp sge i64 %p, %hi
  br i1 %done, label %flush, label %line_start
line_start:
  br i1 %isfront, label %fc_start, label %v_start

; ---- front-coded: cur[keep:] <- the rest of the line
fc_start:
  %kp = getelementptr inbounds i8, ptr %buf, i64 %p
  %k8 = load i8, ptr %kp
  %keep = zext i8 %k8 to i64
  %prevlen = load i64, ptr %prevlen.a
  %bad_keep = icmp ugt i64 %keep, %prevlen
  %p1 = add i64 %p, 1
  br i1 %bad_keep, label %error, label %fc_head
fc_head:
  %fe = phi i64 [%p1, %fc_start], [%fe.next, %fc_body]
  %fo = phi i64 [%keep, %fc_start], [%fo.next, %fc_body]
  %fend = icmp sge i64 %fe, %hi
  br i1 %fend, label %error, label %fc_byte
fc_byte:
  %fbp = getelementptr inbounds i8, ptr %buf, i64 %fe
  %fb = load i8, ptr %fbp
  %fnl = icmp eq i8 %fb, 10
  br i1 %fnl, label %fc_done, label %fc_check
fc_check:
  %ffull = icmp uge i64 %fo, 128
  br i1 %ffull, label %error, label %fc_body
fc_body:
  %fcp = getelementptr inbounds i8, ptr %cur, i64 %fo
  store i8 %fb, ptr %fcp
  %fe.next = add i64 %fe, 1
  %fo.next = add i64 %fo, 1
  br label %fc_head
fc_done:
  store i64 %fo, ptr %prevlen.a
  %fp.next = add i64 %fe, 1
  store i64 %fp.next, ptr %p.a
  store i64 %fo, ptr %len.a
  %fempty = icmp eq i64 %fo, 0
  br i1 %fempty, label %error, label %words

; ---- a list line: cur <- it, lowercased, while classifying its bytes
v_start:
  store i64 0, ptr %bad.a
  store i64 0, ptr %pdot.a
  br label %v_head
v_head:
  %ve = phi i64 [%p, %v_start], [%ve.next, %v_next]
  %vend = icmp sge i64 %ve, %hi
  br i1 %vend, label %v_done, label %v_byte
v_byte:
  %vbp = getelementptr inbounds i8, ptr %buf, i64 %ve
  %vb = load i8, ptr %vbp
  %vnl = icmp eq i8 %vb, 10
  br i1 %vnl, label %v_done, label %v_body
v_body:
  %vbi = zext i8 %vb to i64
  %clp = getelementptr inbounds i8, ptr %cls, i64 %vbi
  %c = load i8, ptr %clp
  %c64 = zext i8 %c to i64
  %isdot.s = lshr i64 %c64, 2
  %isdot = and i64 %isdot.s, 1
  %iszero = icmp eq i64 %c64, 0
  %iszero64 = zext i1 %iszero to i64
  %pdot = load i64, ptr %pdot.a
  %dotdot = and i64 %pdot, %isdot
  %bad = load i64, ptr %bad.a
  %bad1 = or i64 %bad, %iszero64
  %bad2 = or i64 %bad1, %dotdot
  store i64 %bad2, ptr %bad.a
  store i64 %isdot, ptr %pdot.a
  %vj = sub i64 %ve, %p
  %vfits = icmp ult i64 %vj, 128
  br i1 %vfits, label %v_store, label %v_next
v_store:
  %lwp = getelementptr inbounds i8, ptr %lower, i64 %vbi
  %lb = load i8, ptr %lwp
  %vcp = getelementptr inbounds i8, ptr %cur, i64 %vj
  store i8 %lb, ptr %vcp
  br label %v_next
v_next:
  %ve.next = add i64 %ve, 1
  br label %v_head
v_done:
  %len = sub i64 %ve, %p
  %vp.next = add i64 %ve, 1
  store i64 %vp.next, ptr %p.a
  store i64 %len, ptr %len.a
  %empty = icmp eq i64 %len, 0
  br i1 %empty, label %line_head, label %v_check
v_check:
  %bad.f = load i64, ptr %bad.a
  %pdot.f = load i64, ptr %pdot.a
  %b0p = getelementptr inbounds i8, ptr %buf, i64 %p
  %b0 = load i8, ptr %b0p
  %b0i = zext i8 %b0 to i64
  %c0p = getelementptr inbounds i8, ptr %cls, i64 %b0i
  %c0 = load i8, ptr %c0p
  %c0l = and i8 %c0, 1
  %first_bad = icmp eq i8 %c0l, 0
  %first_bad64 = zext i1 %first_bad to i64
  %long = icmp ugt i64 %len, 128
  %long64 = zext i1 %long to i64
  %w4 = load i32, ptr %cur, align 8
  %is_www = icmp eq i32 %w4, 779581303
  %gt4 = icmp ugt i64 %len, 4
  %www = and i1 %is_www, %gt4
  %www64 = zext i1 %www to i64
  %x1 = or i64 %bad.f, %pdot.f
  %x2 = or i64 %x1, %first_bad64
  %x3 = or i64 %x2, %long64
  %x4 = or i64 %x3, %www64
  %ok = icmp eq i64 %x4, 0
  br i1 %ok, label %words, label %reject
reject:
  %k = load i64, ptr %k.a
  %k2 = shl i64 %k, 1
  %sp0 = getelementptr inbounds i64, ptr %slow, i64 %k2
  store i64 %p, ptr %sp0
  %k21 = add i64 %k2, 1
  %sp1 = getelementptr inbounds i64, ptr %slow, i64 %k21
  store i64 %ve, ptr %sp1
  %k.next = add i64 %k, 1
  store i64 %k.next, ptr %k.a
  br label %line_head

; ---- a taken line cur[:len]: its words into the lane, crc32
words:
  %wlen = load i64, ptr %len.a
  %lane = load i64, ptr %lane.a
  %nfull = lshr i64 %wlen, 3
  br label %w_head
w_head:
  %wi = phi i64 [0, %words], [%wi.next, %w_body]
  %crc = phi i32 [-1, %words], [%crc.w, %w_body]
  %wmore = icmp ult i64 %wi, %nfull
  br i1 %wmore, label %w_body, label %tail
w_body:
  %wo = shl i64 %wi, 3
  %wcp = getelementptr inbounds i8, ptr %cur, i64 %wo
  %w = load i64, ptr %wcp, align 1
  %wi4 = shl i64 %wi, 2
  %wil = add i64 %wi4, %lane
  %wsp = getelementptr inbounds i64, ptr %scratch, i64 %wil
  store i64 %w, ptr %wsp, align 8
  %wlo = trunc i64 %w to i32
  %x = xor i32 %crc, %wlo
  %whi64 = lshr i64 %w, 32
  %whi = trunc i64 %whi64 to i32
  ; (generated by _crc_word_ir: slicing by 8, %crc.w from %x and %whi)
  @CRC_WORD@
  %wi.next = add i64 %wi, 1
  br label %w_head
tail:
  ; the last, partial word (zero if len is a multiple of 8), then zero words up to 16
  %ntail = and i64 %wlen, 7
  %to = shl i64 %nfull, 3
  %tcp = getelementptr inbounds i8, ptr %cur, i64 %to
  %tw0 = load i64, ptr %tcp, align 1
  %tbits = shl i64 %ntail, 3
  %tmask1 = shl i64 1, %tbits
  %tmask = sub i64 %tmask1, 1
  %tw = and i64 %tw0, %tmask
  br label %fill_head
fill_head:
  %fi = phi i64 [%nfull, %tail], [%fi.next, %fill_body]
  %fval = phi i64 [%tw, %tail], [0, %fill_body]
  %fmore = icmp ult i64 %fi, 16
  br i1 %fmore, label %fill_body, label %ct_head
fill_body:
  %fi4 = shl i64 %fi, 2
  %fil = add i64 %fi4, %lane
  %fsp = getelementptr inbounds i64, ptr %scratch, i64 %fil
  store i64 %fval, ptr %fsp, align 8
  %fi.next = add i64 %fi, 1
  br label %fill_head
ct_head:
  %ti = phi i64 [0, %fill_head], [%ti.next, %ct_body]
  %crc.t = phi i32 [%crc, %fill_head], [%crc.t2, %ct_body]
  %tmore = icmp ult i64 %ti, %ntail
  br i1 %tmore, label %ct_body, label %accept
ct_body:
  %tsh = shl i64 %ti, 3
  %tb64 = lshr i64 %tw, %tsh
  %tb32 = trunc i64 %tb64 to i32
  %tx = xor i32 %crc.t, %tb32
  %txi = and i32 %tx, 255
  %txi64 = zext i32 %txi to i64
  %ttp = getelementptr inbounds i32, ptr %crctab, i64 %txi64
  %tt = load i32, ptr %ttp
  %crcsh = lshr i32 %crc.t, 8
  %crc.t2 = xor i32 %tt, %crcsh
  %ti.next = add i64 %ti, 1
  br label %ct_head

; ---- queue the line in its lane; hash the four lanes when full
accept:
  %crc.f = xor i32 %crc.t, -1
  %nok = load i64, ptr %nok.a
  %ocp = getelementptr inbounds i32, ptr %out_crc, i64 %nok
  store i32 %crc.f, ptr %ocp
  %lip = getelementptr inbounds i64, ptr %lane_idx, i64 %lane
  store i64 %nok, ptr %lip
  %llp = getelementptr inbounds i64, ptr %lane_len, i64 %lane
  store i64 %wlen, ptr %llp
  %nok.next = add i64 %nok, 1
  store i64 %nok.next, ptr %nok.a
  %lane.next = add i64 %lane, 1
  %full = icmp eq i64 %lane.next, 4
  br i1 %full, label %do4, label %keep_lane
keep_lane:
  store i64 %lane.next, ptr %lane.a
  br label %line_head
do4:
  %tv = load <4 x i64>, ptr %lane_len, align 32
  %hv = call <4 x i64> @compress4(ptr %scratch, <4 x i64> %tv)
  br label %s4_head
s4_head:
  %si = phi i64 [0, %do4], [%si.next, %s4_body]
  %smore = icmp ult i64 %si, 4
  br i1 %smore, label %s4_body, label %s4_done
s4_body:
  %sidxp = getelementptr inbounds i64, ptr %lane_idx, i64 %si
  %sidx = load i64, ptr %sidxp
  %hval = extractelement <4 x i64> %hv, i64 %si
  %ohp = getelementptr inbounds i64, ptr %out_hash, i64 %sidx
  store i64 %hval, ptr %ohp
  %si.next = add i64 %si, 1
  br label %s4_head
s4_done:
  store i64 0, ptr %lane.a
  br label %line_head

; ---- the lines left in lanes (the other lanes' stale words are hashed and ignored)
flush:
  %lane.fl = load i64, ptr %lane.a
  %any = icmp ugt i64 %lane.fl, 0
  br i1 %any, label %flush4, label %finish
flush4:
  %tvf = load <4 x i64>, ptr %lane_len, align 32
  %hvf = call <4 x i64> @compress4(ptr %scratch, <4 x i64> %tvf)
  br label %fl_head
fl_head:
  %gi = phi i64 [0, %flush4], [%gi.next, %fl_body]
  %gmore = icmp ult i64 %gi, %lane.fl
  br i1 %gmore, label %fl_body, label %finish
fl_body:
  %gidxp = getelementptr inbounds i64, ptr %lane_idx, i64 %gi
  %gidx = load i64, ptr %gidxp
  %gval = extractelement <4 x i64> %hvf, i64 %gi
  %gohp = getelementptr inbounds i64, ptr %out_hash, i64 %gidx
  store i64 %gval, ptr %gohp
  %gi.next = add i64 %gi, 1
  br label %fl_head
finish:
  %nok.e = load i64, ptr %nok.a
  store i64 %nok.e, ptr %counts
  %k.e = load i64, ptr %k.a
  %cnt1 = getelementptr inbounds i64, ptr %counts, i64 1
  store i64 %k.e, ptr %cnt1
  ret void
error:
  store i64 -1, ptr %counts
  ret void
}

; void set_bits(crcs, n, mask, bitmap): bitmap[c >> 3] |= 1 << (c & 7), c = crcs[i] & mask
define void @set_bits(ptr noalias %crcs, i64 %n, i64 %mask, ptr noalias %bitmap) {
entry:
  br label %head
head:
  %i = phi i64 [0, %entry], [%i.next, %body]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %body, label %exit
body:
  %cp = getelementptr inbounds i32, ptr %crcs, i64 %i
  %c32 = load i32, ptr %cp
  %c64 = zext i32 %c32 to i64
  %c = and i64 %c64, %mask
  %byte = lshr i64 %c, 3
  %bitno = and i64 %c, 7
  %bit64 = shl i64 1, %bitno
  %bit = trunc i64 %bit64 to i8
  %bp = getelementptr inbounds i8, ptr %bitmap, i64 %byte
  %old = load i8, ptr %bp
  %new = or i8 %old, %bit
  store i8 %new, ptr %bp
  %i.next = add i64 %i, 1
  br label %head
exit:
  ret void
}
"""


def _crc_word_ir() -> str:
    """crc32 of a full 8-byte word, slicing by 8 (``crctab`` holds the 8 tables of
    `_crc_tables`): ``%crc.w = T7[x & 255] ^ T6[x >> 8 & 255] ^ T5[x >> 16 & 255] ^ T4[x >> 24]
    ^ T3[hi & 255] ^ T2[hi >> 8 & 255] ^ T1[hi >> 16 & 255] ^ T0[hi >> 24]``, x = crc ^ the
    word's low half (``%x``), hi = its high half (``%whi``)."""
    lines = []
    terms = []
    for name, src, tables in (("a", "%x", (7, 6, 5, 4)), ("b", "%whi", (3, 2, 1, 0))):
        for i, table in enumerate(tables):
            t = f"{name}{i}"
            lines += [
                f"%cs{t} = lshr i32 {src}, {8 * i}",
                f"%cm{t} = and i32 %cs{t}, 255",
                f"%ci{t} = add i32 %cm{t}, {256 * table}",
                f"%cz{t} = zext i32 %ci{t} to i64",
                f"%cp{t} = getelementptr inbounds i32, ptr %crctab, i64 %cz{t}",
                f"%cv{t} = load i32, ptr %cp{t}",
            ]
            terms.append(f"%cv{t}")
    acc = terms[0]
    for i, term in enumerate(terms[1:]):
        lines.append(f"%cx{i} = xor i32 {acc}, {term}")
        acc = f"%cx{i}"
    lines.append(f"%crc.w = or i32 {acc}, 0")
    return "\n  ".join(lines)


def _i64(x: int) -> int:
    """`x` as LLVM IR writes an i64 constant (signed)."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _splat(x: int) -> str:
    return "<" + ", ".join([f"i64 {_i64(x)}"] * 4) + ">"


def _compress4_ir() -> str:
    """``compress4(m, t)``: blake2b's compression of the last (and only) block of four
    messages at once, ``m`` their 16 message words as vectors (word i of the four at i),
    ``t`` their lengths; returns the first state word, the 8-byte digest, of each. One loop
    iteration per round, which keeps the code small (the JIT compiles it in ~0.1 s)."""
    out: list[str] = []
    count = 0

    def tmp() -> str:
        nonlocal count
        count += 1
        return f"%t{count}"

    def op(name: str, a: str, b: str) -> str:
        r = tmp()
        out.append(f"  {r} = {name} {_V} {a}, {b}")
        return r

    def rotr(x: str, n: int) -> str:
        r = tmp()
        out.append(f"  {r} = call {_V} @llvm.fshr.v4i64({_V} {x}, {_V} {x}, {_V} {_splat(n)})")
        return r

    m = []  # this round's message words, m[sigma[r][k]]
    for k in range(16):
        idx, sp, s, mp, w = tmp(), tmp(), tmp(), tmp(), tmp()
        out += [
            f"  {idx} = add i64 %rbase, {k}",
            f"  {sp} = getelementptr inbounds i64, ptr @sigma, i64 {idx}",
            f"  {s} = load i64, ptr {sp}",
            f"  {mp} = getelementptr inbounds {_V}, ptr %m, i64 {s}",
            f"  {w} = load {_V}, ptr {mp}, align 32",
        ]
        m.append(w)
    v = [f"%v{i}" for i in range(16)]

    def g(a: int, b: int, c: int, d: int, x: str, y: str) -> None:
        v[a] = op("add", op("add", v[a], v[b]), x)
        v[d] = rotr(op("xor", v[d], v[a]), 32)
        v[c] = op("add", v[c], v[d])
        v[b] = rotr(op("xor", v[b], v[c]), 24)
        v[a] = op("add", op("add", v[a], v[b]), y)
        v[d] = rotr(op("xor", v[d], v[a]), 16)
        v[c] = op("add", v[c], v[d])
        v[b] = rotr(op("xor", v[b], v[c]), 63)

    for i, (a, b, c, d) in enumerate(
        [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15)]
        + [(0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)]
    ):
        g(a, b, c, d, m[2 * i], m[2 * i + 1])
    # initial state: h = IV with h[0] ^= the parameter block; v[12] ^= t; v[14] = ~v[14] (the
    # last block)
    init = [_splat(_H0), *(_splat(x) for x in _IV[1:]), *(_splat(x) for x in _IV)]
    init[12] = "%v12.init"
    init[14] = _splat(~_IV[6])
    phis = [f"  %v{i} = phi {_V} [{init[i]}, %entry], [{v[i]}, %round]" for i in range(16)]
    sigma = ", ".join(f"i64 {s}" for r in range(12) for s in _SIGMA[r % 10])
    return "\n".join(
        [
            f"@sigma = internal constant [192 x i64] [{sigma}]",
            f"define internal {_V} @compress4(ptr noalias %m, {_V} %t) {{",
            "entry:",
            f"  %v12.init = xor {_V} {_splat(_IV[4])}, %t",
            "  br label %round",
            "round:",
            "  %r = phi i64 [0, %entry], [%r.next, %round]",
            *phis,
            "  %rbase = mul i64 %r, 16",
            *out,
            "  %r.next = add i64 %r, 1",
            "  %more = icmp ult i64 %r.next, 12",
            "  br i1 %more, label %round, label %exit",
            "exit:",
            f"  %h0 = xor {_V} {v[0]}, {v[8]}",
            f"  %digest = xor {_V} %h0, {_splat(_H0)}",
            f"  ret {_V} %digest",
            "}",
        ]
    )


def _kernel_ir() -> str:
    return "\n".join(
        [
            f"declare {_V} @llvm.fshr.v4i64({_V}, {_V}, {_V})",
            _KERNEL_IR.replace("@CRC_WORD@", _crc_word_ir()),
            _compress4_ir(),
        ]
    )


def _crc_tables() -> np.ndarray:
    """zlib's crc32 tables for slicing by 8, flat: ``T[k * 256 + i]``."""
    t = np.zeros((8, 256), dtype=np.uint32)
    c = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        c = np.where(c & 1, (c >> 1) ^ np.uint32(0xEDB88320), c >> 1).astype(np.uint32)
    t[0] = c
    for k in range(1, 8):
        t[k] = (t[k - 1] >> 8) ^ t[0][t[k - 1] & 0xFF]
    return t.ravel()


def _verify_tables() -> tuple[np.ndarray, np.ndarray]:
    """``(cls, lower)`` for `hash_lines`: ``cls[b]`` has bit 0 for ``[a-zA-Z0-9_]``, bit 1 for
    ``-``, bit 2 for ``.``, and is 0 for any other byte; ``lower[b]``: ``b`` lowercased."""
    cls = np.zeros(256, dtype=np.uint8)
    cls[list(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")] = 1
    cls[ord("-")] = 2
    cls[ord(".")] = 4
    lower = np.frombuffer(bytes(range(256)).lower(), dtype=np.uint8).copy()
    return cls, lower


class _Kernel(NamedTuple):
    engine: object  # owns the compiled code
    hash_lines: Callable[..., None]
    set_bits: Callable[..., None]
    tables: tuple[np.ndarray, ...]  # crc32, cls, lower


_KERNEL: list[_Kernel | None] = []
_KERNEL_LOCK = threading.Lock()


def _compile(cpu: str | None = None, features: str | None = None) -> _Kernel:
    """The kernel compiled for `cpu` with `features` (default: this machine's). The vectors
    of four lanes are AVX2 registers where the CPU has AVX2; elsewhere the code generator
    splits them (SSE2, NEON), or does the lanes one by one: the same results, slower."""
    import llvmlite.binding as llvm

    with contextlib.suppress(RuntimeError):  # llvmlite < 0.45 needs it; later ones raise
        llvm.initialize()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    if features is None:
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:  # not available on every platform: the CPU name's defaults
            features = ""
    machine = target.create_target_machine(
        cpu=llvm.get_host_cpu_name() if cpu is None else cpu, features=features, opt=2
    )
    module = llvm.parse_assembly(_kernel_ir())
    module.triple = target.triple
    module.data_layout = str(machine.target_data)
    module.verify()
    # no IR optimisation passes: they take ~0.1 s, and the code generator's -O2 alone makes
    # code as fast here (compress4 is SSA already; the rest is cheap)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    # CFUNCTYPE: ctypes releases the GIL during the call
    hash_fn = ctypes.CFUNCTYPE(None, ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr)
    bits_fn = ctypes.CFUNCTYPE(None, ptr, i64, i64, ptr)
    return _Kernel(
        engine,
        hash_fn(engine.get_function_address("hash_lines")),
        bits_fn(engine.get_function_address("set_bits")),
        (_crc_tables(), *_verify_tables()),
    )


def kernel() -> _Kernel | None:
    """The compiled kernel (compiled once per process, ~0.15 s), or None where it is
    unavailable (no llvmlite, a big-endian machine, a failed compilation: logged)."""
    with _KERNEL_LOCK:
        if not _KERNEL:
            k = None
            if sys.byteorder == "little":
                try:
                    k = _compile()
                except Exception as e:  # ImportError, or any LLVM failure: the fallback
                    log.warning("domain blocklist: no JIT kernel (%s); hashing in Python", e)
            _KERNEL.append(k)
        return _KERNEL[0]


# ---------------------------------------------------------------------------------------------
# Hashing a buffer of lines
# ---------------------------------------------------------------------------------------------


def _ranges(data: bytes, parts: int, sep: bytes) -> list[int]:
    """Boundaries cutting `data` into about `parts` ranges, each starting after the first
    byte of a `sep` (one range below ``_MIN_JIT_BYTES``)."""
    size = len(data)
    parts = parts if size >= _MIN_JIT_BYTES else 1
    bounds = [0]
    for i in range(1, parts):
        at = data.find(sep, max(bounds[-1], size * i // parts))
        if at < 0:
            break
        bounds.append(at + 1)
    return [*bounds, size]


def _hash_range(
    k: _Kernel, data: bytes, lo: int, hi: int, front: bool, hashes: np.ndarray, crcs: np.ndarray
) -> tuple[int, list[bytes]]:
    """The kernel on the lines of ``data[lo:hi]`` (at most ``hashes.size``): the hashes of
    those it takes → ``hashes[:n]`` (sorted), their crcs → ``crcs[:n]``. Returns ``(n, the
    lines left to Python)``. Raises ValueError on malformed front-coded lines."""
    slow = np.empty(0 if front else 2 * hashes.size, dtype=np.int64)  # pages mapped if written
    counts = np.zeros(2, dtype=np.int64)
    buf = np.frombuffer(data, dtype=np.uint8)
    crc_table, cls, lower = k.tables
    k.hash_lines(
        buf.ctypes.data,
        lo,
        hi,
        int(front),
        hashes.ctypes.data,
        crcs.ctypes.data,
        slow.ctypes.data,
        counts.ctypes.data,
        crc_table.ctypes.data,
        cls.ctypes.data,
        lower.ctypes.data,
    )
    n, m = (int(x) for x in counts)
    if n < 0:
        raise ValueError("malformed front-coded domain list")
    hashes[:n].sort()
    spans = slow[: 2 * m].tolist()
    return n, [data[spans[i] : spans[i + 1]] for i in range(0, 2 * m, 2)]


def _threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, _MAX_THREADS))


def _in_parallel(jobs: list[Callable[[], _T]]) -> list[_T]:
    if len(jobs) == 1:
        return [jobs[0]()]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def _run(
    k: _Kernel, data: bytes, front: bool, threads: int, extra: int = 0
) -> tuple[np.ndarray, np.ndarray, int, list[bytes]]:
    """The kernel on `data`'s lines, in `threads` threads, each on a range of them: ``(hashes,
    crcs, n, slow_lines)``, ``hashes[:n]`` those of the lines it took (a sorted run per range)
    and ``crcs[:n]`` theirs, with room after them for `extra` + ``len(slow_lines)`` more."""
    bounds = _ranges(data, threads, b"\n\0" if front else b"\n")
    ranges = list(itertools.pairwise(bounds))
    caps = [data.count(b"\n", lo, hi) + 1 for lo, hi in ranges]  # >= the lines in each
    offsets = [0, *itertools.accumulate(caps)]
    hashes = np.empty(offsets[-1] + extra, dtype=np.uint64)
    crcs = np.empty(offsets[-1] + extra, dtype=np.uint32)
    results = _in_parallel(
        [
            partial(_hash_range, k, data, lo, hi, front, hashes[o : o + c], crcs[o : o + c])
            for (lo, hi), o, c in zip(ranges, offsets, caps, strict=False)
        ]
    )
    n = 0
    for o, (m, _) in zip(offsets, results, strict=False):  # close the gaps between the runs
        if o != n:
            hashes[n : n + m] = hashes[o : o + m]
            crcs[n : n + m] = crcs[o : o + m]
        n += m
    return hashes, crcs, n, [line for _, lines in results for line in lines]


def hash_lines(data: bytes, threads: int = 1) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """The kernel on the ``\\n``-separated lines of list text `data`, in `threads` threads:
    ``(hashes, crcs, slow_lines)``. It takes each line whose `normalize_domain` is its ASCII
    lowercasing, of at most 128 bytes: the blake2b-64 hashes of those, lowercased (a sorted
    run per thread), and their crc32s; the other lines, raw, are left to Python. Empty lines
    are skipped. Raises RuntimeError where there is no kernel."""
    k = kernel()
    if k is None:
        raise RuntimeError("no JIT kernel for the domain blocklist")
    hashes, crcs, n, slow = _run(k, data, False, threads)
    return hashes[:n], crcs[:n], slow


def _finish(
    k: _Kernel, hashes: np.ndarray, crcs: np.ndarray, n: int, names: Iterable[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """The cache arrays, from `_run`'s output and the normalised `names` the kernel did not
    take (hashed here, by hashlib and zlib, into the room after ``hashes[:n]``)."""
    names = list(names)
    total = n + len(names)
    blake = hashlib.blake2b
    digests = b"".join([blake(b, digest_size=8).digest() for b in names])
    hashes[n:total] = np.sort(np.frombuffer(digests, dtype="<u8"))
    crcs[n:total] = np.fromiter(map(zlib.crc32, names), dtype=np.uint32, count=len(names))
    hashes = hashes[:total]
    hashes.sort(kind="stable")  # timsort: merges the sorted runs in linear time
    if total > 1:
        dup = hashes[1:] == hashes[:-1]  # a repeated name (or a 64-bit collision)
        if dup.any():
            hashes = np.delete(hashes, np.flatnonzero(dup) + 1)
    nbits = _bitmap_bits(hashes.size)
    bitmap = np.zeros(nbits // 8, dtype=np.uint8)
    k.set_bits(crcs.ctypes.data, total, nbits - 1, bitmap.ctypes.data)
    return hashes, bitmap


# ---------------------------------------------------------------------------------------------
# The packed list
# ---------------------------------------------------------------------------------------------


def front_code(names: Iterable[bytes], restart: int = 1 << 16) -> bytes:
    """The kernel's front coding of `names` (sorted, for a good ratio; no ``\\n`` or NUL
    in them): per name, one byte, the length of the prefix it shares with the name before
    (at most 255; 0 for every `restart`-th name), then the rest of the name and ``\\n``. A
    range of the encoding may start after any ``b"\\n\\0"``: a name that shares no prefix
    with the one before (the names hold no NUL, so the pair occurs nowhere else)."""
    out = []
    prev = b""
    for i, name in enumerate(names):
        keep = 0
        if i % restart:
            limit = min(len(name), len(prev), 255)
            while keep < limit and name[keep] == prev[keep]:
                keep += 1
        out.append(bytes((keep,)) + name[keep:])
        prev = name
    return b"\n".join(out) + b"\n" if out else b""


class _Packed(NamedTuple):
    front_coded: bytes  # the names of at most 128 bytes
    long_names: list[bytes]  # the others
    names: int  # how many in all


def _packed_header(path: Path) -> tuple[dict[str, str], list[bytes], int]:
    """``(fields, long_names, payload offset)`` of packed list file `path`."""
    with open(path, "rb") as f:
        header = f.readline().split()
        if len(header) != 5 or header[0] != _PACKED_MAGIC:
            raise ValueError("not a packed domain list")
        fields = dict(field.decode().split("=", 1) for field in header[1:])
        long_names = f.readline().split()
        return fields, long_names, f.tell()


def packed_matches(sha256: str, path: Path | None = None) -> bool:
    """Whether packed list file `path` (default `PACKED_DOMAINS`) is that of the domain list
    whose file has `sha256` (reads its first line only)."""
    try:
        return _packed_header(path or PACKED_DOMAINS)[0].get("sha256") == sha256
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def read_packed(sha256: str, path: Path | None = None) -> _Packed | None:
    """The packed names of the domain list whose file has `sha256`, if packed list file `path`
    (default `PACKED_DOMAINS`) holds them; None otherwise, or if it is unreadable (logged).

    Format: a line ``refine-domains-fc-zstd-v1 sha256=S front=N crc32=C names=M`` (S: the
    list file's sha256; N, C: the size and crc32 of the front-coded names; M: how many names
    in all), a line of the names over 128 bytes (space-separated), then the zstd frame of
    `front_code` of the others."""
    path = path or PACKED_DOMAINS
    try:
        fields, long_names, offset = _packed_header(path)
        if fields["sha256"] != sha256:
            return None
        with open(path, "rb") as f:
            f.seek(offset)
            payload = f.read()
        import pyarrow as pa

        fc = pa.decompress(
            payload, decompressed_size=int(fields["front"]), codec="zstd", asbytes=True
        )
        if zlib.crc32(fc) != int(fields["crc32"]):
            raise ValueError("crc32 mismatch")
        return _Packed(fc, long_names, int(fields["names"]))
    except FileNotFoundError:
        return None
    except Exception as e:  # corrupt, or no zstd codec: the list itself will do
        log.warning("ignoring packed domain list %s: %s", path, e)
        return None


def write_packed_list(src: Path = PACKAGED_DOMAINS, dest: Path = PACKED_DOMAINS) -> Path:
    """Write the packed form of domain list file `src` to `dest` (format: `read_packed`): its
    lines normalised by `normalize_domain`, unique, sorted, front-coded, zstd level 19."""
    import pyarrow as pa

    with _open_text(src) as f:
        names = sorted({d.encode() for d in map(normalize_domain, f) if d})
    if b"".join(names).translate(None, bytes(range(0x21, 0x7F))):  # pragma: no cover
        raise ValueError("a normalised name is not printable ASCII (no spaces)")
    fc = front_code(n for n in names if len(n) <= 128)
    payload = pa.Codec("zstd", compression_level=19).compress(fc, asbytes=True)
    header = (
        f"{_PACKED_MAGIC.decode()} sha256={_file_sha256(src)} front={len(fc)} "
        f"crc32={zlib.crc32(fc)} names={len(names)}\n"
    )
    long_names = b" ".join(n for n in names if len(n) > 128) + b"\n"
    with atomic_write(dest) as out:
        out.write(header.encode() + long_names + payload)
    return dest


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def _read_list_bytes(src: Path) -> bytes:
    """The text of list file `src` (``.xz``, ``.gz`` or plain), newlines translated as a text
    file's (``\\r\\n`` and ``\\r`` → ``\\n``). Decompressed in one call, which releases the
    GIL throughout."""
    raw = src.read_bytes()
    if src.name.endswith(".xz"):
        raw = lzma.decompress(raw)
    elif src.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw


def _from_packed(k: _Kernel, packed: _Packed, threads: int) -> tuple[np.ndarray, np.ndarray]:
    hashes, crcs, n, _ = _run(k, packed.front_coded, True, threads, len(packed.long_names))
    if n + len(packed.long_names) != packed.names:
        raise ValueError("wrong number of names")
    return _finish(k, hashes, crcs, n, packed.long_names)


def _from_text(k: _Kernel, data: bytes, threads: int) -> tuple[np.ndarray, np.ndarray]:
    hashes, crcs, n, slow = _run(k, data, False, threads)
    names = (normalize_domain(line.decode("utf-8", "replace")) for line in slow)
    return _finish(k, hashes, crcs, n, (d.encode() for d in names if d))


def _reference(src: Path) -> tuple[np.ndarray, np.ndarray]:
    """`_hash_domains` of list file `src`'s normalised lines, streamed (bounded memory)."""
    with _open_text(src) as f:
        return _hash_domains(d for d in map(normalize_domain, f) if d)


def build_domain_arrays(
    src: Path, sha256: str | None = None, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, bitmap)`` of domain list file `src` (whose sha256 is `sha256`, if known),
    bit for bit what `refine.blocklist._hash_domains` makes of its normalised lines."""
    sha256 = sha256 or _file_sha256(src)
    packed = packed_matches(sha256)
    compressed = src.name.endswith((".xz", ".gz"))
    if not packed and src.stat().st_size < (_MIN_JIT_FILE_BYTES if compressed else _MIN_JIT_BYTES):
        return _reference(src)
    read = partial(read_packed, sha256) if packed else partial(_read_list_bytes, src)
    with ThreadPoolExecutor(1) as pool:  # read and decompress while the kernel compiles
        reading = pool.submit(read)
        k = kernel()
        data = reading.result()
    if k is None:
        return _reference(src)
    threads = threads or _threads()
    if packed:
        if data is not None:
            try:
                return _from_packed(k, data, threads)
            except ValueError as e:
                log.warning("ignoring packed domain list %s: %s", PACKED_DOMAINS, e)
        data = _read_list_bytes(src)
    return _from_text(k, data, threads)


def main(argv: list[str] | None = None) -> int:
    """``python -m refine.blocklist_build [SRC [DEST]]``: write the packed list (default: of
    the packaged list, to `PACKED_DOMAINS`)."""
    args = sys.argv[1:] if argv is None else argv
    src = Path(args[0]) if args else PACKAGED_DOMAINS
    dest = Path(args[1]) if len(args) > 1 else PACKED_DOMAINS
    write_packed_list(src, dest)
    print(f"{dest}: {dest.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
