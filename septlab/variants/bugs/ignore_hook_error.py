"""bug-ignore-hook-error: the new SPTE is published even when the TDX hook failed (an optional op's
garbage return treated as success, cf. e1a31ca28c9d): the mirror says present, the S-EPT does not."""

from ...kvm.spte import FROZEN_SPTE
from ...kvm.tdp_mmu import EBUSY, tdp_cmpxchg_spte, tdp_write_spte
from .. import Variant


def __tdp_mmu_set_spte_atomic(kvm, it, new_spte):
    sp, idx = it.sp, it.idx
    if not (yield from tdp_cmpxchg_spte(kvm.host, sp, idx, it.old_spte, FROZEN_SPTE if sp.is_mirror else new_spte)):
        it.old_spte = sp.sptes[idx]
        return EBUSY
    if sp.is_mirror:
        yield from kvm.ops.set_external_spte(kvm, it.gfn, it.old_spte, new_spte, it.level)
        tdp_write_spte(kvm.host, sp, idx, new_spte)  # BUG: published whatever the hook returned
    return 0


VARIANT = Variant("bug-ignore-hook-error", "mirror SPTE published although set_external_spte failed",
                  {"__tdp_mmu_set_spte_atomic": __tdp_mmu_set_spte_atomic}, kind="mutant",
                  catches=("mirror-sept-coherent",),
                  check_scenario="boot-teardown")
