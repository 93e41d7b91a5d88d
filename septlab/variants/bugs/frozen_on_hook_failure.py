"""bug-frozen-on-hook-failure: when set_external_spte fails (e.g. BUSY), the mirror SPTE is left
FROZEN_SPTE instead of being restored, so every later walker spins on it (cf. f.16)."""

from ...kvm.spte import FROZEN_SPTE
from ...kvm.tdp_mmu import EBUSY, tdp_cmpxchg_spte, tdp_write_spte
from .. import Variant


def __tdp_mmu_set_spte_atomic(kvm, it, new_spte):
    sp, idx = it.sp, it.idx
    if sp.is_mirror:
        if not (yield from tdp_cmpxchg_spte(kvm.host, sp, idx, it.old_spte, FROZEN_SPTE)):
            it.old_spte = sp.sptes[idx]
            return EBUSY
        ret = yield from kvm.ops.set_external_spte(kvm, it.gfn, it.old_spte, new_spte, it.level)
        if not ret:
            tdp_write_spte(kvm.host, sp, idx, new_spte)
        return ret  # BUG: on failure the entry stays FROZEN
    if not (yield from tdp_cmpxchg_spte(kvm.host, sp, idx, it.old_spte, new_spte)):
        it.old_spte = sp.sptes[idx]
        return EBUSY
    return 0


VARIANT = Variant("bug-frozen-on-hook-failure", "mirror SPTE left FROZEN when the TDX hook fails",
                  {"__tdp_mmu_set_spte_atomic": __tdp_mmu_set_spte_atomic}, kind="mutant",
                  catches=("frozen-spte-left",),
                  check_scenario="boot-teardown")
