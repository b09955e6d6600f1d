"""Where refine keeps files it can rebuild (blocklist hashes, lookup tables): one fact, kept in a
module that imports nothing heavy."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$REFINE_CACHE_DIR``, default ``~/.cache/refine`` (read on every call)."""
    env = os.environ.get("REFINE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "refine"
