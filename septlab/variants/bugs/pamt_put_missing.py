"""bug-pamt-put-missing: the error path of tdx_sept_map_leaf_spte() returns without tdx_pamt_put()."""

from ...kvm.kvm_host import TD_STATE_RUNNABLE
from ...kvm.spte import spte_to_pfn
from ...kvm.tdx import EBUSY, EIO, TDX_BUG_ON, running_vcpu
from ...tdx_module import errno as E
from ...virt import seamcall as S
from ...virt.dpamt import tdx_pamt_get
from .. import Variant


def tdx_sept_map_leaf_spte(kvm, gfn, level, new_spte):
    host = kvm.host
    pfn = spte_to_pfn(new_spte)
    vcpu = running_vcpu(kvm)
    if (yield from tdx_pamt_get(host, pfn, vcpu.pamt_cache if vcpu else None)):
        return EIO
    if kvm.tdx.state != TD_STATE_RUNNABLE:
        leaf, err = E.TDH_MEM_PAGE_ADD, (yield from S.tdh_mem_page_add(host, kvm.tdx.tdr, gfn, level, pfn))
    else:
        leaf, err = E.TDH_MEM_PAGE_AUG, (yield from S.tdh_mem_page_aug(host, kvm.tdx.tdr, gfn, level, pfn))
    if E.tdx_operand_busy(err):
        return EBUSY  # BUG: PAMT reference taken above is never put
    if TDX_BUG_ON(err, leaf, kvm, host, pfn=pfn):
        return EIO
    return 0


VARIANT = Variant("bug-pamt-put-missing", "AUG/ADD error path forgets tdx_pamt_put() (DPAMT)",
                  {"tdx_sept_map_leaf_spte": tdx_sept_map_leaf_spte}, kind="mutant", catches=("pamt-refcount",),
                  check_scenario="boot-teardown")
