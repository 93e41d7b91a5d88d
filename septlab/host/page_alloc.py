"""The host page allocator: every 4 KiB page has an owner state, and optionally a history.

Pages are handed out lowest-free-pfn-first, so a page freed too early is soon reused (the way a
use-after-free turns into corruption in a real kernel), and the allocator's state is just which pages
are free -- not the order they were freed in, which would make every interleaving of two frees a
different state for the exhaustive explorer. Owner states are what the host
believes the page is for; whether the TDX module owns it is the module's PAMT, kept separately. The
KASAN model lives here too: an access to a free page is reported with the page's allocation and free
records, like generic KASAN's alloc/free stacks. Per-page state is one small int in a list indexed by
pfn; the history (events with call chains) is optional and off on big runs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from itertools import compress
from typing import TYPE_CHECKING

from .locks import might_sleep

if TYPE_CHECKING:
    from .host import Host

# gfp_t (include/linux/gfp_types.h). MODEL: the bits are symbolic; only whether an allocation may
# block -- gfpflags_allow_blocking(), i.e. __GFP_DIRECT_RECLAIM -- and accounting are represented.
__GFP_DIRECT_RECLAIM = 0x1
__GFP_ACCOUNT = 0x2
GFP_ATOMIC = 0x0  # never sleeps: what an allocation under a spinlock / mmu_lock must use
GFP_NOWAIT = 0x0
GFP_KERNEL = __GFP_DIRECT_RECLAIM
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NAMES = {GFP_ATOMIC: "GFP_ATOMIC", GFP_KERNEL: "GFP_KERNEL", GFP_KERNEL_ACCOUNT: "GFP_KERNEL_ACCOUNT"}

FREE = 0
CACHED = 1  # in a kvm_mmu_memory_cache / tdx_pamt_cache, not yet consumed
SPT = 2  # sp->spt: a KVM page table (mirror or direct)
EXTERNAL_SPT = 3  # sp->external_spt: given (or to be given) to the TDX module as an S-EPT page
GUEST = 4  # guest_memfd private page
TD_CONTROL = 5  # TDR / TDCS / TDVPR / TDCX
PAMT = 6  # DPAMT PAMT_4K backing page
LEAKED = 7  # deliberately leaked by the kernel (it cannot know the page is safe to reuse)
USER = 8  # a host-userspace (anonymous) page: shared guest memory, an INIT_MEM_REGION source
OWNER_NAMES = ("free", "cached", "spt", "external_spt", "guest", "td_control", "pamt", "leaked", "user")
N_OWNERS = len(OWNER_NAMES)


@dataclass(slots=True)
class PageEvent:
    step: int
    task: str
    what: str
    chain: tuple[str, ...]


PCP_SHIFT = 26  # each CPU's pages live in their own 2^26-page (256 GiB) pfn range: a 64 GiB TD and its page tables fit one vCPU's


@dataclass(slots=True)
class PcpList:
    """One CPU's pages: owner state by pfn - base (a bytearray: one byte a page, the owner states are
    small ints), and its free pages (a heap, lowest first)."""

    base: int
    owner: bytearray = field(default_factory=bytearray)
    free: list[int] = field(default_factory=list)


@dataclass(slots=True)
class PageAllocator:
    """MODEL: per-CPU page lists (the kernel's pcp lists): a task allocates from, and frees back to,
    its own pfn range, so which pfns a task gets does not depend on how tasks interleave -- only on
    what that task did. Within a range the lowest free page is handed out first."""

    lists: dict[int, PcpList] = field(default_factory=dict)
    counts: list[int] = field(default_factory=lambda: [0] * N_OWNERS)
    total: int = 0  # pages ever handed out

    def _list_of(self, pfn: int) -> PcpList | None:
        return self.lists.get((pfn >> PCP_SHIFT) - 1)

    def _set(self, pfn: int, new: int) -> int:
        lst = self.lists[(pfn >> PCP_SHIFT) - 1]
        i = pfn - lst.base
        old = lst.owner[i]
        lst.owner[i] = new
        c = self.counts
        c[old] -= 1
        c[new] += 1
        return old

    def state(self, pfn: int) -> int:
        lst = self.lists.get((pfn >> PCP_SHIFT) - 1)  # _list_of(), inlined: KASAN checks every access
        if lst is None:
            return FREE
        i = pfn - lst.base
        owner = lst.owner
        return owner[i] if 0 <= i < len(owner) else FREE

    def in_use(self) -> int:
        return self.total - self.counts[FREE]

    def pages(self) -> list[tuple[int, int]]:
        """(pfn, owner) of every page ever handed out, by pfn."""
        return [(lst.base + i, o) for _, lst in sorted(self.lists.items()) for i, o in enumerate(lst.owner)]

    def pages_in_use(self) -> list[tuple[int, int]]:
        """(pfn, owner) of every page not FREE, by pfn: pages() without the free ones, found at C speed
        (a run's end has a million free pages at real sizes and few or none in use)."""
        out: list[tuple[int, int]] = []
        for _, lst in sorted(self.lists.items()):
            owner = lst.owner
            out += [(lst.base + i, owner[i]) for i in compress(range(len(owner)), owner)]  # FREE == 0
        return out


def alloc_page(host: "Host", owner: int, gfp: int = GFP_KERNEL_ACCOUNT) -> int:
    """alloc_page(gfp): the lowest free page of this CPU's list, else a never-used one.

    A blocking gfp (GFP_KERNEL, GFP_KERNEL_ACCOUNT) may enter direct reclaim: prepare_alloc_pages() ->
    might_alloc() -> might_sleep_if(gfpflags_allow_blocking(gfp)), illegal in atomic context."""
    if gfp & __GFP_DIRECT_RECLAIM:
        t = host.current
        if t.preempt_count or t.rcu_nesting:
            might_sleep(host, f"alloc_page({GFP_NAMES.get(gfp, hex(gfp))})")
    pa = host.pages
    cpu = host.current.cpu
    lst = pa.lists.get(cpu)
    if lst is None:
        lst = pa.lists[cpu] = PcpList((cpu + 1) << PCP_SHIFT)
    if lst.free:
        pfn = heapq.heappop(lst.free)
        pa._set(pfn, owner)
    else:
        pfn = lst.base + len(lst.owner)
        lst.owner.append(owner)
        pa.counts[owner] += 1
        pa.total += 1
    if host.history is not None:
        host.page_event(pfn, f"allocated as {OWNER_NAMES[owner]}", "alloc")
    host.probe.page_alloc(pfn, owner)
    return pfn


HUGE_LIST = 1 << 10  # per-CPU 2 MiB folio pools live in lists HUGE_LIST + cpu (their own pfn ranges)
PAGES_PER_FOLIO_2M = 512


def alloc_folio_2m(host: "Host", owner: int) -> int:
    """folio_alloc(GFP_HIGHUSER, 9) for a guest_memfd 2 MiB folio: 512 naturally aligned pages, the
    lowest fully free block of this CPU's folio pool, else a new one. Returns the head pfn.

    MODEL: the pool is separate from the 4 KiB lists (no fragmentation or compaction is modelled); a
    folio split into 4 KiB pages frees them back one by one, and its block is reused once all are free."""
    t = host.current
    if t.preempt_count or t.rcu_nesting:
        might_sleep(host, "folio_alloc(GFP_HIGHUSER, order 9)")
    pa = host.pages
    key = HUGE_LIST + t.cpu
    lst = pa.lists.get(key)
    if lst is None:
        lst = pa.lists[key] = PcpList((key + 1) << PCP_SHIFT)
    head = -1
    for b in range(0, len(lst.owner), PAGES_PER_FOLIO_2M):
        if not any(lst.owner[b:b + PAGES_PER_FOLIO_2M]):  # FREE == 0
            head = lst.base + b
            block = set(range(head, head + PAGES_PER_FOLIO_2M))
            lst.free = [p for p in lst.free if p not in block]
            heapq.heapify(lst.free)
            for p in block:
                pa._set(p, owner)
            break
    if head < 0:
        head = lst.base + len(lst.owner)
        lst.owner.extend([owner] * PAGES_PER_FOLIO_2M)
        pa.counts[owner] += PAGES_PER_FOLIO_2M
        pa.total += PAGES_PER_FOLIO_2M
    if host.history is not None:
        host.page_event(head, f"allocated as the head of a 2 MiB {OWNER_NAMES[owner]} folio", "alloc")
    for p in range(head, head + PAGES_PER_FOLIO_2M):
        host.probe.page_alloc(p, owner)
    return head


def free_page(host: "Host", pfn: int) -> None:
    """free_page(): return a page to the allocator; a second free is a KASAN double-free."""
    pa = host.pages
    old = pa.state(pfn)
    if old == FREE:
        host.kasan_report("double-free", pfn, "free_page")
        return
    host.probe.page_free(pfn, old)
    pa._set(pfn, FREE)
    heapq.heappush(pa._list_of(pfn).free, pfn)  # type: ignore[union-attr]
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
