#!/usr/bin/env python3
"""Which footprint keys keep steps of different tasks dependent under POR (issue 9's analysis).

Runs `septlab check --por on` (sleep sets, explore/exhaustive.py) on a small configuration (tdx-free,
DPAMT off, liveness off) with two hooks that do not change the search:

- every traced footprint (explore/footprint.py) is tagged with the step it belongs to: task, the
  operation the task announced (`op.what`) and the injected error;
- every sleep-set decision (`Explorer._child_sleep`: may transition u, explored or asleep at a state,
  stay asleep after the step tr taken from that state?) between steps of different tasks is recorded;
  when the footprints conflict (`footprint.dependent`), the conflicting keys are recomputed clause by
  clause and reduced to a key kind: ids dropped (`("sp", 7)` -> `sp`, `vcpu1` -> `vcpu#`), lock names
  kept, `[e]` for an element key, `[whole/e]` for a whole-attribute access against an element access.

Pairs are counted twice: "siblings" (u and tr both explored from the same state: each dependent one is a
second order the search must explore) and "asleep" (u inherited asleep from an ancestor, woken by tr).
For each key kind: the dependent pairs it appears in ("any"), and those in which it is the only kind
("only": the pairs that would become independent if that kind alone stopped conflicting).

With --dpor the same accounting is done on DPOR's races (`--por dpor`): each race found between a new
step and an earlier step of the path (explore/dpor.py `_clock_and_race`) is attributed to the keys of
that pair.

It also prints the floor sleep sets cannot go under: they keep every state (bench/check_throughput.py
checks it), and every state but the initial one is entered by at least one explored transition, so
transitions >= states - 1, whatever the dependence relation.

    .venv/bin/python bench/por_dependencies.py --scenario seed [--top 25] [--pairs 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from septlab.explore import dpor as dpor_mod  # noqa: E402
from septlab.explore.exhaustive import CheckOptions, Explorer, run_check  # noqa: E402
from septlab.explore.footprint import dependent  # noqa: E402
from septlab.scenarios import load_scenario  # noqa: E402
from septlab.variants import get_variant  # noqa: E402


class TaggedFp(tuple):
    """A footprint (reads, writes, element-read parents, element-write parents) with the step it is of."""

    step: tuple[str, str, int]


def _norm_obj(o: Any) -> str:
    if isinstance(o, tuple):
        if o and o[0] == "lock":
            return f"lock:{o[1]}"
        if o and o[0] == "task":
            return "task:" + re.sub(r"\d+", "#", str(o[1]))
        if o and o[0] == "mc":
            return "mc:" + re.sub(r"\d+", "#", str(o[1]))
        return str(o[0]) if o else "?"
    return str(o)


def kind(key: tuple, how: str = "") -> str:
    """The kind of a footprint key: object without ids, attribute, element marker."""
    s = f"{_norm_obj(key[0])}.{key[1]}"
    if len(key) > 2:
        s += "[e]"
    return s + how


def conflicting(a: tuple, b: tuple) -> set[str]:
    """The key kinds that make footprints a and b dependent (explore/footprint.py `dependent`, clause by
    clause)."""
    ra, wa, rpa, wpa = a
    rb, wb, rpb, wpb = b
    out: set[str] = set()
    for k in (wa & rb) | (wa & wb) | (ra & wb):
        out.add(kind(k))
    for k in (wa & rpb) | (wa & wpb) | (ra & wpb) | (wpa & rb) | (wpa & wb) | (rpa & wb):
        out.add(kind(k, "[whole/e]"))
    return out


def _what(step: tuple[str, str, int]) -> str:
    t, w, inj = step
    w = re.sub(r"0x[0-9a-f]+|\d+", "#", w or "?")
    return f"{re.sub(r'[0-9]+', '#', t)}: {w}" + (" (inj)" if inj else "")


class Stats:
    def __init__(self) -> None:
        self.decisions: Counter[str] = Counter()  # sibling/asleep x dependent/independent
        self.any: dict[str, Counter[str]] = defaultdict(Counter)  # origin -> kind -> pairs
        self.only: dict[str, Counter[str]] = defaultdict(Counter)
        self.combos: Counter[tuple[str, ...]] = Counter()
        self.examples: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        self.task_pairs: Counter[tuple[str, str]] = Counter()

    def note(self, origin: str, f: Any, g: Any) -> None:
        dep = dependent(g, f)
        self.decisions[f"{origin} {'dependent' if dep else 'independent'}"] += 1
        if not dep:
            return
        ks = conflicting(g, f)
        assert ks, "dependent() and conflicting() disagree"
        for k in ks:
            self.any[origin][k] += 1
        if len(ks) == 1:
            self.only[origin][next(iter(ks))] += 1
        self.combos[tuple(sorted(ks))] += 1
        sf, sg = getattr(f, "step", None), getattr(g, "step", None)
        if sf and sg:
            pair = tuple(sorted((_what(sg), _what(sf))))
            self.task_pairs[tuple(sorted((re.sub(r"\d+", "#", sg[0]), re.sub(r"\d+", "#", sf[0]))))] += 1
            for k in ks:
                self.examples[k][pair] += 1


def instrument_sleep_sets(stats: Stats) -> None:
    orig_fp = Explorer._footprint_step
    orig_cs = Explorer._child_sleep

    def footprint_step(self: Explorer, tr: Any) -> Any:
        t = self.ex.threads[tr[0]]
        step = (t.task.name, t.op.what or "", tr[1])
        fp = TaggedFp(orig_fp(self, tr))
        fp.step = step
        return fp

    def child_sleep(self: Explorer, node: dict[str, Any], tr: Any) -> Any:
        f = node["fps"][tr]
        if f is not None:
            sl = node["sleep"]
            if isinstance(sl, dict):
                for u, g in sl.items():
                    if u[0] != tr[0] and g is not None:
                        stats.note("asleep", f, g)
            for u in node["done"][:-1]:
                g = node["fps"].get(u)
                if u[0] != tr[0] and g is not None:
                    stats.note("siblings", f, g)
        return orig_cs(self, node, tr)

    Explorer._footprint_step = footprint_step  # type: ignore[method-assign]
    Explorer._child_sleep = child_sleep  # type: ignore[method-assign]


def instrument_dpor(stats: Stats) -> None:
    D = dpor_mod.Dpor
    orig_fp = D._footprint_step
    orig_race = D._clock_and_race
    steps: dict[int, tuple[str, str, int]] = {}

    def footprint_step(self: Any, tr: Any) -> Any:
        t = self.ex.threads[tr[0]]
        self._last_step = (t.task.name, t.op.what or "", tr[1])
        return orig_fp(self, tr)

    def traced(self: Any, tr: Any) -> int:
        eid = orig_traced(self, tr)
        steps.setdefault(eid, self._last_step)
        return eid

    def clock_and_race(self: Any, stack: list[Any], k: int, tid: int, eid: int) -> Any:
        clock, race = orig_race(self, stack, k, tid, eid)
        if race >= 0:
            other = stack[race].ev[1]
            f, g = TaggedFp(self._events[eid][1]), TaggedFp(self._events[other][1])
            f.step, g.step = steps.get(eid, ("?", "", 0)), steps.get(other, ("?", "", 0))
            stats.note("race", f, g)
        return clock, race

    orig_traced = D._traced
    D._footprint_step = footprint_step
    D._traced = traced
    D._clock_and_race = clock_and_race


def report(stats: Stats, top: int, npairs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"decisions": dict(stats.decisions)}
    print("\ndecisions (pairs of steps of different tasks):")
    for k, v in sorted(stats.decisions.items()):
        print(f"  {k:<26} {v:>9,}")
    for origin in sorted(stats.any):
        anyc, onlyc = stats.any[origin], stats.only[origin]
        ndep = stats.decisions[f"{origin} dependent"]
        print(f"\n{origin}: {ndep:,} dependent pairs; key kinds by pairs they appear in")
        print(f"  {'key kind':<58} {'any':>8} {'%':>6} {'only':>8}")
        rows = []
        for k, v in anyc.most_common(top):
            print(f"  {k:<58} {v:>8,} {v / max(1, ndep):>6.1%} {onlyc[k]:>8,}")
            rows.append({"kind": k, "pairs": v, "only": onlyc[k]})
        out[origin] = rows
    print("\nmost frequent combinations of conflicting kinds:")
    for ks, v in stats.combos.most_common(top):
        print(f"  {v:>8,}  {' + '.join(ks)}")
    out["combos"] = [[list(ks), v] for ks, v in stats.combos.most_common(top)]
    print("\ntask pairs:")
    for tp, v in stats.task_pairs.most_common():
        print(f"  {v:>8,}  {tp[0]} / {tp[1]}")
    out["task_pairs"] = [[list(tp), v] for tp, v in stats.task_pairs.most_common()]
    allk = Counter()
    for c in stats.any.values():
        allk.update(c)
    print("\nsteps behind each top kind:")
    out["examples"] = {}
    for k, _ in allk.most_common(top):
        print(f"  {k}")
        ex = stats.examples[k].most_common(npairs)
        for (a, b), v in ex:
            print(f"      {v:>7,}  {a}  |  {b}")
        out["examples"][k] = [[a, b, v] for (a, b), v in ex]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="seed")
    ap.add_argument("--dpor", action="store_true", help="attribute DPOR's races instead of sleep-set decisions")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--pairs", type=int, default=6, help="step pairs shown per key kind")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    stats = Stats()
    if a.dpor:
        instrument_dpor(stats)
        opts = CheckOptions(strategy="dfs", por=False, dpor=True, liveness=False)
    else:
        instrument_sleep_sets(stats)
        opts = CheckOptions(strategy="dfs", por=True, liveness=False)
    t0 = time.monotonic()
    r = run_check(load_scenario(a.scenario, small=True), get_variant("tdx-free"), False, opts)
    st = r.stats
    print(f"{a.scenario} ({'DPOR' if a.dpor else 'sleep sets'}): {st.states:,} states, {st.transitions:,} transitions, "
          f"{len(r.terminals):,} terminal states, {st.sleep_pruned:,} pruned, complete={r.complete}, "
          f"{time.monotonic() - t0:.0f} s; floor for sleep sets: {st.states - 1:,} transitions")
    out = report(stats, a.top, a.pairs)
    out.update(scenario=a.scenario, mode="dpor" if a.dpor else "sleep sets", states=st.states,
               transitions=st.transitions, terminal_states=len(r.terminals))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
