from __future__ import annotations

import functools

import pytest

from septlab.explore.driver import run_schedule
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


@functools.cache
def violations_over(scenario: str, variant: str, dpamt: bool, schedules: int) -> dict[str, int]:
    """Schedules (seeds 0..n-1) in which each invariant was violated."""
    scn = load_scenario(scenario)
    var = get_variant(variant)
    counts: dict[str, int] = {}
    for seed in range(schedules):
        r = run_schedule(scn, var, dpamt, seed, history=False)
        assert r.status != "crash", r.crash
        for name in {v.invariant for v in r.violations}:
            counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.fixture
def seed_scenario():
    return load_scenario("seed")
