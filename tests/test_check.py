"""`septlab check`: completeness on the small configurations (pinned state counts), POR soundness
against the unreduced search, shortest counterexamples, kill/resume, CLI contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.scenarios import load_scenario
from septlab.variants import get_variant, registry

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = sorted(n for n, v in registry().items() if v.kind == "mutant")
# Distinct states of each small configuration for tdx-free, DPAMT off (stateright-style pins: model
# drift shows up here first). Fingerprints are 64-bit; a collision would lower a count.
PINNED = {"seed": 74_076, "conversion-storm": 37_930, "boot-teardown": 580}


def check(scenario: str, variant: str, dpamt: bool = False, **kw) -> object:
    return run_check(load_scenario(scenario, small=True), get_variant(variant), dpamt, CheckOptions(**kw))


# seed's proof is test_kill_and_resume_continues_from_the_checkpoint below (the same search, killed and
# resumed, must end complete, clean and on the pinned count); conversion-storm's (a minute and a half) is
# behind the slow marker.
@pytest.mark.parametrize("scenario", ["boot-teardown", pytest.param("conversion-storm", marks=pytest.mark.slow)])
def test_tdx_free_is_proved_on_the_small_configuration(scenario):
    """Safety and liveness: no invariant violated, and no fair cycle on which a task starves."""
    r = check(scenario, "tdx-free", strategy="dfs", por=False, liveness=True)
    assert r.complete and r.violation is None
    assert r.stats.states == PINNED[scenario]
    assert r.bytes_per_state <= 100 or r.stats.states < 10_000  # the table's floor dominates tiny searches


def test_bfs_and_dfs_agree_on_the_state_space():
    a = check("boot-teardown", "tdx-free", True, strategy="dfs", por=False)
    b = check("boot-teardown", "tdx-free", True, strategy="bfs", por=False)
    assert a.complete and b.complete and a.stats.states == b.stats.states > 0


# check's own search for these takes a minute or more (their race needs three preemptions over a
# notifier zap, a fast zap and a root reload); random runs catch them in the fast suite
HEAVY = {"bug-root-walk-no-reference"}
# Mutants whose bug is a livelock: state caching folds the loop, only the liveness check of the state
# graph (por off) sees it, as a lasso; tests/test_liveness.py covers the lasso itself.
LIVELOCKS = {m for m in MUTANTS if "soft-lockup" in registry()[m].catches}


@pytest.mark.parametrize("mutant", [pytest.param(m, marks=pytest.mark.slow) if m in HEAVY else m for m in MUTANTS])
def test_every_mutant_has_a_counterexample_and_por_misses_none(mutant):
    v = registry()[mutant]
    if mutant in LIVELOCKS:
        live = check(v.check_scenario, mutant, True, strategy="bfs", por=False, liveness=True, preemptions=1)
        assert live.violation is not None and live.violation.invariant in v.catches
        assert "lasso" in live.violation.details
        return
    # Both searches under the same preemption bound (3: every mutant's shortest race needs at most that),
    # so the differential is exact and the suite stays fast; the unbounded searches are -m slow below.
    reduced = check(v.check_scenario, mutant, True, strategy="dfs", por=True, preemptions=3)
    plain = check(v.check_scenario, mutant, True, strategy="dfs", por=False, preemptions=3)
    assert reduced.violation is not None and plain.violation is not None
    # the counterexample replays to the same violation through the ordinary runtime
    from septlab.explore.driver import run_schedule

    rep = run_schedule(load_scenario(v.check_scenario, small=True), v, True, 0, choices=reduced.choices)
    assert reduced.violation.invariant in {x.invariant for x in rep.violations}


FAST_FULL = [m for m in MUTANTS if registry()[m].check_scenario == "boot-teardown"] + ["bug-rcu-no-grace-period"]


@pytest.mark.parametrize("mutant", FAST_FULL)
def test_por_finds_the_same_reachable_violations(mutant):
    """Whole state space, not stopping at the first violation: same set of violated invariants."""
    v = registry()[mutant]
    on = check(v.check_scenario, mutant, True, strategy="dfs", por=True, stop_at_first=False)
    off = check(v.check_scenario, mutant, True, strategy="dfs", por=False, stop_at_first=False)
    assert on.complete and off.complete
    assert set(on.found) == set(off.found) and on.found
    # sleep sets prune transitions, never states: the same states and terminal states, fewer transitions
    assert on.stats.states == off.stats.states and on.terminals == off.terminals
    assert on.stats.transitions <= off.stats.transitions


@pytest.mark.slow
@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m not in FAST_FULL and m not in LIVELOCKS])
def test_por_finds_the_same_reachable_violations_everywhere(mutant):
    test_por_finds_the_same_reachable_violations(mutant)


@pytest.mark.parametrize("mutant", ["bug-frozen-on-hook-failure", "bug-pamt-put-missing", "bug-rcu-no-grace-period"])
def test_bfs_counterexample_is_no_longer_than_dfs(mutant):
    v = registry()[mutant]
    bfs = check(v.check_scenario, mutant, True, strategy="bfs")
    dfs = check(v.check_scenario, mutant, True, strategy="dfs")
    assert bfs.violation is not None and dfs.violation is not None
    assert len(bfs.path) <= len(dfs.path)


def test_preemption_bound_is_reported_as_bounded():
    r = check("conversion-storm", "tdx-free", strategy="dfs", preemptions=0)
    assert not r.complete and "preemptions 0" in r.bounded_by
    assert r.stats.states < PINNED["conversion-storm"]


def _septlab(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", "from septlab.cli import main; main()", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_and_resume_continues_from_the_checkpoint(tmp_path):
    args = ["check", "--scenario", "seed", "--variant", "tdx-free", "--exhaustive", "--strategy", "dfs",
            "--checkpoint", "ck.bin", "--checkpoint-every", "1", "--json", "r.json"]
    p = _septlab(*args, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ck.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (tmp_path / "ck.bin").exists() and not (tmp_path / "r.json").exists()
    q = _septlab(*args, "--resume", cwd=tmp_path)
    out, err = q.communicate(timeout=300)
    assert q.returncode == 0, out + err
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["complete"] and res["stats"]["states"] == PINNED["seed"]
    assert res["kind"] == "complete" and res["violation"] is None, res
    assert "resumed from checkpoint at" in out


def test_check_cli_violation_trace_and_replay(tmp_path):
    p = _septlab("check", "--scenario", "boot-teardown", "--variant", "bug-frozen-on-hook-failure", "--json", "c.json",
                 "--coverage", cwd=tmp_path)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err
    assert "counterexample:" in out and "shortest (BFS)" in out and "frozen-spte-left" in out
    assert "coverage: SEAMCALL x S-EPT entry state" in out
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["violation"]["invariant"] == "frozen-spte-left" and d["counterexample_transitions"] > 0
    r = _septlab("replay", d["trace"], cwd=tmp_path)
    out, err = r.communicate(timeout=120)
    assert r.returncode == 1 and "same violations" in out


def test_check_cli_proof_and_bad_input(tmp_path):
    p = _septlab("check", "--scenario", "boot-teardown", "--variant", "tdx-free", "--exhaustive", cwd=tmp_path)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    assert "complete: every invariant holds in all 580 reachable states" in out
    b = _septlab("check", "--scenario", "seed", "--variant", "tdx-free", "--resume", cwd=tmp_path)
    out, err = b.communicate(timeout=60)
    assert b.returncode == 2 and "--resume needs --checkpoint" in err and "Traceback" not in err
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    c = _septlab("check", "--scenario", "seed", "--variant", "tdx-free", "--checkpoint", "junk.bin", "--resume",
                 cwd=tmp_path)
    out, err = c.communicate(timeout=60)
    assert c.returncode == 2 and "not a septlab checkpoint" in err


def test_minimize_shrinks_a_random_counterexample_and_it_still_replays():
    from septlab.explore.driver import run_schedule
    from septlab.explore.minimize import minimize

    scn = load_scenario("seed")
    var = get_variant("bug-remove-without-track")
    r = run_schedule(scn, var, False, 0, history=False)
    assert r.violations
    m = minimize(scn, var, False, r.choices, r.violations[0].invariant)
    assert m.steps <= r.steps and m.deviations <= sum(1 for _n, i in r.choices if i)
    again = run_schedule(scn, var, False, 0, choices=m.choices)
    assert r.violations[0].invariant in {v.invariant for v in again.violations} and again.steps == m.steps
