"""age-race: lockless aging (RCU only) against a root's last reference. A `kvm_tdp_mmu_put_root` that frees
the root at once instead of through call_rcu() -- an outsider's plausible "nobody can reach it any more"
patch, written here as a variant file through the public API -- is a use-after-free in the ager's walk;
the designs are clean there."""

from __future__ import annotations

from pathlib import Path

import pytest

from septlab.explore.driver import run_schedule
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.scenarios import load_scenario
from septlab.variants import get_variant, load_variant_file

PUT_ROOT_NO_RCU = '''
from septlab.host.locks import spin_lock_nostep, spin_unlock
from septlab.kernel import original
from septlab.variants import Variant


def kvm_tdp_mmu_put_root(kvm, root):
    root.root_count -= 1
    if root.root_count == 0:
        host = kvm.host
        spin_lock_nostep(host, kvm.tdp_mmu_pages_lock)
        kvm.roots.remove(root)
        spin_unlock(host, kvm.tdp_mmu_pages_lock)
        # BUG: no call_rcu(): tdp_mmu_free_sp_rcu_callback's body runs now
        for _ in original("tdp_mmu_free_sp_rcu_callback")(host, (kvm, root)):
            pass


VARIANT = Variant("user-put-root-no-rcu", "the last root reference frees the root without a grace period",
                  {"kvm_tdp_mmu_put_root": kvm_tdp_mmu_put_root}, kind="mutant")
'''


@pytest.fixture(scope="module")
def put_root_no_rcu(tmp_path_factory: pytest.TempPathFactory):
    f: Path = tmp_path_factory.mktemp("variants") / "put_root_no_rcu.py"
    f.write_text(PUT_ROOT_NO_RCU)
    return load_variant_file(f)


def test_random_runs_catch_a_root_freed_without_a_grace_period(put_root_no_rcu) -> None:
    scn = load_scenario("age-race")
    hits = [v for seed in range(120) for v in run_schedule(scn, put_root_no_rcu, False, seed).violations]
    assert hits and {v.invariant for v in hits} == {"rcu-use-after-free"}, {v.invariant for v in hits}
    assert any("kvm_tdp_mmu_age_gfn_range" in " ".join(v.details.get("chain", ())) for v in hits)


def test_check_finds_it_on_the_small_configuration(put_root_no_rcu) -> None:
    r = run_check(load_scenario("age-race", small=True), put_root_no_rcu, False, CheckOptions())
    assert r.violation is not None and r.violation.invariant == "rcu-use-after-free"


@pytest.mark.parametrize("variant,dpamt", [("tdx-free", False), ("tdx-free", True), ("rcu-free", False)])
def test_designs_are_clean_on_random_schedules(variant: str, dpamt: bool) -> None:
    """(rcu-free with DPAMT takes pamt_lock in its RCU callback: the seed question's lock-context answer.)"""
    scn = load_scenario("age-race")
    for seed in range(40):
        r = run_schedule(scn, get_variant(variant), dpamt, seed, history=False)
        assert r.status == "done" and not r.violations, (seed, [v.title for v in r.violations])


@pytest.mark.slow
def test_tdx_free_is_proved_clean_on_the_small_configuration() -> None:
    r = run_check(load_scenario("age-race", small=True), get_variant("tdx-free"), False,
                  CheckOptions(preemptions=None))
    assert r.violation is None and r.complete
