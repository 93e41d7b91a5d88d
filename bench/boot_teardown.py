#!/usr/bin/env python3
"""Scale benchmark: modelled operations per second for `boot-teardown` at 1 GiB and 4 GiB.

One schedule each (one vCPU faults in every private page, then the VM is destroyed: BLOCK/TRACK/
REMOVE/WBINVD per page, HKID release, RECLAIM of every S-EPT page). A modelled operation is one
atomic step of the model (one resume of a task to its next announced step). The per-operation
cost at 4 GiB divided by that at 1 GiB shows whether the model scales linearly (aim: <= 1.3).
Both sizes are measured in the same run, on the same machine: the ratio is the figure that travels.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from septlab.explore.driver import run_schedule  # noqa: E402
from septlab.scenarios import load_scenario  # noqa: E402
from septlab.variants import get_variant  # noqa: E402


def measure(size: str, variant: str, dpamt: bool) -> dict:
    scn = load_scenario("boot-teardown", {"memory": size})
    gc.collect()
    t0 = time.perf_counter()
    r = run_schedule(scn, get_variant(variant), dpamt, 0, history=False)
    dt = time.perf_counter() - t0
    assert r.status == "done" and not r.violations, (r.status, [v.title for v in r.violations])
    return {"size": size, "pages": scn.memory_pages, "steps": r.steps, "seconds": round(dt, 3),
            "ops_per_s": round(r.steps / dt), "ns_per_op": round(dt / r.steps * 1e9, 1),
            "seamcalls": sum(r.metrics["seamcalls"].values()), "peak_pages": r.metrics["peak_pages"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1GiB,4GiB", help="comma-separated sizes (first is the baseline)")
    ap.add_argument("--variant", default="tdx-free")
    ap.add_argument("--dpamt", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    a = ap.parse_args()
    rows = [measure(s.strip(), a.variant, a.dpamt) for s in a.sizes.split(",")]
    base = rows[0]
    print(f"boot-teardown, variant {a.variant}, DPAMT {'on' if a.dpamt else 'off'}, one schedule each")
    print(f"{'size':>6} {'4K pages':>9} {'steps':>11} {'SEAMCALLs':>10} {'seconds':>8} {'ops/s':>10} {'ns/op':>7} {'cost vs ' + base['size']:>12}")
    for r in rows:
        r["cost_ratio"] = round(r["ns_per_op"] / base["ns_per_op"], 3)
        print(f"{r['size']:>6} {r['pages']:>9,} {r['steps']:>11,} {r['seamcalls']:>10,} {r['seconds']:>8.2f} "
              f"{r['ops_per_s']:>10,} {r['ns_per_op']:>7.1f} {r['cost_ratio']:>12.3f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {rss / 1024:.0f} MiB; targets: >= 100,000 ops/s, cost ratio <= 1.3")
    if a.json:
        a.json.write_text(json.dumps({"variant": a.variant, "dpamt": a.dpamt, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
