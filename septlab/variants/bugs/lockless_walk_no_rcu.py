"""bug-lockless-walk-no-rcu: fast_page_fault()'s lockless walk of the TDP MMU without
walk_shadow_page_lockless_begin()'s rcu_read_lock(): every rcu_dereference(sptep) is outside a
read-side section, and a page table zapped meanwhile can be freed under the walker (the bug
7cca2d0b7e7d's RCU protection closed, g.1)."""

from .. import Variant


def kvm_tdp_mmu_walk_lockless_begin(host):
    return None  # BUG: no rcu_read_lock()


def kvm_tdp_mmu_walk_lockless_end(host):
    return None


VARIANT = Variant("bug-lockless-walk-no-rcu", "lockless SPTE walk (fast page fault) without rcu_read_lock()",
                  {"kvm_tdp_mmu_walk_lockless_begin": kvm_tdp_mmu_walk_lockless_begin,
                   "kvm_tdp_mmu_walk_lockless_end": kvm_tdp_mmu_walk_lockless_end},
                  kind="mutant", catches=("suspicious-rcu-usage",),
                  reference="g.1 7cca2d0b7e7d: TDP MMU page tables are RCU-protected for lockless walkers (f.5)",
                  check_scenario="conversion-storm")
