"""bug-alloc-root-no-recheck: kvm_tdp_mmu_alloc_root() under read mmu_lock without the recheck under
tdp_mmu_pages_lock (v6.12+): two vCPUs loading their MMU at once both miss a valid mirror root and
each allocates one. The TD has one S-EPT, so the second root's SEPT.ADD of an entry the first already
linked fails (TDX_EPT_ENTRY_NOT_FREE) -- the duplicate roots the recheck exists to prevent (D18)."""

from ...host.locks import read_lock, read_unlock, spin_lock, spin_unlock
from ...kvm.tdp_mmu import ROOT_LEVEL, tdp_mmu_alloc_sp, tdp_mmu_next_root_check
from .. import Variant


def kvm_tdp_mmu_alloc_root(vcpu, mirror):
    kvm = vcpu.kvm
    host = kvm.host
    yield from read_lock(host, kvm.mmu_lock)
    tdp_mmu_next_root_check(kvm)
    for root in kvm.roots:
        if root.is_mirror == mirror and not root.invalid:
            root.root_count += 1
            read_unlock(host, kvm.mmu_lock)
            return root
    yield from spin_lock(host, kvm.tdp_mmu_pages_lock)
    root = tdp_mmu_alloc_sp(vcpu)  # BUG: no recheck of tdp_mmu_roots under the lock
    root.level = ROOT_LEVEL
    root.is_mirror = mirror
    root.is_root = True
    root.root_count = 2
    kvm.roots.append(root)
    spin_unlock(host, kvm.tdp_mmu_pages_lock)
    read_unlock(host, kvm.mmu_lock)
    return root


VARIANT = Variant("bug-alloc-root-no-recheck",
                  "root allocation under read mmu_lock without the tdp_mmu_pages_lock recheck: two mirror roots",
                  {"kvm_tdp_mmu_alloc_root": kvm_tdp_mmu_alloc_root}, kind="mutant",
                  catches=("seamcall-unexpected-error",),
                  reference="kvm_tdp_mmu_alloc_root()'s recheck under tdp_mmu_pages_lock (v6.12; docs/facts.md a.1, D18)",
                  check_scenario="root-race")
