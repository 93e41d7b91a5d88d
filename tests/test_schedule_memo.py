"""A batch does not re-run a seed that would repeat a schedule it already ran (driver.same_schedule):
the batch it reports is the one running every seed computes."""

from __future__ import annotations

from septlab.explore.driver import _Chunk, run_batch, run_schedule, same_schedule
from septlab.metrics.metrics import merge
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


def _plain(scn, variant, dpamt, n):
    runs = [run_schedule(scn, get_variant(variant), dpamt, s, history=False) for s in range(n)]
    return runs, merge([r.metrics for r in runs])


def test_memoised_batch_equals_running_every_seed():
    for scenario, variant, ov in (("boot-teardown", "rcu-free", {"memory": "1MiB"}), ("seed", "bug-pamt-put-missing", {})):
        scn = load_scenario(scenario, ov)
        runs, metrics = _plain(scn, variant, True, 24)
        b = run_batch(scn, get_variant(variant), True, 0, 24)
        assert b.metrics == metrics
        assert b.counts == {k: sum(1 for r in runs if k in {v.invariant for v in r.violations})
                            for k in b.counts} and sum(b.counts.values()) == sum(
            len({v.invariant for v in r.violations}) for r in runs)


def test_seeds_that_repeat_a_schedule_are_not_run_again():
    scn = load_scenario("boot-teardown", {"memory": "1MiB"})
    job = _Chunk(scn, get_variant("tdx-free"), False, 0, None, False, portable=False)
    out = job(range(40))
    distinct = {tuple(r.choices) for r in out}
    assert len(job.memo) == len(distinct) < 40  # boot-teardown has one choice point: at most 2 schedules
    assert [r.seed for r in out] == list(range(40))
    for r in out:  # each reported run is what its own seed does
        fresh = run_schedule(scn, get_variant("tdx-free"), False, r.seed, history=False)
        assert (fresh.choices, fresh.metrics) == (r.choices, r.metrics)


def test_same_schedule_is_exact():
    scn = load_scenario("shared-churn")
    assert not scn.swarm  # (a swarm scenario's seeds pick configurations: the memo is off there)
    r = run_schedule(scn, get_variant("tdx-free"), False, 3, history=False)
    assert len(r.kinds) == len(r.choices) > 5
    assert same_schedule(3, scn.fault_rate, r.kinds, r.choices)
    assert not any(same_schedule(s, scn.fault_rate, r.kinds, r.choices) for s in (0, 1, 2, 4, 5))
