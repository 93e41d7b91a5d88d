"""bug-page-add-without-src: tdx_gmem_post_populate() maps the page without setting
kvm_tdx->page_add_src, so the PAGE.ADD that kvm_tdp_mmu_map_private_pfn() reaches inside mmu_lock
has no source page to copy (6b5b71ffabf9 moved PAGE.ADD into the map path and hands it the source
this way): tdx_mem_page_add()'s KVM_BUG_ON(!kvm_tdx->page_add_src) fires (docs/facts.md b.2, g.9)."""

from ...kvm import tdx as T
from ...kvm.x86 import kvm_tdp_mmu_map_private_pfn
from ...tdx_module import errno as E
from ...virt import seamcall as S
from .. import Variant


def tdx_gmem_post_populate(kvm, vcpu, gfn, pfn, src, measure):
    ret = yield from kvm_tdp_mmu_map_private_pfn(vcpu, gfn, pfn)  # BUG: page_add_src never set
    if ret or not measure:
        return ret
    for chunk in range(4096 // S.TDX_EXTENDMR_CHUNKSIZE):
        err = yield from S.tdh_mr_extend(kvm.host, kvm.tdx.tdr, gfn, chunk)
        if T.TDX_BUG_ON(err, E.TDH_MR_EXTEND, kvm, kvm.host, gfn=gfn, pfn=pfn):
            return T.EIO
    return 0


VARIANT = Variant("bug-page-add-without-src",
                  "KVM_TDX_INIT_MEM_REGION maps the image page without kvm_tdx->page_add_src: PAGE.ADD has no source",
                  {"tdx_gmem_post_populate": tdx_gmem_post_populate}, kind="mutant", catches=("kernel-warn",),
                  reference="6b5b71ffabf9 (page_add_src; docs/facts.md b.2, g.9)", check_scenario="vcpu-init-race")
