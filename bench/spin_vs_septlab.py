#!/usr/bin/env python3
"""SPIN vs septlab on the Promela twin of the S-EPT free lifecycle.

bench/promela/sept_twin.pml and bench/twin/twin_model.py are the same model: same variables, same atomic
steps. This script, in one run on this machine:
  1. installs SPIN (Debian `spin`) if `spin` is missing; without it only the septlab side runs (exit 2);
  2. equivalence gate: for every configuration in --gate and the --config one, septlab's Explorer
     (dfs, por off) and SPIN (-DSAFETY -DNOREDUCE) must find the same number of distinct states, and
     SPIN's transitions (= stored+matched) must be septlab's + 1 (SPIN also counts the initial state);
     any difference exits 1;
  3. throughput on --config: septlab dfs and bfs, SPIN without reductions and with its default POR
     (median of --repeat pan runs); states/s of each and the septlab/SPIN ratio;
  4. time to first violation and counterexample length (atomic steps) for every twin mutant on
     --mutant-config: septlab dfs/bfs, SPIN DFS and -DBFS builds; a mutant either tool misses exits 1;
  5. writes bench/results/spin_twin.json.
Everything SPIN generates (pan.c, pan, trails) lives in a temporary directory that is removed.
septlab runs in a child process per search (so its peak RSS is its own); times are search times
(septlab: Explorer's elapsed; SPIN: pan's "elapsed time"), the wall time of each process is kept too.
SPIN -DBFS also stores the states inside atomic sequences; its "nominal states" line is the comparable count.
Exit status: 0 gate passed and every mutant caught by both tools; 1 a count differs or a mutant was missed;
2 SPIN unavailable (septlab side only, gate not checked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.twin.twin_model import CATCHES, MUTANTS, TwinConfig  # noqa: E402

PML = ROOT / "bench" / "promela" / "sept_twin.pml"
RESULTS = ROOT / "bench" / "results" / "spin_twin.json"
PAN_RUN = ["-m100000", "-w24"]
GCC = ["gcc", "-O2", "-w", "-DSAFETY", "-DMEMLIM=8000"]
# Which assert failed -> septlab's invariant name.
ASSERTS = (("spfree", "rcu-use-after-free"), ("pamt", "free-while-tdx-owned"), ("hkid", "seamcall-unexpected-error"),
           ("owner[k]", "leak-at-destroy"))
GUARD = re.compile(r"\[\(+(pc==|cbn>0)")  # the first statement of every atomic block in `spin -t -p` output


def parse_cfg(text: str, **extra: Any) -> TwinConfig:
    """"N,V,W" plus optional ",rcu" and ",f=K" -> TwinConfig."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    kw: dict[str, Any] = {"n": int(parts[0]), "v": int(parts[1]), "w": int(parts[2])}
    for p in parts[3:]:
        if p == "rcu":
            kw["rcu_free"] = True
        elif p.startswith("f="):
            kw["max_faults"] = int(p[2:])
        else:
            raise SystemExit(f"bad configuration part {p!r} in {text!r}")
    kw.update(extra)
    return TwinConfig(**kw)


# --- SPIN ------------------------------------------------------------------------------------------

