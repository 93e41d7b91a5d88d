"""`septlab check --workers N`: one depth-first search shared by N forked processes.

Each worker runs the ordinary DFS (exhaustive.Explorer) on a *work item*: a stack from the initial
state down to a node with untried transitions. All workers insert into one visited set in shared memory
(SharedFingerprintSet), so every state is expanded by exactly one worker and a complete check counts the
same states, transitions and terminal states with 1 or N workers. Load balance is work stealing through
the parent: when a worker is idle, the parent raises `hungry`; a busy worker polls it before every step
and gives away the untried transitions of the lowest node of its stack (the biggest subtrees), which the
parent hands to the idle worker. A work item is a few hundred transitions, so giving one away is cheap;
the receiver re-executes the prefix (as every DFS backtrack does).

Results are merged per finished item: statistics, coverage, invariants found, the liveness state graph
(the parent runs the liveness analysis on the union). A worker that dies (OOM killer, SIGKILL) loses
only its current item: its states are purged from the shared set (each entry records the item that
inserted it), the item is queued again and a new worker is forked. Nothing crosses a process boundary
but plain data (transitions, counts, fingerprints); the model itself is inherited by fork.

Not with workers: checkpoints (the search state is spread over processes), POR (its sleep marks are
per process), full-state storage (states are not shared), BFS (the parallel search is depth-first, so a
counterexample is not necessarily a shortest one).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import tempfile
import time
from collections import deque
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from ..scenarios import Scenario
from ..variants import Variant
from .executor import Executor, Transition
from .exhaustive import CheckOptions, CheckResult, CheckStats, Coverage, Explorer, check_header
from .fpset import probe
from .liveness import StateGraph

_MAX_STATS = {"max_depth"}  # merged by maximum; every other counter is summed
_POLL = 0.25  # seconds the parent waits for a message before it looks at its workers


class StateTableLost(Exception):
    """A worker died holding the shared state table's lock: the search cannot go on (exit 2)."""


class SharedFingerprintSet:
    """Open-addressing table of 64-bit fingerprints in a shared file mapping, with the work item that
    inserted each one. One lock serialises inserts (a check does a few thousand per second per worker:
    contention is negligible); the table doubles under the lock, and a generation number tells the other
    processes to map the new file before their next insert."""

    def __init__(self, directory: Path, capacity: int = 1 << 16):
        ctx = mp.get_context("fork")
        self.dir = directory
        self.lock = ctx.Lock()
        self.gen = ctx.RawValue("q", 0)
        self.count = ctx.RawValue("q", 0)
        self.item = 0  # the work item this process is exploring (set per item)
        self._g = -1
        self._write(0, np.zeros(capacity, np.uint64), np.zeros(capacity, np.uint32))
        self._map()

    # --- files ---------------------------------------------------------------------------------------
    def _path(self, g: int) -> Path:
        return self.dir / f"states-{g}.bin"

    def _write(self, g: int, fps: np.ndarray, owners: np.ndarray) -> None:
        with open(self._path(g), "wb") as fh:
            fh.write(fps.tobytes())
            fh.write(owners.tobytes())

    def _map(self) -> None:
        g = self.gen.value
        if g == self._g:
            return
        size = self._path(g).stat().st_size
        cap = size // 12
        # plain ndarray views: indexing a np.memmap goes through Python-level subclass hooks
        self.fps = np.memmap(self._path(g), np.uint64, "r+", 0, (cap,)).view(np.ndarray)
        self.own = np.memmap(self._path(g), np.uint32, "r+", 8 * cap, (cap,)).view(np.ndarray)
        self._g = g

    # --- the set -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.count.value)

    @property
    def nbytes(self) -> int:
        return 12 * len(self.fps)

    def add(self, fp: int, journal: list[Any] | None = None) -> bool:
        fp = fp or 1
        with self.lock:
            self._map()
            i, present = probe(self.fps, fp)
            if present:
                return False
            if journal is not None:
                journal.append(fp)
            self.fps[i] = fp
            self.own[i] = self.item
            self.count.value += 1
            if self.count.value * 2 > len(self.fps):
                self._rebuild(2 * len(self.fps), None)
            return True

    def discard(self, fp: int) -> bool:
        """Not exact in parallel (no checkpoint is written from a parallel search): a no-op."""
        return False

    def recount(self) -> None:
        """Nothing to do: the shared count is exact."""

    def _rebuild(self, capacity: int, drop_item: int | None) -> int:
        """Copy the table into a new file of `capacity` slots, leaving out the entries of `drop_item`;
        the caller holds the lock. Returns how many entries were dropped."""
        keep = self.fps != 0
        if drop_item is not None:
            keep &= self.own != drop_item
        fps = np.asarray(self.fps[keep])
        owners = np.asarray(self.own[keep])
        dropped = int(np.count_nonzero(self.fps)) - len(fps)
        new = np.zeros(capacity, np.uint64)
        newo = np.zeros(capacity, np.uint32)
        for fp, ow in zip(fps.tolist(), owners.tolist(), strict=True):
            i, _ = probe(new, fp)
            new[i] = fp
            newo[i] = ow
        g = self.gen.value + 1
        self._write(g, new, newo)
        old = self._path(self.gen.value)
        self.gen.value = g
        self.count.value = len(fps)
        self._map()
        with contextlib.suppress(OSError):
            old.unlink()  # mappings of it stay valid until the other processes remap
        return dropped

    def purge(self, item: int, timeout: float = 10.0) -> int:
        """Take out every state the (dead) work item inserted, so that its redo explores them again."""
        if not self.lock.acquire(timeout=timeout):
            raise StateTableLost("a worker died holding the state table's lock; the search cannot continue")
        try:
            self._map()
            return self._rebuild(len(self.fps), item)
        finally:
            self.lock.release()


