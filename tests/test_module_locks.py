"""TDX-module locks (issue 7, part 2): BUSY comes from contention in the model, not only from injection.

* Unit tests on the module (septlab.tdx_module.module): each lock, held by the leaf that really holds
  it across a window (TDH.VP.ENTER, TDH.VP.INIT, TDH.MR.FINALIZE) or by a guest TDCALL, makes the
  leaves that need it fail with TDX_OPERAND_BUSY | the module's operand id, with no side effect.
* The kernel's no-fail S-EPT removal: tdh_do_no_vcpus()'s retry is never BUSY for the merged design,
  although first attempts are BUSY by contention (not injection), on seed / conversion-storm /
  boot-teardown, DPAMT off and on; `septlab check` proves it on the small configurations.
* The mutants of the bug class (docs/facts.md g.12, g.13) are caught as busy-in-no-fail-path.
Facts: docs/facts.md c.2 (operand ids), c.3 (who takes which lock), b.3 (tdh_do_no_vcpus), g.12, g.13.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from septlab.check.invariants import INVARIANTS, Checker
from septlab.explore.choosers import RandomChooser
from septlab.explore.driver import run_schedule
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.explore.runtime import Runtime
from septlab.host.host import Host
from septlab.scenarios import load_scenario
from septlab.scenarios.world import build_world
from septlab.tdx_module import errno as E
from septlab.tdx_module.module import TdxModule
from septlab.tdx_module.sept import PG_LEVEL_2M, PG_LEVEL_4K, SEPT_PENDING_BLOCKED, entry_key
from septlab.tdx_module.td import LOCK_EX
from septlab.variants import get_variant
from septlab.virt import seamcall as S

from .test_seamcall import DATA, GFN, SPARE, TDR, TDVPR, TDVPR2, add_tables, make_td, ok

BUSY = E.TDX_OPERAND_BUSY
BUSY_RCX = BUSY | E.TDX_OPERAND_ID_RCX
BUSY_RDX = BUSY | E.TDX_OPERAND_ID_RDX
BUSY_TDR = BUSY | E.TDX_OPERAND_ID_TDR
BUSY_SEPT = BUSY | E.TDX_OPERAND_ID_SEPT
BUSY_EPOCH = BUSY | E.TDX_OPERAND_ID_TD_EPOCH
NO_FAIL_LEAVES = {"TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "TDH.MEM.PAGE.REMOVE"}


def test_operand_ids_are_the_modules() -> None:
    # include/auto_gen/tdx_error_codes_defs.h: OPERAND_ID_RCX 1, _RDX 2, _TDR 128, _SEPT_TREE 146, _TD_EPOCH 169
    assert (E.TDX_OPERAND_ID_RCX, E.TDX_OPERAND_ID_RDX, E.TDX_OPERAND_ID_TDR, E.TDX_OPERAND_ID_SEPT,
            E.TDX_OPERAND_ID_TD_EPOCH) == (1, 2, 128, 146, 169)
    assert E.err_desc(BUSY_SEPT) == "TDX_OPERAND_BUSY | TDX_OPERAND_ID_SEPT (0x8000020000000092)"
    assert E.err_desc(E.TDX_TLB_TRACKING_NOT_DONE) == "TDX_TLB_TRACKING_NOT_DONE (0xc0000b0800000000)"
    assert E.err_name(BUSY_SEPT) == "TDX_OPERAND_BUSY (0x8000020000000092)"  # unchanged


def runnable_with_block_target() -> TdxModule:
    """Runnable TD, tables down to 2M at GFN, DATA AUGed at GFN and a second vCPU (TDVPR2)."""
    m = make_td("runnable")
    add_tables(m)
    ok(m.tdh_mem_page_aug(TDR, GFN, PG_LEVEL_4K, DATA))
    ok(m.tdh_vp_create(TDR, TDVPR2))
    ok(m.tdh_vp_init(TDVPR2))
    return m


def busy_without_effect(m: TdxModule, call, expected: int) -> None:
    before = copy.deepcopy(m)
    err = call()
    err = err[0] if isinstance(err, tuple) else err
    assert err == expected, E.err_desc(err)
    assert m == before, "a BUSY SEAMCALL changed module state"


# --- the TDR lock ---------------------------------------------------------------------------------------
def test_vp_init_holds_the_tdr_exclusively_until_it_returns() -> None:
    m = make_td("initialized")
    add_tables(m)
    ok(m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, DATA))
    ok(m.tdh_vp_create(TDR, TDVPR))
    ok(m.tdh_vp_init_begin(TDVPR))
    assert m.tds[TDR].tdr_lock == LOCK_EX
    # shared TDR holders with the TDR in RDX / RCX / implicit
    busy_without_effect(m, lambda: m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K), BUSY_RDX)
    busy_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K), BUSY_RDX)
    busy_without_effect(m, lambda: m.tdh_mem_sept_add(TDR, GFN + (1 << 27), 4, SPARE), BUSY_RDX)
    busy_without_effect(m, lambda: m.tdh_mem_track(TDR), BUSY_RCX)
    busy_without_effect(m, lambda: m.tdh_vp_addcx(TDVPR, SPARE), BUSY_TDR)
    # exclusive holders
    busy_without_effect(m, lambda: m.tdh_mem_page_add(TDR, GFN + 1, PG_LEVEL_4K, SPARE), BUSY_RDX)
    busy_without_effect(m, lambda: m.tdh_mr_finalize(TDR), BUSY_RCX)
    busy_without_effect(m, lambda: m.tdh_mng_vpflushdone(TDR), BUSY_RCX)
    m.tdh_vp_init_end(TDVPR)
    assert m.tds[TDR].tdr_lock == 0 and m.tds[TDR].vcpus[TDVPR].initialized
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    ok(m.tdh_mr_finalize(TDR))


def test_finalize_holds_the_tdr_exclusively_until_it_returns() -> None:
    m = make_td("vcpu")
    ok(m.tdh_mr_finalize_begin(TDR))
    busy_without_effect(m, lambda: m.tdh_vp_enter(TDVPR), BUSY_TDR)
    busy_without_effect(m, lambda: m.tdh_vp_init(TDVPR), BUSY_TDR)
    busy_without_effect(m, lambda: m.tdh_mr_finalize_begin(TDR), BUSY_RCX)
    m.tdh_mr_finalize_end(TDR)
    ok(m.tdh_vp_enter(TDVPR))


def test_a_vcpu_in_the_guest_holds_the_tdr_shared_until_it_exits() -> None:
    m = runnable_with_block_target()
    ok(m.tdh_vp_enter(TDVPR))  # entry completed: only the TDR is held now
    assert m.tds[TDR].tdr_lock == 1 and m.tds[TDR].sept_lock == 0 and m.tds[TDR].epoch_lock == 0
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))  # shared + shared
    ok(m.tdh_mem_track(TDR))
    busy_without_effect(m, lambda: m.tdh_vp_init(TDVPR2), BUSY_TDR)  # exclusive meets the running vCPU
    busy_without_effect(m, lambda: m.tdh_mng_key_freeid(TDR), BUSY_RCX)
    m.td_exit(TDVPR)
    assert m.tds[TDR].tdr_lock == 0
    ok(m.tdh_vp_init(TDVPR2))


# --- the S-EPT tree lock (zero-step mitigation in TDH.VP.ENTER) -------------------------------------------
def test_zero_step_entry_holds_the_sept_tree_exclusively() -> None:
    m = runnable_with_block_target()
    td = m.tds[TDR]
    td.vcpus[TDVPR].epf_stepping = td.vcpus[TDVPR2].epf_stepping = True  # last exits: private EPT violations
    ok(m.tdh_vp_enter_begin(TDVPR))
    assert td.sept_lock == LOCK_EX and td.vcpus[TDVPR].entering
    busy_without_effect(m, lambda: m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K), BUSY_SEPT)  # exclusive
    busy_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K), BUSY_SEPT)  # shared
    busy_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN + 1, PG_LEVEL_4K, SPARE), BUSY_SEPT)
    busy_without_effect(m, lambda: m.tdh_mem_sept_add(TDR, GFN + (1 << 27), 4, SPARE), BUSY_SEPT)
    busy_without_effect(m, lambda: m.tdh_vp_enter(TDVPR2), BUSY_SEPT)  # the other vCPU's stepping filter
    m.tdh_vp_enter_complete(TDVPR)  # the guest runs: tree and epoch locks dropped
    assert td.sept_lock == 0 and td.epoch_lock == 0 and td.tdr_lock == 1
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    m.td_exit(TDVPR)
    assert td.tdr_lock == 0


def test_unarmed_entry_does_not_take_the_sept_tree() -> None:
    m = runnable_with_block_target()
    ok(m.tdh_vp_enter_begin(TDVPR))  # first entry: no EPT violation logged, the stepping filter is off
    assert m.tds[TDR].sept_lock == 0
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))


def test_td_exit_arms_the_stepping_filter_on_a_private_ept_violation_only() -> None:
    m = runnable_with_block_target()
    vp = m.tds[TDR].vcpus[TDVPR]
    ok(m.tdh_vp_enter(TDVPR))
    m.td_exit(TDVPR, True)
    assert vp.epf_stepping
    ok(m.tdh_vp_enter(TDVPR))
    m.td_exit(TDVPR)  # an IPI exit (a kick) leaves it as it was
    assert vp.epf_stepping
    ok(m.tdh_vp_enter(TDVPR))
    m.td_exit(TDVPR, False)  # EPT violation on a shared GPA
    assert not vp.epf_stepping


def test_kick_during_the_entry_releases_every_lock() -> None:
    m = runnable_with_block_target()
    td = m.tds[TDR]
    td.vcpus[TDVPR].epf_stepping = True
    ok(m.tdh_vp_enter_begin(TDVPR))
    m.td_exit(TDVPR)
    assert (td.tdr_lock, td.sept_lock, td.epoch_lock, td.epoch_refcount) == (0, 0, 0, [0, 0])
    assert not td.vcpus[TDVPR].entering and td.vcpus[TDVPR].in_guest_epoch == -1


# --- the S-EPT entry lock (sept_lock_acquire_host) ------------------------------------------------------
def test_entry_lock_held_by_a_guest_tdcall_makes_host_leaves_busy_on_that_entry() -> None:
    m = runnable_with_block_target()
    td = m.tds[TDR]
    td.sept_entry_lock.add(entry_key(PG_LEVEL_4K, GFN))  # as TDG.MEM.PAGE.ACCEPT holds it (guest side)
    busy_without_effect(m, lambda: m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K), BUSY_RCX)
    busy_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K), BUSY_RCX)
    ok(m.tdh_mem_page_aug(TDR, GFN + 1, PG_LEVEL_4K, SPARE))  # another entry
    td.sept_entry_lock.add(entry_key(PG_LEVEL_2M, GFN + (1 << 9)))
    busy_without_effect(m, lambda: m.tdh_mem_sept_add(TDR, GFN + (1 << 9), PG_LEVEL_2M, SPARE + 1), BUSY_RCX)
    td.sept_entry_lock.clear()
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    assert td.sept_state[entry_key(PG_LEVEL_4K, GFN)] == SEPT_PENDING_BLOCKED


# --- the TD epoch lock ----------------------------------------------------------------------------------
def test_entry_holds_the_epoch_lock_shared_and_track_holds_it_exclusively() -> None:
    m = runnable_with_block_target()
    td = m.tds[TDR]
    ok(m.tdh_vp_enter_begin(TDVPR))
    busy_without_effect(m, lambda: m.tdh_mem_track(TDR), BUSY_EPOCH)
    ok(m.tdh_vp_enter(TDVPR2))  # shared + shared
    m.tdh_vp_enter_complete(TDVPR)
    ok(m.tdh_mem_track(TDR))
    m.td_exit(TDVPR)
    m.td_exit(TDVPR2)
    td.epoch_lock = LOCK_EX  # as TDH.MEM.TRACK holds it
    busy_without_effect(m, lambda: m.tdh_vp_enter(TDVPR), BUSY_EPOCH)


# --- the kernel wrappers: windows and KVM's entry gate ----------------------------------------------------
def test_vp_init_wrapper_spans_two_steps_holding_the_tdr() -> None:
    host = Host()
    host.seam = make_td("initialized")
    ok(host.seam.tdh_vp_create(TDR, TDVPR))
    g = S.tdh_vp_init(host, TDVPR)
    assert next(g).leaf == E.TDH_VP_INIT
    window = g.send(None)  # the SEAMCALL step: the acquire half ran
    assert window.obj[0] == "in-module" and host.seam.tds[TDR].tdr_lock == LOCK_EX
    with pytest.raises(StopIteration) as stop:
        g.send(None)
    assert stop.value.value == E.TDX_SUCCESS and host.seam.tds[TDR].tdr_lock == 0


def test_vp_enter_gate_is_checked_in_the_entry_step() -> None:
    host = Host()
    host.seam = make_td("runnable")
    before = copy.deepcopy(host.seam)
    g = S.tdh_vp_enter(host, TDVPR, lambda: True)  # wait_for_sept_zap set when the step runs
    next(g)
    with pytest.raises(StopIteration) as stop:
        g.send(None)
    assert stop.value.value == S.VP_ENTER_NOT_ISSUED and host.seam == before


# --- the kernel's no-fail S-EPT removal: never BUSY on the retry --------------------------------------------
class BusyCounter(Checker):
    """Counts BUSY that the module returned by contention (not injected), per leaf and operand id."""

    def __init__(self) -> None:
        super().__init__(stop_on_fatal=True)
        self.busy: Counter[tuple[str, str]] = Counter()

    def seamcall(self, leaf: int, err: int, injected: bool, pages: tuple[int, ...]) -> None:
        super().seamcall(leaf, err, injected, pages)
        if not injected and E.tdx_operand_busy(err):
            self.busy[(E.leaf_name(leaf), E.OPERAND_ID_NAMES.get(err & 0xFFFFFFFF, hex(err & 0xFFFFFFFF)))] += 1


def run_counting(scn, variant: str, dpamt: bool, seed: int, fault_rate: float | None = None) -> BusyCounter:
    checker = BusyCounter()
    world = build_world(scn, get_variant(variant), dpamt, checker, history=False)
    checker.attach(world)
    rate = scn.fault_rate if fault_rate is None else fault_rate
    rt = Runtime(world.host, world.threads, RandomChooser(seed, rate), scn.faults, scn.max_steps, scn.max_faults)
    out = rt.run()
    checker.finish(out.status, out.steps, out.blocked)
    assert out.status == "done", (out.status, out.crash)
    return checker


SCENARIOS = [("seed", {}), ("conversion-storm", {}), ("boot-teardown", {"memory": "64KiB"})]


@pytest.mark.parametrize("dpamt", [False, True], ids=["dpamt-off", "dpamt-on"])
@pytest.mark.parametrize("scenario,overrides", SCENARIOS, ids=[s for s, _ in SCENARIOS])
def test_no_fail_retry_is_never_busy_for_the_merged_design(scenario, overrides, dpamt) -> None:
    scn = load_scenario(scenario, overrides)
    busy: Counter[tuple[str, str]] = Counter()
    for seed in range(50):
        c = run_counting(scn, "tdx-free", dpamt, seed)
        assert not c.violations, [v.title for v in c.violations]
        busy += c.busy
    if scenario == "seed":
        # first attempts did meet running vCPUs' locks: the retry path is exercised by contention
        assert {leaf for leaf, _ in busy} & NO_FAIL_LEAVES, busy
    elif scenario == "conversion-storm":
        assert busy, "no SEAMCALL met a TDX-module lock"  # (boot-teardown: one vCPU, no zap while it runs)


def test_contention_alone_makes_block_and_track_busy() -> None:
    scn = load_scenario("seed")
    busy: Counter[tuple[str, str]] = Counter()
    for seed in range(60):
        c = run_counting(scn, "tdx-free", True, seed, fault_rate=0.0)
        assert not c.violations, [v.title for v in c.violations]
        busy += c.busy
    seen = set(busy)
    assert ("TDH.MEM.RANGE.BLOCK", "TDX_OPERAND_ID_SEPT") in seen, busy  # zero-step vCPU vs BLOCK
    assert ("TDH.MEM.TRACK", "TDX_OPERAND_ID_TD_EPOCH") in seen, busy  # entering vCPU vs TRACK


def check(scenario: str, variant: str, dpamt: bool = False, faults: bool = True, **kw):
    scn = load_scenario(scenario, small=True)
    if not faults:
        scn.faults, scn.max_faults = {}, 0
    return run_check(scn, get_variant(variant), dpamt, CheckOptions(**kw))


@pytest.mark.parametrize("scenario", ["boot-teardown", "vcpu-init-race"])
def test_check_proves_the_merged_design_on_the_small_configurations(scenario) -> None:
    r = check(scenario, "tdx-free", strategy="dfs")
    assert r.complete and r.violation is None


# --- the invariant and the mutants --------------------------------------------------------------------
def test_busy_in_no_fail_path_is_its_own_invariant() -> None:
    inv = INVARIANTS["busy-in-no-fail-path"]
    assert inv.fatal and "3d626ce5a8cc" in inv.fix


def first_violation(scenario: str, variant: str, dpamt: bool, limit: int, fault_rate: float | None = None):
    scn = load_scenario(scenario)
    for seed in range(limit):
        r = run_schedule(scn, get_variant(variant), dpamt, seed, history=False, fault_rate=fault_rate)
        if r.violations:
            return seed, r.violations[0]
    raise AssertionError(f"{variant}: no violation in {limit} schedules of {scenario}")


def test_no_retry_mutant_is_caught_by_contention_with_a_vcpu_in_vp_enter() -> None:
    seed, v = first_violation("seed", "bug-busy-no-retry", True, 20, fault_rate=0.0)  # no injection at all
    assert v.invariant == "busy-in-no-fail-path"
    assert "failed: TDX_OPERAND_BUSY | TDX_OPERAND_ID_" in v.title
    assert "inside TDH.VP.ENTER" in v.details["holders"]
    r = check("conversion-storm", "bug-busy-no-retry", True, faults=False, strategy="bfs")
    assert r.violation is not None and r.violation.invariant == "busy-in-no-fail-path"
    assert "inside TDH.VP.ENTER" in r.violation.details["holders"]


def test_no_retry_mutant_reports_an_injected_busy_too() -> None:
    r = check("conversion-storm", "bug-busy-no-retry", True, strategy="dfs")  # D5: injected BUSY, same invariant
    assert r.violation is not None and r.violation.invariant == "busy-in-no-fail-path"


def test_vp_init_without_mmu_lock_mutant_is_caught_racing_a_hole_punch() -> None:
    r = check("vcpu-init-race", "bug-vp-init-without-mmu-lock", True, strategy="dfs")
    v = r.violation
    assert v is not None and v.invariant == "busy-in-no-fail-path"
    assert "TDH.MEM.RANGE.BLOCK failed: TDX_OPERAND_BUSY | TDX_OPERAND_ID_RDX" in v.title
    assert "TDH.VP.INIT" in v.details["holders"]
    seed, v = first_violation("vcpu-init-race", "bug-vp-init-without-mmu-lock", False, 100)
    assert v.invariant == "busy-in-no-fail-path"


def test_racy_entry_gate_mutant_is_caught() -> None:
    r = check("conversion-storm", "bug-sept-zap-gate-racy", True, strategy="bfs")
    v = r.violation
    assert v is not None and v.invariant == "busy-in-no-fail-path"
    assert "inside TDH.VP.ENTER" in v.details["holders"]
    seed, v = first_violation("seed", "bug-sept-zap-gate-racy", True, 200)
    assert v.invariant == "busy-in-no-fail-path"
