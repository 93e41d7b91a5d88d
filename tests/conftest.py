from __future__ import annotations

import functools

import pytest

from septlab.explore.driver import run_schedule
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


@functools.cache
def base_seeds(scenario: str, n: int) -> list[int]:
    """n seeds that all run the scenario's configuration as written (not one of its swarm alternatives)."""
    k = len(load_scenario(scenario).swarm) + 1
    return list(range(0, n * k, k))


def violations_over(scenario: str, variant: str, dpamt: bool, schedules: int,
                    seeds: list[int] | None = None, until: tuple[str, ...] = ()) -> dict[str, int]:
    """Schedules (seeds 0..n-1, or `seeds`) in which each invariant was violated; with `until`, stop
    as soon as every invariant named there has fired (a mutant's test needs one schedule each)."""
    scn = load_scenario(scenario)
    var = get_variant(variant)
    counts: dict[str, int] = {}
    for seed in range(schedules) if seeds is None else seeds:
        r = run_schedule(scn, var, dpamt, seed, history=False)
        assert r.status != "crash", r.crash
        for name in {v.invariant for v in r.violations}:
            counts[name] = counts.get(name, 0) + 1
        if until and all(counts.get(name) for name in until):
            break
    return counts


@pytest.fixture
def seed_scenario():
    return load_scenario("seed")
