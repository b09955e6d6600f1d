"""`refine.dag.worker_pool`: a run's stages 1-7 (`map_actors`) and its dedup steps (`map_tasks`)
run in the same warm processes; a worker with no call left drops its object and prepares the
next step; a call whose worker died is redone, also once the other workers have moved on. Each
on both backends: local processes (no address, no Ray) and Ray actors (a local Ray)."""

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refine import dag

from .conftest import DATA, ROOT

WARC = sorted((DATA / "warc").glob("*.gz"))[0]


@pytest.fixture(autouse=True)
def _by_value(local_ray):
    # the workers need not import this test module
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    local_ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class Held:
    """A worker's state, as `UnitWorker` is: built once per worker, closed when dropped."""

    def __init__(self, marks: str):
        self.marks = Path(marks)

    def work(self, n: int, seconds: float, die_once: bool) -> tuple[int, int]:
        time.sleep(seconds)
        died = self.marks / f"died-{n}"
        if die_once and not died.exists():
            died.touch()
            os._exit(1)  # the worker process dies mid-call
        return n, os.getpid()

    def close(self) -> None:
        (self.marks / f"closed-{os.getpid()}").touch()


def prepare_next(marks: str) -> None:
    (Path(marks) / f"prepared-{os.getpid()}").touch()


def square_and_pid(n: int) -> tuple[int, int]:
    time.sleep(0.1)
    return n * n, os.getpid()


def pids(marks: Path, kind: str) -> set[int]:
    return {int(p.name.split("-")[1]) for p in marks.glob(f"{kind}-*")}


BACKENDS = pytest.mark.parametrize("address", [None, dag.LOCAL_RAY], ids=["processes", "ray"])


@BACKENDS
def test_stages_and_dedup_steps_share_warm_workers(tmp_path, address):
    with dag.worker_pool(2, address):
        done = list(dag.map_actors(Held, (str(tmp_path),), "work",
                                   [(n, 0.05, False) for n in range(6)],
                                   then=functools.partial(prepare_next, str(tmp_path))))
        squares = dag.map_tasks(square_and_pid, [(n,) for n in range(8)], 2)
    assert sorted(n for n, _ in done) == list(range(6))
    actor_pids = {pid for _, pid in done}
    assert [value for value, _ in squares] == [n * n for n in range(8)]  # in order
    assert {pid for _, pid in squares} == actor_pids  # both, and no new worker process
    assert pids(tmp_path, "closed") == actor_pids  # each dropped its object...
    assert pids(tmp_path, "prepared") == actor_pids  # ...and prepared the next step
    gone_within(actor_pids, 30)  # the pool ends with the block


def gone_within(pids_: set[int] | list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids_) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids_ if _alive(pid)] == []


@BACKENDS
def test_a_call_whose_worker_died_after_the_others_moved_on_is_redone(tmp_path, address):
    # calls 0 and 1 end first, so one worker has dropped its object when call 2's worker dies
    calls = [(0, 0.1, False), (1, 0.3, False), (2, 1.0, True)]
    with dag.worker_pool(2, address):
        done = list(dag.map_actors(Held, (str(tmp_path),), "work", calls, retries=1,
                                   then=functools.partial(prepare_next, str(tmp_path))))
        squares = dag.map_tasks(square_and_pid, [(n,) for n in range(4)], 2)
    assert sorted(n for n, _ in done) == [0, 1, 2]
    assert (tmp_path / "died-2").exists()
    assert [value for value, _ in squares] == [0, 1, 4, 9]


