"""E2+ leaf-removal failure handling, per-page TD-keyed cache state and causal "explained" (issue 7 part 3).

docs/facts.md b.3, f.2, f.21, f.22, f.24; fidelity audit D1, D2, D17."""

from __future__ import annotations

import pytest

from septlab.check.report import render
from septlab.explore.driver import run_schedule
from septlab.host.page_alloc import FREE, LEAKED
from septlab.scenarios import load_scenario
from septlab.variants import get_variant

LEAVES = ["TDH.MEM.RANGE.BLOCK", "TDH.MEM.PAGE.REMOVE", "TDH.PHYMEM.PAGE.WBINVD"]


def only_fault(leaf: str, scenario: str = "seed"):
    """The scenario with every fault list replaced by one non-BUSY error on `leaf` (as --set does: in
    every swarm alternative too)."""
    return load_scenario(scenario, {"faults": f'{{"{leaf}": [TDX_OPERAND_INVALID]}}'})


def runs(scn, variant: str, n: int, rate: float | None = None, history: bool = False):
    var = get_variant(variant)
    for seed in range(n):
        r = run_schedule(scn, var, True, seed, fault_rate=rate, history=history)
        assert r.status != "crash", r.crash
        yield r


@pytest.mark.parametrize("leaf", LEAVES)
def test_tdx_free_dpamt_leaf_failures_are_explained_not_violations(leaf):
    """~60 schedules each: every consequence of an injected BLOCK/REMOVE/WBINVD failure (the E2+ free of
    the folio, its reuse, the PAMT reference WBINVD keeps) is expected, with its causal link; none is a
    violation (D2: pamt-refcount fired in 50/60 of these WBINVD runs before)."""
    kinds: dict[str, int] = {}
    injected = 0
    for r in runs(only_fault(leaf), "tdx-free", 60, rate=0.3):
        assert not r.violations, (r.seed, [(v.invariant, v.title) for v in r.violations])
        for e in r.checker.expected:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
            if e["kind"] != "TDX_BUG_ON":
                assert e["cause"].startswith(f"{leaf} -> TDX_OPERAND_INVALID (0x"), e
                assert "injected at step #" in e["cause"]
        injected += r.world.host.faults_injected
    assert injected > 30 and kinds.get("TDX_BUG_ON", 0) >= 30
    if leaf == "TDH.PHYMEM.PAGE.WBINVD":
        assert kinds.get("pamt-refcount", 0) > 0 and kinds.get("td-keyed-page-reused", 0) > 0
    else:
        assert kinds.get("free-while-tdx-owned", 0) > 0


def test_failed_removal_frees_the_folio_e2_semantics():
    """ce7b5695397b: no pin, so nothing is leaked on a failed leaf removal; guest_memfd frees the folio."""
    for r in runs(only_fault("TDH.MEM.PAGE.REMOVE"), "tdx-free", 20, rate=0.5):
        host = r.world.host
        assert not any("REMOVE" in why for why in r.checker.metrics.leak_reasons)
        for key in host.fault_causes:
            if isinstance(key, tuple) and key[0] == "freed":
                assert host.pages.state(key[1]) in (FREE,) or host.pages.state(key[1]) != LEAKED


def test_every_td_page_is_flushed_before_a_clean_teardown_ends(monkeypatch):
    """Pages are marked when the TD gets them and clean again (WBINVD / CACHE.WB) by the end."""
    import septlab.virt.seamcall as S

    marked: list[int] = []
    real = S.td_keys_gifted
    monkeypatch.setattr(S, "td_keys_gifted", lambda host, leaf, pages: (marked.extend(pages), real(host, leaf, pages)))
    for scenario in ("seed", "leaf-failure", "vcpu-init-race"):
        for r in runs(load_scenario(scenario), "tdx-free", 3, rate=0.0):
            assert not r.violations and r.status == "done"
            assert r.world.host.td_keyed == {}
    assert len(marked) > 50


@pytest.mark.parametrize("mutant,invariant", [("bug-remove-without-wbinvd", "td-keyed-page-reused"),
                                              ("bug-remove-failure-not-bugged", "free-while-tdx-owned"),
                                              ("bug-skip-track-when-bugged", "seamcall-unexpected-error")])
def test_mutants_are_caught_in_leaf_failure(mutant, invariant):
    assert invariant in get_variant(mutant).catches
    hits = sum(invariant in {v.invariant for v in r.violations}
               for r in runs(load_scenario("leaf-failure"), mutant, 120))
    assert hits > 0


def test_genuine_error_after_unrelated_injection_is_not_explained():
    """D17: the skip-TRACK mutant's REMOVE fails only after an injected failure bugged the VM; nothing
    links its pfn or gfn to that failure, so it is a violation, not 'explained'."""
    for r in runs(load_scenario("leaf-failure"), "bug-skip-track-when-bugged", 60):
        for v in r.violations:
            if v.invariant == "seamcall-unexpected-error":
                assert r.world.kvm.bugged and r.world.host.faults_injected > 0
                assert not v.details["injected"] and not v.details["cause"]
                assert "TDX_TLB_TRACKING_NOT_DONE" in v.title
                return
    pytest.fail("never caught")


def test_report_reads_like_a_kernel_report():
    r = run_schedule(load_scenario("leaf-failure"), get_variant("bug-remove-without-wbinvd"), True, 0, history=True)
    v = r.violations[0]
    assert v.invariant == "td-keyed-page-reused"
    text = render(v, r.world.host, r.log, "septlab replay X", "header")
    assert f"BUG: TDX: page {v.pfns[0]:#x} returned to the page allocator while it may hold TD-private cache " \
           f"lines (HKID 1)" in text
    assert "Call Trace:" in text and "kvm_gmem_truncate" in text
    assert f"--- page {v.pfns[0]:#x} history" in text and "TDH.MEM.PAGE.AUG: ok" in text
    assert "TDH.MEM.PAGE.REMOVE: ok" in text and "WBINVD" not in text.split("history")[-1]
