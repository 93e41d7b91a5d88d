"""virt/kvm/kvm_main.c: KVM's mmu notifier, kvm->srcu, and memslot deletion.

The notifier is how host-userspace memory changes reach the shared EPT: invalidate_range_start zaps
every direct SPTE of the range (valid and invalid roots, KVM_FILTER_SHARED: mirror roots are never
touched from here) and marks the range in progress, so a fault that got its pfn before the change
sees mmu_invalidate_retry_gfn() and retries; invalidate_range_end bumps mmu_invalidate_seq. ->release
(the VMM's exit_mmap, or mmu_notifier_unregister() in kvm_destroy_vm()) zaps every direct root.

Memslot deletion for a TD (KVM_X86_QUIRK_SLOT_ZAP_ALL is never set for non-default VMs) marks the slot
KVM_MEMSLOT_INVALID, waits for running notifier invalidations and for every kvm->srcu reader
(synchronize_srcu_expedited()), then kvm_arch_flush_shadow_memslot() zaps the slot's private and
shared leaves; a vCPU whose fault hits the invalid slot retries, and tdx_handle_ept_violation() must
leave its local retry loop (and SRCU) for the deletion to finish (6.18).

MODEL: one memslot covering all guest memory, gfn g at hva page g; an hva range is a gfn range. The
notifier's kvm_handle_hva_range() takes mmu_lock for write once for on_lock + handler, as the kernel's
KVM_MMU_LOCK() does; mn_invalidate_lock is folded into the step that takes mmu_lock.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from ..host.locks import mutex_lock, mutex_unlock, write_lock, write_unlock
from ..host.task import OP_RUN, OP_WAIT, Op
from .guest_memfd import kvm_mmu_invalidate_begin, kvm_mmu_invalidate_end, kvm_mmu_invalidate_range_add
from .kvm_host import KVM_MEMSLOT_DELETED, KVM_MEMSLOT_INVALID, KVM_MEMSLOT_VALID
from .tdp_mmu import (
    KVM_FILTER_PRIVATE,
    KVM_FILTER_SHARED,
    kvm_tdp_mmu_age_gfn_range,
    kvm_tdp_mmu_unmap_gfn_range,
    kvm_tdp_mmu_zap_all,
)

if TYPE_CHECKING:
    from .kvm_host import Kvm

Gen = Generator[Op, object, int]


# --- kvm->srcu ---------------------------------------------------------------------------------------
def srcu_read_lock(kvm: "Kvm") -> None:
    """srcu_read_lock(&kvm->srcu) (kvm_vcpu_srcu_read_lock()): enter a read-side section."""
    kvm.srcu_readers.add(kvm.host.current.name)


def srcu_read_unlock(kvm: "Kvm") -> None:
    """srcu_read_unlock(&kvm->srcu): leave it; a synchronize_srcu() waiting for this reader stops waiting."""
    name = kvm.host.current.name
    kvm.srcu_readers.discard(name)
    for waiting in kvm.srcu_waiting.values():
        waiting.discard(name)


def synchronize_srcu_expedited(kvm: "Kvm") -> Gen:
    """synchronize_srcu_expedited(&kvm->srcu): wait until every read-side section that began before the
    call has ended (new readers do not delay it)."""
    me = kvm.host.current.name
    kvm.srcu_waiting[me] = set(kvm.srcu_readers) - {me}
    yield Op(OP_WAIT, lambda: not kvm.srcu_waiting[me], "synchronize_srcu_expedited(&kvm->srcu)")
    del kvm.srcu_waiting[me]
    return 0


# --- the mmu notifier --------------------------------------------------------------------------------
def kvm_unmap_gfn_range(kvm: "Kvm", start: int, end: int, attr_filter: int, may_block: bool) -> Gen:
    """kvm_unmap_gfn_range() (mmu.c) -> kvm_tdp_mmu_unmap_gfn_range() (mmu_lock held for write)."""
    return (yield from kvm_tdp_mmu_unmap_gfn_range(kvm, start, end, attr_filter, may_block))


def kvm_mmu_notifier_invalidate_range_start(kvm: "Kvm", start: int, end: int) -> Gen:
    """kvm_mmu_notifier_invalidate_range_start(): mn_active_invalidate_count++, then under mmu_lock
    kvm_mmu_invalidate_begin() (on_lock) and kvm_unmap_gfn_range() with KVM_FILTER_SHARED, may_block."""
    host = kvm.host
    yield from write_lock(host, kvm.mmu_lock)
    kvm.mn_active_invalidate_count += 1
    kvm_mmu_invalidate_begin(kvm)
    kvm_mmu_invalidate_range_add(kvm, start, end)
    yield from kvm_unmap_gfn_range(kvm, start, end, KVM_FILTER_SHARED, True)
    write_unlock(host, kvm.mmu_lock)
    return 0


def kvm_mmu_notifier_invalidate_range_end(kvm: "Kvm", start: int, end: int) -> Gen:
    """kvm_mmu_notifier_invalidate_range_end(): kvm_mmu_invalidate_end() under mmu_lock, then
    mn_active_invalidate_count-- (waking a memslot update waiting for it)."""
    host = kvm.host
    yield from write_lock(host, kvm.mmu_lock)
    kvm_mmu_invalidate_end(kvm)
    write_unlock(host, kvm.mmu_lock)
    kvm.mn_active_invalidate_count -= 1
    return 0


def kvm_mmu_notifier_clear_flush_young(kvm: "Kvm", start: int, end: int) -> Gen:
    """kvm_mmu_notifier_clear_flush_young() -> kvm_age_gfn() (KVM_FILTER_SHARED): lockless aging."""
    yield from kvm_tdp_mmu_age_gfn_range(kvm, start, end, KVM_FILTER_SHARED)
    return 0


def kvm_mmu_notifier_release(kvm: "Kvm") -> Gen:
    """kvm_mmu_notifier_release(): under kvm->srcu, kvm_flush_shadow_all() -> kvm_arch_flush_shadow_all()
    -> kvm_mmu_zap_all(): every direct root, valid or invalid, zapped under the write lock."""
    srcu_read_lock(kvm)
    yield from kvm_mmu_zap_all(kvm)
    srcu_read_unlock(kvm)
    kvm.host.mm.notifiers = [n for n in kvm.host.mm.notifiers if n.kvm is not kvm]
    return 0


def kvm_mmu_zap_all(kvm: "Kvm") -> Gen:
    """kvm_mmu_zap_all() (mmu.c): write_lock(mmu_lock), kvm_tdp_mmu_zap_all()."""
    host = kvm.host
    yield from write_lock(host, kvm.mmu_lock)
    yield from kvm_tdp_mmu_zap_all(kvm)
    write_unlock(host, kvm.mmu_lock)
    return 0


def mmu_notifier_unregister(kvm: "Kvm") -> Gen:
    """mmu_notifier_unregister() in kvm_destroy_vm(): ->release if exit_mmap() has not already run it."""
    if any(n.kvm is kvm for n in kvm.host.mm.notifiers):
        yield from kvm_mmu_notifier_release(kvm)
    return 0


class KvmMmuNotifier:
    """kvm->mmu_notifier with kvm_mmu_notifier_ops: each callback looks the kernel function up by name
    at call time, so a variant replacing one of them is what the primary MMU calls."""

    __slots__ = ("kvm",)

    def __init__(self, kvm: "Kvm"):
        self.kvm = kvm

    def invalidate_range_start(self, start: int, end: int) -> Gen:
        return (yield from kvm_mmu_notifier_invalidate_range_start(self.kvm, start, end))

    def invalidate_range_end(self, start: int, end: int) -> Gen:
        return (yield from kvm_mmu_notifier_invalidate_range_end(self.kvm, start, end))

    def clear_flush_young(self, start: int, end: int) -> Gen:
        return (yield from kvm_mmu_notifier_clear_flush_young(self.kvm, start, end))

    def release(self) -> Gen:
        return (yield from kvm_mmu_notifier_release(self.kvm))


# --- memslots ----------------------------------------------------------------------------------------
def kvm_swap_active_memslots(kvm: "Kvm") -> Gen:
    """kvm_swap_active_memslots(): wait for in-flight notifier invalidations (mn_active_invalidate_count,
    "the mmu notifier must see the same memslots on start and end"), publish, synchronize_srcu_expedited()."""
    yield Op(OP_WAIT, lambda: kvm.mn_active_invalidate_count == 0, "kvm_swap_active_memslots: wait for mmu notifiers")
    yield from synchronize_srcu_expedited(kvm)
    return 0


def kvm_arch_flush_shadow_memslot(kvm: "Kvm", start: int, end: int) -> Gen:
    """kvm_arch_flush_shadow_memslot() for a TD (kvm_memslot_flush_zap_all() is false): kvm_mmu_zap_memslot()
    zaps the slot's leaves, private and shared (KVM_FILTER_PRIVATE | KVM_FILTER_SHARED, may_block),
    under the write lock; nothing is invalidated, so mirror roots keep their tables."""
    host = kvm.host
    yield from write_lock(host, kvm.mmu_lock)
    yield from kvm_unmap_gfn_range(kvm, start, end, KVM_FILTER_PRIVATE | KVM_FILTER_SHARED, True)
    write_unlock(host, kvm.mmu_lock)
    return 0


def kvm_set_memslot_delete(kvm: "Kvm", start: int, end: int) -> Gen:
    """kvm_set_memslot(KVM_MR_DELETE): kvm_invalidate_memslot() (KVM_MEMSLOT_INVALID, swap: faults on it
    retry), kvm_arch_flush_shadow_memslot(), kvm_delete_memslot() (swap again: the slot is gone)."""
    kvm.memslot = KVM_MEMSLOT_INVALID
    yield from kvm_swap_active_memslots(kvm)
    yield from kvm_arch_flush_shadow_memslot(kvm, start, end)
    kvm.memslot = KVM_MEMSLOT_DELETED
    yield from kvm_swap_active_memslots(kvm)
    return 0


def kvm_set_memslot_create(kvm: "Kvm") -> Gen:
    """kvm_set_memslot(KVM_MR_CREATE) (guest_memfd bound again by kvm_gmem_bind()): the slot is back."""
    yield Op(OP_RUN, ("memslot", 0), "kvm_set_memslot(KVM_MR_CREATE)")
    kvm.memslot = KVM_MEMSLOT_VALID
    return 0


def kvm_vm_ioctl_set_memory_region(kvm: "Kvm", start: int, end: int) -> Gen:
    """Userspace re-creating its memslot (KVM_SET_USER_MEMORY_REGION2 with size 0, then again), each under
    kvm->slots_lock (kvm_set_memory_region())."""
    host = kvm.host
    yield from mutex_lock(host, kvm.slots_lock)
    yield from kvm_set_memslot_delete(kvm, start, end)
    mutex_unlock(host, kvm.slots_lock)
    yield from mutex_lock(host, kvm.slots_lock)
    yield from kvm_set_memslot_create(kvm)
    mutex_unlock(host, kvm.slots_lock)
    return 0


__all__ = ["KvmMmuNotifier", "srcu_read_lock", "srcu_read_unlock", "kvm_vm_ioctl_set_memory_region",
           "mmu_notifier_unregister", "KVM_FILTER_SHARED"]
