"""The Hypothesis adapter (explore/hypothesis_sm.py) drives the same model: it finds a mutant, passes a design."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from septlab.explore.hypothesis_sm import make_state_machine
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


def _settings(max_examples: int) -> settings:
    # no shrinking: these tests ask whether a failure is found, not for the smallest one (that took 40 s)
    return settings(max_examples=max_examples, stateful_step_count=400, deadline=None, derandomize=True,
                    database=None, report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
                    phases=(Phase.explicit, Phase.reuse, Phase.generate))


def test_finds_remove_without_track_on_small_seed() -> None:
    machine = make_state_machine(load_scenario("seed", small=True), get_variant("bug-remove-without-track"), True)
    with pytest.raises(AssertionError, match="seamcall-unexpected-error"):
        run_state_machine_as_test(machine, settings=_settings(200))


def test_no_failure_on_tdx_free() -> None:
    machine = make_state_machine(load_scenario("seed", small=True), get_variant("tdx-free"), True)
    run_state_machine_as_test(machine, settings=_settings(25))
