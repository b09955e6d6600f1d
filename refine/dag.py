"""The worker pool of a run, and the only module that knows Ray.

`map_actors` schedules work units over a pool of workers. Each worker builds a `UnitProcessor`
once (blocklist, fastText model and extraction child load once per worker, not per task) and
processes whole units, writing their shards itself. Output is therefore partitioned by content
(input file and byte range), never by the workers, and is the same for any number of them.
When a worker dies (its process or its node), its unit is done again from the start by another
worker, and a new worker takes its place. Inside `worker_pool` (a whole `refine run`), stages 1-7
and the dedup steps (`map_tasks`) share one pool: no worker process starts between them, and a
worker with no unit left drops its `UnitProcessor` and prepares the dedup steps while the others
finish. A run without a cluster address has plain local processes for workers
(`refine.processes`) and starts no Ray; with one, the workers are Ray actors. Outside a run
(the benches, `pretrain.encode`), `map_actors` and `map_tasks` use Ray.

It also holds what pretrain.serve and pretrain.tune need of Ray Serve (`serve_app`,
`serve_run`, `shutdown_serve`) and Ray Tune (`search_choice`, `search_loguniform`, `trial_id`,
`report_trial`, `tune_fit`), so that no other module imports Ray. Ray itself is imported only
inside the functions: importing this module starts nothing and loads no Ray.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refine.processes import LocalWorkers, WorkerLost
from refine.readers import Unit

log = logging.getLogger(__name__)


def _loopback_only() -> None:
    """Make the Ray we start listen on 127.0.0.1 only: its node IP is the loopback address
    (as Ray does on macOS and Windows), so the GCS, raylets and workers bind to it. Set before
    the daemons start; they and the workers inherit the variable."""
    import ray._private.ray_constants as ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at init time; ray may be imported already


class RayConnectError(RuntimeError):
    """The Ray cluster at --address cannot be reached or refuses us."""


def _gcs_host_port(address: str) -> tuple[str, int] | None:
    """host and port of `address` ("host:port", "ray://host:port"); None for "auto"."""
    rest = address.split("://", 1)[-1]
    host, colon, port = rest.rpartition(":")
    if address == "auto" or not colon or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def connect_ray(address: str, timeout_s: float) -> None:
    """Connect to the Ray cluster at `address`, giving up after `timeout_s` with a message
    (Ray itself retries an unreachable address for ever)."""

    target = _gcs_host_port(address)
    if target is not None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(target, timeout=min(5.0, timeout_s)).close()
                break
            except OSError as error:
                if time.monotonic() >= deadline:
                    raise RayConnectError(
                        f"cannot reach the Ray cluster at {address} ({error}) within "
                        f"{timeout_s:.0f} s: is `ray start --head` running there, and is the "
                        "address its GCS address (host:6379 by default)? --connect-timeout "
                        "sets the wait") from None
                time.sleep(1.0)
    with _stderr_captured() as captured:  # Ray's core logs each failed attempt, once a second
        try:
            init_ray(address)
            error = None
        except Exception as raised:  # ConnectionError, RuntimeError, auth errors...
            error = raised
    log_lines = captured["text"]
    if error is None:
        sys.stderr.write(log_lines)
        return
    detail = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    if "InvalidAuthToken" in log_lines or "Unauthenticated" in log_lines:
        detail += (" (the cluster refused our authentication token: set RAY_AUTH_TOKEN or "
                   "RAY_AUTH_TOKEN_PATH to the cluster's token)")
    elif not any(os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        detail += (" (if the cluster uses token authentication, Ray's default, set RAY_AUTH_TOKEN "
                   "or RAY_AUTH_TOKEN_PATH: none is set here)")
    raise RayConnectError(f"cannot connect to the Ray cluster at {address}: {detail}")


@contextlib.contextmanager
def _stderr_captured() -> Iterator[dict[str, str]]:
    """File descriptor 2 (where Ray's C++ core logs) captured for the block into ["text"]."""
    sys.stderr.flush()
    saved, captured = os.dup(2), {"text": ""}
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            captured["text"] = capture.read().decode(errors="replace")


LOCAL_RAY = "local"  # the address that starts a Ray of our own on this machine


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address and address != LOCAL_RAY:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        _loopback_only()
        # "local": always a new Ray of our own, even if `ray start` left a cluster on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING,
                 configure_logging=True)
        atexit.register(_stop_local_ray)  # before Ray's own atexit shutdown


