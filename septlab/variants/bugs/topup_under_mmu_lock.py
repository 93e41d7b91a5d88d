"""bug-topup-under-mmu-lock: tdx_sept_map_nonleaf_spte() keeps mmu_external_spt_cache full by topping
it up right where it was consumed -- under read mmu_lock, with GFP_KERNEL_ACCOUNT allocations that may
sleep (KVM tops its caches up before taking mmu_lock, b.1 step 2)."""

from ...host.memcache import kvm_mmu_topup_memory_cache
from ...kvm import tdx as T
from .. import Variant


def tdx_sept_map_nonleaf_spte(kvm, gfn, level, new_spte):
    vcpu = T.running_vcpu(kvm)
    if vcpu is not None:
        mc = vcpu.mmu_external_spt_cache
        yield from kvm_mmu_topup_memory_cache(kvm.host, mc, mc.capacity)  # BUG: may sleep under mmu_lock
    return (yield from T.tdx_sept_map_nonleaf_spte(kvm, gfn, level, new_spte))


VARIANT = Variant("bug-topup-under-mmu-lock",
                  "S-EPT page cache topped up (GFP_KERNEL_ACCOUNT) under mmu_lock at link time",
                  {"tdx_sept_map_nonleaf_spte": tdx_sept_map_nonleaf_spte}, kind="mutant",
                  catches=("sleep-in-atomic",),
                  reference="plausible patch mistake: kvm_mmu_topup_memory_cache() under mmu_lock; KVM tops up in "
                            "mmu_topup_memory_caches() before taking it (b.1, f.23)",
                  check_scenario="boot-teardown")
