"""Write a file so that readers see either the old file or the complete new one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask_mode(mode: int = 0o666) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_write(dest: Path, durable: bool = True) -> Iterator[IO[bytes]]:
    """A binary file to write `dest`'s content to: a temp file in `dest`'s directory, fsync-ed
    (when `durable`) and ``os.replace``-d onto `dest` when the block succeeds, removed when it
    fails. Without `durable` the file is still whole or absent for every process, but not across
    a power loss: for scratch files that a crash makes worthless anyway."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, _umask_mode())  # mkstemp makes 0600; the file may be shared
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(dest: Path, payload: dict[str, Any]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest) as f:
        f.write((json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())