def _stop_local_ray() -> None:
    """`ray.shutdown`, with the autoscaler monitor (idle on a local Ray) killed first: stopped
    after the GCS, as `ray.shutdown` orders it, the monitor hangs until Ray's 1 s timeout."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None:
        with contextlib.suppress(Exception):  # a Ray with other internals: the usual shutdown
            from ray._private.ray_constants import PROCESS_TYPE_MONITOR

            node._kill_process_type(PROCESS_TYPE_MONITOR, check_alive=False)
    ray.shutdown()


class UnitWorker:
    """The state of one worker of stages 1-7: its `UnitProcessor` (blocklist, fastText model,
    extraction child), built once, processes whole units."""

    def __init__(self, config_json: str, run_dir: str):
        from refine.config import RunConfig
        from refine.pipeline import UnitProcessor

        self.processor = UnitProcessor(RunConfig.model_validate_json(config_json), run_dir)

    def process(self, unit: dict[str, Any]) -> dict[str, Any]:
        return self.processor.process(Unit(**unit))

    def close(self) -> None:
        self.processor.close()


class PoolWorker:
    """One process of a worker pool (a Ray actor). It holds at most one object, built in it
    by `build` (a `UnitWorker`, say), whose methods `run` calls; `call` runs a plain function.
    Between uses the object is dropped (`release`), so a run's stages 1-7 and its dedup steps
    share warm processes."""

    def __init__(self) -> None:
        self.held: Any = None

    def ready(self) -> None:
        """Nothing: its answer says the worker has started."""

    def build(self, cls: type, *args: Any) -> None:
        self.release()
        self.held = cls(*args)

    def run(self, method: str, *args: Any) -> Any:
        return getattr(self.held, method)(*args)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def release(self, then: Callable[[], None] | None = None) -> None:
        """Drop the held object (closing it), then run `then` (say, imports the next step
        needs, while other workers finish this one)."""
        held, self.held = self.held, None
        if held is not None and hasattr(held, "close"):
            held.close()
        del held
        gc.collect()
        if then is not None:
            try:
                then()
            except Exception:  # preparation only: the next step does the work anyway
                log.exception("preparing the next step failed")


SHARED_BYTES = 1 << 16  # a bytes argument larger than this goes once to the object store
UNIT_RETRIES = 3  # times a unit is given to another actor after its actor died
TASK_RETRIES = 2  # times a whole-run (dedup) call is redone after its worker died


class _RayWorkers:
    """The Ray backend of `_Pool`: each worker a `PoolWorker` actor, operations its methods."""

    def __init__(self, size: int, address: str | None):
        import ray

        init_ray(address)
        cpus = ray.available_resources().get("CPU", 1.0)
        # Fractional reservations so the pool always fits what is free (see DESIGN pitfalls).
        self.remote_class = ray.remote(num_cpus=min(1.0, max(0.1, cpus / size)))(PoolWorker)

    def start(self) -> Any:
        return self.remote_class.remote()

    def send(self, worker: Any, op: str, *args: Any) -> Any:
        return getattr(worker, op).remote(*args)

    def wait(self, calls: list[Any]) -> Any:
        import ray

        return ray.wait(calls, num_returns=1)[0][0]

    def result(self, call: Any) -> Any:
        import ray
        from ray.exceptions import RayActorError

        try:
            return ray.get(call)
        except RayActorError as error:
            raise WorkerLost(str(error).strip().splitlines()[0] if str(error).strip()
                             else "a worker (Ray actor) died") from error

    def kill(self, worker: Any) -> None:
        import ray

        ray.kill(worker)

    def share(self, args: tuple) -> list[Any]:
        """`args` for every worker: a large bytes one (a model, say) goes once to Ray's object
        store, however many actors take it."""
        import ray

        return [ray.put(arg) if isinstance(arg, bytes) and len(arg) > SHARED_BYTES else arg
                for arg in args]


class _Pool:
    """Workers (`PoolWorker`s: Ray actors, or local processes when there is no address) and
    the scheduling of calls over them (see `map_actors`)."""

    def __init__(self, size: int, workers: LocalWorkers | _RayWorkers):
        self.workers = workers
        self.ready = [self.workers.start() for _ in range(size)]  # calls queue until up
        self.preparing: dict[Any, Any] = {}  # build or release call -> its worker
        self.actors = list(self.ready)

    def kill(self) -> None:
        for actor in self.actors:
            self.workers.kill(actor)
        self.actors, self.ready, self.preparing = [], [], {}

    def _replace(self, dead: Any, setup: tuple | None) -> dict[Any, Any]:
        """A new worker in place of `dead`: {its start (or build) call: it}."""
        self.workers.kill(dead)
        self.actors.remove(dead)
        actor = self.workers.start()
        self.actors.append(actor)
        return {self.workers.send(actor, "build", *setup) if setup
                else self.workers.send(actor, "ready"): actor}

    def map(self, op: str, head: tuple, arguments: list[tuple], retries: int,
            setup: tuple | None = None, then: Callable[[], None] | None = None,
            ) -> Iterator[tuple[int, Any]]:
        """(index, result) of the worker operation `op(*head, *args)` ("run": a method of the
        built object; "call": a function) for each tuple, as calls finish.
        `setup`: (class, *constructor arguments), built on each worker used (no more workers
        than calls) before its calls. Each worker used drops what it built once no call is
        left for it, then runs `then()` if given, while the others finish."""
        workers = self.workers
        if setup:
            wanted = min(len(arguments), len(self.ready) + len(self.preparing))
            chosen, self.ready = self.ready[:wanted], self.ready[wanted:]
            for ref in list(self.preparing)[:wanted - len(chosen)]:  # builds queue behind
                chosen.append(self.preparing.pop(ref))  # the release they are waiting on
            idle, starting = [], {workers.send(a, "build", *setup): a for a in chosen}
        else:
            idle, starting = self.ready, self.preparing
            self.ready, self.preparing = [], {}
        waiting = list(enumerate(arguments))[::-1]
        pending: dict[Any, tuple[Any, int]] = {}  # result -> (worker, index of its arguments)
        failures = [0] * len(arguments)
        releasing: dict[Any, Any] = {}  # workers done with this map, dropping their object
        finished = False
        try:
            while waiting or pending:
                while waiting and idle:
                    actor, (index, args) = idle.pop(), waiting.pop()
                    pending[workers.send(actor, op, *head, *args)] = (actor, index)
                if not pending and not starting:
                    raise RuntimeError("every worker of the pool died")
                done = workers.wait([*pending, *starting])
                if done in starting:
                    actor = starting.pop(done)
                    try:
                        workers.result(done)
                    except WorkerLost:
                        log.warning("a worker died while starting; a new one takes its place")
                        starting.update(self._replace(actor, setup))
                        continue
                    idle.append(actor)
                    continue
                actor, index = pending.pop(done)
                try:
                    result = workers.result(done)
                except WorkerLost:
                    failures[index] += 1
                    if failures[index] > retries:
                        raise
                    log.warning("a worker died; its call %d is tried again (%d of %d)", index,
                                failures[index], retries)
                    starting.update(self._replace(actor, setup))
                    waiting.append((index, arguments[index]))
                    if setup:  # work again for the workers that dropped their object
                        starting.update({workers.send(a, "build", *setup): a
                                         for a in releasing.values()})
                        releasing.clear()
                    continue
                if setup and not waiting:
                    releasing[workers.send(actor, "release", then)] = actor
                else:
                    idle.append(actor)
                yield index, result
            finished = True
        finally:
            if finished:
                if setup:  # replacements still building are done with this map too
                    releasing.update({workers.send(a, "release", then): a
                                      for a in starting.values()})
                    starting = {}
                self.ready += idle
                self.preparing.update(starting)
                self.preparing.update(releasing)
            else:  # failed or abandoned: calls may still run on the workers
                self.kill()


class _SharedPool:
    def __init__(self, workers: int, address: str | None):
        self.workers, self.address = workers, address
        self.pool: _Pool | None = None

    def new_pool(self) -> _Pool:
        """Local processes without an address; Ray actors on a cluster, or on a Ray of our
        own (`LOCAL_RAY`)."""
        if self.address is None:
            return _Pool(self.workers, LocalWorkers())
        return _Pool(self.workers, _RayWorkers(self.workers, self.address))


_shared: _SharedPool | None = None


@contextlib.contextmanager
def worker_pool(workers: int, address: str | None = None) -> Iterator[None]:
    """Within the block, `map_actors` and `map_tasks` share one pool of `workers` workers,
    started at first use and killed at the end: a run's stages 1-7 and its dedup steps run in
    the same warm processes, with no new worker to start between them. Without `address` the
    workers are local processes (`refine.processes`) and no Ray starts; with one, they are Ray
    actors on that cluster (`LOCAL_RAY`: on a new local Ray)."""
    global _shared
    previous, _shared = _shared, _SharedPool(workers, address)
    try:
        yield
    finally:
        if _shared.pool is not None:
            _shared.pool.kill()
        _shared = previous


def _pool_for(workers: int | None, address: str | None, calls: int) -> tuple[_Pool, bool]:
    """The shared pool (see `worker_pool`), else a new one for `calls` calls; and whether it
    is new (to kill after use)."""
    if _shared is not None:
        if _shared.pool is None or not _shared.pool.actors:
            _shared.pool = _shared.new_pool()
        return _shared.pool, False
    import ray

    init_ray(address)
    cpus = ray.available_resources().get("CPU", 1.0)
    size = max(1, min(workers or int(max(1, cpus)), calls))
    return _Pool(size, _RayWorkers(size, address)), True


def process_units(units: list[Unit], config_json: str, run_dir: str, workers: int,
                  address: str | None = None, then: Callable[[], None] | None = None,
                  ) -> Iterator[dict[str, Any]]:
    """Run units on `workers` actors; yield each unit's summary as it finishes. `then`: see
    `map_actors`."""
    yield from map_actors(UnitWorker, (config_json, run_dir), "process",
                          [(unit.to_dict(),) for unit in units], workers, address,
                          retries=UNIT_RETRIES, then=then)


def map_tasks(fn: Callable[..., Any], arguments: list[tuple], workers: int,
              address: str | None = None,
              on_done: Callable[[int, int], None] | None = None) -> list[Any]:
    """`fn(*args)` for each tuple, at most `workers` at once; results in order. On the shared
    pool inside `worker_pool`, else as Ray tasks. A call whose worker died is redone.

    Used by the whole-run stages (dedup): each call reads its own shard or bucket files, so
    only small arguments and results (keys, ids, numbers) travel through Ray.
    """
    if not arguments:
        return []
    results: list[Any] = [None] * len(arguments)
    if _shared is not None:
        pool, _ = _pool_for(workers, address, len(arguments))
        for count, (index, result) in enumerate(pool.map("call", (fn,), arguments,
                                                         TASK_RETRIES), 1):
            results[index] = result
            if on_done is not None:
                on_done(count, len(arguments))
        return results
    import ray

    init_ray(address)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    remote = ray.remote(num_cpus=min(1.0, max(0.1, cpus / workers)),
                        max_retries=TASK_RETRIES)(fn)
    running: dict[Any, int] = {}
    waiting = list(enumerate(arguments))[::-1]
    while waiting or running:
        while waiting and len(running) < workers:
            index, args = waiting.pop()
            running[remote.remote(*args)] = index
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            results[running.pop(ref)] = ray.get(ref)
            if on_done is not None:
                on_done(len(arguments) - len(waiting) - len(running), len(arguments))
    return results


def map_actors(actor_class: type, constructor_args: tuple, method: str, arguments: list[tuple],
               workers: int | None = None, address: str | None = None, retries: int = 0,
               then: Callable[[], None] | None = None) -> Iterator[Any]:
    """`<method>(*args)` for each tuple on `actor_class(*constructor_args)` objects, one built
    in each actor of a pool (`workers` of them, default one per available CPU, never more
    than the calls; inside `worker_pool`, the shared pool); yields the results as they
    finish, in that order. On Ray, a large constructor argument (bytes: a model, say) is
    stored once in the object store, however many actors share it. For work whose actors hold state
    worth building once: stages 1-7 (`process_units`), token encoding.
    `retries`: a call whose actor died (its process or its node) is given to another actor, up
    to that many times (the calls must be safe to redo); a new actor replaces the dead one and
    joins the pool once it has started, where the cluster has room for it.
    `then`: once no call is left for an actor, it drops its object and runs `then()` (to
    prepare the next step while the other actors finish; useful on the shared pool).
    """
    if not arguments:
        return
    pool, temporary = _pool_for(workers, address, len(arguments))
    shared = pool.workers.share(constructor_args)
    try:
        for _, result in pool.map("run", (method,), arguments, retries,
                                  setup=(actor_class, *shared), then=then):
            yield result
    finally:
        if temporary:
            pool.kill()


# Ray Serve: an HTTP application of model replicas (pretrain.serve)

def _quiet_serve_logs() -> dict[str, Any]:
    return {"log_level": "WARNING", "enable_access_log": False}


def serve_app(replica_class: type, *init_args: Any, batched: str, max_batch_size: int = 8,
              batch_wait_s: float = 0.01, replicas: int = 1, cpus_per_replica: float = 1.0,
              max_ongoing_requests: int | None = None) -> Any:
    """A Ray Serve application (not yet running: `serve_run`) of `replicas` copies of
    `replica_class(*init_args)`, each reserving `cpus_per_replica` CPUs and answering HTTP
    requests with its `async __call__(starlette Request)`. Its async method `batched` takes a
    list of items and returns their results in order; in a replica, each call of it with one
    item joins a batch (up to `max_batch_size` items, waiting at most `batch_wait_s` seconds for
    the batch to fill) and gets its own item's result."""
    from ray import serve

    batch = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)
    replica = type(replica_class.__name__, (replica_class,),
                   {batched: batch(getattr(replica_class, batched)),
                    "__doc__": replica_class.__doc__})
    options: dict[str, Any] = {"num_replicas": replicas,
                               "ray_actor_options": {"num_cpus": cpus_per_replica},
                               "logging_config": _quiet_serve_logs()}
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    return serve.deployment(replica).options(**options).bind(*init_args)