class _Shared:
    """What the parent and its workers share on one machine: the state table in shared memory, the hunger
    and stop flags, one inbox per worker and one queue of messages to the parent. explore/ray_check.py
    implements the same methods over Ray actors."""

    def __init__(self, directory: Path, workers: int):
        ctx = mp.get_context("fork")
        self.table: Any = SharedFingerprintSet(directory)
        self.hungry = ctx.Value("i", 0)
        self.stop = ctx.RawValue("i", 0)
        self.results: Any = ctx.Queue()
        self.inboxes: list[Any] = [ctx.Queue() for _ in range(workers)]

    # --- the worker's side ------------------------------------------------------------------------------
    def next_item(self, wid: int) -> Any:
        return self.inboxes[wid].get()

    def claim_hunger(self) -> bool:
        """True (once per idle worker) if someone is idle: the caller then gives work away."""
        h = self.hungry
        if h.value <= 0:  # unlocked read: a stale value only delays a hand-over by one step
            return False
        with h.get_lock():
            if h.value <= 0:
                return False
            h.value -= 1
            return True

    def stopped(self) -> bool:
        return bool(self.stop.value)

    def post(self, msg: Any) -> None:
        self.results.put(msg)

    # --- the parent's side ------------------------------------------------------------------------------
    def give(self, wid: int, msg: Any) -> None:
        self.inboxes[wid].put(msg)

    def set_hungry(self, n: int) -> None:
        with self.hungry.get_lock():
            self.hungry.value = n

    def set_stop(self) -> None:
        self.stop.value = 1

    def take(self, timeout: float) -> Any:
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            return None


def unsupported(opts: CheckOptions) -> list[str]:
    """The options a parallel search cannot honour, as the user spelled them, with why."""
    return [why for bad, why in (
        (opts.strategy != "dfs", "--strategy bfs (the parallel search is depth-first)"),
        (opts.por, "--por on (sleep marks are kept per process)"),
        (opts.dpor, "--por dpor (backtrack sets live on one process's path)"),
        (opts.full_states, "--full-states (only fingerprints are shared)"),
        (opts.checkpoint is not None or opts.resume, "--checkpoint (the search state is spread over processes)"),
    ) if bad]


def _prefix_node(nd: dict[str, Any]) -> dict[str, Any]:
    """A stack node below the given-away one: only the transition taken from it matters (it is replayed,
    then popped without exploring anything)."""
    ch = nd["chosen"]
    return {"trs": [ch], "i": 1, "sleep": frozenset(), "pre": nd["pre"], "last": nd["last"], "chosen": ch,
            "done": [ch], "gp": None, "last_enabled": nd["last_enabled"], "fp": nd.get("fp"), "fps": {},
            "only": None}


class _WorkerExplorer(Explorer):
    """The ordinary DFS, on the shared state table, giving work away when the parent says someone is idle."""

    def __init__(self, ex: Any, opts: CheckOptions, header: dict[str, Any], sh: _Shared):
        super().__init__(ex, opts, header)
        self.visited = sh.table
        self.sh = sh

    def _poll(self, stack: list[dict[str, Any]]) -> None:
        # never the top node: the giver keeps the subtree it is in, or two workers would hand one item back
        # and forth without exploring it
        for k, nd in enumerate(stack[:-1]):  # noqa: B007 (k is used after the loop)
            if nd["i"] < len(nd["trs"]):
                break
        else:
            return
        if not self.sh.claim_hunger():
            return
        nd = stack[k]
        given = {"trs": nd["trs"][nd["i"]:], "i": 0, "sleep": nd["sleep"], "pre": nd["pre"], "last": nd["last"],
                 "chosen": None, "done": list(nd["done"]), "gp": nd["gp"], "last_enabled": nd["last_enabled"],
                 "fp": nd.get("fp"), "fps": {}, "only": None}
        nd["i"] = len(nd["trs"])
        self.sh.post(("donate", [_prefix_node(x) for x in stack[:k]] + [given]))


