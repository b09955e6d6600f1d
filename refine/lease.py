"""One writer per run directory: a lease file taken before any work and renewed while it runs.

``RUN/.lease.json`` names its holder (owner, host, pid, a token) and its last heartbeat. It is
created exclusively (``O_EXCL`` locally, a conditional PUT on object stores), so of two writers
that start together one wins. A writer that
finds a lease refuses to start, naming the holder, unless the lease is stale: its process is
gone (same host), or its heartbeat is older than `STALE_AFTER_S` (another host). A stale lease is
taken over. The holder renews the heartbeat every `HEARTBEAT_S` from a thread and checks the file
still holds its token; if another writer took the lease over, `check()` raises.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from refine.rundir import LEASE, RunDir

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class LeaseError(RuntimeError):
    """Another writer holds the run directory, or took it over from us."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(run: RunDir) -> dict[str, Any] | None:
    try:
        return run.read_json(LEASE)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written or damaged: judged by the file's age alone


def _age_s(run: RunDir) -> float:
    modified = run.fs.modified(run.path(LEASE))
    if modified.tzinfo is None:
        modified = modified.astimezone()
    return (dt.datetime.now(dt.UTC) - modified).total_seconds()


def describe(holder: dict[str, Any]) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    return (f"{holder.get('command', 'a writer')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}, user {holder.get('owner')}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}, "
            f"last heartbeat {age:.0f} s ago)")


def is_stale(holder: dict[str, Any], run: RunDir) -> bool:
    if not holder:
        return _age_s(run) > STALE_AFTER_S
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0))):
        return True
    return time.time() - float(holder.get("heartbeat", 0)) > STALE_AFTER_S


class Lease:
    def __init__(self, run: RunDir, command: str):
        self.run = run
        now = time.time()
        self.record = {"token": uuid.uuid4().hex, "owner": getpass.getuser(),
                       "host": socket.gethostname(), "pid": os.getpid(), "command": command,
                       "started": now, "heartbeat": now}
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lease:
        """Take the lease (taking over a stale one) or raise LeaseError naming the holder."""
        run = self.run
        for _ in range(3):
            try:
                run.create_exclusive(run.path(LEASE), json.dumps(self.record).encode())
            except FileExistsError:
                holder = _read(run)
                if holder is None:
                    continue  # released meanwhile
                if not is_stale(holder, run):
                    raise LeaseError(f"{run} is being written by "
                                     f"{describe(holder)}; wait for it to finish or stop it "
                                     "(a killed writer's lease is taken over after "
                                     f"{STALE_AFTER_S:.0f} s, at once on the same host)"
                                     ) from None
                if _read(run) == holder:  # still the stale one: remove it, then race
                    run.remove(run.path(LEASE))
                continue
            self._thread = threading.Thread(target=self._beat, name="refine-lease",
                                            daemon=True)
            self._thread.start()
            return self
        raise LeaseError(f"could not take the lease of {run}: other writers "
                         "keep taking it")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = _read(self.run)
            if not holder or holder.get("token") != self.record["token"]:
                self.lost = describe(holder) if holder else "nobody (the lease was deleted)"
                return
            self.record["heartbeat"] = time.time()
            self.run.write_bytes(self.run.path(LEASE), json.dumps(self.record).encode())

    def check(self) -> None:
        """Raise LeaseError when another writer took the run directory over."""
        if self.lost is not None:
            raise LeaseError(f"lost the lease of {self.run} to {self.lost}; "
                             "stopping without writing more")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = _read(self.run)
        if holder and holder.get("token") == self.record["token"]:
            self.run.remove(self.run.path(LEASE))

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
