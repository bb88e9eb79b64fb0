"""Where a batch's (and a replay's) jobs run: this machine's processes, or a Ray cluster.

Both engines take a picklable function and jobs and give the results back *in job order*
(whatever order they finish in), with a bounded number of jobs in flight, so the output of a
batch is the same bytes on either engine and memory does not grow with the number of jobs.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from forecaster.errors import InvalidArgumentError

J = TypeVar("J")
R = TypeVar("R")

ENGINES = ("local", "ray")
_IN_FLIGHT_PER_WORKER = 3  # jobs queued per worker: enough to keep it busy, bounded memory
_SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Engine(Protocol):
    """Runs fn over jobs and yields the results in job order."""

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]: ...

    @property
    def workers(self) -> int: ...


@dataclass(frozen=True)
class LocalEngine:
    """Processes on this machine (in this process when workers is 1)."""

    n_workers: int | None = None

    @property
    def workers(self) -> int:
        return self.n_workers or min(os.cpu_count() or 1, 8)

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]:
        if self.workers <= 1:
            with single_threaded():
                for job in jobs:
                    yield fn(job)
            return
        # spawn, not fork: polars' thread pool does not survive a fork (workers would hang).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_single_thread
        ) as pool:
            pending: deque[Future[R]] = deque()
            for job in jobs:
                pending.append(pool.submit(fn, job))
                if len(pending) >= self.workers * _IN_FLIGHT_PER_WORKER:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def _single_thread() -> None:
    os.environ.update(_SINGLE_THREAD)


@contextmanager
def single_threaded() -> Iterator[None]:
    """One thread per process for the numeric libraries while jobs run here: a batch is
    parallel across processes, and on a busy machine torch's and BLAS's thread pools make a
    fit several times slower (measured: the ensemble 4.5x on 2 shared cores). The worker
    processes' variables are set too, for a library first imported inside (torch, when the
    learned models load lazily in the first job: it reads OMP_NUM_THREADS once, at import,
    and keeps one thread after the block; without them it ran the GRU on two threads, 9x
    slower on a shared 2-core machine)."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else 0
    saved = {name: os.environ.get(name) for name in _SINGLE_THREAD}
    os.environ.update(_SINGLE_THREAD)
    try:
        with threadpool_limits(1):
            if torch is not None:
                torch.set_num_threads(1)
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch is not None:
            torch.set_num_threads(threads)


@dataclass(frozen=True)
class RayEngine:
    """Ray tasks, one a job: on the cluster at `address` ("auto": the one this machine is
    part of), or on the Ray already initialised in this process (a test's `ray.init`), or on
    a local Ray started here. The workers read the input files by their paths: on a cluster,
    give paths every node sees (a shared volume)."""

    address: str | None = None

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise InvalidArgumentError(
                "--engine ray needs Ray: pip install 'forecaster[ray]' (or pip install ray)."
            ) from None
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                runtime_env={"env_vars": dict(_SINGLE_THREAD)},
                log_to_driver=False,
                include_dashboard=False,
            )
        return ray

    @property
    def workers(self) -> int:
        return max(int(self._ray().cluster_resources().get("CPU", 1)), 1)

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]:
        ray = self._ray()
        task = ray.remote(num_cpus=1)(fn)
        window = self.workers * _IN_FLIGHT_PER_WORKER
        pending: deque[Any] = deque()
        for job in jobs:
            pending.append(task.remote(job))
            if len(pending) >= window:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())


def create(name: str, *, workers: int | None = None, address: str | None = None) -> Engine:
    """The engine called name ("local" or "ray")."""
    if name == "local":
        if address:
            raise InvalidArgumentError("--address is for --engine ray.")
        return LocalEngine(workers)
    if name == "ray":
        return RayEngine(address or None)
    raise InvalidArgumentError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}.")
