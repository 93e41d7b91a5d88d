#!/usr/bin/env python3
"""One process vs N workers, measured in the same run on the same machine.

check: an exhaustive DFS of a small configuration (default: seed, tdx-free, DPAMT off, liveness off)
on 1 and on N workers; the state, transition and terminal counts must be equal (exit 1 otherwise).
run: S random schedules (default: seed, tdx-free, DPAMT on, 200 schedules) on 1 and N workers; the
batch summaries (violation counts, merged metrics) must be equal. Prints wall times and the speed-up
N workers give; --json writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from septlab.explore.driver import run_batch  # noqa: E402
from septlab.explore.exhaustive import CheckOptions, run_check  # noqa: E402
from septlab.explore.parallel import run_parallel_check  # noqa: E402
from septlab.scenarios import load_scenario  # noqa: E402
from septlab.variants import get_variant  # noqa: E402


def _check(scenario: str, variant: str, workers: int, liveness: bool) -> tuple[float, tuple[int, ...]]:
    scn = load_scenario(scenario, small=True)
    opts = CheckOptions(strategy="dfs", por=False, liveness=liveness)
    t = time.perf_counter()
    if workers == 1:
        r = run_check(scn, get_variant(variant), False, opts)
    else:
        r = run_parallel_check(scn, get_variant(variant), False, opts, workers)
    s = r.stats
    return time.perf_counter() - t, (s.states, s.transitions, s.terminal, int(r.complete))


def _run(scenario: str, variant: str, workers: int, schedules: int) -> tuple[float, str]:
    scn = load_scenario(scenario)
    t = time.perf_counter()
    b = run_batch(scn, get_variant(variant), True, 0, schedules, workers=workers)
    return time.perf_counter() - t, json.dumps([b.counts, b.metrics, b.done], sort_keys=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenario", default="seed")
    ap.add_argument("--variant", default="tdx-free")
    ap.add_argument("--schedules", type=int, default=200)
    ap.add_argument("--liveness", action="store_true", help="check with the liveness graph (default off)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = []
    ok = True
    print(f"{'job':<42} {'1 worker s':>10} {f'{a.workers} workers s':>11} {'speed-up':>8}  same answer")
    t1, c1 = _check(a.scenario, a.variant, 1, a.liveness)
    tn, cn = _check(a.scenario, a.variant, a.workers, a.liveness)
    rows.append({"job": "check", "scenario": a.scenario, "states": c1[0], "one": round(t1, 2), "n": round(tn, 2),
                 "workers": a.workers, "speedup": round(t1 / tn, 2), "same": c1 == cn})
    ok &= c1 == cn
    print(f"{f'check {a.scenario} exhaustive ({c1[0]:,} states)':<42} {t1:>10.1f} {tn:>11.1f} {t1 / tn:>7.2f}x  {c1 == cn}")
    t1, s1 = _run(a.scenario, a.variant, 1, a.schedules)
    tn, sn = _run(a.scenario, a.variant, a.workers, a.schedules)
    rows.append({"job": "run", "scenario": a.scenario, "schedules": a.schedules, "one": round(t1, 2),
                 "n": round(tn, 2), "workers": a.workers, "speedup": round(t1 / tn, 2), "same": s1 == sn})
    ok &= s1 == sn
    print(f"{f'run {a.scenario} --dpamt -n {a.schedules}':<42} {t1:>10.1f} {tn:>11.1f} {t1 / tn:>7.2f}x  {s1 == sn}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
