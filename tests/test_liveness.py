"""Liveness: the lockup detectors of random runs (soft lockup, hung task, RCU stall), the exhaustive
search for fair non-progress cycles, and the lasso that `check` prints and `replay` reproduces.

Every detector has a broken variant that trips it; tdx-free trips none on any built-in, DPAMT off and on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from septlab.explore.driver import run_schedule
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.explore.liveness import HUNG_TASK, RCU_STALL, SOFT_LOCKUP, StateGraph, find_lassos
from septlab.scenarios import builtin_names, load_scenario
from septlab.variants import get_variant

ROOT = Path(__file__).resolve().parents[1]
LIVENESS = {"soft-lockup", "hung-task", "rcu-stall", "deadlock"}
FAST = {"steps_per_second": "100"}  # thresholds 2,000 / 2,100 / 12,000 steps (the default, stated)


def run(scenario: str | Path, variant: str, dpamt: bool = False, seed: int = 0, stop: bool = True, **sets: str):
    scn = load_scenario(str(scenario), {**FAST, **sets})
    return run_schedule(scn, get_variant(variant), dpamt, seed, history=False, stop_on_fatal=stop)


def names(r) -> set[str]:
    return {v.invariant for v in r.violations}


# --- the random-run watchdog ------------------------------------------------------------------------
def test_soft_lockup_a_zap_that_never_moves_forward():
    r = run("zap-yield", "bug-zap-yield-restart")
    assert "soft-lockup" in names(r)
    v = next(v for v in r.violations if v.invariant == "soft-lockup")
    assert v.title.startswith("watchdog: BUG: soft lockup - CPU#") and "[zapper:" in v.title
    assert any("__tdp_mmu_zap_root" in line for line in v.details["lines"])  # the stuck task's call chain
    assert 2000 <= r.steps <= 2000 + 64 + 200  # the threshold, scanned every 64 steps


def test_soft_lockup_a_fault_that_retries_on_a_condition_only_userspace_clears():
    hits = [run("seed", "bug-fault-retry-attr-mismatch", True, seed) for seed in range(6)]
    lock = [r for r in hits if "soft-lockup" in names(r)]
    assert lock, "a private fault on a gfn converted to shared must spin"
    v = next(v for v in lock[0].violations if v.invariant == "soft-lockup")
    assert "vcpu" in v.details["stuck"] and any("tdx_handle_ept_violation" in x for x in v.details["lines"])


def test_rcu_stall_a_reader_that_never_leaves(tmp_path: Path):
    r = run("seed", "bug-lockless-walk-no-end", seed=0, stop=False)
    assert "rcu-stall" in names(r)
    v = next(v for v in r.violations if v.invariant == "rcu-stall")
    assert v.title.startswith("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:")
    assert v.details["blocked_by"] and all(b.startswith("vcpu") for b in v.details["blocked_by"])  # the reader


HUNG = """\
name: slots-lock-waiter
description: a memslot update waits on kvm->slots_lock held by a fast zap that never finishes
vcpus: 1
shared: [{gfn: 0x1ff, count: 2}]
threads:
  - {kind: vcpu, vcpu: 0, access: [{gfn: 0x1ff, count: 2, shared: true}, {gfn: 0x0}]}
  - kind: zapper
    ops: [{after: {vcpu: 0, accesses: 3}}, {zap_all_fast: true}]
  - kind: zapper
    ops: [{after: {vcpu: 0, accesses: 3}}, {memslot_recreate: true}]
