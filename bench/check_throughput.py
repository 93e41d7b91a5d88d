#!/usr/bin/env python3
"""Exhaustive-check throughput and reduction on the small configurations (tdx-free, DPAMT off).

For each configuration: DFS with reductions off, DFS with POR, BFS, and full-state storage; prints
distinct states, transitions, states/s, bytes per stored state, model steps re-executed per state,
and what POR saved. All rows are measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from septlab.explore.exhaustive import CheckOptions, run_check  # noqa: E402
from septlab.scenarios import load_scenario  # noqa: E402
from septlab.variants import get_variant  # noqa: E402

MODES = [("dfs, reductions off", dict(strategy="dfs", por=False)),
         ("dfs, POR (sleep sets)", dict(strategy="dfs", por=True)),
         ("bfs, reductions off", dict(strategy="bfs", por=False)),
         ("dfs, full states", dict(strategy="dfs", por=False, full_states=True))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="boot-teardown,conversion-storm,seed")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = []
    print(f"{'scenario':<17} {'mode':<23} {'states':>9} {'transitions':>11} {'s':>7} {'states/s':>9} "
          f"{'B/state':>8} {'steps/state':>11} {'complete':>8}")
    for name in a.scenarios.split(","):
        scn = load_scenario(name, small=True)
        for label, kw in MODES:
            r = run_check(scn, get_variant("tdx-free"), False, CheckOptions(**kw))
            st = r.stats
            row = {"scenario": name, "mode": label, "states": st.states, "transitions": st.transitions,
                   "seconds": round(st.elapsed, 2), "states_per_s": round(st.states_per_s), "bytes_per_state":
                   round(r.bytes_per_state, 1), "steps_per_state": round(st.steps_executed / max(1, st.states), 1),
                   "complete": r.complete, "por_pruned_transitions": st.sleep_pruned}
            rows.append(row)
            print(f"{name:<17} {label:<23} {st.states:>9,} {st.transitions:>11,} {st.elapsed:>7.1f} "
                  f"{st.states_per_s:>9,.0f} {r.bytes_per_state:>8.1f} {row['steps_per_state']:>11} {str(r.complete):>8}")
        off = next(r for r in rows if r["scenario"] == name and r["mode"].startswith("dfs, reductions off"))
        on = next(r for r in rows if r["scenario"] == name and r["mode"].startswith("dfs, POR"))
        print(f"{'':<17} POR: {on['states'] / off['states']:.1%} of the unreduced states, "
              f"{on['transitions'] / off['transitions']:.1%} of the transitions ({on['por_pruned_transitions']:,} pruned)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