def _payload(xp: Explorer, viol: Any, vpath: list[Transition]) -> dict[str, Any]:
    g = xp.graph
    return {"stats": {f.name: getattr(xp.stats, f.name) for f in fields(CheckStats)},
            "coverage": (xp.cov.seamcalls, xp.cov.steps, xp.cov.events), "found": xp.found,
            "bounded": sorted(xp.bounded), "violation": viol is not None, "path": vpath,
            "interrupted": xp.interrupted,
            "graph": None if g is None else (g.info, {k: v for k, v in g.out.items()})}


def _worker(wid: int, sh: Any, scn: Scenario, variant: Variant, dpamt: bool, opts: CheckOptions,
            header: dict[str, Any]) -> None:
    """A worker's life: explore the items the parent gives it until it gets None."""
    with contextlib.suppress(ValueError):  # not the main thread (a Ray actor's): Ray handles signals
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and tells us to stop
    ex = Executor(scn, variant, dpamt)
    wopts = CheckOptions(**{**vars(opts), "checkpoint": None, "resume": False, "progress": None,
                            "time_limit": None, "should_stop": sh.stopped})
    while True:
        msg = sh.next_item(wid)
        if msg is None:
            return
        item_id, stack = msg
        sh.table.item = item_id
        xp = _WorkerExplorer(ex, wopts, header, sh)
        xp._start()
        if stack is None:  # the initial state
            stack = xp._root_stack()
            at = 0
        else:
            at = -1
        before = ex.steps_executed
        try:
            viol, vpath = xp._dfs_loop(stack, at)
        except Exception as e:  # a crash is not a lost worker: redoing the item would crash again, forever
            sh.post(("error", wid, item_id, f"{type(e).__name__}: {e}"))
            return
        xp.stats.steps_executed = ex.steps_executed - before
        sh.post(("done", wid, item_id, _payload(xp, viol, vpath)))