def ensure_spin() -> tuple[str | None, str]:
    """Path of `spin`, installing Debian's package quietly if needed; (None, reason) if impossible."""
    spin = shutil.which("spin")
    if spin:
        return spin, ""
    if shutil.which("apt-get") is None:
        return None, "no apt-get on this machine"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("spin not found: installing Debian's `spin` package (apt-get install -y spin) ...", flush=True)
    for cmds in ([["apt-get", "install", "-y", "-qq", "spin"]],
                 [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "spin"]]):
        ok = all(subprocess.run(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
                 for c in cmds)
        spin = shutil.which("spin")
        if ok and spin:
            return spin, ""
    return None, "apt-get install -y spin failed (not root, or no package index reachable)"


def spin_version(spin: str) -> str:
    return subprocess.run([spin, "-V"], capture_output=True, text=True).stdout.strip()


class SpinRunner:
    def __init__(self, spin: str, tmp: Path):
        self.spin = spin
        self.tmp = tmp
        self.builds: dict[tuple[str, str], tuple[Path, float]] = {}

    def build(self, cfg: TwinConfig, kind: str) -> tuple[Path, float]:
        """spin -a + gcc for one configuration and build kind (noreduce, por, bfs) -> (dir, seconds)."""
        key = (" ".join(cfg.defines()), kind)
        if key in self.builds:
            return self.builds[key]
        d = self.tmp / f"b{len(self.builds)}"
        d.mkdir()
        shutil.copy(PML, d / PML.name)
        flags = {"noreduce": ["-DNOREDUCE"], "por": [], "bfs": ["-DNOREDUCE", "-DBFS"]}[kind]
        t0 = time.perf_counter()
        subprocess.run([self.spin, *cfg.defines(), "-a", PML.name], cwd=d, check=True, capture_output=True)
        subprocess.run([*GCC, *flags, "-o", "pan", "pan.c"], cwd=d, check=True, capture_output=True)
        self.builds[key] = (d, time.perf_counter() - t0)
        return self.builds[key]

    def verify(self, cfg: TwinConfig, kind: str, repeat: int = 1) -> dict[str, Any]:
        d, build_s = self.build(cfg, kind)
        runs = []
        for _ in range(repeat):
            (d / f"{PML.name}.trail").unlink(missing_ok=True)
            out, wall, rss = wait4_run(["./pan", *PAN_RUN], d)
            runs.append((parse_pan(out), wall, rss, out))
        runs.sort(key=lambda r: r[0]["elapsed"])
        res, wall, rss, _ = runs[len(runs) // 2]
        if res["nominal"] is not None:  # BFS stores the states inside atomic sequences too
            res["stored_incl_atomic"], res["states"] = res["states"], res["nominal"]
        res.update(tool=f"SPIN {'BFS' if kind == 'bfs' else 'DFS'}{' POR' if kind == 'por' else ''}", build=kind,
                   build_s=round(build_s, 3), wall_s=round(wall, 3), rss_mib=round(rss, 1), runs=len(runs),
                   elapsed_all=[r[0]["elapsed"] for r in runs])
        if res["errors"]:
            res["cex_steps"] = self.trail_steps(cfg, d)
        return res

    def trail_steps(self, cfg: TwinConfig, d: Path) -> int | None:
        """Atomic steps in the counterexample: atomic blocks entered in the `spin -t -p` replay."""
        if not (d / f"{PML.name}.trail").exists():
            return None
        out = subprocess.run([self.spin, *cfg.defines(), "-t", "-p", PML.name], cwd=d, capture_output=True,
                             text=True).stdout
        return sum(1 for line in out.splitlines() if GUARD.search(line))


def wait4_run(cmd: list[str], cwd: Path | None = None) -> tuple[str, float, float]:
    """Run a command to completion; (stdout, wall seconds, that process's own peak RSS in MiB)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, etext = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {(etext or text).strip()[-3000:]}")
    return text, wall, ru.ru_maxrss / 1024


def parse_pan(out: str) -> dict[str, Any]:
    def num(pat: str, cast: Any = int, default: Any = None) -> Any:
        m = re.search(pat, out)
        return cast(m.group(1)) if m else default

    res: dict[str, Any] = {
        "states": num(r"(\d+) states, stored"), "transitions": num(r"(\d+) transitions \(= stored\+matched\)"),
        "matched": num(r"(\d+) states, matched"), "atomic_steps": num(r"(\d+) atomic steps"),
        "nominal": num(r"(\d+) nominal states"), "errors": num(r"errors: (\d+)", int, 0),
        "depth": num(r"depth reached (\d+)"), "elapsed": num(r"elapsed time ([\d.e+-]+) seconds", float, 0.0),
        "state_mem_mb": num(r"([\d.]+)\s+actual memory usage for states", float),
        "total_mem_mb": num(r"([\d.]+)\s+total actual memory usage", float)}
    m = re.search(r"assertion violated\s+(.*?) \(at depth (\d+)\)", out)
    if m:
        res["assertion"] = m.group(1).strip()
        res["error_depth"] = int(m.group(2))
        res["invariant"] = next((inv for key, inv in ASSERTS if key in m.group(1)), "?")
    res["complete"] = res["errors"] == 0 and "Search not completed" not in out
    return res


# --- septlab -----------------------------------------------------------------------------------------

def septlab_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One Explorer search on the twin, in this (child) process."""
    from bench.twin.executor import TwinExecutor
    from septlab.explore.exhaustive import CheckOptions, Explorer

    cfg = TwinConfig(**spec["cfg"])
    ex = TwinExecutor(cfg)
    por = bool(spec.get("por"))
    e = Explorer(ex, CheckOptions(strategy=spec["strategy"], por=por), {"twin": cfg.label})
    r = e.bfs() if spec["strategy"] == "bfs" else e.dfs()
    s = r.stats
    v = r.violation
    return {"tool": f"septlab {spec['strategy']}{' POR' if por else ''}", "states": s.states, "transitions": s.transitions,
            "elapsed": round(s.elapsed, 4), "steps_executed": s.steps_executed, "terminal": s.terminal,
            "max_depth": s.max_depth, "complete": r.complete, "bytes_per_state": round(r.bytes_per_state, 1),
            "errors": int(v is not None), "invariant": v.invariant if v is not None else None,
            "title": v.title if v is not None else None, "cex_steps": len(r.path) if v is not None else None}


def septlab_run(cfg: TwinConfig, strategy: str, por: bool = False) -> dict[str, Any]:
    """One septlab search in a child process. por: sleep sets over traced footprints (the same states)."""
    spec = json.dumps({"cfg": asdict(cfg), "strategy": strategy, "por": por})
    out, wall, rss = wait4_run([sys.executable, str(Path(__file__).resolve()), "--worker", spec])
    res = json.loads(out.strip().splitlines()[-1])
    res.update(wall_s=round(wall, 3), rss_mib=round(rss, 1))
    return res


# --- report ------------------------------------------------------------------------------------------

def seconds(r: dict[str, Any]) -> float:
    """Search time; pan reports it in 10 ms ticks, so a pan run under a tick falls back to its wall time."""
    return r["elapsed"] if r.get("elapsed") else r["wall_s"]


def rate(r: dict[str, Any]) -> float:
    return r["states"] / seconds(r)


def print_throughput(rows: list[dict[str, Any]]) -> None:
    print(f"{'tool':<22} {'states':>10} {'transitions':>12} {'seconds':>9} {'states/s':>11} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['tool']:<22} {r['states']:>10,} {r['transitions']:>12,} {seconds(r):>9.3f} {rate(r):>11,.0f} "
              f"{r['rss_mib']:>13.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="3,4,3", help="N,V,W[,rcu][,f=K] for the throughput runs (default 3,4,3)")
    ap.add_argument("--gate", default="1,1,1;2,2,1;2,3,1;2,4,1;2,2,1,rcu;2,3,2,rcu,f=0;3,3,1;3,3,2;3,3,2,rcu",
                    help="';'-separated configurations for the equivalence gate (the --config one is added)")
    ap.add_argument("--mutant-config", default="3,3,2", help="configuration the mutants are injected into")
    ap.add_argument("--repeat", type=int, default=3, help="pan runs per throughput line (median)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install spin")
    ap.add_argument("--json", type=Path, default=RESULTS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(septlab_worker(json.loads(a.worker))))
        return 0

    main_cfg = parse_cfg(a.config)
    gate_cfgs = [parse_cfg(g) for g in a.gate.split(";") if g.strip()]
    if main_cfg not in gate_cfgs:
        gate_cfgs.append(main_cfg)
    base = parse_cfg(a.mutant_config)
    mutant_cfgs = [(m, replace(base, **{m: True})) for m in MUTANTS]
    mutant_cfgs.append(("no_grace_period (rcu-free)", replace(base, no_grace_period=True, rcu_free=True)))

    spin, why = (shutil.which("spin"), "") if a.no_install else ensure_spin()
    if spin is None and not why:
        why = "spin not installed (--no-install)"
    if spin is None:
        print(f"*** SPIN is not available: {why}.\n*** Running the septlab side only; the equivalence gate is "
              "NOT checked (exit status 2).", flush=True)
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "spin": spin_version(spin) if spin else None,
                    "gcc": subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
                    if shutil.which("gcc") else None},
        "protocol": {"pan": PAN_RUN, "gcc": GCC, "septlab": "Explorer(TwinExecutor(cfg), CheckOptions(por=False))"},
        "spin_unavailable": why or None}
    failures: list[str] = []

    with tempfile.TemporaryDirectory(prefix="spin_twin_") as tmpd:
        sr = SpinRunner(spin, Path(tmpd)) if spin else None

        # 1. equivalence gate ---------------------------------------------------------------------------
        print("\n== equivalence gate: distinct states, reductions off (septlab dfs por=off vs SPIN -DNOREDUCE)")
        print(f"{'configuration':<42} {'septlab':>9} {'SPIN':>9} {'sl trans':>10} {'SPIN trans':>11}  result")
        gate = []
        main_sl = None
        for cfg in gate_cfgs:
            sl = septlab_run(cfg, "dfs")
            if cfg == main_cfg:
                main_sl = sl
            row: dict[str, Any] = {"config": cfg.label, "defines": cfg.defines(), "septlab_states": sl["states"],
                                   "septlab_transitions": sl["transitions"]}
            if sr:
                sp = sr.verify(cfg, "noreduce")
                ok = sp["states"] == sl["states"] and sp["transitions"] == sl["transitions"] + 1 and not sp["errors"]
                row.update(spin_states=sp["states"], spin_transitions=sp["transitions"], match=ok)
                if not ok:
                    failures.append(f"gate {cfg.label}: septlab {sl['states']}/{sl['transitions']} vs SPIN "
                                    f"{sp['states']}/{sp['transitions']}")
                print(f"{cfg.label:<42} {sl['states']:>9,} {sp['states']:>9,} {sl['transitions']:>10,} "
                      f"{sp['transitions']:>11,}  {'EQUAL' if ok else 'MISMATCH'}", flush=True)
            else:
                print(f"{cfg.label:<42} {sl['states']:>9,} {'-':>9} {sl['transitions']:>10,} {'-':>11}  unchecked")
            gate.append(row)
        result["gate"] = gate

        # 2. throughput ----------------------------------------------------------------------------------
        print(f"\n== throughput on {main_cfg.label} (septlab: one run each; SPIN: median of {a.repeat} pan runs)")
        assert main_sl is not None
        rows = [main_sl, septlab_run(main_cfg, "bfs")]
        if sr:
            rows += [sr.verify(main_cfg, "noreduce", a.repeat), sr.verify(main_cfg, "por", a.repeat)]
            rows[2]["tool"] = "SPIN -DNOREDUCE"
            rows[3]["tool"] = "SPIN (default POR)"
        sl_por = septlab_run(main_cfg, "dfs", por=True)  # sleep sets prune transitions, never states
        if sl_por["states"] != main_sl["states"]:
            failures.append(f"septlab POR visited {sl_por['states']} states, without it {main_sl['states']}")
        rows.append(sl_por)
        print_throughput(rows)
        tp: dict[str, Any] = {"config": main_cfg.label, "defines": main_cfg.defines(), "rows": rows}
        if sr:
            ratio = rate(rows[0]) / rate(rows[2])
            tp["ratio_septlab_dfs_over_spin_noreduce"] = round(ratio, 5)
            tp["ratio_septlab_bfs_over_spin_noreduce"] = round(rate(rows[1]) / rate(rows[2]), 5)
            tp["ratio_septlab_dfs_por_over_spin_noreduce"] = round(rate(sl_por) / rate(rows[2]), 5)
            print(f"states/s ratio septlab dfs with sleep sets (same states) / SPIN -DNOREDUCE = "
                  f"{tp['ratio_septlab_dfs_por_over_spin_noreduce']:.4f}")
            tp["por_state_reduction"] = round(1 - rows[3]["states"] / rows[2]["states"], 4)
            print(f"states/s ratio septlab dfs / SPIN -DNOREDUCE = {ratio:.4f} (SPIN is {1 / ratio:,.0f}x faster); "
                  f"SPIN POR removes {100 * tp['por_state_reduction']:.1f}% of the states")
            rp = rows[0]["steps_executed"] / max(1, rows[0]["transitions"])
            print(f"septlab re-executed {rows[0]['steps_executed']:,} steps for {rows[0]['transitions']:,} transitions "
                  f"({rp:.1f} steps per transition: DFS backtracking replays the prefix from reset)")
        result["throughput"] = tp

        # 3. mutants ---------------------------------------------------------------------------------------
        print(f"\n== time to first violation, mutants injected into {base.label}")
        print("(seconds: search time, Explorer's / pan's own (10 ms ticks); wall: the whole process -- septlab's "
              "includes Python start-up and imports, SPIN's the -w24 hash table; build: spin -a + gcc for this mutant)")
        print(f"{'mutant':<27} {'tool':<11} {'invariant':<26} {'seconds':>8} {'wall':>7} {'build':>6} {'states':>7} "
              f"{'cex steps':>9}")
        muts = []
        for name, cfg in mutant_cfgs:
            want = CATCHES[name.split()[0]]
            runs = [septlab_run(cfg, "dfs"), septlab_run(cfg, "bfs")]
            if sr:
                runs += [sr.verify(cfg, "noreduce"), sr.verify(cfg, "bfs")]
            for r in runs:
                r["caught"] = r["errors"] > 0 and r.get("invariant") == want
                if not r["caught"]:
                    failures.append(f"mutant {name}: {r['tool']} reported {r.get('invariant')!r}, expected {want!r}")
                build = f"{r['build_s']:>6.2f}" if "build_s" in r else f"{'-':>6}"
                print(f"{name:<27} {r['tool']:<11} {str(r.get('invariant')):<26} {r['elapsed']:>8.3f} "
                      f"{r['wall_s']:>7.3f} {build} {r['states']:>7,} {str(r.get('cex_steps')):>9}", flush=True)
            muts.append({"mutant": name, "config": cfg.label, "expected": want, "runs": runs})
        result["mutants"] = muts

    result["failures"] = failures
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {a.json.relative_to(ROOT) if a.json.is_relative_to(ROOT) else a.json}")
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        return 1
    if spin is None:
        return 2
    print("equivalence gate passed: septlab and SPIN agree on every configuration; every mutant caught by both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