def serve_run(app: Any, *, name: str, host: str = "127.0.0.1", port: int = 8000,
              route_prefix: str = "/") -> None:
    """Start Ray Serve's HTTP proxy on host:port (on the Ray this process is connected to) and
    run `app` (`serve_app`'s) there as `name` under `route_prefix`; returns once every replica
    is up."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port}, logging_config=_quiet_serve_logs())
    serve.run(app, name=name, route_prefix=route_prefix, blocking=False)


def shutdown_serve() -> None:
    """Shut Ray Serve, then Ray, down, if this process is connected to a Ray."""
    import ray

    if ray.is_initialized():
        from ray import serve

        serve.shutdown()
        ray.shutdown()


# Ray Tune: a hyperparameter search whose trials report with checkpoints (pretrain.tune)

def _tune() -> Any:
    """`ray.tune`. A checkpoint per report is the point here: Tune's warning about frequent
    experiment snapshots is turned off (set before Tune is first imported)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    return tune


def search_choice(values: list[Any]) -> Any:
    """A search-space domain for `tune_fit`: one of `values`, uniformly."""
    return _tune().choice(values)


def search_loguniform(low: float, high: float) -> Any:
    """A search-space domain for `tune_fit`: log-uniform in [low, high)."""
    return _tune().loguniform(low, high)


