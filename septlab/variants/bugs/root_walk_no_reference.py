"""bug-root-walk-no-reference: the yield-safe root walk visits each root without holding a reference
(the shape of for_each_tdp_mmu_root() before "KVM: x86/mmu: Protect root from being freed during
yield"). The body -- a leaf zap for an mmu-notifier invalidation, a root zap -- drops mmu_lock
between tables; meanwhile the root's other references go (the fast zap finishes it and puts the root
list's reference, the vCPU reloads its roots) and the last kvm_tdp_mmu_put_root() frees it after a
grace period: the walk resumes on a freed root."""

from ...kvm.tdp_mmu import tdp_mmu_next_root_check, tdp_mmu_root_match
from .. import Variant


def for_each_tdp_mmu_root_yield_safe(kvm, types):
    tdp_mmu_next_root_check(kvm)
    for root in list(kvm.roots):  # BUG: no kvm_tdp_mmu_get_root() / put around the body
        if root.root_count and tdp_mmu_root_match(root, types):
            yield root


VARIANT = Variant("bug-root-walk-no-reference",
                  "the yield-safe root walk holds no reference while its body drops mmu_lock",
                  {"for_each_tdp_mmu_root_yield_safe": for_each_tdp_mmu_root_yield_safe}, kind="mutant",
                  catches=("rcu-use-after-free",),
                  reference="tdp_mmu_next_root(): kvm_tdp_mmu_get_root() on the next root, put of the previous one; "
                            "a root may be freed as soon as the walk yields without a reference (b.5)",
                  check_scenario="zap-yield")
