"""Real shared memory under the mmu notifiers, the TDX memslot path, and the stale-SPTE / hung-task
checkers (issue 7 part 4): each mechanism with a test that fails without it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from septlab.explore.driver import run_schedule
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.host.host import Host
from septlab.host.mm import get_user_pages_unlocked, migrate_pages, put_page
from septlab.host.page_alloc import FREE, USER
from septlab.kvm.mmu_page import KvmMmuPage
from septlab.kvm.tdp_mmu import (
    KVM_DIRECT_ROOTS,
    KVM_FILTER_PRIVATE,
    KVM_FILTER_SHARED,
    KVM_INVALID_ROOTS,
    kvm_gfn_range_filter_to_root_types,
    tdp_mmu_root_match,
)
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


def check(scn, variant: str, dpamt: bool = False):
    s = load_scenario(scn, small=True) if isinstance(scn, str) else scn
    return run_check(s, get_variant(variant), dpamt, CheckOptions(strategy="dfs"))


def _drive(gen):
    """Run a model generator to completion outside any explorer (every op is enabled here)."""
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


@pytest.mark.parametrize("scenario", ["shared-churn", "memslot-delete"])
@pytest.mark.parametrize("dpamt", [False, True])
def test_tdx_free_is_proved_on_the_new_scenarios(scenario, dpamt):
    r = check(scenario, "tdx-free", dpamt)
    assert r.complete and r.violation is None and r.stats.states > 100


def test_a_notifier_that_skips_invalid_roots_leaves_a_stale_spte():
    r = check("shared-churn", "bug-unmap-skips-invalid-roots")
    assert r.violation is not None and r.violation.invariant == "stale-spte"
    assert "freed while a present SPTE maps it" in r.violation.title and "invalid" in r.violation.title


def test_a_local_retry_without_the_invalid_memslot_bail_hangs_the_deletion():
    r = check("memslot-delete", "bug-no-memslot-invalid-bail")
    assert r.violation is not None and r.violation.invariant == "hung-task"
    assert r.violation.details["holder"] == "vcpu0" and "synchronize_srcu" in r.violation.details["blocked_in"]


def test_a_fault_that_ignores_the_notifier_maps_a_freed_user_page(tmp_path: Path):
    """MADV_DONTNEED races a shared fault: the fault's GUP reference keeps the page alive until the
    fault drops it; without mmu_invalidate_retry_gfn() the fault maps it first (stale SPTE)."""
    f = tmp_path / "race.yaml"
    f.write_text(textwrap.dedent("""\
        name: gup-race
        vcpus: 1
        shared: [{gfn: 0x10}]
        threads:
          - {kind: vcpu, vcpu: 0, access: [{gfn: 0x10, shared: true}]}
          - {kind: zapper, ops: [{madvise_dontneed: {gfn: 0x10}}]}
        """))
    scn = load_scenario(str(f))
    good = check(scn, "tdx-free")
    bad = check(scn, "bug-no-invalidate-retry")
    assert good.complete and good.violation is None
    assert bad.violation is not None and bad.violation.invariant == "stale-spte"


def test_root_walks_visit_exactly_the_kernels_roots():
    """tdp_mmu_root_match(): mirror/direct by type, invalid roots only with KVM_INVALID_ROOTS."""
    roots = {}
    for mirror in (False, True):
        for invalid in (False, True):
            sp = KvmMmuPage(len(roots), len(roots), 4, 0, mirror, invalid=invalid, is_root=True)
            roots[(mirror, invalid)] = sp

    def visits(types):
        return {k for k, r in roots.items() if tdp_mmu_root_match(r, types)}

    shared = kvm_gfn_range_filter_to_root_types(None, KVM_FILTER_SHARED) | KVM_INVALID_ROOTS
    private = kvm_gfn_range_filter_to_root_types(None, KVM_FILTER_PRIVATE) | KVM_INVALID_ROOTS
    both = kvm_gfn_range_filter_to_root_types(None, KVM_FILTER_SHARED | KVM_FILTER_PRIVATE) | KVM_INVALID_ROOTS
    assert visits(shared) == {(False, False), (False, True)}  # mmu notifier: direct, valid and invalid
    assert visits(private) == {(True, False), (True, True)}  # guest_memfd: mirror
    assert visits(both) == set(roots)  # memslot deletion
    assert visits(KVM_DIRECT_ROOTS | KVM_INVALID_ROOTS) == {(False, False), (False, True)}  # zap_all (->release)
    assert visits(KVM_DIRECT_ROOTS) == {(False, False)}  # aging: valid roots only


def test_migration_moves_an_unpinned_page_and_fails_on_a_gup_reference():
    host = Host()
    pfn = _drive(get_user_pages_unlocked(host, 7))
    put_page(host, pfn)  # the fault is done: only the PTE's reference is left
    _drive(migrate_pages(host, 7, 8))
    moved = host.mm.ptes[7]
    assert moved != pfn and host.pages.state(pfn) == FREE and host.pages.state(moved) == USER
    _drive(get_user_pages_unlocked(host, 7))  # a GUP in flight pins it
    _drive(migrate_pages(host, 7, 8))
    assert host.mm.ptes[7] == moved  # migrate_folio_move() refused: the PTE is restored


def test_every_user_page_is_freed_by_exit_mmap_and_the_run_is_clean():
    res = run_schedule(load_scenario("shared-churn"), get_variant("tdx-free"), False, 3)
    assert res.status == "done" and not res.violations
    assert res.world.host.mm.exited and not res.world.host.mm.ptes and not res.world.host.mm.page_refs
    # the notifier really ran: MADV_DONTNEED, migration and munmap freed user pages the guest had touched
    assert res.checker.metrics.peak_by_owner[USER] > 0
