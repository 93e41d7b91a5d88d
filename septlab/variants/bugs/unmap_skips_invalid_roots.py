"""bug-unmap-skips-invalid-roots: kvm_tdp_mmu_unmap_gfn_range() walks only the valid roots of the
filter, dropping KVM_INVALID_ROOTS. A root invalidated by a fast zap but not yet zapped (its zap runs
under the read lock and yields) still maps the range; an mmu-notifier invalidation that skips it lets
the primary MMU free a page a present direct SPTE maps -- the reason the kernel's unmap includes
invalid roots ("zap invalid roots too, as they may still be in use by vCPUs")."""

from ...kvm.tdp_mmu import for_each_tdp_mmu_root_yield_safe, kvm_gfn_range_filter_to_root_types, tdp_mmu_zap_leafs
from .. import Variant


def kvm_tdp_mmu_unmap_gfn_range(kvm, start, end, attr_filter, may_block=False):
    types = kvm_gfn_range_filter_to_root_types(kvm, attr_filter)  # BUG: no | KVM_INVALID_ROOTS
    for root in for_each_tdp_mmu_root_yield_safe(kvm, types):
        yield from tdp_mmu_zap_leafs(kvm, root, start, end, may_block)
    return 0


VARIANT = Variant("bug-unmap-skips-invalid-roots", "mmu-notifier / guest_memfd unmap skips invalid roots",
                  {"kvm_tdp_mmu_unmap_gfn_range": kvm_tdp_mmu_unmap_gfn_range},
                  kind="mutant", catches=("stale-spte",),
                  reference="kvm_tdp_mmu_unmap_gfn_range(): types | KVM_INVALID_ROOTS (D6, b.5)",
                  check_scenario="shared-churn")
