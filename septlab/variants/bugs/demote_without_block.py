"""bug-demote-without-block: the split demotes the 2 MiB leaf without RANGE.BLOCK + TDH.MEM.TRACK first.
The TDX module refuses: "DEMOTE does not support NON-BLOCKING-RESIZE yet" (docs/facts.md c.3), so the
DEMOTE fails with TDX_GPA_RANGE_NOT_BLOCKED and the VM is bugged."""

from ...kvm.spte import spte_to_pfn
from ...kvm.tdx import EIO, TDX_BUG_ON, lockdep_assert_held_write
from ...tdx_module import errno as E
from ...virt import seamcall as S
from ...virt.dpamt import tdx_pamt_demote_pages, tdx_pamt_demoted, tdx_pamt_get
from .. import Variant


def tdx_sept_split_private_spte(kvm, gfn, level, old_spte, sp):
    host = kvm.host
    lockdep_assert_held_write(host, kvm.mmu_lock)
    cache = kvm.tdx.split_pamt_cache
    if (yield from tdx_pamt_get(host, sp.external_spt, cache)):
        return EIO
    pamt = tdx_pamt_demote_pages(host, cache)  # BUG: no BLOCK, no tdx_track() before the DEMOTE
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_page_demote, kvm, kvm.tdx.tdr, gfn, level, sp.external_spt, pamt)
    if TDX_BUG_ON(err, E.TDH_MEM_PAGE_DEMOTE, kvm, host, gfn=gfn, pfn=spte_to_pfn(old_spte)):
        return EIO
    tdx_pamt_demoted(host, spte_to_pfn(old_spte), pamt)
    return 0


VARIANT = Variant("bug-demote-without-block", "2 MiB split issues TDH.MEM.PAGE.DEMOTE without BLOCK + TRACK",
                  {"split_external_spte": tdx_sept_split_private_spte}, kind="mutant",
                  catches=("seamcall-unexpected-error",),
                  reference="tdx_sept_split_private_spte(): BLOCK -> tdx_track -> DEMOTE (hugepage series, c.3)",
                  check_scenario="hugepage")
