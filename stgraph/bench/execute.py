"""Run a suite: every run in its own folder under ``OUT/runs``, finished runs skipped, crashed
runs resumed from their last checkpoint, runs spread over worker processes.

Workers are spawned processes (never forked after torch has started threads); each loads a
dataset once and keeps it for the runs it is given, and sets torch to ``threads`` threads so
``workers × threads`` matches the cores. On Linux a worker dies with the process that started it
(no orphan keeps training after Ctrl-C or ``kill``), and each run holds a lock on its folder, so
two invocations on the same ``OUT`` never train the same run at once. A run's wall time is
recorded in its ``bench.json``.

``executor="dask"`` sends each run as one task to a Dask cluster instead: a ``LocalCluster`` of
``workers`` processes on this machine, or an existing scheduler at ``address`` (for instance one
that ``dask-jobqueue`` started on Slurm or PBS nodes). A run is the same function either way
(:func:`execute`: lock, resume, train, evaluate, ``bench.json``), so a suite gives the same
numbers on the local pool and on Dask, and an interrupted suite resumes on either. The output
folder must be reachable by every worker under the same path (a shared file system).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from stgraph.bench.data_cache import dataset, source_key
from stgraph.bench.suite import RunSpec, Suite
from stgraph.bench.tune import tuned_suite
from stgraph.engine.run import check_identity
from stgraph.engine.run_folder import RunDir
from stgraph.engine.run_identity import RunIdentityError, expected_data_checksums
from stgraph.engine.run_lock import RunLockedError, run_lock

BENCH_FILE = "bench.json"
EXECUTORS = ("local", "dask")


def run_root(out: str | Path, spec: RunSpec) -> tuple[Path, str]:
    """(parent folder, run folder name) of one run: ``OUT/runs/task/model``, ``foldF-seedS``."""
    parent, name = spec.name.rsplit("/", 1)
    return Path(out) / "runs" / parent, name


SuiteChangedError = RunIdentityError  # a run folder holds a run of another config (or data) than the suite's


def check_same_config(folder: Path, spec: RunSpec) -> None:
    """Refuse to resume (or skip) a run whose folder answers for another config, or, once finished,
    for other data (a re-added dataset): results of two configurations or datasets must never be
    mixed in one leaderboard cell (:mod:`stgraph.engine.run_identity`)."""
    run = RunDir(folder)
    if not run.config_path.exists():
        return
    finished = run.is_finished()
    check_identity(run, spec.config, expected_data_checksums(spec.config) if finished else None)


def is_finished(out: str | Path, spec: RunSpec) -> bool:
    parent, name = run_root(out, spec)
    check_same_config(parent / name, spec)
    return (parent / name / BENCH_FILE).exists() and RunDir(parent / name).is_finished()


def _die_with_parent() -> None:
    """Worker initialiser: on Linux, get SIGTERM when the parent process exits."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def execute(spec: RunSpec, out: str, threads: int | None = None) -> dict:
    """Run one suite run (training resumes if its folder holds a crashed run); returns a summary."""
    import torch

    from stgraph.engine.run import run_experiment

    if threads:
        torch.set_num_threads(threads)
    dc = spec.config.data
    data = dataset(source_key(dc))
    parent, name = run_root(out, spec)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(parent / name))
        except RunLockedError:  # another invocation on the same OUT is running it: leave it to that one
            return {"run": spec.name, "skipped": "running in another process"}
        if is_finished(out, spec):  # finished by another invocation since this one made its list
            return {**RunDir(parent / name).read_json(BENCH_FILE), "skipped": "finished by another process"}
        run, metrics = run_experiment(spec.config, parent, name=name, data=data, progress=False)
        record = {
            "run": spec.name,
            "wall_seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads(),
            "pid": os.getpid(),
            # Linux ru_maxrss is in kB; a pool worker runs one run (max_tasks_per_child=1), so this
            # is the run's peak resident memory, data loading included (in-process: the process's)
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "train_seconds": metrics.get("training", {}).get("wall_seconds"),
            "eval_seconds_per_window": metrics.get("evaluation", {}).get("seconds_per_window"),
        }
        run.write_json(BENCH_FILE, record)
    return {**record, "mae": metrics["test"]["hidden"]["overall"]["mae"]}


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    workers: int = 1,
    threads: int | None = None,
    on_done: Callable[[RunSpec, dict], None] | None = None,
    executor: str = "local",
    address: str | None = None,
) -> list[RunSpec]:
    """Run every unfinished run of ``suite`` into ``out``; returns the runs executed now.

    ``workers=0`` runs in this process (tests, debugging); otherwise a pool of spawned workers
    (``executor="local"``) or a Dask cluster (``executor="dask"``: a ``LocalCluster`` of
    ``workers`` processes, or the scheduler at ``address``). ``threads`` per worker defaults to
    ``cpu_count // workers`` (at least 1).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if address and executor != "dask":
        raise ValueError("a scheduler address needs executor 'dask'")
    out = Path(out)
    if suite.tune:  # every tunable row tuned per fold first (resumable), its runs then use the best
        suite = tuned_suite(suite, out, run_trials=True)
    todo = [s for s in suite.runs if not is_finished(out, s)]
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    if executor == "dask" and todo:
        _run_on_dask(todo, out, threads, workers, address, on_done)
        return todo
    if workers == 0 or len(todo) <= 1:
        for spec in todo:
            info = execute(spec, str(out), threads)
            if on_done:
                on_done(spec, info)
        return todo
    ctx = mp.get_context("spawn")
    pool_args = dict(max_workers=workers, mp_context=ctx, initializer=_die_with_parent, max_tasks_per_child=1)
    with cf.ProcessPoolExecutor(**pool_args) as pool:  # a fresh worker per run: its own peak memory
        futures = {pool.submit(execute, spec, str(out), threads): spec for spec in todo}
        try:
            for fut in cf.as_completed(futures):
                info = fut.result()  # a failed run stops the suite with its error; finished runs stay
                if on_done:
                    on_done(futures[fut], info)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return todo


def _run_on_dask(
    todo: list[RunSpec],
    out: Path,
    threads: int,
    workers: int,
    address: str | None,
    on_done: Callable[[RunSpec, dict], None] | None,
) -> None:
    """Every run of ``todo`` as one Dask task (:func:`execute`), on the scheduler at ``address``
    or on a LocalCluster of ``max(workers, 1)`` single-threaded worker processes."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise ImportError("executor 'dask' needs dask's distributed scheduler: pip install 'dask[distributed]'") from e
    with contextlib.ExitStack() as stack:
        if address:
            client = stack.enter_context(Client(address))
        else:
            cluster = stack.enter_context(
                LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        futures = {client.submit(execute, spec, str(out), threads, key=f"stgraph-{spec.name}", pure=False): spec
                   for spec in todo}  # fmt: skip
        try:
            for fut in as_completed(list(futures)):
                info = fut.result()  # a failed run stops the suite with its error; finished runs stay
                if on_done:
                    on_done(futures[fut], info)
        except BaseException:
            client.cancel(list(futures))
            raise
