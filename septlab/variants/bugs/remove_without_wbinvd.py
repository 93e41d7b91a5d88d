"""bug-remove-without-wbinvd: leaf removal skips TDH.PHYMEM.PAGE.WBINVD, so guest_memfd frees (and the
allocator hands out again) a page that may still hold cache lines keyed with the TD's HKID."""

from ...kvm.kvm_host import KVM_BUG_ON, is_hkid_assigned
from ...kvm.spte import spte_to_pfn
from ...kvm.tdx import EIO, TDX_BUG_ON
from ...tdx_module import errno as E
from ...virt import seamcall as S
from ...virt.dpamt import tdx_pamt_put
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
    if TDX_BUG_ON(err, E.TDH_MEM_PAGE_REMOVE, kvm, host, gfn=gfn, pfn=pfn):
        return EIO
    # BUG: no tdh_phymem_page_wbinvd_hkid(): the TD's dirty lines for this pfn stay in the cache
    yield from tdx_pamt_put(host, pfn)
    return 0


VARIANT = Variant("bug-remove-without-wbinvd",
                  "leaf removal frees the guest page after REMOVE without TDH.PHYMEM.PAGE.WBINVD(hkid)",
                  {"tdx_sept_remove_leaf_spte": tdx_sept_remove_leaf_spte}, kind="mutant",
                  catches=("td-keyed-page-reused",), reference="docs/facts.md b.3 step 5, f.12; fidelity D1",
                  check_scenario="leaf-failure")
