"""rcu-free: free external_spt together with sp->spt in the RCU callback (v6.16-6.19, Yan's question).

free_external_spt only reclaims (E1/E2 tdx_sept_free_private_spt returned an error and the TDP MMU
NULLed external_spt on failure, leaking it); tdp_mmu_free_sp() in tdp_mmu_free_sp_rcu_callback()
frees external_spt then spt. With DPAMT the free must drop the PAMT reference too, so
tdx_pamt_put() -- and pamt_lock -- run in the RCU callback, in softirq context.
"""

from __future__ import annotations

from ..host.page_alloc import free_page
from ..kvm.mmu_page import NO_PAGE
from ..kvm.tdx import tdx_sept_reclaim_or_leak
from ..virt.dpamt import tdx_free_control_page
from . import Variant


def tdx_sept_reclaim_private_spt(kvm, sp):
    """E1/E2 tdx_sept_free_private_spt(): RECLAIM only; on failure the TDP MMU NULLs external_spt."""
    if not (yield from tdx_sept_reclaim_or_leak(kvm, sp)):
        sp.external_spt = NO_PAGE
    return 0


def tdp_mmu_free_sp(kvm, sp):
    """E1/E2 tdp_mmu_free_sp(): free_page(sp->external_spt) [DPAMT: + tdx_pamt_put], then sp->spt."""
    if sp.external_spt != NO_PAGE:
        yield from tdx_free_control_page(kvm.host, sp.external_spt)
        sp.external_spt = NO_PAGE
    free_page(kvm.host, sp.spt)
    sp.freed = True
    return 0


VARIANT = Variant(
    name="rcu-free",
    description="free external_spt with sp->spt in the RCU callback tdp_mmu_free_sp() (v6.16-6.19)",
    overrides={"free_external_spt": tdx_sept_reclaim_private_spt, "tdp_mmu_free_sp": tdp_mmu_free_sp},
    reference="E1/E2 tdp_mmu.c; Yan Zhao review of patch 17/17 (2026-03-30)",
)
