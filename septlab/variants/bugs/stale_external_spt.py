"""bug-stale-external-spt: tdx_sept_free_private_spt() forgets `sp->external_spt = NULL`; the E3 RCU
callback's WARN_ON_ONCE(sp->external_spt) fires on every freed mirror page table."""

from ...kvm.tdx import KVM_BUG_ON, is_hkid_assigned, tdx_reclaim_page
from ...virt.dpamt import tdx_free_control_page, tdx_leak_page
from .. import Variant


def tdx_sept_free_private_spt(kvm, sp):
    page = sp.external_spt
    if KVM_BUG_ON(is_hkid_assigned(kvm.tdx), kvm, "tdx_sept_free_private_spt", "is_hkid_assigned"):
        tdx_leak_page(kvm.host, page, "HKID still assigned")
    elif (yield from tdx_reclaim_page(kvm, kvm.host, page)):
        tdx_leak_page(kvm.host, page, "TDH.PHYMEM.PAGE.RECLAIM failed")
    else:
        yield from tdx_free_control_page(kvm.host, page)
    return 0  # BUG: missing sp->external_spt = NULL


VARIANT = Variant("bug-stale-external-spt", "sp->external_spt left set after TDX freed it (RCU callback WARNs)",
                  {"free_external_spt": tdx_sept_free_private_spt}, kind="mutant", catches=("kernel-warn",))
