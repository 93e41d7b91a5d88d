"""Every invariant fires on some deliberately broken variant, and never on the designs where it must hold."""

from __future__ import annotations

import pytest

from septlab.check.invariants import INVARIANTS
from septlab.variants import registry

from .conftest import violations_over

MUTANTS = sorted(n for n, v in registry().items() if v.kind == "mutant")
DESIGNS = ["tdx-free", "rcu-free", "tdx-alloc-hook"]
SCHEDULES = 200
# Mutants whose race needs a scenario `seed` does not have (a hole punch while the TD is built).
RANDOM_SCENARIO = {"bug-vp-init-without-mmu-lock": "vcpu-init-race", "bug-page-add-without-src": "vcpu-init-race",
                   "bug-alloc-root-no-recheck": "root-race",
                   "bug-no-memslot-invalid-bail": "memslot-delete"}


def test_at_least_seven_mutants_and_every_required_mistake_present():
    assert len(MUTANTS) >= 7
    for m in ("bug-free-before-reclaim", "bug-free-after-failed-reclaim", "bug-reclaim-hkid-assigned",
              "bug-remove-without-track", "bug-frozen-on-hook-failure", "bug-pamt-put-missing",
              "bug-rcu-no-grace-period"):
        assert m in MUTANTS


@pytest.mark.parametrize("mutant", MUTANTS)
def test_mutant_is_caught_by_the_invariants_it_declares(mutant):
    v = registry()[mutant]
    assert v.catches, f"{mutant} declares no invariant"
    got = violations_over(RANDOM_SCENARIO.get(mutant, "seed"), mutant, True, SCHEDULES, until=v.catches)
    for inv in v.catches:
        assert inv in INVARIANTS
        assert got.get(inv, 0) > 0, f"{mutant}: {inv} never fired in {SCHEDULES} schedules (got {got})"


def test_every_invariant_is_shown_to_fire_on_some_mutant():
    """Every invariant is declared by some mutant; test_mutant_is_caught_by_the_invariants_it_declares runs
    each mutant and fails unless every invariant it declares fires (running them all again here cost
    minutes and showed nothing more)."""
    declared = set().union(*(registry()[m].catches for m in MUTANTS))
    assert declared >= set(INVARIANTS), f"no mutant declares: {set(INVARIANTS) - declared}"


@pytest.mark.parametrize("scenario", ["seed", "conversion-storm"])
@pytest.mark.parametrize("dpamt", [False, True])
def test_merged_design_violates_nothing(scenario, dpamt):
    assert violations_over(scenario, "tdx-free", dpamt, SCHEDULES) == {}


@pytest.mark.parametrize("design", DESIGNS)
def test_without_dpamt_every_design_is_safe(design):
    assert violations_over("seed", design, False, SCHEDULES) == {}


@pytest.mark.parametrize("design", ["rcu-free", "tdx-alloc-hook"])
def test_freeing_from_the_rcu_callback_breaks_lock_context_with_dpamt(design):
    got = violations_over("seed", design, True, SCHEDULES)
    assert set(got) == {"lock-context"}
    assert got["lock-context"] == SCHEDULES  # every teardown frees S-EPT pages from the callback
