"""bug-free-before-reclaim: free external_spt, then RECLAIM it (the host reuses a TD-owned S-EPT page)."""

from ...kvm.mmu_page import NO_PAGE
from ...kvm.tdx import KVM_BUG_ON, is_hkid_assigned, tdx_reclaim_page
from ...virt.dpamt import tdx_free_control_page
from .. import Variant


def tdx_sept_free_private_spt(kvm, sp):
    page = sp.external_spt
    if not KVM_BUG_ON(is_hkid_assigned(kvm.tdx), kvm, "tdx_sept_free_private_spt", "is_hkid_assigned"):
        yield from tdx_free_control_page(kvm.host, page)  # BUG: still PT_EPT in the PAMT
        yield from tdx_reclaim_page(kvm, kvm.host, page)
    sp.external_spt = NO_PAGE
    return 0


VARIANT = Variant("bug-free-before-reclaim", "tdx-free, but external_spt is freed before TDH.PHYMEM.PAGE.RECLAIM",
                  {"free_external_spt": tdx_sept_free_private_spt}, kind="mutant", catches=("free-while-tdx-owned",))
