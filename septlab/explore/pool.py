"""A local process pool for independent work items, results delivered in item order.

`run` and `compare` split their seeds into chunks; each chunk is one task of a fork-started process
pool (no server, no pickled code: the job -- scenario, variant object, options -- is inherited by the
forked workers, so a variant loaded from the user's .py file needs no import path in the worker). Results
are handed to the caller strictly in item order, so a batch summarised from them is byte-for-byte the
one a single process computes. A worker that dies (OOM killer, SIGKILL) breaks the pool: the pool is
rebuilt and every chunk without a result is submitted again, at most `RETRIES` times per chunk.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

RETRIES = 3

# The job of the pool being run: set before the workers fork, read by them (never pickled).
_JOB: Callable[[Any], Any] | None = None


class WorkerDied(Exception):
    """A chunk killed its worker RETRIES times (a crash of the interpreter, not of the model)."""


def cpu_workers(n: int | None) -> int:
    """`--workers 0` (or None) means one per CPU this process may run on."""
    if n:
        return n
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _call(item: Any) -> Any:
    assert _JOB is not None
    return _JOB(item)


def chunks(n: int, workers: int, per_chunk: int | None = None) -> list[range]:
    """Split range(n) into chunks: about 8 per worker (load balance), never empty."""
    size = per_chunk or max(1, -(-n // (workers * 8)))
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def ordered_map(job: Callable[[Any], Any], items: Sequence[Any], workers: int, ray: bool = False) -> Iterator[Any]:
    """Yield job(item) for every item, in item order, computed by `workers` forked processes -- or, with
    `ray`, by tasks on the Ray cluster this process is connected to (explore/cluster.py; `job` is then
    pickled, so it must be plain data and importable code).

    Closing the generator early (an exception or Ctrl-C in the caller) shuts the pool down and
    cancels what has not started."""
    global _JOB
    if ray:
        from .cluster import ray_ordered_map

        yield from ray_ordered_map(job, items)
        return
    if workers <= 1 or len(items) <= 1:
        for it in items:
            yield job(it)
        return
    _JOB = job
    ctx = mp.get_context("fork")
    done: dict[int, Any] = {}
    tries = [0] * len(items)
    nxt = 0
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        pending: dict[Future[Any], int] = {}

        def submit_missing() -> None:
            inflight = set(pending.values())
            for k in range(nxt, len(items)):
                if k not in done and k not in inflight:
                    tries[k] += 1
                    if tries[k] > RETRIES:
                        raise WorkerDied(f"work item {k} killed its worker {RETRIES} times")
                    pending[pool.submit(_call, items[k])] = k

        submit_missing()
        while nxt < len(items):
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1
            if nxt >= len(items):
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                k = pending.pop(fut)
                try:
                    done[k] = fut.result()
                except BrokenProcessPool:
                    broken = True
            if broken:  # a worker died: every future of this pool is lost; start a new pool, redo the rest
                pool.shutdown(wait=False, cancel_futures=True)
                pending.clear()
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
                submit_missing()
    finally:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # an early close (Ctrl-C, an error) must not leave chunks running
            if p.is_alive():
                p.terminate()
        _JOB = None
