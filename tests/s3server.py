"""The test bucket: refine.locals3's server with the test WARCs uploaded under in/."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from refine.locals3 import SECRET  # noqa: F401 (SECRET: re-export)
from refine.locals3 import moto_server as local_s3

BUCKET = "refine-test"
WARCS = sorted((Path(__file__).parent / "data" / "warc").glob("*.warc.gz"))


@contextlib.contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    """Yields the full environment for subprocesses; os.environ holds it meanwhile."""
    with local_s3(BUCKET):
        import fsspec

        fs = fsspec.filesystem("s3", use_listings_cache=False)
        for path in WARCS:
            fs.put_file(str(path), f"{BUCKET}/in/{path.name}")
        yield dict(os.environ)
