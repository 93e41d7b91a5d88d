"""bug-rcu-no-grace-period: handle_removed_pt() frees the page table at once instead of via call_rcu(),
while a lockless walker may still hold it (the bug 7cca2d0b7e7d's RCU protection prevents)."""

from ...kvm.tdp_mmu import tdp_mmu_free_sp_e3
from .. import Variant


def tdp_mmu_schedule_free_sp(kvm, sp):
    gen = kvm.ops.tdp_mmu_free_sp(kvm, sp)  # BUG: no grace period
    for _ in gen:  # the free takes no steps in the designs this applies to
        pass


VARIANT = Variant("bug-rcu-no-grace-period", "page tables freed immediately instead of after an RCU grace period",
                  {"tdp_mmu_schedule_free_sp": tdp_mmu_schedule_free_sp, "tdp_mmu_free_sp": tdp_mmu_free_sp_e3},
                  kind="mutant", catches=("rcu-use-after-free",),
                  check_scenario="conversion-storm")
