"""bug-remove-asserts-held-read: the S-EPT leaf removal asserts lockdep_assert_held_read(&kvm->mmu_lock)
(copied from tdp_mmu_set_spte_atomic()) although removals run under the write lock (g.11): held_read
fails for a writer (audit D23)."""

from ...host.locks import lockdep_assert_held_read
from ...kvm import tdx as T
from .. import Variant


def tdx_sept_remove_leaf_spte(kvm, gfn, level, old_spte):
    lockdep_assert_held_read(kvm.host, kvm.mmu_lock)  # BUG: the caller holds mmu_lock for write
    return (yield from T.tdx_sept_remove_leaf_spte(kvm, gfn, level, old_spte))


VARIANT = Variant("bug-remove-asserts-held-read", "leaf removal asserts mmu_lock held for read; it is held for write",
                  {"tdx_sept_remove_leaf_spte": tdx_sept_remove_leaf_spte}, kind="mutant",
                  catches=("lockdep-assert",),
                  reference="plausible patch mistake: lockdep_assert_held_read() where 2ff14116982c asserts the "
                            "write lock (g.11, D23)",
                  check_scenario="boot-teardown")
