#!/usr/bin/env python3
"""Time to first bug for every `bug-*` mutant: septlab random, septlab check (DFS, BFS), Hypothesis, SPIN.

Each mutant runs on its own check configuration (load_scenario(v.check_scenario, small=True)), DPAMT on.
The time measured is wall time until the first violation of any invariant:
- septlab random: seeded schedules k*S, k*S+1, ... (run_schedule, the scenario's fault_rate) until one has a
  violation, capped; S = max(1000, cap) so that no two seeds share schedules; median over the seeds k;
- septlab check DFS / BFS (run_check, stop at first): deterministic, so timed once (median of 3 when a
  search takes under a second); the counterexample length len(path) is recorded and BFS's must be <= DFS's;
- Hypothesis: the RuleBasedStateMachine of septlab/explore/hypothesis_sm.py over the same Executor, one
  run per seed (@seed), generate phase only (shrinking is not timed), until the first failing example;
- SPIN: read from bench/results/spin_twin.json if bench/spin_vs_septlab.py wrote it (SPIN runs on the Promela
  twin, a smaller model, so that ratio compares tools on different models); "n/a" otherwise.
"Not found" means past the cap for at least half of the seeds (the median is then a miss; the remaining seeds
are skipped). A Hypothesis run also stops at a wall-time cap (60 s; 30 s with --quick).
Writes bench/results/mutants.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, seed, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from septlab.explore.driver import run_schedule  # noqa: E402
from septlab.explore.exhaustive import CheckOptions, run_check  # noqa: E402
from septlab.explore.hypothesis_sm import make_state_machine  # noqa: E402
from septlab.scenarios import Scenario, load_scenario  # noqa: E402
from septlab.variants import Variant, registry  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SPIN_JSON = RESULTS / "spin_twin.json"
STRIDE = 1000  # seed k's schedules are k*stride + i, stride = max(STRIDE, cap) so that seeds never share schedules
TWIN_NAMES = {"no_grace_period": "bug-rcu-no-grace-period"}  # twin mutant -> septlab mutant, where not bug-<name>
SPIN_TICK = 0.01  # pan reports elapsed time in 10 ms ticks: 0.0 means under one tick


class TimeUp(Exception):
    """Raised from the state machine's teardown once a Hypothesis run is past its time cap."""


def over_seeds(n: int, run: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """run(k) for k in range(n), stopping once half of them missed: the median is then "not found" anyway."""
    out: list[dict[str, Any]] = []
    for k in range(n):
        out.append(run(k))
        if 2 * sum(r["seconds"] is None for r in out) >= n:
            break
    return out


def median_or_none(xs: list[float | None], n: int) -> float | None:
    """Median over n seeds (those not run count as misses), misses as +inf; None if the median is a miss."""
    m = statistics.median([math.inf if x is None else x for x in xs] + [math.inf] * (n - len(xs)))
    return None if math.isinf(m) else m


# --- the four searchers ----------------------------------------------------------------------------------------
def septlab_random(scn: Scenario, v: Variant, k: int, cap: int) -> dict[str, Any]:
    base = k * max(STRIDE, cap)
    t0 = time.perf_counter()
    for i in range(cap):
        r = run_schedule(scn, v, True, base + i, history=False)
        if r.violations:
            return {"seconds": time.perf_counter() - t0, "schedules": i + 1, "invariant": r.violations[0].invariant,
                    "seed": base + i}
        if r.status == "crash":
            return {"seconds": None, "schedules": i + 1, "invariant": None, "crash": r.crash.splitlines()[-1]}
    return {"seconds": None, "schedules": cap, "invariant": None}


def septlab_check(scn: Scenario, v: Variant, strategy: str, time_limit: float | None) -> dict[str, Any]:
    times = []
    res = None
    for _ in range(3):
        t0 = time.perf_counter()
        res = run_check(scn, v, True, CheckOptions(strategy=strategy, time_limit=time_limit))
        times.append(time.perf_counter() - t0)
        if times[0] >= 1.0:
            break
    assert res is not None
    found = res.violation is not None
    return {"seconds": statistics.median(times) if found else None, "runs": len(times),
            "search_seconds": round(statistics.median(times), 4), "length": len(res.path) if found else None,
            "invariant": res.violation.invariant if found else None, "states": res.stats.states,
            "complete": res.complete, "bounded_by": res.bounded_by}


def hypothesis_run(scn: Scenario, v: Variant, s: int, max_examples: int, steps: int, cap_s: float) -> dict[str, Any]:
    base = make_state_machine(scn, v, True)
    box: dict[str, Any] = {"seconds": None, "invariant": None, "examples": 0}
    t0 = time.perf_counter()

    class Timed(base):  # type: ignore[valid-type, misc]
        def teardown(self) -> None:
            box["examples"] += 1
            if box["seconds"] is None and self.ex is not None and self.ex.violations:
                box["seconds"] = time.perf_counter() - t0
                box["invariant"] = self.ex.violations[0].invariant
                box["at_example"] = box["examples"]
            if box["seconds"] is None and time.perf_counter() - t0 > cap_s:
                raise TimeUp

    cfg = settings(derandomize=False, database=None, phases=[Phase.generate], max_examples=max_examples,
                   stateful_step_count=steps, deadline=None, report_multiple_bugs=False,
                   suppress_health_check=list(HealthCheck))
    outcome = "passed"
    try:
        run_state_machine_as_test(seed(s)(Timed), settings=cfg)
    except AssertionError:
        outcome = "failed"
    except TimeUp:
        outcome = "time cap"
    except Exception as e:  # a model crash or a Hypothesis error: report it, keep benchmarking
        outcome = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    box.update(outcome=outcome, wall=time.perf_counter() - t0)
    return box


# --- SPIN (written by bench/spin_vs_septlab.py) -----------------------------------------------------------------
def load_spin() -> dict[str, dict[str, Any]] | None:
    """mutant name -> {"seconds", "tool"}; accepts spin_vs_septlab.py's format or a plain {name: seconds} map."""
    if not SPIN_JSON.is_file():
        return None
    try:
        data = json.loads(SPIN_JSON.read_text())
    except (OSError, ValueError):
        return None
    out: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict) and isinstance(data.get("mutants"), list):
        for m in data["mutants"]:
            twin = str(m.get("mutant", "")).split()[0]
            runs = [r for r in m.get("runs", []) if str(r.get("tool", "")).startswith("SPIN") and r.get("errors")]
            name = TWIN_NAMES.get(twin, "bug-" + twin.replace("_", "-"))
            if twin and runs and name not in out:  # the first entry per mutant (the tdx-free one for no_grace_period)
                best = min(runs, key=lambda r: r["elapsed"])
                out[name] = {"seconds": float(best["elapsed"]), "tool": best["tool"], "config": m.get("config")}
    elif isinstance(data, dict):
        for name, x in data.items():
            sec = x.get("seconds", x.get("elapsed")) if isinstance(x, dict) else x
            if isinstance(sec, (int, float)):
                out[name] = {"seconds": float(sec), "tool": "SPIN"}
    return out


