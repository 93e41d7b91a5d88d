"""bug-reclaim-hkid-assigned: the MMU torn down before the HKID is released, with no
KVM_BUG_ON(is_hkid_assigned) guard: RECLAIM runs while the TD is not in TEARDOWN.

Provenance (docs/facts.md D24): the HKID-vs-zap ordering this exercises belongs to the era of the
`mmu_prezap` / `flush_shadow_all_private` hooks, before HKID release became `vt_vm_pre_destroy`; it is
a plausible reordering mistake, not a revert of one historical teardown-order commit."""

from ...kvm import tdx as T
from ...kvm.mmu_page import NO_PAGE
from ...kvm.tdx import tdx_reclaim_page
from ...virt.dpamt import tdx_free_control_page, tdx_leak_page
from .. import Variant


def tdx_sept_free_private_spt(kvm, sp):
    page = sp.external_spt
    if (yield from tdx_reclaim_page(kvm, kvm.host, page)):  # BUG: no is_hkid_assigned() check
        tdx_leak_page(kvm.host, page, "TDH.PHYMEM.PAGE.RECLAIM failed")
    else:
        yield from tdx_free_control_page(kvm.host, page)
    sp.external_spt = NO_PAGE
    return 0


def kvm_destroy_vm(kvm):
    yield from kvm.ops.kvm_arch_destroy_vm(kvm)  # BUG: before kvm_arch_pre_destroy_vm()
    yield from T.tdx_mmu_release_hkid(kvm)
    return 0


VARIANT = Variant("bug-reclaim-hkid-assigned",
                  "S-EPT pages RECLAIMed while the HKID is still assigned (old teardown order, no guard)",
                  {"free_external_spt": tdx_sept_free_private_spt, "kvm_destroy_vm": kvm_destroy_vm},
                  kind="mutant", catches=("seamcall-unexpected-error",),
                  reference="plausible patch mistake: HKID release after the MMU teardown (mmu_prezap era)")
