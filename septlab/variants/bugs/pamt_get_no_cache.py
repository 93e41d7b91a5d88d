"""bug-pamt-get-no-cache: the S-EPT map helpers take their PAMT reference with a NULL cache, so a 0 -> 1
PAMT.ADD allocates its two pages with alloc_page(GFP_KERNEL_ACCOUNT) under read mmu_lock: a sleeping
allocation in atomic context (the audit's D3 experiment, facts f.23). DPAMT only.

The leaf helper alone (D3's experiment) is rarely caught in `seed`: a region's first PAMT reference
is almost always an S-EPT page's (SEPT.ADD precedes the leaf's AUG, and the model's per-CPU allocator
keeps a vCPU's pages in one 2 MiB region), so its leaf gets never go 0 -> 1; hence both helpers."""

from ...kvm.kvm_host import TD_STATE_RUNNABLE
from ...kvm.mmu_page import NO_PAGE
from ...kvm.spte import spte_to_pfn
from ...kvm.tdx import EBUSY, EIO, KVM_BUG_ON, TDX_BUG_ON
from ...tdx_module import errno as E
from ...virt import seamcall as S
from ...virt.dpamt import tdx_pamt_get, tdx_pamt_put
from .. import Variant


def tdx_sept_map_nonleaf_spte(kvm, gfn, level, new_spte):
    host = kvm.host
    child = kvm.sp_by_spt.get(spte_to_pfn(new_spte))
    if KVM_BUG_ON(child is None or child.external_spt == NO_PAGE or child.level != level - 1, kvm,
                  "tdx_spte_to_sept_pt", "no external_spt"):
        return EIO
    page = child.external_spt
    if (yield from tdx_pamt_get(host, page, None)):  # BUG: NULL cache -> GFP_KERNEL_ACCOUNT under mmu_lock
        return EIO
    err = yield from S.tdh_mem_sept_add(host, kvm.tdx.tdr, gfn, level, page)
    if E.tdx_operand_busy(err):
        yield from tdx_pamt_put(host, page)
        return EBUSY
    if TDX_BUG_ON(err, E.TDH_MEM_SEPT_ADD, kvm, host, pfn=page):
        yield from tdx_pamt_put(host, page)
        return EIO
    return 0


def tdx_sept_map_leaf_spte(kvm, gfn, level, new_spte):
    host = kvm.host
    if KVM_BUG_ON(level != 1, kvm, "tdx_sept_map_leaf_spte", "level != PG_LEVEL_4K"):
        return EIO
    pfn = spte_to_pfn(new_spte)
    if (yield from tdx_pamt_get(host, pfn, None)):  # BUG: NULL cache -> GFP_KERNEL_ACCOUNT under mmu_lock
        return EIO
    if kvm.tdx.state != TD_STATE_RUNNABLE:
        leaf, err = E.TDH_MEM_PAGE_ADD, (yield from S.tdh_mem_page_add(host, kvm.tdx.tdr, gfn, level, pfn))
    else:
        leaf, err = E.TDH_MEM_PAGE_AUG, (yield from S.tdh_mem_page_aug(host, kvm.tdx.tdr, gfn, level, pfn))
    if E.tdx_operand_busy(err):
        yield from tdx_pamt_put(host, pfn)
        return EBUSY
    if TDX_BUG_ON(err, leaf, kvm, host, pfn=pfn, gfn=gfn):
        yield from tdx_pamt_put(host, pfn)
        return EIO
    return 0


VARIANT = Variant("bug-pamt-get-no-cache",
                  "S-EPT map helpers take PAMT references with a NULL cache: GFP_KERNEL allocation under mmu_lock",
                  {"tdx_sept_map_nonleaf_spte": tdx_sept_map_nonleaf_spte,
                   "tdx_sept_map_leaf_spte": tdx_sept_map_leaf_spte}, kind="mutant", catches=("sleep-in-atomic",),
                  reference="plausible patch mistake: tdx_pamt_get(pfn, NULL) on the fault path, where DPAMT v6 "
                            "passes the vCPU's tdx_pamt_cache filled before mmu_lock (D3, f.23)",
                  check_scenario="boot-teardown")
