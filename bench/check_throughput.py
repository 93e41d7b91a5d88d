#!/usr/bin/env python3
"""Exhaustive-check throughput and reduction on the small configurations (tdx-free, DPAMT off, liveness off).

Every configuration is checked in each mode, in the same run on the same machine, and compared with the
baseline -- the search as it was before re-execution became light (`light_replay=False`: every replayed
step records choices and call chains):

- baseline: DFS, full re-execution of each prefix;
- light replay: DFS, prefixes re-executed without per-step records or call chains;
- POR (sleep sets): light replay + sleep sets over traced footprints (`--por on`);
- DPOR: light replay + dynamic POR with subtree summaries (`--por dpor`);
- BFS and full-state storage, for memory and shortest counterexamples.

Prints distinct states, transitions, terminal states, seconds, states/s, bytes per state, model steps
re-executed per state, and each mode's wall time and transitions relative to the baseline. A reduced mode
whose terminal states or states differ from what it must preserve is flagged (sleep sets keep every state;
DPOR keeps every terminal state).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from septlab.explore.exhaustive import CheckOptions, run_check  # noqa: E402
from septlab.scenarios import load_scenario  # noqa: E402
from septlab.variants import get_variant  # noqa: E402

MODES = [("baseline (full replay)", dict(strategy="dfs", por=False, light_replay=False)),
         ("light replay", dict(strategy="dfs", por=False)),
         ("POR (sleep sets)", dict(strategy="dfs", por=True)),
         ("DPOR", dict(strategy="dfs", por=False, dpor=True)),
         ("bfs", dict(strategy="bfs", por=False)),
         ("dfs full states", dict(strategy="dfs", por=False, full_states=True))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="boot-teardown,conversion-storm,seed")
    ap.add_argument("--modes", default=",".join(m for m, _ in MODES),
                    help="comma-separated subset of: " + ", ".join(m for m, _ in MODES))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    wanted = [m.strip() for m in a.modes.split(",")]
    modes = [(m, kw) for m, kw in MODES if m in wanted]
    if not modes or modes[0][0] != MODES[0][0]:
        modes = [MODES[0]] + [x for x in modes if x[0] != MODES[0][0]]  # ratios need the baseline
    rows = []
    print(f"{'scenario':<17} {'mode':<23} {'states':>8} {'transitions':>11} {'terminal':>8} {'s':>7} "
          f"{'states/s':>8} {'B/state':>8} {'steps/st':>8} {'time x':>7} {'trans %':>7} ok")
    for name in a.scenarios.split(","):
        scn = load_scenario(name, small=True)
        base = None
        for label, kw in modes:
            t0 = time.monotonic()
            r = run_check(scn, get_variant("tdx-free"), False, CheckOptions(liveness=False, **kw))
            wall = time.monotonic() - t0
            st = r.stats
            row = {"scenario": name, "mode": label, "states": st.states, "transitions": st.transitions,
                   "terminal_states": len(r.terminals), "seconds": round(wall, 2),
                   "states_per_s": round(st.states / wall) if wall else 0,
                   "bytes_per_state": round(r.bytes_per_state, 1),
                   "steps_per_state": round(st.steps_executed / max(1, st.states), 1), "complete": r.complete}
            if base is None:
                base = (row, r.terminals)
            b, bterm = base
            row["speedup_vs_baseline"] = round(b["seconds"] / wall, 2) if wall else 0.0
            row["transitions_vs_baseline"] = round(st.transitions / b["transitions"], 3)
            keeps_states = label != "DPOR"
            row["sound"] = r.terminals == bterm and (st.states == b["states"] if keeps_states else True)
            rows.append(row)
            print(f"{name:<17} {label:<23} {st.states:>8,} {st.transitions:>11,} {len(r.terminals):>8,} {wall:>7.1f} "
                  f"{row['states_per_s']:>8,} {r.bytes_per_state:>8.1f} {row['steps_per_state']:>8} "
                  f"{row['speedup_vs_baseline']:>6.2f}x {row['transitions_vs_baseline']:>6.1%} "
                  f"{'yes' if row['sound'] else 'NO'}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(a.json)
    return 0 if all(r["sound"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