def test_without_a_shared_pool_the_workers_end_with_the_call(tmp_path):
    done = list(dag.map_actors(Held, (str(tmp_path),), "work",
                               [(n, 0.0, False) for n in range(3)], workers=2))
    assert sorted(n for n, _ in done) == [0, 1, 2]
    gone_within([pid for _, pid in done], 30)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_python(script: str, timeout: float) -> subprocess.CompletedProcess:
    """`script` in a new interpreter (in the repository), which must succeed."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


def test_a_local_ray_leaves_no_process_behind_at_exit():
    import json

    done = run_python("import json, psutil\n"
                      "from refine.dag import init_ray\n"
                      "init_ray(None)\n"
                      "print(json.dumps([p.pid for p in psutil.Process().children("
                      "recursive=True)]))\n", timeout=120)
    started = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(started) >= 3  # the GCS, the raylet, the monitor and the rest
    gone_within(started, 10)


def fail_on(n: int) -> int:
    if n == 2:
        raise ValueError(f"bad input {n}")
    return n


def test_an_error_in_a_local_worker_reaches_the_caller_with_its_traceback():
    with dag.worker_pool(2):
        with pytest.raises(ValueError, match="bad input 2") as raised:
            dag.map_tasks(fail_on, [(n,) for n in range(4)], 2)
        pool = dag._shared.pool
        assert pool is not None and pool.actors == []  # a failed map kills the pool's workers
        assert dag.map_tasks(fail_on, [(0,), (1,)], 2) == [0, 1]  # and a new one serves on
    assert "in fail_on" in str(raised.value.__cause__)  # the worker's traceback


def test_local_workers_die_with_a_killed_driver(tmp_path):
    import json
    import signal

    script = ("import json, sys, time\n"
              "from refine import dag\n"
              "with dag.worker_pool(2):\n"
              "    pids = dag.map_tasks(__import__('os').getpid, [(), ()], 2)\n"
              "    print(json.dumps(pids), flush=True)\n"
              "    time.sleep(600)\n")
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        workers = json.loads(driver.stdout.readline())
        assert len(workers) == 2 and driver.pid not in workers and all(map(_alive, workers))
    finally:
        driver.send_signal(signal.SIGKILL)  # no clean-up of its own: the workers must go
        driver.wait()
    gone_within(workers, 10)


def test_a_local_run_starts_no_ray(tmp_path):
    done = run_python("import sys\n"
                      "from refine.config import load_config\n"
                      "from refine.run import run\n"
                      f"result = run(load_config({str(ROOT / 'configs' / 'demo.yaml')!r}), "
                      f"[{str(WARC)!r}], {str(tmp_path / 'run')!r}, workers=2)\n"
                      "assert result.stats['accounting_ok']\n"
                      "assert result.stats['documents']['kept'] > 0\n"
                      "print('ray' in sys.modules)\n", timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "False"


def die_once(marks: str, n: int) -> int:
    died = Path(marks) / f"task-died-{n}"
    if n == 1 and not died.exists():
        died.touch()
        os._exit(3)
    return n


@BACKENDS
def test_a_step_whose_worker_died_is_redone_on_a_new_worker(tmp_path, address):
    with dag.worker_pool(2, address):
        assert dag.map_tasks(die_once, [(str(tmp_path), n) for n in range(4)], 2) == [0, 1, 2, 3]
        assert (tmp_path / "task-died-1").exists()
        assert len(dag._shared.pool.actors) == 2  # the dead one replaced


def test_a_local_workers_log_lines_reach_the_drivers_stderr():
    done = run_python("import logging\n"
                      "from refine import dag\n"
                      "with dag.worker_pool(1):\n"
                      "    warn = logging.getLogger('refine.somewhere').warning\n"
                      "    dag.map_tasks(warn, [('odd page',)], 1)\n", timeout=60)
    assert "WARNING refine.somewhere: odd page" in done.stderr


def loaded(module: str) -> bool:
    return module in sys.modules


def test_local_workers_refine_a_unit_without_loading_pandas(tmp_path):
    from refine.config import load_config
    from refine.readers import plan_units
    from refine.rundir import RunDir

    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    units = plan_units([(str(WARC), WARC.stat().st_size)], config.read.chunk_bytes)
    run_dir = RunDir(tmp_path / "run")
    with dag.worker_pool(1):
        summaries = list(dag.process_units(units, config.model_dump_json(), run_dir.url(), 1))
        assert dag.map_tasks(loaded, [("pandas",), ("pyarrow",)], 1) == [False, True]
    assert sum(s["kept"] for s in summaries) > 0  # pyarrow wrote the shards without it
    assert list((tmp_path / "run" / "filtered").glob("*.parquet"))