# --- table -----------------------------------------------------------------------------------------------------
def fmt_s(x: float | None) -> str:
    if x is None:
        return "not found"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def measure(v: Variant, a: argparse.Namespace, spin: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    scn = load_scenario(v.check_scenario, small=True)
    row: dict[str, Any] = {"mutant": v.name, "scenario": f"{v.check_scenario} (small)", "catches": list(v.catches)}
    rnd = over_seeds(a.seeds, lambda k: septlab_random(scn, v, k, a.random_cap))
    row["random"] = {"median_s": median_or_none([r["seconds"] for r in rnd], a.seeds), "seeds_run": len(rnd),
                     "median_schedules": statistics.median([r["schedules"] for r in rnd] + [a.random_cap] * (a.seeds - len(rnd))),
                     "found": sum(r["seconds"] is not None for r in rnd), "cap": a.random_cap, "runs": rnd}
    row["dfs"] = septlab_check(scn, v, "dfs", a.check_time_limit)
    row["bfs"] = septlab_check(scn, v, "bfs", a.check_time_limit)
    dl, bl = row["dfs"]["length"], row["bfs"]["length"]
    row["bfs_le_dfs"] = None if dl is None or bl is None else bl <= dl
    hyp = over_seeds(a.seeds, lambda s: hypothesis_run(scn, v, s, a.hyp_examples, a.hyp_steps, a.hyp_cap))
    row["hypothesis"] = {"median_s": median_or_none([h["seconds"] for h in hyp], a.seeds), "seeds_run": len(hyp),
                         "found": sum(h["seconds"] is not None for h in hyp), "runs": hyp}
    invs = [r["invariant"] for r in rnd] + [row["dfs"]["invariant"], row["bfs"]["invariant"]]
    invs += [h["invariant"] for h in hyp]
    row["invariants_found"] = sorted({i for i in invs if i})
    sp = (spin or {}).get(v.name)
    row["spin"] = sp
    modes = {"random": row["random"]["median_s"], "dfs": row["dfs"]["seconds"], "bfs": row["bfs"]["seconds"]}
    found = {k: x for k, x in modes.items() if x is not None}
    fastest = min(found, key=lambda k: found[k]) if found else None
    row["fastest_septlab"] = {"mode": fastest, "seconds": found[fastest]} if fastest else None
    hs = row["hypothesis"]["median_s"]
    if fastest is None:
        row["septlab_faster"] = "no (septlab: not found)" if hs is not None else "neither found"
    elif hs is None:
        row["septlab_faster"] = f"yes ({fastest}; Hypothesis: not found)"
    else:
        ratio = hs / found[fastest]
        row["septlab_faster"] = (f"yes ({fastest}, {ratio:,.0f}x)" if ratio > 1 else f"no ({fastest}, {1 / ratio:,.1f}x slower)")
    if sp and fastest:  # SPIN 0.0 s = under one tick: the ratio is then a lower bound
        row["ratio_septlab_over_spin"] = found[fastest] / max(sp["seconds"], SPIN_TICK)
        row["ratio_is_lower_bound"] = sp["seconds"] < SPIN_TICK
    return row


HEAD = (f"{'mutant':<31} {'invariant found':<27} {'random s':>9} {'sched':>6} {'DFS s':>8} {'len':>4} "
        f"{'BFS s':>8} {'len':>4} {'Hyp s':>9} {'SPIN s':>8} {'sl/SPIN':>8}  septlab faster than Hypothesis?")


def line(r: dict[str, Any]) -> str:
    inv = ",".join(r["invariants_found"]) or "-"
    if len(inv) > 27:
        inv = inv[:26] + "+"
    sp = r["spin"]
    spin_s = "n/a" if not sp else f"<{SPIN_TICK:g}" if sp["seconds"] < SPIN_TICK else fmt_s(sp["seconds"])
    ratio = "n/a"
    if r.get("ratio_septlab_over_spin") is not None:
        ratio = (">" if r["ratio_is_lower_bound"] else "") + f"{r['ratio_septlab_over_spin']:.2g}"
    d, b = r["dfs"], r["bfs"]
    return (f"{r['mutant']:<31} {inv:<27} {fmt_s(r['random']['median_s']):>9} {r['random']['median_schedules']:>6g} "
            f"{fmt_s(d['seconds']):>8} {d['length'] if d['length'] is not None else '-':>4} "
            f"{fmt_s(b['seconds']):>8} {b['length'] if b['length'] is not None else '-':>4} "
            f"{fmt_s(r['hypothesis']['median_s']):>9} {spin_s:>8} {ratio:>8}  {r['septlab_faster']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 seeds, smaller caps, BFS time-limited")
    ap.add_argument("--only", default="", help="comma-separated mutant names (default: every bug-* mutant)")
    ap.add_argument("--json", type=Path, default=RESULTS / "mutants.json")
    a = ap.parse_args()
    a.seeds = 3 if a.quick else 10
    a.random_cap = 500 if a.quick else 5000
    a.check_time_limit = 20.0 if a.quick else None
    a.hyp_examples = 500 if a.quick else 5000
    a.hyp_steps = 500
    a.hyp_cap = 30.0 if a.quick else 60.0
    names = [n for n, v in registry().items() if v.kind == "mutant" and n.startswith("bug-")]
    if a.only:
        want = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = sorted(set(want) - set(names))
        if unknown:
            print(f"unknown mutant(s): {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        names = [n for n in names if n in want]
    spin = load_spin()
    print(f"time to first violation, DPAMT on, each mutant on its check_scenario's small configuration; "
          f"{a.seeds} seeds{' (--quick)' if a.quick else ''}; random cap {a.random_cap} schedules; Hypothesis "
          f"max_examples={a.hyp_examples}, stateful_step_count={a.hyp_steps}, generate phase only, cap {a.hyp_cap:g} s; "
          f"SPIN: {'fastest SPIN run on the Promela twin, from ' + str(SPIN_JSON.relative_to(ROOT)) + ' (sl/SPIN: fastest septlab mode on the full model / SPIN on the twin)' if spin is not None else 'n/a (no spin_twin.json)'}",
          flush=True)
    print(HEAD, flush=True)
    rows = []
    t_all = time.perf_counter()
    for n in names:
        r = measure(registry()[n], a, spin)
        rows.append(r)
        print(line(r), flush=True)
    bad = [r["mutant"] for r in rows if r["bfs_le_dfs"] is False]
    if bad:
        print(f"BFS counterexample LONGER than DFS's for: {', '.join(bad)}")
    print(f"total {time.perf_counter() - t_all:.0f} s")
    out = {"machine": {"platform": platform.platform(), "python": platform.python_version()},
           "protocol": {"seeds": a.seeds, "random_cap": a.random_cap, "random_seeds": f"k*{max(STRIDE, a.random_cap)}+i",
                        "check_time_limit": a.check_time_limit, "hypothesis_max_examples": a.hyp_examples,
                        "hypothesis_steps": a.hyp_steps, "hypothesis_cap_s": a.hyp_cap, "dpamt": True,
                        "quick": a.quick, "spin_source": str(SPIN_JSON) if spin is not None else None},
           "rows": rows, "bfs_longer_than_dfs": bad}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {a.json.relative_to(ROOT) if a.json.is_relative_to(ROOT) else a.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
