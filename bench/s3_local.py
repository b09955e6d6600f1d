"""What the benches measure of the local S3 server (refine.locals3): its CPU time."""

from __future__ import annotations

import os


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc), 0.0 where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
