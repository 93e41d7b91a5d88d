"""bug-double-free-external-spt: patch 17/17 half-applied: TDX code frees external_spt after RECLAIM
but leaves the pointer set, and the RCU callback (still the E1/E2 tdp_mmu_free_sp) frees it again."""

from ...kvm.tdx import KVM_BUG_ON, is_hkid_assigned, tdx_reclaim_page
from ...virt.dpamt import tdx_free_control_page, tdx_leak_page
from .. import Variant
from ..rcu_free import tdp_mmu_free_sp


def tdx_sept_free_private_spt(kvm, sp):
    page = sp.external_spt
    if KVM_BUG_ON(is_hkid_assigned(kvm.tdx), kvm, "tdx_sept_free_private_spt", "is_hkid_assigned"):
        tdx_leak_page(kvm.host, page, "HKID still assigned")
    elif (yield from tdx_reclaim_page(kvm, kvm.host, page)):
        tdx_leak_page(kvm.host, page, "TDH.PHYMEM.PAGE.RECLAIM failed")
    else:
        yield from tdx_free_control_page(kvm.host, page)
    return 0  # BUG: sp->external_spt not cleared


VARIANT = Variant("bug-double-free-external-spt", "external_spt freed in TDX code and again in the RCU callback",
                  {"free_external_spt": tdx_sept_free_private_spt, "tdp_mmu_free_sp": tdp_mmu_free_sp},
                  kind="mutant", catches=("double-free",))
