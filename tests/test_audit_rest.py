"""The rest of the fidelity audit (issue 7 part 7): KVM_TDX_INIT_MEM_REGION as the kernel has it (D12),
root allocation under the read lock (D18), the vCPU association lifecycle (D20, D21, bug 15).

For each: the merged design (tdx-free) is clean on the scenario that exercises it, and the mutant that
re-introduces the mistake is caught, by the invariant it declares, in random runs and in `check`.
"""

from __future__ import annotations

import pytest

from septlab.explore.driver import run_schedule
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.scenarios import load_scenario
from septlab.scenarios.world import build_world
from septlab.tdx_module import errno as E
from septlab.tdx_module.module import TDX_EPT_ENTRY_NOT_PRESENT, TDX_VCPU_ASSOCIATED
from septlab.tdx_module.sept import PG_LEVEL_4K
from septlab.variants import get_variant

from .test_seamcall import DATA, GFN, TDR, TDVPR, add_tables, make_td, ok

MUTANTS = {
    "bug-page-add-without-src": ("vcpu-init-race", "kernel-warn"),
    "bug-alloc-root-no-recheck": ("root-race", "seamcall-unexpected-error"),
    "bug-vcpu-load-after-hkid-free": ("boot-teardown", "kernel-warn"),
}


def _random(scenario: str, variant: str, dpamt: bool, n: int, **overrides: str) -> dict[str, int]:
    scn = load_scenario(scenario, overrides or None)
    got: dict[str, int] = {}
    for seed in range(n):
        r = run_schedule(scn, get_variant(variant), dpamt, seed, history=False)
        assert r.status != "crash", r.crash
        for inv in {v.invariant for v in r.violations}:
            got[inv] = got.get(inv, 0) + 1
    return got


@pytest.mark.parametrize("scenario", ["vcpu-init-race", "root-race", "seed", "boot-teardown"])
@pytest.mark.parametrize("dpamt", [False, True])
def test_merged_design_is_clean(scenario, dpamt):
    assert _random(scenario, "tdx-free", dpamt, 30, memory="64KiB") == {}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_is_caught(mutant):
    scenario, inv = MUTANTS[mutant]
    v = get_variant(mutant)
    assert v.kind == "mutant" and v.catches == (inv,) and v.check_scenario == scenario
    assert _random(scenario, mutant, True, 30, memory="64KiB").get(inv, 0) > 0
    # `septlab check`'s default bound (two preemptions); the unbounded search finds it too, in minutes
    r = run_check(load_scenario(scenario, small=True), v, True, CheckOptions(strategy="dfs", preemptions=2))
    assert r.violation is not None and r.violation.invariant == inv


def test_tdx_free_is_proved_on_vcpu_init_race():
    r = run_check(load_scenario("vcpu-init-race", small=True), get_variant("tdx-free"), False,
                  CheckOptions(strategy="dfs"))
    assert r.complete and r.violation is None


def test_init_mem_region_adds_extends_and_frees_the_source():
    """PAGE.ADD copies a userspace page (freed after the ioctl), 16 MR.EXTENDs per page follow."""
    scn = load_scenario("vcpu-init-race")
    r = run_schedule(scn, get_variant("tdx-free"), False, 0, history=True)
    assert not r.violations and r.status == "done"
    calls = r.metrics["seamcalls"]
    assert calls["TDH.MEM.PAGE.ADD"] == 2 and calls["TDH.MR.EXTEND"] == 2 * 16
    assert build_world(scn, get_variant("tdx-free"), False).kvm.tdx.page_add_src == -1


def test_mr_extend_failure_bugs_the_vm_and_is_explained():
    got = _random("vcpu-init-race", "tdx-free", False, 10, faults='{"TDH.MR.EXTEND": [TDX_OPERAND_INVALID]}',
                  fault_rate="1.0", max_faults="1")
    assert got == {}


def test_module_measurement_and_association_rules():
    m = make_td("vcpu")  # VP.INIT ran: associated with the LP that ran it (no LP id in this helper: -1)
    add_tables(m)
    ok(m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, DATA))
    ok(m.tdh_mr_extend(TDR, GFN, 0))
    assert m.tdh_mr_extend(TDR, GFN + 1, 0) == TDX_EPT_ENTRY_NOT_PRESENT
    assert E.status(m.tdh_mr_extend(TDR, GFN, 16)) == E.TDX_OPERAND_INVALID
    m.associate_vcpu_initial(TDVPR, 3)
    assert m.tdh_vp_flush_on(TDVPR, 5) == E.TDX_VCPU_NOT_ASSOCIATED  # wrong LP: nothing happens
    ok(m.tdh_mr_finalize(TDR))
    assert m.tdh_mr_extend(TDR, GFN, 1) == E.TDX_OP_STATE_INCORRECT
    assert m.tdh_vp_enter_begin_on(TDVPR, 5) == TDX_VCPU_ASSOCIATED  # still associated with LP 3
    ok(m.tdh_vp_flush_on(TDVPR, 3))
    ok(m.tdh_vp_enter_begin_on(TDVPR, 5))
    assert m.tds[TDR].vcpus[TDVPR].assoc_lpid == 5


def test_vcpu_runs_on_its_own_cpu_after_a_flush_on_the_builders():
    """KVM_CREATE_VCPU and VP.INIT associate the vCPU with the building thread's CPU; KVM_RUN on the
    vCPU thread's CPU flushes it there first (TDH.VP.FLUSH on the old LP), then enters."""
    scn = load_scenario("boot-teardown", {"memory": "8KiB"})
    r = run_schedule(scn, get_variant("tdx-free"), False, 0, history=True)
    assert not r.violations and r.status == "done"
    assert r.metrics["seamcalls"]["TDH.VP.FLUSH"] == 2  # KVM_RUN's flush on the builder's CPU, teardown's
