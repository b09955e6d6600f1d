"""A throwaway S3-compatible server on one machine: moto's standalone server on 127.0.0.1 (moto
is a dev dependency), with the environment a user sets for a real endpoint (credentials and
AWS_ENDPOINT_URL in os.environ, so subprocesses and Ray workers started meanwhile inherit them)
and one empty bucket. For tests and benchmarks of run directories in a bucket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

SECRET = "local-secret"  # the secret key it is given: tests check it is written nowhere


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(bucket: str) -> Iterator[subprocess.Popen]:
    """Start the server, set the environment, create `bucket`; yields the server process (its
    pid, for its CPU time). os.environ is restored and the server stopped on exit."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        _forget_s3_clients()  # fsspec caches clients, with the endpoint of an earlier server
        import fsspec

        fsspec.filesystem("s3", use_listings_cache=False).mkdir(bucket)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)
        _forget_s3_clients()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _forget_s3_clients() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