def trial_id() -> str:
    """The id of the Tune trial this code runs in (in a `tune_fit` trial function)."""
    return _tune().get_context().get_trial_id()


def report_trial(scores: dict[str, Any], checkpoint_dir: str | Path) -> None:
    """Report `scores` of the running trial to Tune, with the files under `checkpoint_dir`
    (copied; the directory may go afterwards) as the checkpoint of this report."""
    tune = _tune()
    tune.report(scores, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))


@dataclass(frozen=True)
class TrialResult:
    """What a `tune_fit` trial left: its config, last report (`metrics`, empty if none),
    every report in order (`history`), its directory, its error (None if it ran through) and
    the directory of its kept checkpoint (that of its last report with one, or None)."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    path: str
    error: str | None
    checkpoint: str | None


def _trial_dir(name_of: Callable[[str], str], trial: Any) -> str:
    return name_of(trial.trial_id)


def tune_fit(trial: Callable[..., None], trial_kwargs: dict[str, Any],
             param_space: dict[str, Any], *, samples: int, metric: str, mode: str, seed: int,
             storage: str | Path, name: str, trial_dirname: Callable[[str], str],
             cpus_per_trial: float, num_cpus: int | None, time_attr: str, max_t: float,
             grace_period: float, reduction_factor: float) -> list[TrialResult]:
    """Run `samples` trials, `trial(config, **trial_kwargs)` each, on a new local Ray of
    `num_cpus` CPUs (default: all), `cpus_per_trial` each; shut that Ray down; the trials'
    results. Configs are drawn from `param_space` (constants and `search_*` domains) by a
    generator seeded with `seed`; ASHA stops the trials whose `metric` (`mode`: "max" or
    "min") falls behind, with `time_attr`, `max_t`, `grace_period` and `reduction_factor`.
    Tune's files go under the local directory `storage`/`name`, a trial's into
    `trial_dirname(trial id)`, keeping one checkpoint per trial: its latest."""
    tune = _tune()
    import ray
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    init_ray(None, num_cpus=num_cpus)
    try:
        trainable = tune.with_resources(tune.with_parameters(trial, **trial_kwargs),
                                        {"cpu": cpus_per_trial})
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=samples, reuse_actors=False,
                trial_dirname_creator=functools.partial(_trial_dir, trial_dirname),
                scheduler=ASHAScheduler(metric=metric, mode=mode, time_attr=time_attr,
                                        max_t=max_t, grace_period=grace_period,
                                        reduction_factor=reduction_factor),
                search_alg=BasicVariantGenerator(random_state=seed)),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), verbose=1,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        grid = tuner.fit()
    finally:
        ray.shutdown()
    return [TrialResult(
        config=result.config, metrics=dict(result.metrics or {}),
        history=([] if result.metrics_dataframe is None else
                 result.metrics_dataframe.to_dict("records")),
        path=result.path, error=None if result.error is None else str(result.error),
        checkpoint=None if result.checkpoint is None else result.checkpoint.path)
        for result in grid]
