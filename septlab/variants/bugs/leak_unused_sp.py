"""bug-leak-unused-sp: after patch 17/17 the RCU path no longer frees external_spt, but a never-linked
sp is still thrown away with __tdp_mmu_free_sp(): its external_spt is never freed."""

from ...kvm.tdp_mmu import __tdp_mmu_free_sp as free_spt_only  # noqa: F401 (kernel name)
from .. import Variant


def tdp_mmu_free_unused_sp(kvm, sp):
    kvm.sp_by_spt.pop(sp.spt, None)
    free_spt_only(kvm, sp)  # BUG: external_spt of the unused sp is lost
    return 0
    yield  # pragma: no cover


VARIANT = Variant("bug-leak-unused-sp", "unused sp freed without its external_spt (lost link race, SEPT.ADD BUSY)",
                  {"tdp_mmu_free_unused_sp": tdp_mmu_free_unused_sp}, kind="mutant", catches=("leak-at-destroy",))
