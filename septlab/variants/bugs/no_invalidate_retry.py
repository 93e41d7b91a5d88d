"""bug-no-invalidate-retry: the fault path does not check mmu_invalidate_retry_gfn(): a pfn obtained
before a conversion is mapped after the conversion freed it (AUG of a freed page)."""

from .. import Variant


def is_page_fault_stale(vcpu, fault):
    root = vcpu.mirror_root if fault.is_private else vcpu.direct_root
    return root is None or root.invalid  # BUG: no mmu_invalidate_seq / in_progress check


VARIANT = Variant("bug-no-invalidate-retry", "fault path ignores a racing invalidation (mmu_invalidate_seq)",
                  {"is_page_fault_stale": is_page_fault_stale}, kind="mutant", catches=("use-after-free",),
                  check_scenario="conversion-storm")