faults: {}
max_steps: 20000
"""


def test_hung_task_a_mutex_waiter_behind_a_livelock(tmp_path: Path):
    """The looping zap holds slots_lock; the memslot ioctl sleeps on it (D state) and khungtaskd names
    it -- after the soft lockup of the looper, which does not stop this run."""
    f = tmp_path / "hung.yaml"
    f.write_text(HUNG)
    hung = []
    for seed in range(8):
        r = run(f, "bug-zap-yield-restart", seed=seed, stop=False)
        hung += [v for v in r.violations if v.invariant == "hung-task"]
        if hung:
            break
    assert hung, "some schedule lets the memslot update block on slots_lock behind the looping zap"
    v = hung[0]
    assert v.title.startswith("INFO: task zapper") and "blocked for more than 120 seconds." in v.title
    assert "mutex_lock(slots_lock)" in v.details["blocked_in"] and v.details["holder"].startswith("zapper")


@pytest.mark.parametrize("dpamt", [False, True], ids=["dpamt-off", "dpamt-on"])
@pytest.mark.parametrize("scenario", builtin_names())
def test_tdx_free_trips_no_lockup_detector(scenario, dpamt):
    """Every built-in, both modes, at the built-in's thresholds and at half of them (boot-teardown at 16 MiB:
    its 1 GiB takes a minute a run; its longest stretch without progress, ~1,000 steps, is measured at 1 GiB)."""
    size = {"memory": "16MiB"} if scenario == "boot-teardown" else {}
    for seed in range(4):
        for sets in ({}, {"steps_per_second": "50"}):
            scn = load_scenario(scenario, {**size, **sets})
            r = run_schedule(scn, get_variant("tdx-free"), dpamt, seed, history=False)
            assert not names(r) & LIVENESS, (scenario, seed, sets, [v.title for v in r.violations])


def test_a_deadlock_is_reported_as_khungtaskd_would():
    rs = [run("seed", "bug-sept-zap-gate-stuck", seed=s, stop=False) for s in range(4)]
    dl = [v for r in rs for v in r.violations if v.invariant in ("deadlock", "hung-task")]
    assert dl, "a vCPU waits for wait_for_sept_zap forever"
    v = dl[0]
    assert "INFO: task vcpu" in v.title and "blocked for more than 120 seconds." in v.title
    assert any("wait_for_sept_zap" in line for line in v.details["lines"])


# --- the exhaustive liveness check --------------------------------------------------------------------
def graph(edges: list[tuple[int, int, int, int]], info: dict[int, tuple[int, int, int]]) -> StateGraph:
    g = StateGraph()
    for s, i in info.items():
        g.state(s, *i)
    for s, tid, d, prog in edges:
        g.edge(s, (tid, 0), d, prog)
    return g


def test_a_cycle_that_starves_a_continuously_runnable_task_is_not_fair():
    # task 0 spins 1 -> 2 -> 1; task 1 is runnable everywhere and would finish (-> 3): no lasso
    info = {0: (0b11, 0b11, 0), 1: (0b11, 0b11, 0), 2: (0b11, 0b11, 0), 3: (0b01, 0b01, 0)}
    g = graph([(0, 0, 1, 0), (1, 0, 2, 0), (2, 0, 1, 0), (1, 1, 3, 0b10), (2, 1, 3, 0b10)], info)
    assert find_lassos(g, 2, 0) == []
    # task 1 disabled in state 2 (it waits there): the same cycle is now fair, and task 0 spins
    info[2] = (0b01, 0b11, 0b10)
    g = graph([(0, 0, 1, 0), (1, 0, 2, 0), (2, 0, 1, 0), (1, 1, 3, 0b10)], info)
    lassos = find_lassos(g, 2, 0)
    assert lassos and lassos[0].kind == SOFT_LOCKUP and lassos[0].task == 0
    assert lassos[0].prefix == [(0, 0)] and len(lassos[0].loop) == 2
    # task 1 starves too, never running on the loop and asleep in every loop state: a hung task
    assert any(x.kind == HUNG_TASK and x.task == 1 for x in lassos) is False  # asleep only in state 2
    info[1] = (0b01, 0b11, 0b10)
    g = graph([(0, 0, 1, 0), (1, 0, 2, 0), (2, 0, 1, 0)], info)
    assert any(x.kind == HUNG_TASK and x.task == 1 for x in find_lassos(g, 2, 0))


def test_progress_on_the_cycle_is_not_starvation():
    info = {0: (0b1, 0b1, 0), 1: (0b1, 0b1, 0)}
    assert find_lassos(graph([(0, 0, 1, 0), (1, 0, 0, 0b1)], info), 1, 0) == []
    assert find_lassos(graph([(0, 0, 1, 0), (1, 0, 0, 0)], info), 1, 0)[0].kind == SOFT_LOCKUP
    # a daemon owing progress (the RCU softirq with a callback waiting) is an RCU stall
    assert find_lassos(graph([(0, 0, 1, 0), (1, 0, 0, 0)], info), 1, 0b1)[0].kind == RCU_STALL


def check(scenario: str, variant: str, **kw):
    return run_check(load_scenario(scenario, FAST, small=True), get_variant(variant), False,
                     CheckOptions(strategy="bfs", por=False, liveness=True, **kw))


def test_check_finds_the_livelock_as_a_confirmed_lasso():
    r = check("zap-yield", "bug-zap-yield-restart", preemptions=1)
    assert r.violation is not None and r.violation.invariant == "soft-lockup"
    lasso = r.violation.details["lasso"]
    assert lasso["task"] == "zapper" and lasso["loop"] >= 1
    # the path runs the loop past the watchdog's threshold: the ordinary runtime reports the lockup
    rep = run_schedule(load_scenario("zap-yield", FAST, small=True), get_variant("bug-zap-yield-restart"), False, 0,
                       choices=r.choices)
    assert "soft-lockup" in names(rep)


def test_check_without_liveness_misses_the_livelock_and_with_it_tdx_free_has_none():
    blind = run_check(load_scenario("zap-yield", FAST, small=True), get_variant("bug-zap-yield-restart"), False,
                      CheckOptions(strategy="bfs", por=False, liveness=False, preemptions=1))
    assert blind.violation is None  # state caching folds the loop: only the graph shows it
    clean = check("leaf-failure", "tdx-free")
    assert clean.complete and clean.violation is None


def test_liveness_refuses_por():
    with pytest.raises(ValueError, match="liveness needs every transition"):
        run_check(load_scenario("leaf-failure", small=True), get_variant("tdx-free"), False,
                  CheckOptions(por=True, liveness=True))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "septlab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_check_cli_prints_a_lasso_that_replay_reproduces(tmp_path: Path):
    r = cli("check", "-s", "zap-yield", "-v", "bug-zap-yield-restart", "--preemptions", "1", "--set",
            "steps_per_second=100", "--trace-dir", str(tmp_path), "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "liveness counterexample (lasso)" in r.stdout and "<zapper> read_lock(mmu_lock)" in r.stdout
    assert "watchdog: BUG: soft lockup" in r.stdout
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["violation"]["invariant"] == "soft-lockup" and doc["violation"]["details"]["lasso"]["task"] == "zapper"
    trace = Path(doc["trace"])
    assert json.loads(trace.read_text())["lasso"]["task"] == "zapper"
    rep = cli("replay", str(trace), cwd=tmp_path)
    assert rep.returncode == 1 and "same violations" in rep.stdout and "soft lockup" in rep.stdout


def test_check_cli_refuses_por_with_liveness(tmp_path: Path):
    r = cli("check", "-s", "leaf-failure", "-v", "tdx-free", "--por", "on", cwd=tmp_path)
    assert r.returncode == 2 and "--liveness off" in r.stderr
    r = cli("check", "-s", "leaf-failure", "-v", "tdx-free", "--por", "on", "--liveness", "off", "--exhaustive",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_scenario_steps_per_second_is_validated(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text(textwrap.dedent("""\
        name: x
        threads: [{kind: vcpu, vcpu: 0, access: [{gfn: 0}]}]
        steps_per_second: 0
        """))
    r = cli("run", "-s", str(f), "-v", "tdx-free", cwd=tmp_path)
    assert r.returncode == 2 and "steps_per_second" in r.stderr


@pytest.mark.parametrize("strategy", ["dfs", "bfs"])
def test_the_state_graph_survives_checkpoint_and_resume(tmp_path: Path, strategy: str):
    """An interrupted liveness search resumes with its graph: the lasso closes over edges recorded before
    the interruption, and a clean search still completes."""
    ck = tmp_path / "ck"

    def opts(**kw) -> CheckOptions:
        return CheckOptions(strategy=strategy, por=False, liveness=True, checkpoint=ck, overwrite_checkpoint=True, **kw)

    scn = load_scenario("zap-yield", FAST, small=True)
    polls = iter(range(10**9))
    first = run_check(scn, get_variant("bug-zap-yield-restart"), False,
                      opts(preemptions=1, should_stop=lambda: next(polls) >= 300))
    assert first.interrupted and first.violation is None
    done = run_check(scn, get_variant("bug-zap-yield-restart"), False, opts(preemptions=1, resume=True))
    assert done.stats.resumed_from > 0 and done.violation is not None and done.violation.invariant == "soft-lockup"
    clean = load_scenario("leaf-failure", small=True)
    polls = iter(range(10**9))
    part = run_check(clean, get_variant("tdx-free"), False, opts(should_stop=lambda: next(polls) >= 100))
    assert part.interrupted
    whole = run_check(clean, get_variant("tdx-free"), False, opts(resume=True))
    assert whole.complete and whole.violation is None
