"""`septlab check --ray ADDRESS`: the parallel depth-first search of explore/parallel.py on a Ray cluster.

The local search shares a state table in shared memory and flags in shared integers; here one `Hub`
actor holds them -- the fingerprint table (with the work item that inserted each state, so a dead
worker's item can be purged and redone), the hunger and stop flags, the workers' inboxes and the
parent's message queue -- and each worker is a `CheckWorker` actor running the same worker loop. A
worker asks the hub about every state it reaches (one round trip; the reply also carries the hunger
and stop flags, so polling them costs nothing more). Ray restarts nothing by itself: the parent sees a
dead worker actor, purges its item's states and starts another. One hub is one actor's worth of
inserts per second (~10^4): enough for tens of workers at septlab's per-worker rate; partitioning the
table over several hubs by fingerprint is the next step when that is not enough.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Any

from ..scenarios import Scenario
from ..variants import Variant
from .cluster import _ray, portable_variant, variant_from
from .exhaustive import CheckOptions, CheckResult
from .fpset import FingerprintSet
from .parallel import ParallelCheck, _worker


class _HubImpl:
    """The shared state of one Ray search (an actor: every method runs alone)."""

    def __init__(self, workers: int) -> None:
        self.table = FingerprintSet()
        self.owner: dict[int, int] = {}
        self.hungry = 0
        self.stop = 0
        self.inbox: list[deque[Any]] = [deque() for _ in range(workers)]
        self.out: deque[Any] = deque()

    def add(self, fp: int, item: int) -> tuple[bool, int, int]:
        new = self.table.add(fp)
        if new:
            self.owner[fp or 1] = item
        return new, self.hungry, self.stop

    def claim(self) -> bool:
        if self.hungry <= 0:
            return False
        self.hungry -= 1
        return True

    def post(self, msg: Any) -> None:
        self.out.append(msg)

    def take_all(self) -> list[Any]:
        out = list(self.out)
        self.out.clear()
        return out

    def give(self, wid: int, msg: Any) -> None:
        self.inbox[wid].append(msg)

    def next_item(self, wid: int) -> tuple[bool, Any, int]:
        q = self.inbox[wid]
        return (True, q.popleft(), self.stop) if q else (False, None, self.stop)

    def set_hungry(self, n: int) -> None:
        self.hungry = n

    def set_stop(self) -> None:
        self.stop = 1

    def purge(self, item: int) -> int:
        gone = [fp for fp, it in self.owner.items() if it == item]
        for fp in gone:
            self.table.discard(fp)
            del self.owner[fp]
        return len(gone)

    def count(self) -> int:
        return len(self.table)


class _RayTable:
    """The worker's and parent's view of the hub's table (FingerprintSet's interface)."""

    def __init__(self, sh: RayShared) -> None:
        self.sh = sh
        self.item = 0

    def add(self, fp: int, journal: list[Any] | None = None) -> bool:
        new, self.sh._hungry, self.sh._stop = _ray().get(self.sh.hub.add.remote(fp, self.item))
        if new and journal is not None:
            journal.append(fp)
        return new

    def discard(self, fp: int) -> bool:
        return False  # no checkpoint is written from a parallel search

    def recount(self) -> None:
        pass

    def purge(self, item: int) -> int:
        return _ray().get(self.sh.hub.purge.remote(item))

    def __len__(self) -> int:
        return _ray().get(self.sh.hub.count.remote())

    @property
    def nbytes(self) -> int:
        return 16 * len(self)


class RayShared:
    """explore/parallel.py's _Shared over the hub actor (picklable: it travels to the workers)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self._hungry = 0
        self._stop = 0
        self._buf: deque[Any] = deque()
        self.table = _RayTable(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"hub": self.hub}

    def __setstate__(self, st: dict[str, Any]) -> None:
        self.__init__(st["hub"])  # type: ignore[misc]

    # the worker's side
    def next_item(self, wid: int) -> Any:
        ray = _ray()
        while True:
            has, msg, self._stop = ray.get(self.hub.next_item.remote(wid))
            if has:
                return msg
            time.sleep(0.01)

    def claim_hunger(self) -> bool:
        return self._hungry > 0 and _ray().get(self.hub.claim.remote())

    def stopped(self) -> bool:
        return bool(self._stop)

    def post(self, msg: Any) -> None:
        self.hub.post.remote(msg)  # calls of one caller run in order: a donation arrives before its "done"

    # the parent's side
    def give(self, wid: int, msg: Any) -> None:
        _ray().get(self.hub.give.remote(wid, msg))

    def set_hungry(self, n: int) -> None:
        self.hub.set_hungry.remote(n)

    def set_stop(self) -> None:
        _ray().get(self.hub.set_stop.remote())

    def take(self, timeout: float) -> Any:
        if not self._buf:
            self._buf.extend(_ray().get(self.hub.take_all.remote()))
            if not self._buf:
                time.sleep(min(timeout, 0.02))
                return None
        return self._buf.popleft()


class _WorkerImpl:
    def run(self, wid: int, sh: RayShared, scn: Scenario, vspec: Any, dpamt: bool, opts: CheckOptions,
            header: dict[str, Any]) -> None:
        _worker(wid, sh, scn, variant_from(vspec), dpamt, opts, header)


class RayCheck(ParallelCheck):
    """ParallelCheck whose workers are Ray actors and whose shared state is the hub actor."""

    def run(self) -> CheckResult:
        ray = _ray()
        self._Hub = ray.remote(num_cpus=0)(_HubImpl)
        self._Worker = ray.remote(num_cpus=1)(_WorkerImpl)
        self.sh = RayShared(self._Hub.remote(self.n))  # type: ignore[assignment]
        self._vspec = portable_variant(self.variant)
        self._wopts = CheckOptions(**{**vars(self.o), "progress": None, "should_stop": None})
        try:
            return self._run()
        finally:
            self._stop_workers()

    def _spawn(self, wid: int) -> Any:
        actor = self._Worker.remote()
        ref = actor.run.remote(wid, self.sh, self.scn, self._vspec, self.dpamt, self._wopts, self.header)
        return (actor, ref)

    def _alive(self, w: int) -> bool:
        ray = _ray()
        _, ref = self.procs[w]
        ready, _ = ray.wait([ref], timeout=0)
        return not ready  # a worker's run() returns only when told to stop, or raises when its actor died

    def _stop_workers(self) -> None:
        ray = _ray()
        for k in range(len(getattr(self, "procs", []))):
            with contextlib.suppress(Exception):
                self.sh.give(k, None)
        refs = [ref for _, ref in getattr(self, "procs", [])]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=5)
        for actor, _ in getattr(self, "procs", []):
            with contextlib.suppress(Exception):
                ray.kill(actor)
        with contextlib.suppress(Exception):
            ray.kill(self.sh.hub)


def run_ray_check(scn: Scenario, variant: Variant, dpamt: bool, opts: CheckOptions, workers: int) -> CheckResult:
    return RayCheck(scn, variant, dpamt, opts, workers).run()
