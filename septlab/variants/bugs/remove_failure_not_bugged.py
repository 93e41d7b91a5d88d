"""bug-remove-failure-not-bugged: a failed PAGE.REMOVE is handled like a map-side error -- a WARN and
-EIO, but no TDX_BUG_ON, so the VM is not bugged -- and guest_memfd then frees a page the TDX module
still holds as PT_REG. The kernel only accepts that free (E2+, ce7b5695397b) because the VM is dead."""

from ...kvm.kvm_host import KVM_BUG_ON, is_hkid_assigned
from ...kvm.spte import spte_to_pfn
from ...kvm.tdx import EIO, TDX_BUG_ON
from ...tdx_module import errno as E
from ...virt import seamcall as S
from ...virt.dpamt import tdx_pamt_keep, tdx_pamt_put
from .. import Variant


def tdx_sept_remove_leaf_spte(kvm, gfn, level, old_spte):
    host = kvm.host
    pfn = spte_to_pfn(old_spte)
    if KVM_BUG_ON(not is_hkid_assigned(kvm.tdx), kvm, "tdx_sept_remove_leaf_spte", "!is_hkid_assigned(kvm_tdx)"):
        return EIO
    tdr = kvm.tdx.tdr
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_range_block, kvm, tdr, gfn, level)
    if TDX_BUG_ON(err, E.TDH_MEM_RANGE_BLOCK, kvm, host, gfn=gfn, pfn=pfn):
        return EIO
    yield from kvm.ops.tdx_track(kvm)
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_page_remove, kvm, tdr, gfn, level)
    if err:  # BUG: no TDX_BUG_ON -> the VM stays alive while the page goes back to guest_memfd
        host.warn("tdx_sept_remove_leaf_spte", f"TDH.MEM.PAGE.REMOVE failed: {E.err_name(err)}",
                  injected=host.current.injected_error)
        return EIO
    err = yield from S.tdh_phymem_page_wbinvd_hkid(host, kvm.tdx.hkid, pfn)
    if TDX_BUG_ON(err, E.TDH_PHYMEM_PAGE_WBINVD, kvm, host, pfn=pfn):
        tdx_pamt_keep(host, pfn)
        return EIO
    yield from tdx_pamt_put(host, pfn)
    return 0


VARIANT = Variant("bug-remove-failure-not-bugged",
                  "a failed PAGE.REMOVE only WARNs (no TDX_BUG_ON): guest_memfd frees a page the module still owns",
                  {"tdx_sept_remove_leaf_spte": tdx_sept_remove_leaf_spte}, kind="mutant",
                  catches=("mirror-sept-coherent", "free-while-tdx-owned"),
                  reference="docs/facts.md b.3 (failure), f.1; fidelity D1",
                  check_scenario="leaf-failure")
