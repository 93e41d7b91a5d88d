"""The SPIN twin (bench/twin, bench/promela/sept_twin.pml): pinned septlab counts and every twin mutant caught.

The pinned numbers are the ones SPIN 6.5.2 reports for the same configuration with -DSAFETY -DNOREDUCE
(bench/spin_vs_septlab.py checks the equality on many configurations); SPIN's transitions (stored+matched)
are septlab's + 1 because SPIN also counts the initial state. The shortest counterexample lengths are
SPIN -DBFS's too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.twin.executor import TwinExecutor
from bench.twin.twin_model import CATCHES, MUTANTS, PROMELA_MACRO, TwinConfig
from septlab.explore.exhaustive import CheckOptions, Explorer

PML = Path(__file__).resolve().parents[1] / "bench" / "promela" / "sept_twin.pml"


def search(cfg: TwinConfig, strategy: str = "dfs"):
    e = Explorer(TwinExecutor(cfg), CheckOptions(strategy=strategy, por=False), {})
    return e.bfs() if strategy == "bfs" else e.dfs()


@pytest.mark.parametrize("cfg, states, transitions", [
    (TwinConfig(n=2, v=2, w=1), 730, 1544),
    (TwinConfig(n=2, v=2, w=1, rcu_free=True), 654, 1366),
    (TwinConfig(n=2, v=3, w=1), 1371, 3202),
])
def test_twin_state_count_pinned(cfg, states, transitions):
    for strategy in ("dfs", "bfs"):
        r = search(cfg, strategy)
        assert r.complete and r.violation is None
        assert (r.stats.states, r.stats.transitions) == (states, transitions), strategy


@pytest.mark.parametrize("mutant, rcu_free, shortest", [
    ("free_before_reclaim", False, 11),
    ("reclaim_hkid_assigned", False, 11),
    ("no_grace_period", False, 14),
    ("no_grace_period", True, 14),
    ("free_after_failed_reclaim", False, 12),
])
def test_twin_mutant_found(mutant, rcu_free, shortest):
    cfg = TwinConfig(n=2, v=2, w=1, rcu_free=rcu_free, **{mutant: True})
    dfs = search(cfg, "dfs")
    assert dfs.violation is not None and dfs.violation.invariant == CATCHES[mutant]
    bfs = search(cfg, "bfs")
    assert bfs.violation is not None and bfs.violation.invariant == CATCHES[mutant]
    assert len(bfs.path) == shortest <= len(dfs.path)
    # the counterexample replays to the same violation
    ex = TwinExecutor(cfg)
    for tr in bfs.path:
        assert not ex.stopped
        ex.execute(tr)
    assert ex.stopped and ex.violations[0].invariant == CATCHES[mutant]


def test_twin_without_faults_is_smaller_and_mutant_needs_a_fault():
    assert search(TwinConfig(n=2, v=2, w=1, max_faults=0)).stats.states == 384
    r = search(TwinConfig(n=2, v=2, w=1, max_faults=0, free_after_failed_reclaim=True))
    assert r.violation is None and r.complete  # the bug needs a failed RECLAIM


def test_promela_twin_has_every_mutant_macro():
    text = PML.read_text()
    for m in MUTANTS:
        assert re.search(rf"#ifn?def {PROMELA_MACRO[m]}\b", text), m


@pytest.mark.skipif(shutil.which("spin") is None or shutil.which("gcc") is None, reason="SPIN not installed")
def test_spin_agrees_on_the_pinned_configuration(tmp_path):
    cfg = TwinConfig(n=2, v=2, w=1)
    shutil.copy(PML, tmp_path / PML.name)
    subprocess.run(["spin", *cfg.defines(), "-a", PML.name], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["gcc", "-O2", "-w", "-DSAFETY", "-DNOREDUCE", "-o", "pan", "pan.c"], cwd=tmp_path, check=True)
    out = subprocess.run(["./pan", "-m100000", "-w20"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "errors: 0" in out
    stored = int(re.search(r"(\d+) states, stored", out).group(1))
    trans = int(re.search(r"(\d+) transitions", out).group(1))
    assert (stored, trans) == (730, 1545)