class ParallelCheck:
    """The parent: hands out work items, merges finished ones, replaces dead workers."""

    def __init__(self, scn: Scenario, variant: Variant, dpamt: bool, opts: CheckOptions, workers: int):
        bad = unsupported(opts)
        if bad:
            raise ValueError(f"a parallel check cannot be combined with {bad[0]}")
        self.scn, self.variant, self.dpamt, self.o, self.n = scn, variant, dpamt, opts, workers
        self.header = check_header(scn, variant, dpamt)
        self.xp = Explorer(Executor(scn, variant, dpamt), opts, self.header)  # merges, liveness, the report

    def run(self) -> CheckResult:
        with tempfile.TemporaryDirectory(prefix="septlab-check-", dir=_shm_dir()) as d:
            self.sh = _Shared(Path(d), self.n)
            try:
                return self._run()
            finally:
                self._stop_workers()

    # --- workers -----------------------------------------------------------------------------------
    def _spawn(self, wid: int) -> Any:
        ctx = mp.get_context("fork")
        p = ctx.Process(target=_worker, args=(wid, self.sh, self.scn, self.variant, self.dpamt, self.o, self.header),
                        daemon=True, name=f"septlab-check-{wid}")
        p.start()
        return p

    def _stop_workers(self) -> None:
        for k in range(len(getattr(self, "procs", []))):
            with contextlib.suppress(Exception):
                self.sh.give(k, None)
        deadline = time.monotonic() + 2
        for p in getattr(self, "procs", []):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(1)

    # --- the search ----------------------------------------------------------------------------------
    def _run(self) -> CheckResult:
        o, xp, sh = self.o, self.xp, self.sh
        xp._start()
        xp.stats = CheckStats()
        xp.graph = StateGraph() if xp.graph is not None else None
        if xp.graph is not None:  # the initial state first: it is the graph's root
            xp.ex.reset()
            xp._graph_state(xp._key(), xp.ex.transitions())
        self.procs = [self._spawn(k) for k in range(self.n)]
        pending: deque[list[dict[str, Any]] | None] = deque([None])
        busy: dict[int, tuple[int, Any]] = {}  # worker -> (item id, item)
        idle = list(range(self.n))
        next_id = 1
        viol_path: list[Transition] | None = None
        stopping = False
        hunger = -1
        t_end = None if o.time_limit is None else xp._run_t0 + o.time_limit
        try:
            while True:
                while idle and pending and not stopping:
                    w = idle.pop(0)
                    item = pending.popleft()
                    busy[w] = (next_id, item)
                    sh.give(w, (next_id, item))
                    next_id += 1
                if not busy and (not pending or stopping):
                    break
                want = 0 if pending or stopping else len(idle)
                if want != hunger:  # only on a change: for Ray each call is a message to the hub
                    sh.set_hungry(want)
                    hunger = want
                if not stopping and (t_end is not None and time.monotonic() > t_end
                                     or o.should_stop is not None and o.should_stop()):
                    stopping = True
                    sh.set_stop()
                    if t_end is not None and time.monotonic() > t_end:
                        xp.bounded.add("time limit")
                    else:
                        xp._interrupt()
                msg = sh.take(_POLL)
                if msg is None:
                    self._reap(busy, pending, idle)
                    self._report(len(pending) + len(busy))
                    continue
                if msg[0] == "donate":
                    pending.append(msg[1])
                    continue
                if msg[0] == "error":
                    raise RuntimeError(f"check worker {msg[1]} crashed: {msg[3]}")
                _, w, item_id, pl = msg
                busy.pop(w, None)
                idle.append(w)
                self._merge(pl)
                if pl["violation"] and viol_path is None and o.stop_at_first:
                    viol_path = pl["path"]
                    stopping = True
                    sh.set_stop()
                self._report(len(pending) + len(busy))
        except KeyboardInterrupt:
            sh.set_stop()
            xp._interrupt()
        if viol_path is not None:
            xp._replay(viol_path)
            return xp._result(False, xp._violation(), viol_path)
        if pending:
            xp.bounded.add("interrupted" if xp.interrupted else "time limit")
        xp._progress(0)
        return xp._finish()

    def _alive(self, w: int) -> bool:
        p = self.procs[w]
        if p.is_alive():
            return True
        p.join(0)
        return False

    def _reap(self, busy: dict[int, tuple[int, Any]], pending: deque[Any], idle: list[int]) -> None:
        """A worker that died: purge what its item inserted, queue the item again, start a replacement."""
        for w in range(len(self.procs)):
            if self._alive(w):
                continue
            if w in busy:
                item_id, item = busy.pop(w)
                self.sh.table.purge(item_id)
                pending.appendleft(item)
            self.procs[w] = self._spawn(w)
            if w not in idle:
                idle.append(w)

    def _merge(self, pl: dict[str, Any]) -> None:
        xp = self.xp
        xp.ex.steps_executed += pl["stats"]["steps_executed"]  # the report's total is the executor's count
        for name, v in pl["stats"].items():
            if name == "steps_executed":
                continue
            if name in _MAX_STATS:
                setattr(xp.stats, name, max(getattr(xp.stats, name), v))
            elif name not in ("elapsed", "frontier", "resumed_from", "checkpoints"):  # summed
                setattr(xp.stats, name, getattr(xp.stats, name) + v)
        cov: Coverage = xp.cov
        for mine, theirs in zip((cov.seamcalls, cov.steps, cov.events), pl["coverage"], strict=True):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n
        for k, n in pl["found"].items():
            xp.found[k] = xp.found.get(k, 0) + n
        xp.bounded |= set(pl["bounded"]) - {"interrupted"}
        if pl["graph"] is not None and xp.graph is not None:
            info, out = pl["graph"]
            g = xp.graph
            for fp, masks in info.items():
                g.state(fp, *masks)
            for src, lst in out.items():
                for tr, dst, prog in lst:
                    g.edge(src, tr, dst, prog)

    def _report(self, frontier: int) -> None:
        xp = self.xp
        now = time.monotonic()
        if now - xp._last_report < 0.25:
            return
        xp._last_report = now
        s = xp.stats
        s.elapsed = now - xp._t0
        s.frontier = frontier
        if xp.o.progress:
            shown = CheckStats(**vars(s))
            shown.states = len(self.sh.table)  # live, not only finished items
            xp.o.progress(shown)


def _shm_dir() -> str | None:
    """The state table lives in RAM where Linux offers a tmpfs for it."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def run_parallel_check(scn: Scenario, variant: Variant, dpamt: bool, opts: CheckOptions, workers: int) -> CheckResult:
    return ParallelCheck(scn, variant, dpamt, opts, workers).run()
