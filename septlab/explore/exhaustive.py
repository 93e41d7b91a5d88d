"""`septlab check`: exhaustive exploration of every schedule the chooser could make.

Generators cannot be copied, so this is stateful search by re-execution (as loom and CHESS do):
to reach a node, the world is rebuilt and the choice prefix replayed; states are identified by
canonical fingerprints (explore/state.py) and never expanded twice. Every transition the runtime
could choose is explored: which runnable task steps next, and for SEAMCALLs every failure the
scenario's fault model allows; grace-period ends are steps of the RCU task.

Reductions, each behind a flag:
- state caching (always): a state reached again is not re-expanded;
- POR (`--por on`): sleep sets over steps whose footprint is certified. An RCU grace-period end touches
  only RCU state, and every access to RCU state goes through host/rcu.py, which counts it; so a
  grace-period end is independent of any step of another task that did not touch RCU state, and is not
  re-explored after such a step. Sound by construction; the differential test compares against --por off.
- preemption bounding (`--preemptions K`, CHESS): at most K switches away from a runnable task.
  Bounded searches, like depth-bounded ones, are reported as "bounded: not a proof".
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scenarios import Scenario
from ..tdx_module import errno as E
from ..variants import Variant
from .executor import Executor, Transition
from .fpset import FingerprintSet, FullStateSet
from .state import fingerprint

CHECKPOINT_FORMAT = 1


class CheckpointError(Exception):
    """A checkpoint that does not belong to this check (exit status 2)."""


@dataclass
class CheckOptions:
    strategy: str = "dfs"  # "dfs" or "bfs" (shortest counterexample)
    por: bool = True
    max_depth: int | None = None
    preemptions: int | None = None
    full_states: bool = False
    stop_at_first: bool = True
    checkpoint: Path | None = None
    checkpoint_every: float = 30.0
    resume: bool = False
    time_limit: float | None = None
    progress: Callable[["CheckStats"], None] | None = None


@dataclass
class CheckStats:
    states: int = 0
    transitions: int = 0
    revisits: int = 0  # successors already seen (pruned by state caching)
    sleep_pruned: int = 0  # transitions not taken because they were asleep (POR)
    preemption_pruned: int = 0
    depth_pruned: int = 0
    terminal: int = 0
    max_depth: int = 0
    frontier: int = 0
    steps_executed: int = 0
    elapsed: float = 0.0
    resumed_from: int = 0
    checkpoints: int = 0

    @property
    def states_per_s(self) -> float:
        return self.states / self.elapsed if self.elapsed else 0.0


@dataclass
class CheckResult:
    stats: CheckStats
    complete: bool
    bounded_by: list[str]
    violation: Any = None
    path: list[Transition] = field(default_factory=list)
    choices: list[tuple[int, int]] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)
    bytes_per_state: float = 0.0
    visited_bytes: int = 0
    found: dict[str, int] = field(default_factory=dict)


class Coverage:
    """Which SEAMCALL x entry-state x outcome, which kernel steps and which events a search reached."""

    def __init__(self) -> None:
        self.seamcalls: dict[tuple[str, str, str], int] = {}
        self.steps: dict[str, int] = {}
        self.events: dict[str, int] = {}

    def note_step(self, what: str) -> None:
        self.steps[what] = self.steps.get(what, 0) + 1

    def note_seamcall(self, leaf: int, state: str, outcome: str) -> None:
        k = (E.leaf_name(leaf), state, outcome)
        self.seamcalls[k] = self.seamcalls.get(k, 0) + 1

    def note_event(self, ev: str) -> None:
        self.events[ev] = self.events.get(ev, 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {"seamcall_entry_state": [{"leaf": a, "entry_state": b, "outcome": c, "count": n}
                                         for (a, b, c), n in sorted(self.seamcalls.items())],
                "steps": dict(sorted(self.steps.items())), "events": dict(sorted(self.events.items()))}


class Explorer:
    """Search over any executor with: reset(), transitions(), execute(tr), state(), finish(), stopped,
    violations, steps_executed, step, choices, and the optional hooks gp_transition(), step_info(tr)
    (coverage + "did this step touch RCU state") and events()."""

    def __init__(self, ex: Any, opts: CheckOptions, header: dict[str, Any]):
        self.o = opts
        self.ex = ex
        self.header = header
        self.stats = CheckStats()
        self.cov = Coverage()
        self.bounded: set[str] = set()
        self.found: dict[str, int] = {}  # invariant -> violating states found (stop_at_first=False)
        self.visited: Any = FullStateSet() if opts.full_states else FingerprintSet()
        self.budget: dict[int, int] = {}  # fp -> most preemptions left when expanded (bounded mode)
        self.asleep: dict[int, bool] = {}  # fp -> expanded with the GP step asleep (POR)
        self._last_ckpt = time.monotonic()
        self._last_report = 0.0
        self._t0 = 0.0
        if hasattr(ex, "record"):
            ex.record = False  # choice lists are rebuilt for the one path that is reported

    # --- helpers -------------------------------------------------------------------------------------
    def _key(self) -> Any:
        st = self.ex.state()
        return st if self.o.full_states else fingerprint(st)

    def _gp_transition(self) -> Transition | None:
        f = getattr(self.ex, "gp_transition", None)
        return f() if f else None

    def _step(self, tr: Transition) -> bool:
        """Execute one transition; True if it may have touched RCU state (POR footprint)."""
        f = getattr(self.ex, "step_info", None)
        if f is None:
            self.ex.execute(tr)
            return True
        return f(tr, self.cov)

    def _replay(self, path: list[Transition]) -> None:
        ex = self.ex
        ex.reset()
        for tr in path:
            ex.execute(tr)

    def _events_from(self) -> None:
        f = getattr(self.ex, "events", None)
        for ev in (f() if f else ()):
            self.cov.note_event(ev)

    def _count_leaf(self) -> None:
        """A terminal state is a state too (SPIN counts end states): count it once, never expand it."""
        self.stats.terminal += 1
        if self.visited.add(self._key()):
            self.stats.states += 1

    def _note_found(self) -> None:
        for v in {x.invariant for x in self.ex.violations}:
            self.found[v] = self.found.get(v, 0) + 1

    def _violation(self) -> Any:
        v = self.ex.violations
        return v[0] if v else None

    def _progress(self, frontier: int) -> None:
        s = self.stats
        s.elapsed = time.monotonic() - self._t0
        s.frontier = frontier
        s.steps_executed = self.ex.steps_executed
        if self.o.progress:
            self.o.progress(s)

    def _tick(self, frontier: Any, size: int) -> None:
        """Every so often: report progress; every checkpoint interval: write the checkpoint."""
        now = time.monotonic()
        if now - self._last_report > 0.25:
            self._last_report = now
            self._progress(size)
        if self.o.checkpoint and now - self._last_ckpt > self.o.checkpoint_every:
            self._save_checkpoint(frontier)

    def _time_up(self) -> bool:
        return self.o.time_limit is not None and time.monotonic() - self._t0 > self.o.time_limit

    def _result(self, complete: bool, viol: Any = None, path: list[Transition] | None = None) -> CheckResult:
        s = self.stats
        s.elapsed = time.monotonic() - self._t0
        s.steps_executed = self.ex.steps_executed
        choices: list[tuple[int, int]] = []
        if path is not None:
            self.ex.record = True
            self._replay(path)
            choices = list(self.ex.choices)
        if isinstance(self.visited, FingerprintSet):
            vb = self.visited.nbytes
        else:  # full states: pickled size of a sample (a lower bound of the in-memory size) + set slots
            import pickle as _p
            import sys

            sample = list(self.visited.s)[:200]
            avg = sum(len(_p.dumps(x, protocol=5)) for x in sample) / max(1, len(sample))
            vb = int(avg * len(self.visited)) + sys.getsizeof(self.visited.s)
        vb += 48 * (len(self.budget) + len(self.asleep))
        if self.o.strategy == "bfs" and hasattr(self, "bfs_parent"):
            vb += 16 * len(self.bfs_parent)  # two list slots per state (ints and transitions are shared)
        return CheckResult(s, complete and not self.bounded, sorted(self.bounded), viol, path or [], choices,
                           self.cov.as_json(), vb / max(1, s.states), vb, dict(self.found))

    # --- DFS -----------------------------------------------------------------------------------------
    def _admit(self, key: Any, pre_left: int, gp_asleep: bool) -> bool:
        """Decide whether a reached state must be expanded (state caching + budgets + sleep sets)."""
        fp = key if not self.o.full_states else hash(key)
        new = self.visited.add(key)
        if self.o.preemptions is not None:
            old = self.budget.get(fp)
            if old is not None and old >= pre_left and not new:
                if not (self.o.por and self.asleep.get(fp) and not gp_asleep):
                    return False
            self.budget[fp] = max(pre_left, old if old is not None else -1)
        elif not new:
            if self.o.por and self.asleep.get(fp) and not gp_asleep:
                self.asleep[fp] = False  # must also try the grace-period end this time
                return True
            return False
        if self.o.por:
            if gp_asleep:
                self.asleep[fp] = True
            else:
                self.asleep.pop(fp, None)
        if new:
            self.stats.states += 1
        return True

    def dfs(self) -> CheckResult:
        o = self.o
        ex = self.ex
        self._t0 = time.monotonic()
        if o.resume and o.checkpoint and o.checkpoint.exists():
            stack = self._load_checkpoint()
            at = -1
        else:
            ex.reset()
            self._admit(self._key(), o.preemptions or 0, False)
            stack = [self._node(frozenset(), 0, -1)]
            at = 0  # the executor is at stack[at]
        while stack:
            node = stack[-1]
            if self._time_up():
                self.bounded.add("time limit")
                break
            tr = self._next(node)
            if tr is None:
                stack.pop()
                continue
            if at != len(stack) - 1:
                self._replay([n["chosen"] for n in stack[:-1]])
            node["chosen"] = tr
            touched_rcu = self._step(tr)
            node["done"].append(tr)
            at = -1
            self.stats.transitions += 1
            depth = len(stack)
            if depth > self.stats.max_depth:
                self.stats.max_depth = depth
            v = self._violation()
            if v is not None and ex.stopped:
                self._events_from()
                if o.stop_at_first:
                    return self._result(False, v, [n["chosen"] for n in stack])
                self._note_found()
                continue
            trs = ex.transitions()
            if not trs:
                self._count_leaf()
                ex.finish()
                self._events_from()
                v = self._violation()
                if v is not None:
                    if o.stop_at_first:
                        return self._result(False, v, [n["chosen"] for n in stack])
                    self._note_found()
                continue
            if o.max_depth is not None and ex.step >= o.max_depth:
                self.stats.depth_pruned += 1
                self.bounded.add(f"depth {o.max_depth}")
                continue
            pre = node["pre"] + self._is_preemption(node, tr)
            sleep = frozenset()
            if o.por:
                gp = node["gp"]
                cand = set(node["sleep"]) | set(node["done"][:-1])
                if gp is not None and gp in cand and tr[0] != gp[0] and not touched_rcu:
                    sleep = frozenset({gp})
            pre_left = (o.preemptions - pre) if o.preemptions is not None else 0
            if not self._admit(self._key(), pre_left, bool(sleep)):
                self.stats.revisits += 1
                continue
            stack.append(self._node(sleep, pre, tr[0], trs))
            at = len(stack) - 1
            self._tick(stack, len(stack))
        self._progress(0)
        if o.checkpoint and not self.bounded:
            self._save_checkpoint([])
        return self._result(not self.bounded)

    def _node(self, sleep: frozenset, pre: int, last: int, trs: list[Transition] | None = None) -> dict[str, Any]:
        trs = trs if trs is not None else self.ex.transitions()
        gp = self._gp_transition() if self.o.por else None
        if gp is not None:  # explore the grace-period end first so that later siblings can put it to sleep
            trs = [gp] + [t for t in trs if t != gp]
        en = {tid for tid, _ in trs}
        return {"trs": trs, "i": 0, "sleep": sleep, "pre": pre, "last": last, "chosen": None, "done": [],
                "gp": gp, "last_enabled": last in en}

    def _is_preemption(self, node: dict[str, Any], tr: Transition) -> int:
        return int(node["last"] >= 0 and node["last_enabled"] and tr[0] != node["last"])

    def _next(self, node: dict[str, Any]) -> Transition | None:
        trs = node["trs"]
        while node["i"] < len(trs):
            tr = trs[node["i"]]
            node["i"] += 1
            if tr in node["sleep"]:
                self.stats.sleep_pruned += 1
                continue
            if self.o.preemptions is not None and node["pre"] + self._is_preemption(node, tr) > self.o.preemptions:
                self.stats.preemption_pruned += 1
                self.bounded.add(f"preemptions {self.o.preemptions}")
                continue
            return tr
        return None

    # --- BFS (shortest counterexample) -------------------------------------------------------------
    def _path(self, node: int) -> list[Transition]:
        out = []
        while node > 0:
            out.append(self.bfs_tr[node])
            node = self.bfs_parent[node]
        out.reverse()
        return out

    def bfs(self) -> CheckResult:
        """Level by level: the first violation found has a shortest path (fewest steps) to it.
        The tree of visited states is kept as parent pointers (two list slots per state)."""
        o = self.o
        ex = self.ex
        self._t0 = time.monotonic()
        intern: dict[Transition, Transition] = {}
        if o.resume and o.checkpoint and o.checkpoint.exists():
            frontier = self._load_checkpoint()
        else:
            ex.reset()
            self._admit(self._key(), 0, False)
            self.bfs_parent: list[int] = [-1]
            self.bfs_tr: list[Transition] = [(-1, 0)]
            frontier = deque([0])
        while frontier:
            if self._time_up():
                self.bounded.add("time limit")
                break
            node = frontier.popleft()
            path = self._path(node)
            self._replay(path)
            trs = ex.transitions()
            for k, tr in enumerate(trs):
                if k:
                    self._replay(path)
                self._step(tr)
                self.stats.transitions += 1
                depth = len(path) + 1
                if depth > self.stats.max_depth:
                    self.stats.max_depth = depth
                v = self._violation()
                if v is not None and ex.stopped:
                    self._events_from()
                    return self._result(False, v, path + [tr])
                if not ex.transitions():
                    self._count_leaf()
                    ex.finish()
                    self._events_from()
                    v = self._violation()
                    if v is not None:
                        return self._result(False, v, path + [tr])
                    continue
                if o.max_depth is not None and ex.step >= o.max_depth:
                    self.stats.depth_pruned += 1
                    self.bounded.add(f"depth {o.max_depth}")
                    continue
                if self.visited.add(self._key()):
                    self.stats.states += 1
                    self.bfs_parent.append(node)
                    self.bfs_tr.append(intern.setdefault(tr, tr))
                    frontier.append(len(self.bfs_parent) - 1)
                else:
                    self.stats.revisits += 1
            self._tick(frontier, len(frontier))
        self._progress(0)
        if o.checkpoint and not self.bounded:
            self._save_checkpoint(deque())
        return self._result(not self.bounded)

    # --- checkpoints -------------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        o = self.o
        return {"format": CHECKPOINT_FORMAT, **self.header, "strategy": o.strategy, "por": o.por,
                "max_depth": o.max_depth, "preemptions": o.preemptions, "full_states": o.full_states}

    def _save_checkpoint(self, frontier: Any) -> None:
        assert self.o.checkpoint is not None
        vis = self.visited.to_list() if isinstance(self.visited, FingerprintSet) else list(self.visited.s)
        blob = {"header": self._header(), "frontier": list(frontier) if self.o.strategy == "bfs" else frontier,
                "bfs_tree": (self.bfs_parent, self.bfs_tr) if self.o.strategy == "bfs" else None,
                "visited": vis, "budget": self.budget, "asleep": self.asleep, "stats": self.stats,
                "bounded": sorted(self.bounded), "coverage": self.cov}
        path = self.o.checkpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(blob, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        self._last_ckpt = time.monotonic()
        self.stats.checkpoints += 1

    def _load_checkpoint(self) -> Any:
        path = self.o.checkpoint
        assert path is not None
        try:
            with open(path, "rb") as f:
                blob = pickle.load(f)  # our own file format, written by _save_checkpoint
        except Exception as e:
            raise CheckpointError(f"{path}: not a septlab checkpoint ({type(e).__name__})") from None
        if not isinstance(blob, dict) or blob.get("header") != self._header():
            raise CheckpointError(f"{path}: checkpoint is for a different check "
                                  f"({(blob.get('header') if isinstance(blob, dict) else None)})")
        for fp in blob["visited"]:
            self.visited.add(fp)
        self.budget = blob["budget"]
        self.asleep = blob["asleep"]
        self.stats = blob["stats"]
        self.stats.resumed_from = self.stats.states
        self.bounded = set(blob["bounded"])
        self.cov = blob["coverage"]
        self._t0 = time.monotonic() - self.stats.elapsed
        fr = blob["frontier"]
        if self.o.strategy == "bfs":
            self.bfs_parent, self.bfs_tr = blob["bfs_tree"]
            return deque(fr)
        return fr


def run_check(scn: Scenario, variant: Variant, dpamt: bool, opts: CheckOptions) -> CheckResult:
    header = {"scenario": scn.source, "digest": scn.digest, "variant": variant.name, "dpamt": dpamt}
    ex = Explorer(Executor(scn, variant, dpamt), opts, header)
    return ex.bfs() if opts.strategy == "bfs" else ex.dfs()
