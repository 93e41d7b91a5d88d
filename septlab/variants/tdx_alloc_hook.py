"""tdx-alloc-hook: S-EPT pages allocated and freed through TDX hooks, PAMT at allocation (RFC v5 #20).

mmu_external_spt_cache gets page_get/page_free hooks (tdx_alloc_control_page/tdx_free_control_page
semantics): every cached page gets its PAMT reference when the cache is topped up; no PAMT get at
link time; used pages are still freed from the RCU callback (so, with DPAMT, pamt_lock is taken in
softirq), unused ones from tdp_mmu_free_unused_sp() and the cache's page_free.
"""

from __future__ import annotations

from ..host.page_alloc import CACHED, alloc_page, free_page
from ..kvm.mmu_page import NO_PAGE
from ..virt.dpamt import tdx_free_control_page, tdx_pamt_get
from . import Variant
from .rcu_free import tdp_mmu_free_sp, tdx_sept_reclaim_private_spt


def alloc_external_sp(host):
    """alloc_external_sp (page_get hook): alloc_page() + tdx_pamt_get(pfn, NULL) at topup time."""
    pfn = alloc_page(host, CACHED)
    if (yield from tdx_pamt_get(host, pfn, None)):
        free_page(host, pfn)
        raise RuntimeError("tdx_pamt_get failed in topup")  # MODEL: topup failure not modelled
    return pfn


def free_external_sp(host, pfn):
    """free_external_sp (page_free hook): tdx_free_control_page()."""
    yield from tdx_free_control_page(host, pfn)


def tdp_mmu_free_unused_sp(kvm, sp):
    """Unused sp: its external_spt holds a PAMT reference from allocation, so free it the TDX way."""
    if sp.external_spt != NO_PAGE:
        yield from tdx_free_control_page(kvm.host, sp.external_spt)
        sp.external_spt = NO_PAGE
    kvm.sp_by_spt.pop(sp.spt, None)
    free_page(kvm.host, sp.spt)
    sp.freed = True
    return 0


VARIANT = Variant(
    name="tdx-alloc-hook",
    description="alloc/free S-EPT pages via TDX hooks, PAMT at allocation; used pages freed in RCU (RFC v5 #20)",
    overrides={
        "external_spt_cache_page_get": alloc_external_sp,
        "external_spt_cache_page_free": free_external_sp,
        "pamt_get_at_link": False,
        "free_external_spt": tdx_sept_reclaim_private_spt,
        "tdp_mmu_free_sp": tdp_mmu_free_sp,
        "tdp_mmu_free_unused_sp": tdp_mmu_free_unused_sp,
    },
    reference="[RFC PATCH v5 20/45] (2026-01-28); rejected for DPAMT v6",
)
