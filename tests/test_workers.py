"""--workers: the same answers from one process and from a pool, and a dead worker's work redone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from septlab.explore.driver import run_batch, run_batches
from septlab.explore.executor import Executor
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.explore.parallel import run_parallel_check
from septlab.explore.pool import WorkerDied, chunks, ordered_map
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


def _summary(b):  # everything a run/compare report is made of
    return (b.done, b.bounded, b.counts, b.metrics, b.first_series, b.retained_series,
            b.first_bad and (b.first_bad.seed, b.first_bad.choices, [v.title for v in b.first_bad.violations]))


@pytest.mark.parametrize("variant", ["tdx-free", "bug-free-before-reclaim"])
def test_batch_is_the_same_with_two_workers(variant):
    scn = load_scenario("seed")
    one = run_batch(scn, get_variant(variant), True, 0, 24)
    two = run_batch(scn, get_variant(variant), True, 0, 24, workers=2)
    assert _summary(one) == _summary(two)
    if variant.startswith("bug-"):
        assert two.counts and two.first_bad is not None


def test_compare_rows_run_side_by_side_and_equal_one_process():
    """compare's rows share one pool (a single long schedule per design runs in parallel); each row's
    batch is the one a single process computes."""
    scn = load_scenario("seed")
    rows = [(get_variant("rcu-free"), True), (get_variant("tdx-free"), False), (get_variant("bug-free-before-reclaim"), True)]
    one = run_batches(scn, rows, 0, 5)
    two = run_batches(scn, rows, 0, 5, workers=2)
    assert [(b.variant.name, b.dpamt) for b in two] == [(v.name, d) for v, d in rows]
    assert [_summary(b) for b in one] == [_summary(b) for b in two]


def test_chunks_cover_every_item_once():
    for n in (1, 7, 100, 1001):
        for w in (1, 2, 3):
            got = [i for c in chunks(n, w) for i in c]
            assert got == list(range(n))


def _die_once(marker: Path):
    def job(x: int) -> int:
        if x == 3 and not marker.exists():
            marker.write_text("died")
            os.kill(os.getpid(), signal.SIGKILL)
        return x * x
    return job


def test_a_dead_worker_has_its_work_redone(tmp_path):
    assert list(ordered_map(_die_once(tmp_path / "m"), list(range(10)), 2)) == [x * x for x in range(10)]
    assert (tmp_path / "m").exists()


def test_a_chunk_that_always_kills_its_worker_is_an_error():
    def job(x: int) -> int:
        if x == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    with pytest.raises(WorkerDied, match="item 1"):
        list(ordered_map(job, [0, 1, 2], 2))


# --- check --workers ------------------------------------------------------------------------------------


def _check(scenario, variant, workers, **kw):
    scn = load_scenario(scenario, small=True)
    opts = CheckOptions(strategy="dfs", por=False, **kw)
    if workers == 1:
        return run_check(scn, get_variant(variant), False, opts)
    return run_parallel_check(scn, get_variant(variant), False, opts, workers)


def _counts(r):
    s = r.stats
    return (s.states, s.transitions, s.revisits, s.terminal, r.complete, r.bounded_by, r.violation is None)


@pytest.mark.parametrize("kw", [{"liveness": True}, {"preemptions": 1}])
def test_parallel_check_counts_what_one_process_counts(kw):
    one = _check("boot-teardown", "tdx-free", 1, **kw)
    two = _check("boot-teardown", "tdx-free", 2, **kw)
    if "preemptions" in kw:  # bounded: a state another worker expanded with its budget is expanded again here,
        # so transitions may differ; the states within the bound may not
        assert _counts(one)[0::4] == _counts(two)[0::4]
    else:
        assert _counts(one) == _counts(two)
        assert two.stats.states == 580


@pytest.mark.parametrize("variant, invariant", [("bug-free-before-reclaim", "free-while-tdx-owned"),
                                                ("bug-zap-yield-restart", "soft-lockup")])
def test_parallel_check_finds_what_one_process_finds(variant, invariant):
    scn = "zap-yield"
    r = _check(scn, variant, 2, liveness=True)
    assert r.violation is not None and r.violation.invariant == invariant
    # the path replays to the violation (the report and trace come from it)
    assert r.choices and r.path


def test_a_dead_check_worker_has_its_item_redone(tmp_path, monkeypatch):
    parent = os.getpid()
    marker = tmp_path / "killed"
    real = Executor.execute

    def execute(self, tr):
        if os.getpid() != parent and not marker.exists() and self.steps_executed >= 300:
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, tr)

    monkeypatch.setattr(Executor, "execute", execute)
    r = _check("boot-teardown", "tdx-free", 2, liveness=True)
    assert marker.exists()
    assert r.complete and r.stats.states == 580


def test_workers_refuse_what_they_cannot_share(tmp_path, capsys):
    from septlab.cli import main

    for extra in (["--strategy", "bfs"], ["--por", "on", "--liveness", "off"], ["--full-states"],
                  ["--checkpoint", str(tmp_path / "c")]):
        with pytest.raises(SystemExit) as e:
            main(["check", "-s", "boot-teardown", "-v", "tdx-free", "--workers", "2", *extra])
        assert e.value.code == 2
        assert "--workers 2: cannot be combined" in capsys.readouterr().err


@pytest.mark.parametrize("scenario", ["seed", "zap-yield", pytest.param("hugepage", marks=pytest.mark.slow)])
def test_cached_positions_give_the_uncached_state(scenario):
    """The executor reuses task positions (a task that did not step, a frame suspended in yield from):
    at every step of random walks the state must equal the one computed from scratch."""
    import random

    from septlab.explore.state import world_state

    ex = Executor(load_scenario(scenario, small=True), get_variant("tdx-free"), True)
    steps = 0
    for seed in range(2 if scenario == "hugepage" else 6):  # hugepage's states are large: 2 walks suffice (slow)
        rnd = random.Random(seed)
        ex.reset()
        for _ in range(1500):
            trs = ex.transitions()
            if not trs or ex.stopped:
                break
            ex.execute(rnd.choice(trs))
            steps += 1
            assert ex.state() == world_state(ex.world, ex.threads, ex.checker), (seed, steps)
    assert steps > 300


def test_a_crashing_check_worker_fails_the_check_instead_of_being_redone(monkeypatch):
    """An exception in a worker's search (a model crash) is reported, not mistaken for a lost worker
    whose item is redone -- which would crash again, forever."""
    parent = os.getpid()
    real = Executor.execute

    def execute(self, tr):
        if os.getpid() != parent and self.steps_executed >= 50:
            raise ValueError("boom")
        return real(self, tr)

    def hung(*_):
        raise TimeoutError("the parallel check hung")

    monkeypatch.setattr(Executor, "execute", execute)
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        with pytest.raises(RuntimeError, match="crashed: ValueError: boom"):
            _check("boot-teardown", "tdx-free", 2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
