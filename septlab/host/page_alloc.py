"""The host page allocator: every 4 KiB page has an owner state, and optionally a history.

Pages are handed out lowest-free-first from a LIFO free list, so a page freed too early is reused at
once (the way a use-after-free turns into corruption in a real kernel). Owner states are what the host
believes the page is for; whether the TDX module owns it is the module's PAMT, kept separately. The
KASAN model lives here too: an access to a free page is reported with the page's allocation and free
records, like generic KASAN's alloc/free stacks. Per-page state is one small int in a list indexed by
pfn; the history (events with call chains) is optional and off on big runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host import Host

FREE = 0
CACHED = 1  # in a kvm_mmu_memory_cache / tdx_pamt_cache, not yet consumed
SPT = 2  # sp->spt: a KVM page table (mirror or direct)
EXTERNAL_SPT = 3  # sp->external_spt: given (or to be given) to the TDX module as an S-EPT page
GUEST = 4  # guest_memfd private page
TD_CONTROL = 5  # TDR / TDCS / TDVPR / TDCX
PAMT = 6  # DPAMT PAMT_4K backing page
LEAKED = 7  # deliberately leaked by the kernel (it cannot know the page is safe to reuse)
OWNER_NAMES = ("free", "cached", "spt", "external_spt", "guest", "td_control", "pamt", "leaked")
N_OWNERS = len(OWNER_NAMES)


@dataclass(slots=True)
class PageEvent:
    step: int
    task: str
    what: str
    chain: tuple[str, ...]


@dataclass(slots=True)
class PageAllocator:
    owner: list[int] = field(default_factory=list)
    free_list: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=lambda: [0] * N_OWNERS)
    base_pfn: int = 0x1000

    def _set(self, pfn: int, new: int) -> int:
        i = pfn - self.base_pfn
        old = self.owner[i]
        self.owner[i] = new
        c = self.counts
        c[old] -= 1
        c[new] += 1
        return old

    def state(self, pfn: int) -> int:
        i = pfn - self.base_pfn
        return self.owner[i] if 0 <= i < len(self.owner) else FREE

    def in_use(self) -> int:
        return len(self.owner) - self.counts[FREE]


def alloc_page(host: "Host", owner: int) -> int:
    """alloc_page(GFP_KERNEL_ACCOUNT): lowest recently freed page first, else a never-used one."""
    pa = host.pages
    if pa.free_list:
        pfn = pa.free_list.pop()
        pa._set(pfn, owner)
    else:
        pfn = pa.base_pfn + len(pa.owner)
        pa.owner.append(owner)
        pa.counts[owner] += 1
    if host.history is not None:
        host.page_event(pfn, f"allocated as {OWNER_NAMES[owner]}", "alloc")
    host.probe.page_alloc(pfn, owner)
    return pfn


def free_page(host: "Host", pfn: int) -> None:
    """free_page(): return a page to the allocator; a second free is a KASAN double-free."""
    pa = host.pages
    old = pa.state(pfn)
    if old == FREE:
        host.kasan_report("double-free", pfn, "free_page")
        return
    host.probe.page_free(pfn, old)
    pa._set(pfn, FREE)
    pa.free_list.append(pfn)
    if host.history is not None:
        host.page_event(pfn, f"freed (was {OWNER_NAMES[old]})", "free")


def set_owner(host: "Host", pfn: int, new: int, why: str = "") -> None:
    """The same page changes purpose (e.g. taken from a cache to become sp->external_spt)."""
    old = host.pages._set(pfn, new)
    host.probe.page_owner(pfn, old, new)
    if host.history is not None:
        host.page_event(pfn, why or f"{OWNER_NAMES[old]} -> {OWNER_NAMES[new]}")


def leak_page(host: "Host", pfn: int, why: str) -> None:
    """Intentionally leak the page to prevent the kernel from accessing the encrypted page."""
    old = host.pages._set(pfn, LEAKED)
    host.probe.page_leak(pfn, why)
    if host.history is not None:
        host.page_event(pfn, f"leaked ({why}; was {OWNER_NAMES[old]})", "leak")


def kasan_check(host: "Host", pfn: int, write: bool, what: str) -> bool:
    """KASAN shadow check of an access to `pfn`: report a use-after-free if the page is free."""
    if host.pages.state(pfn) == FREE:
        host.kasan_report("use-after-free", pfn, what, write=write)
        return False
    return True
