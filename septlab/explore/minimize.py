"""Counterexample minimization for traces found by random runs (delta debugging, then fewer preemptions).

A schedule is re-expressed as *deviations* from a default policy -- keep running the task that ran
last if it can, else the lowest-numbered runnable task; never inject a failure -- keyed by step.
ddmin (Zeller) drops deviations while the same invariant is still violated and the run gets no
longer; fewer deviations means fewer preemptions and injected faults. Every candidate is a real run, so whatever comes out is a
genuine failing schedule, recorded as a normal choice list that `septlab replay` reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..check.invariants import Checker
from ..scenarios import Scenario
from ..scenarios.world import build_world
from ..variants import Variant
from .runtime import Runtime

Deviation = tuple[int, int]  # (choice index at which to deviate, option taken)


class DeviationChooser:
    """Default policy plus explicit deviations; records the decisions it made (as deviations)."""

    def __init__(self, deviations: dict[int, int]):
        self.dev = deviations
        self.k = 0
        self.last_sched: int | None = None
        self.made: dict[int, int] = {}
        self.runtime: Runtime | None = None

    def choose(self, kind: str, n: int) -> int:
        k = self.k
        self.k += 1
        default = 0
        if kind == "sched" and self.runtime is not None:
            en = self.runtime._enabled_names  # type: ignore[attr-defined]
            if self.last_sched in en:
                default = en.index(self.last_sched)
        i = self.dev.get(k, default)
        if i >= n:
            i = default
        if i != default:
            self.made[k] = i
        if kind == "sched" and self.runtime is not None:
            self.last_sched = self.runtime._enabled_names[i]  # type: ignore[attr-defined]
        return i


class _Runtime(Runtime):
    """Runtime that exposes the names of the runnable tasks to the chooser (for the sticky default)."""

    def _choose(self, kind: str, n: int) -> int:
        if kind == "sched":
            from .runtime import op_enabled

            self._enabled_names = [t.task.name for t in self.threads if not t.done and op_enabled(t.op)]
        return super()._choose(kind, n)


@dataclass
class Minimized:
    choices: list[tuple[int, int]]
    steps: int
    deviations: int
    preemptions: int
    tries: int
    invariant: str


def run_with_deviations(scn: Scenario, variant: Variant, dpamt: bool, dev: dict[int, int],
                        max_steps: int | None = None) -> tuple[Any, DeviationChooser, Runtime]:
    """One candidate run; `max_steps` caps it below the scenario's bound (a candidate longer than the
    best so far is useless, and the sticky default policy can spin a retry loop for millions of steps)."""
    checker = Checker()
    world = build_world(scn, variant, dpamt, checker, False)
    checker.attach(world)
    ch = DeviationChooser(dev)
    bound = scn.max_steps if max_steps is None else min(max_steps, scn.max_steps)
    rt = _Runtime(world.host, world.threads, ch, scn.faults, bound, scn.max_faults)
    ch.runtime = rt
    out = rt.run()
    checker.finish(out.status, out.steps, out.blocked)
    return checker, ch, rt


def _fails(scn: Scenario, variant: Variant, dpamt: bool, dev: dict[int, int], inv: str,
           max_steps: int | None = None) -> tuple[bool, DeviationChooser, Runtime]:
    checker, ch, rt = run_with_deviations(scn, variant, dpamt, dev, max_steps)
    return any(v.invariant == inv for v in checker.violations), ch, rt


def deviations_of(choices: list[tuple[int, int]]) -> dict[int, int]:
    """Express a recorded choice list as deviations from 'always option 0' (the starting point)."""
    return {k: i for k, (_n, i) in enumerate(choices)}


def minimize(scn: Scenario, variant: Variant, dpamt: bool, choices: list[tuple[int, int]], invariant: str,
             max_tries: int = 400) -> Minimized:
    """ddmin over deviations from the sticky default policy."""
    ok, ch, rt = _fails(scn, variant, dpamt, deviations_of(choices), invariant)
    if not ok:
        raise ValueError("the trace does not violate the invariant it is minimized for")
    cur = dict(ch.made)
    best_steps = rt.step  # a candidate must also be no longer than the best so far
    tries = 1
    n = 2
    while len(cur) >= 1 and tries < max_tries:
        items = sorted(cur.items())
        chunk = max(1, len(items) // n)
        reduced = False
        for start in range(0, len(items), chunk):
            cand = dict(items[:start] + items[start + chunk:])
            tries += 1
            ok, ch2, rt2 = _fails(scn, variant, dpamt, cand, invariant, best_steps)
            if ok and rt2.step <= best_steps:
                cur = dict(ch2.made)  # the deviations that run actually needed
                best_steps = rt2.step
                n = max(n - 1, 2)
                reduced = True
                break
            if tries >= max_tries:
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(items), n * 2)
    ok, ch, rt = _fails(scn, variant, dpamt, cur, invariant)
    assert ok
    pre = sum(1 for k in ch.made)
    return Minimized(list(rt.choices), rt.step, len(ch.made), pre, tries, invariant)
