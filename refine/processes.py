"""Worker processes of a local run, without Ray: the backend of `refine.dag`'s worker pool when
`refine run` has no cluster address.

Each worker is a new Python process (`serve`) holding one `refine.dag.PoolWorker`; the driver
sends it one operation at a time over a socket ("build", "run", "call", "release", "ready": the
`PoolWorker` methods, arguments pickled) and reads the answer. A worker that dies (killed, out
of memory, a crash in native code) fails its calls with `WorkerLost`, as a dead Ray actor fails
its calls with `RayActorError`; the pool then redoes them on another worker. Starting these
processes costs a Python start-up each, where a local Ray costs seconds of daemons first.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import traceback
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

from refine import LOG_FORMAT

PR_SET_PDEATHSIG = 1  # prctl(2)
SINGLE_THREADED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkerLost(RuntimeError):
    """The worker process running a call died before answering."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, chained to it as its cause."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


def _die_with(parent_pid: int) -> None:
    """SIGKILL for this process when the driver's starting thread ends (Linux), so no worker
    goes on writing into a run directory after its driver was killed."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # gone already, before the line above took effect
        os._exit(1)


class WithoutPandas:
    """An import finder that refuses pandas. No worker uses pandas, but pyarrow imports it (0.3 s
    of CPU, some 300 modules) at its first conversion of a Python object, only to check
    whether the object is a pandas one; refused, pyarrow goes on as without pandas."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("refine's worker processes do not load pandas", name=name)


def serve(fd: int, parent_pid: int) -> None:
    """A worker's life: answer the driver's operations on the socket `fd` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and ends us
    _die_with(parent_pid)
    os.set_inheritable(fd, False)  # nothing this worker starts holds the driver's socket
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)  # to the driver's stderr
    sys.meta_path.insert(0, WithoutPandas())
    conn = Connection(fd)
    from refine.dag import PoolWorker

    worker = PoolWorker()
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the driver closed the socket, or is gone
            break
        op = "?"
        try:
            op, args = pickle.loads(message)
            answer: tuple[bool, Any] = (True, getattr(worker, op)(*args))
        except BaseException as error:  # noqa: BLE001 - every failure goes to the caller
            answer = (False, (error, traceback.format_exc()))
        try:
            conn.send(answer)
        except Exception as error:  # an answer or exception that cannot be pickled
            conn.send((False, (RuntimeError(f"{op}: cannot send its result back: {error!r}"),
                               "")))
    worker.release()  # closes what it holds (an extraction child, say)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every call has answered, so all its files are closed: skip the interpreter's teardown
    # (numba's and pyarrow's finalizers), which kept the driver waiting 0.4 s per worker.
    os._exit(0)


def _command(fd: int) -> list[str]:
    """A new interpreter with this one's module path (so functions and classes sent by
    reference import there as here) that runs `serve`. Not multiprocessing's spawn, which
    would import the driver's main script again in every worker."""
    code = (f"import sys; sys.path[:] = {sys.path!r}; "
            f"from refine.processes import serve; serve({fd}, {os.getpid()})")
    return [sys.executable, "-c", code]


class Call:
    """One operation sent (or queued) to a worker; `done` once answered or failed."""

    def __init__(self, worker: Worker, op: str, args: tuple):
        self.worker, self.op, self.args = worker, op, args
        self.done, self.ok, self.value = False, False, None

    def settle(self, ok: bool, value: Any) -> None:
        self.done, self.ok, self.value = True, ok, value


class Worker:
    """One worker process; its operations run in the order sent, one at a time."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            env = {name: "1" for name in SINGLE_THREADED} | dict(os.environ)
            # one core per worker (as Ray gives a 1-CPU actor), unless the user says otherwise
            self.process = subprocess.Popen(_command(theirs.fileno()), env=env,
                                            pass_fds=[theirs.fileno()])
            self.conn: Connection | None = Connection(ours.detach())
        self.queued: deque[Call] = deque()  # the first is in flight

    def submit(self, op: str, args: tuple) -> Call:
        call = Call(self, op, args)
        self.queued.append(call)
        if len(self.queued) == 1:
            self._send_first()
        return call

    def _send_first(self) -> None:
        call = self.queued[0]
        try:
            assert self.conn is not None
            self.conn.send((call.op, call.args))
        except (OSError, AssertionError):
            self._lost()

    def receive(self) -> None:
        """Read the answer to the call in flight (the socket is readable), send the next."""
        try:
            assert self.conn is not None
            ok, value = self.conn.recv()
        except (EOFError, OSError, AssertionError):
            self._lost()
            return
        except Exception as error:  # an answer that cannot be unpickled here
            ok, value = False, (RuntimeError(f"{self.queued[0].op}: its answer cannot be "
                                             f"read: {error!r}"), "")
        self.queued.popleft().settle(ok, value)
        if self.queued:
            self._send_first()

    def _lost(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(1)  # it closed its socket by dying: its exit code, if it is gone
        code = self.process.returncode
        for call in self.queued:
            call.settle(False, (WorkerLost(f"the worker process (pid {self.process.pid}) died "
                                           f"during '{call.op}' (exit code {code})"), ""))
        self.queued.clear()
        self.close_socket()

    def close_socket(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def stop(self, grace_s: float | None) -> None:
        """End the process. An idle one exits by itself once its socket closes: waited for up
        to `grace_s` (None: not waited for), then killed. A busy one is killed at once."""
        busy = bool(self.queued)
        self.close_socket()  # an idle worker reads end-of-file and exits
        if busy or grace_s is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0 if busy else grace_s)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for call in self.queued:
            call.settle(False, (WorkerLost("the worker was stopped"), ""))
        self.queued.clear()


_live: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register  # an idle worker would end by itself, a busy one only after its call
def _stop_all() -> None:
    for worker in list(_live):
        worker.stop(grace_s=1.0)


class LocalWorkers:
    """The process backend of `refine.dag._Pool`: the operations of its Ray backend."""

    def start(self) -> Worker:
        worker = Worker()
        _live.add(worker)
        return worker

    def send(self, worker: Worker, op: str, *args: Any) -> Call:
        return worker.submit(op, args)

    def wait(self, calls: list[Call]) -> Call:
        """A finished call of `calls` (reading answers as they come)."""
        while True:
            for call in calls:
                if call.done:
                    return call
            # a call not done has its worker's socket open; a worker that dies closes it
            by_conn = {c.worker.conn: c.worker for c in calls if c.worker.conn is not None}
            for conn in wait(list(by_conn)):
                by_conn[conn].receive()

    def result(self, call: Call) -> Any:
        if call.ok:
            return call.value
        error, remote_traceback = call.value
        if remote_traceback:
            error.__cause__ = RemoteTraceback(remote_traceback)
        raise error

    def kill(self, worker: Worker) -> None:
        worker.stop(grace_s=None)  # idle ones exit in a few ms; `_stop_all` waits at exit

    def share(self, args: tuple) -> list[Any]:
        """`args` for every worker, as they are (each worker gets its own pickled copy)."""
        return list(args)
