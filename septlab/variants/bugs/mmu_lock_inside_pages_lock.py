"""bug-mmu-lock-inside-pages-lock: VM teardown walks tdp_mmu_roots under tdp_mmu_pages_lock (the lock
the pre-2022 for_each_tdp_mmu_root() accepted as the list's lockdep condition) and takes mmu_lock
inside it to invalidate them, while kvm_tdp_mmu_alloc_root()/kvm_tdp_mmu_put_root() take
tdp_mmu_pages_lock inside mmu_lock: an ABBA lockdep reports even though no run deadlocks (by teardown
nobody else takes either lock)."""

from ...host.locks import spin_lock, spin_unlock, write_lock, write_unlock
from ...host.rcu import rcu_barrier
from ...kvm import tdx as T
from ...kvm.tdp_mmu import kvm_tdp_mmu_invalidate_roots, kvm_tdp_mmu_zap_invalidated_roots
from ...kvm.x86 import kvm_mmu_destroy
from .. import Variant


def kvm_arch_destroy_vm(kvm):
    host = kvm.host
    for vcpu in kvm.vcpus:
        yield from kvm_mmu_destroy(vcpu)
        yield from T.tdx_vcpu_free(vcpu)
    # kvm_mmu_uninit_tdp_mmu()
    yield from spin_lock(host, kvm.tdp_mmu_pages_lock)
    yield from write_lock(host, kvm.mmu_lock)  # BUG: mmu_lock inside tdp_mmu_pages_lock
    kvm_tdp_mmu_invalidate_roots(kvm, True)
    write_unlock(host, kvm.mmu_lock)
    spin_unlock(host, kvm.tdp_mmu_pages_lock)
    yield from kvm_tdp_mmu_zap_invalidated_roots(kvm, False)
    yield from rcu_barrier(host)
    yield from T.tdx_vm_destroy(kvm)
    return 0


VARIANT = Variant("bug-mmu-lock-inside-pages-lock",
                  "teardown takes mmu_lock inside tdp_mmu_pages_lock: ABBA with root allocation",
                  {"kvm_arch_destroy_vm": kvm_arch_destroy_vm}, kind="mutant", catches=("lock-order",),
                  reference="plausible patch mistake: walking tdp_mmu_roots under tdp_mmu_pages_lock and nesting "
                            "mmu_lock inside it; KVM nests tdp_mmu_pages_lock inside mmu_lock (b.0)",
                  check_scenario="boot-teardown")
