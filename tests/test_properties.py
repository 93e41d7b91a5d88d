"""Property tests: whatever the schedule and fault rate, the merged design keeps every invariant and
gives every page back, and replaying a recorded choice list reproduces the run exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from septlab.explore.driver import run_schedule
from septlab.scenarios import load_scenario
from septlab.variants import get_variant

SEED = load_scenario("seed")
STORM = load_scenario("conversion-storm")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rate=st.sampled_from([0.0, 0.05, 0.2, 0.5]), dpamt=st.booleans(),
       storm=st.booleans())
def test_tdx_free_is_safe_under_any_schedule_and_fault_rate(seed, rate, dpamt, storm):
    r = run_schedule(STORM if storm else SEED, get_variant("tdx-free"), dpamt, seed, fault_rate=rate, history=False)
    assert r.status == "done", r.crash
    assert r.violations == []
    if not dpamt:  # freed in the same step as the RECLAIM (with DPAMT the PAMT put's SEAMCALLs come first)
        assert r.metrics["retained_page_steps"] == 0 and r.metrics["retained_page_gps"] == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), variant=st.sampled_from(["rcu-free", "bug-pamt-put-missing", "bug-leak-unused-sp"]))
def test_replay_is_exact(seed, variant):
    var = get_variant(variant)
    a = run_schedule(SEED, var, True, seed, fault_rate=0.2, history=False)
    # another seed of the same swarm alternative: a replay runs the recorded choices, not the RNG
    b = run_schedule(SEED, var, True, seed + len(SEED.swarm) + 1, choices=a.choices, history=True)
    assert (b.steps, b.metrics, [v.invariant for v in b.violations]) == (a.steps, a.metrics, [v.invariant for v in a.violations])
