"""bug-lockless-walk-no-end: fast_page_fault()'s lockless walk returns early on a hit -- a present leaf
SPTE -- without walk_shadow_page_lockless_end(), so the vCPU never leaves the rcu_read_lock() section
kvm_tdp_mmu_walk_lockless_begin() opened. Every grace period from then on waits for it: page tables
queued for freeing are never freed (an RCU stall, then memory that never comes back)."""

from ...kvm.spte import SHADOW_NONPRESENT_VALUE, is_last_spte, is_shadow_present_pte, spte_index, spte_to_pfn
from ...kvm.tdp_mmu import tdp_read_spte
from .. import Variant


def kvm_tdp_mmu_walk_lockless(vcpu, gfn):
    kvm = vcpu.kvm
    host = kvm.host
    sp = vcpu.direct_root
    kvm.ops.kvm_tdp_mmu_walk_lockless_begin(host)
    level = sp.level
    spte = SHADOW_NONPRESENT_VALUE
    while True:
        spte = yield from tdp_read_spte(host, sp, spte_index(gfn, level), "kvm_tdp_mmu_fast_pf_get_last_sptep")
        if is_shadow_present_pte(spte) and is_last_spte(spte, level):
            return spte  # BUG: the hit returns without kvm_tdp_mmu_walk_lockless_end() (rcu_read_unlock)
        if level == 1 or not is_shadow_present_pte(spte):
            break
        sp = kvm.sp_by_spt.get(spte_to_pfn(spte), sp)
        level -= 1
    kvm.ops.kvm_tdp_mmu_walk_lockless_end(host)
    return spte


VARIANT = Variant("bug-lockless-walk-no-end", "the lockless fast-path walk returns on a hit without "
                  "rcu_read_unlock(): grace periods stop", {"kvm_tdp_mmu_walk_lockless": kvm_tdp_mmu_walk_lockless},
                  kind="mutant", catches=("rcu-stall",),
                  reference="walk_shadow_page_lockless_begin()/end() bracket every lockless walk (f.5)",
                  check_scenario="conversion-storm")
