"""bug-split-alloc-under-mmu-lock: the split allocates its sp (spt + external_spt, GFP_KERNEL_ACCOUNT)
without dropping mmu_lock and leaving the RCU read-side section, as tdp_mmu_split_huge_pages_root()
does before calling tdp_mmu_alloc_sp_for_split(): a sleeping allocation in atomic context."""

from ...host.rcu import rcu_read_lock, rcu_read_unlock
from ...kvm.spte import is_large_pte, is_shadow_present_pte, spte_index
from ...kvm.tdp_mmu import (
    TdpIter,
    tdp_mmu_alloc_sp_for_split,
    tdp_mmu_find_leaf_table,
    tdp_mmu_split_huge_page,
)
from .. import Variant


def tdp_mmu_split_huge_pages_root(kvm, root, start, end, shared):
    host = kvm.host
    ret = 0
    rcu_read_lock(host)
    gfn = start & ~511
    while gfn < end:
        l2 = tdp_mmu_find_leaf_table(root, gfn, kvm.sp_by_spt, 2)
        old = l2.sptes[spte_index(gfn, 2)] if l2 is not None else 0
        if is_shadow_present_pte(old) and is_large_pte(old):
            sp = tdp_mmu_alloc_sp_for_split(kvm, root.is_mirror)  # BUG: mmu_lock and RCU still held
            if (ret := (yield from tdp_mmu_split_huge_page(kvm, TdpIter(l2, spte_index(gfn, 2), 2, gfn, old), sp, shared))):
                break
        gfn += 512
    rcu_read_unlock(host)
    return ret


VARIANT = Variant("bug-split-alloc-under-mmu-lock", "huge page split allocates its page table under mmu_lock",
                  {"tdp_mmu_split_huge_pages_root": tdp_mmu_split_huge_pages_root}, kind="mutant",
                  catches=("sleep-in-atomic",),
                  reference="tdp_mmu_split_huge_pages_root() drops mmu_lock around tdp_mmu_alloc_sp_for_split()",
                  check_scenario="hugepage")
