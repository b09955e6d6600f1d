"""A throwaway multi-node Ray cluster on one machine: a head and worker nodes started with
`ray start` as separate process sessions (so one node can be killed whole, as a machine dies).
For tests and benchmarks of `refine run --address`; token authentication on, as in production.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """Head (no CPUs: it only schedules) and `workers` nodes of `cpus_per_node` CPUs each.

    `temp` must be a short path (Ray's socket paths must fit in 107 bytes)."""

    def __init__(self, temp: Path, workers: int = 2, cpus_per_node: int = 1,
                 dashboard: bool = False):
        """`dashboard`: the head also serves the dashboard and the job API on 127.0.0.1 (at
        `dashboard_url`), for `ray job submit`. The nodes inherit this process's environment
        (e.g. object-storage credentials), as machines of a real cluster have theirs."""
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set by a local Ray (refine.dag)
        self.address = f"127.0.0.1:{free_port()}"
        self.dashboard_url = f"http://127.0.0.1:{free_port()}" if dashboard else None
        web = (["--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", self.dashboard_url.rsplit(":", 1)[1]]
               if self.dashboard_url else ["--include-dashboard", "false"])
        self.sessions: list[int] = []
        self._start("--head", "--port", self.address.split(":")[1], "--num-cpus", "0", *web,
                    "--temp-dir", str(temp))
        for _ in range(workers):
            self._start("--address", self.address, "--num-cpus", str(cpus_per_node))

    def _start(self, *args: str) -> None:
        # each node's dashboard agent on its own port: the default (52365) is one per machine,
        # and a worker node's agent taking it first leaves the head with none ("No available
        # agent to submit job")
        proc = subprocess.Popen([RAY, "start", *args, "--node-ip-address", "127.0.0.1",
                                 "--dashboard-agent-listen-port", str(free_port()),
                                 "--disable-usage-stats"], env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = proc.communicate(timeout=120)
        self.sessions.append(proc.pid)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{output}")

    def processes(self, session: int) -> list[psutil.Process]:
        """The processes of one node (its `ray start` session)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == session:
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def kill_node(self, index: int) -> None:
        for proc in self.processes(self.sessions[index]):
            proc.kill()

    def workers_running(self, name: str) -> list[psutil.Process]:
        """Processes of any node whose command line holds `name` (e.g. an actor's class)."""
        procs = [p for s in self.sessions for p in self.processes(s)]
        return [p for p in procs if name in _command_line(p)]

    def stop(self) -> None:
        for index in reversed(range(len(self.sessions))):
            self.kill_node(index)


def _command_line(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # ended, or a zombie, since it was listed
        return ""
