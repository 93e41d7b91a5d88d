"""mm/: the VMM process's anonymous memory as the primary MMU sees it, and its mmu notifiers.

Shared guest memory is ordinary host-userspace memory: KVM maps it into the direct (shared) EPT only
through get_user_pages() in the fault path, and must drop every such mapping when the primary MMU
unmaps, migrates or frees the page -- which it learns only from the mmu notifiers. This module is that
primary MMU: page tables of the VMM (`ptes`), page reference counts, munmap / madvise(MADV_DONTNEED) /
page migration / aging / exit_mmap, each calling the registered notifiers (KVM's, virt/kvm/kvm_main.c)
around the change exactly where mm/ does.

MODEL: one process with one anonymous VMA per shared guest page, and KVM's one memslot maps gfn g at
hva page g (so an hva range is a gfn range). A page's references are its PTE's and get_user_pages()'
(folio_get/folio_put); it is freed when the last goes. Migration is of one page at a time and fails,
as migrate_folio_move() does, when anyone but the PTE holds a reference (a GUP in flight).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .page_alloc import GFP_KERNEL, USER, alloc_page, free_page
from .task import OP_RUN, Op

if TYPE_CHECKING:
    from .host import Host

Gen = Generator[Op, object, int]
EFAULT = -14


class MmuNotifier(Protocol):
    """struct mmu_notifier_ops, the subset KVM registers (kvm_mmu_notifier_ops)."""

    def invalidate_range_start(self, start: int, end: int) -> Gen: ...
    def invalidate_range_end(self, start: int, end: int) -> Gen: ...
    def clear_flush_young(self, start: int, end: int) -> Gen: ...
    def release(self) -> Gen: ...


@dataclass(slots=True)
class MmStruct:
    """struct mm_struct of the VMM: present PTEs (hva page -> pfn), unmapped ranges, page refcounts."""

    ptes: dict[int, int] = field(default_factory=dict)
    unmapped: set[int] = field(default_factory=set)  # munmap()ed: no VMA, a GUP fails with -EFAULT
    page_refs: dict[int, int] = field(default_factory=dict)  # pfn -> folio refcount
    notifiers: list[Any] = field(default_factory=list)
    exited: bool = False  # exit_mmap() ran: mmu_notifier_release() called, every page unmapped


def mmu_notifier_register(mm: MmStruct, mn: MmuNotifier) -> None:
    """mmu_notifier_register() (kvm_init_mmu_notifier() at KVM_CREATE_VM)."""
    mm.notifiers.append(mn)


def get_page(host: "Host", pfn: int) -> None:
    """folio_get(): one more reference."""
    refs = host.mm.page_refs
    refs[pfn] = refs.get(pfn, 0) + 1


def put_page(host: "Host", pfn: int) -> None:
    """folio_put(): drop a reference; the last one frees the page to the allocator."""
    refs = host.mm.page_refs
    n = refs.get(pfn, 0) - 1
    if n > 0:
        refs[pfn] = n
        return
    refs.pop(pfn, None)
    free_page(host, pfn)


def get_user_pages_unlocked(host: "Host", hva: int) -> Gen:
    """get_user_pages_unlocked(FOLL_WRITE) for one page (hva_to_pfn_slow()): fault the page in if it has
    no PTE (a fresh zeroed page, GFP_HIGHUSER_MOVABLE: may sleep), take a reference, return its pfn;
    -EFAULT if the address is not mapped."""
    mm = host.mm
    yield Op(OP_RUN, ("mm", hva), "get_user_pages_unlocked")
    if hva in mm.unmapped or mm.exited:
        return EFAULT
    pfn = mm.ptes.get(hva)
    if pfn is None:  # handle_mm_fault(): do_anonymous_page()
        pfn = alloc_page(host, USER, GFP_KERNEL)
        mm.ptes[hva] = pfn
        mm.page_refs[pfn] = 1
    get_page(host, pfn)
    return pfn


def mmu_notifier_invalidate_range_start(host: "Host", start: int, end: int) -> Gen:
    """mmu_notifier_invalidate_range_start() (blockable range): every subscriber, in order."""
    for mn in host.mm.notifiers:
        yield from mn.invalidate_range_start(start, end)
    return 0


def mmu_notifier_invalidate_range_end(host: "Host", start: int, end: int) -> Gen:
    """mmu_notifier_invalidate_range_end()."""
    for mn in host.mm.notifiers:
        yield from mn.invalidate_range_end(start, end)
    return 0


def zap_pte_range(host: "Host", start: int, end: int) -> None:
    """zap_pte_range(): clear the PTEs of [start, end) and drop their references (under the PTE lock)."""
    mm = host.mm
    for hva in range(start, end):
        pfn = mm.ptes.pop(hva, None)
        if pfn is not None:
            put_page(host, pfn)


def zap_page_range_single(host: "Host", start: int, end: int) -> Gen:
    """madvise(MADV_DONTNEED) -> zap_page_range_single(): the notifier brackets the PTE zap; the next
    touch faults in a fresh page."""
    yield from mmu_notifier_invalidate_range_start(host, start, end)
    yield Op(OP_RUN, ("mm", start), "zap_pte_range")
    zap_pte_range(host, start, end)
    yield from mmu_notifier_invalidate_range_end(host, start, end)
    return 0


def do_vmi_munmap(host: "Host", start: int, end: int) -> Gen:
    """munmap() -> do_vmi_munmap() -> unmap_region(): like MADV_DONTNEED, and the VMA is gone."""
    yield from mmu_notifier_invalidate_range_start(host, start, end)
    yield Op(OP_RUN, ("mm", start), "unmap_region")
    zap_pte_range(host, start, end)
    host.mm.unmapped.update(range(start, end))
    yield from mmu_notifier_invalidate_range_end(host, start, end)
    return 0


def migrate_pages(host: "Host", start: int, end: int) -> Gen:
    """migrate_pages() of each present page of [start, end): try_to_migrate() replaces the PTE by a
    migration entry inside the notifier bracket; migrate_folio_move() copies to a new page only if the
    PTE holds the sole reference (else the move fails and remove_migration_ptes() restores the PTE);
    the old page is freed."""
    mm = host.mm
    for hva in range(start, end):
        if hva not in mm.ptes:
            continue
        yield from mmu_notifier_invalidate_range_start(host, hva, hva + 1)
        yield Op(OP_RUN, ("mm", hva), "try_to_migrate")
        old = mm.ptes.get(hva)
        if old is not None and mm.page_refs.get(old, 0) == 1:
            new = alloc_page(host, USER, GFP_KERNEL)
            mm.page_refs[new] = 1
            mm.ptes[hva] = new
            put_page(host, old)
        yield from mmu_notifier_invalidate_range_end(host, hva, hva + 1)
    return 0


def folio_referenced(host: "Host", start: int, end: int) -> Gen:
    """Reclaim's aging (folio_referenced() -> folio_referenced_one()): ptep_clear_flush_young() and
    mmu_notifier_clear_flush_young() for the range -- KVM's secondary-MMU accessed bits."""
    for mn in host.mm.notifiers:
        yield from mn.clear_flush_young(start, end)
    return 0


def exit_mmap(host: "Host") -> Gen:
    """exit_mmap() (the VMM exits, or its last mm user goes): mmu_notifier_release() first -- KVM must
    drop every mapping of this mm -- then every VMA is unmapped and its pages freed."""
    mm = host.mm
    for mn in mm.notifiers:
        yield from mn.release()
    yield Op(OP_RUN, ("mm", 0), "exit_mmap: unmap_vmas")
    mm.exited = True
    for hva in sorted(mm.ptes):
        zap_pte_range(host, hva, hva + 1)
    return 0


__all__ = ["MmStruct", "MmuNotifier", "mmu_notifier_register", "get_user_pages_unlocked", "put_page",
           "zap_page_range_single", "do_vmi_munmap", "migrate_pages", "folio_referenced", "exit_mmap", "EFAULT"]
