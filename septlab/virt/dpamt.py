"""Dynamic PAMT host side (E4, DPAMT v6, arch/x86/virt/vmx/tdx/tdx.c): refcounts, pamt_lock, caches.

`pamt_refcounts[pfn >> 9]` counts the 4 KiB pages in a 2 MiB region that need the PAMT_4K level; the
0->1 transition installs it with TDH.PHYMEM.PAMT.ADD and 1->0 removes it, both under the global
`pamt_lock`, a plain (not softirq-safe) spinlock. With DPAMT off every function here is a no-op, as
tdx_pamt_get()/tdx_pamt_put() are on hosts without the feature.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..host.locks import SpinLock, might_lock, spin_lock, spin_unlock
from ..host.page_alloc import (
    CACHED,
    GFP_KERNEL_ACCOUNT,
    PAMT,
    TD_CONTROL,
    alloc_page,
    free_page,
    leak_page,
    set_owner,
)
from ..host.task import Op
from ..tdx_module import errno as E
from ..tdx_module.pamt import TDX_DPAMT_ENTRY_PAGE_CNT
from .seamcall import tdh_phymem_pamt_add, tdh_phymem_pamt_remove

if TYPE_CHECKING:
    from ..host.host import Host


@dataclass(slots=True)
class TdxPamtCache:
    """struct tdx_pamt_cache: pages for PAMT.ADD taken without sleeping under mmu_lock."""

    pages: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TdxHost:
    """Host-wide TDX state: whether DPAMT is on, the per-2MiB refcounts and pamt_lock."""

    dpamt: bool = False
    pamt_refcounts: dict[int, int] = field(default_factory=dict)
    pamt_lock: SpinLock = field(default_factory=lambda: SpinLock("pamt_lock", cls="pamt_lock"))
    hkids: int = 0


def tdx_pamt_get(host: "Host", pfn: int, cache: TdxPamtCache | None) -> Generator[Op, object, int]:
    """tdx_pamt_get(): take a PAMT_4K reference on pfn's region, installing it on 0 -> 1.

    The two PAMT pages come from `cache` (filled before mmu_lock) or, with cache == NULL, from
    alloc_page(GFP_KERNEL_ACCOUNT) (DPAMT v6 #08), which may sleep: legal only outside spinlocks and
    mmu_lock (f.23), e.g. for control pages."""
    th: TdxHost = host.tdx
    if not th.dpamt:
        return 0
    region = pfn >> 9
    refs = th.pamt_refcounts
    if refs.get(region, 0):  # atomic_inc_not_zero()
        refs[region] += 1
        host.probe.pamt_refcount(region, refs[region])
        return 0
    if cache is not None:
        pages = [cache.pages.pop() for _ in range(TDX_DPAMT_ENTRY_PAGE_CNT)]
    else:
        pages = [alloc_page(host, CACHED, GFP_KERNEL_ACCOUNT) for _ in range(TDX_DPAMT_ENTRY_PAGE_CNT)]
    yield from spin_lock(host, th.pamt_lock)
    if refs.get(region, 0):  # another getter did 0 -> 1 meanwhile
        refs[region] += 1
        spin_unlock(host, th.pamt_lock)
        for p in pages:
            free_page(host, p)
        host.probe.pamt_refcount(region, refs[region])
        return 0
    err = yield from tdh_phymem_pamt_add(host, region, pages[0], pages[1])
    if err:
        host.warn("tdx_pamt_get", "TDH.PHYMEM.PAMT.ADD failed", err=err,
                  injected=host.current.injected_error)
        spin_unlock(host, th.pamt_lock)
        for p in pages:
            free_page(host, p)
        return -5  # -EIO
    for p in pages:
        set_owner(host, p, PAMT, f"PAMT_4K backing of 2M region {region:#x}")
    refs[region] = 1
    spin_unlock(host, th.pamt_lock)
    host.probe.pamt_refcount(region, 1)
    return 0


def tdx_pamt_put(host: "Host", pfn: int) -> Generator[Op, object, None]:
    """tdx_pamt_put(): drop a reference; the last one removes the region's PAMT_4K under pamt_lock.

    MODEL: atomic_dec_and_lock() only takes pamt_lock on 1 -> 0; we annotate might_lock() so that
    lockdep learns the usage on every put, not only in the schedule where the region empties (Yan's
    report came from a run where it did).
    """
    th: TdxHost = host.tdx
    if not th.dpamt:
        return
    region = pfn >> 9
    refs = th.pamt_refcounts
    might_lock(host, th.pamt_lock)
    cur = refs.get(region, 0)
    if cur <= 0:
        host.probe.report("pamt-refcount", f"BUG: pamt_refcounts[{region:#x}] underflow in tdx_pamt_put",
                          region=region, pfn=pfn, task=host.current.name)
        return
    if cur > 1:
        refs[region] = cur - 1
        host.probe.pamt_refcount(region, cur - 1)
        return
    yield from spin_lock(host, th.pamt_lock)
    cur = refs.get(region, 0)
    if cur > 1:  # lost a race with tdx_pamt_get()'s lockless increment: not the last reference now
        refs[region] = cur - 1
        spin_unlock(host, th.pamt_lock)
        host.probe.pamt_refcount(region, cur - 1)
        return
    refs[region] = 0
    err, pages = yield from tdh_phymem_pamt_remove(host, region)
    if err:
        host.warn("tdx_pamt_put", "TDH.PHYMEM.PAMT.REMOVE failed, leaking PAMT pages", err=err,
                  injected=host.current.injected_error)
        tdx_pamt_keep(host, pfn, (E.leaf_name(E.TDH_PHYMEM_PAMT_REMOVE), E.err_name(err), host.clock,
                                  host.current.name) if host.current.injected_error else None)
        refs[region] = 1
        spin_unlock(host, th.pamt_lock)
        return
    del refs[region]
    spin_unlock(host, th.pamt_lock)
    host.probe.pamt_refcount(region, 0)
    for p in pages or ():
        free_page(host, p)


def tdx_alloc_control_page(host: "Host") -> Generator[Op, object, int]:
    """tdx_alloc_control_page(): alloc_page(GFP_KERNEL_ACCOUNT) + tdx_pamt_get(pfn, NULL); -1 on failure."""
    pfn = alloc_page(host, TD_CONTROL, GFP_KERNEL_ACCOUNT)
    if (yield from tdx_pamt_get(host, pfn, None)):
        free_page(host, pfn)
        return -1
    return pfn


def tdx_free_control_page(host: "Host", pfn: int) -> Generator[Op, object, None]:
    """tdx_free_control_page(): tdx_pamt_put() + __free_page() (NULL-safe)."""
    if pfn < 0:
        return
    yield from tdx_pamt_put(host, pfn)
    free_page(host, pfn)


def tdx_topup_pamt_cache(host: "Host", cache: TdxPamtCache, nr: int) -> None:
    """tdx_topup_pamt_cache(): fill to 2 pages per page that may need PAMT, GFP_KERNEL_ACCOUNT (may sleep:
    before mmu_lock)."""
    if not host.tdx.dpamt:
        return
    while len(cache.pages) < TDX_DPAMT_ENTRY_PAGE_CNT * nr:
        cache.pages.append(alloc_page(host, CACHED, GFP_KERNEL_ACCOUNT))


def tdx_pamt_demote_pages(host: "Host", cache: TdxPamtCache) -> tuple[int, int] | None:
    """The PAMT pages TDH.MEM.PAGE.DEMOTE installs as the demoted page's new PAMT_4K level, taken from
    the split cache (None without DPAMT: the static PAMT_4K covers it)."""
    if not host.tdx.dpamt:
        return None
    return cache.pages.pop(), cache.pages.pop()


def tdx_pamt_demoted(host: "Host", head: int, pages: tuple[int, int] | None) -> None:
    """After a successful DEMOTE: the 2 MiB region now has a PAMT_4K level holding its 512 4 KiB pages,
    each of which tdx_pamt_put() releases when its 4 KiB mapping is removed."""
    if pages is None:
        return
    region = head >> 9
    for p in pages:
        set_owner(host, p, PAMT, f"PAMT_4K backing of 2M region {region:#x} (DEMOTE)")
    host.tdx.pamt_refcounts[region] = 512
    host.probe.pamt_refcount(region, 512)


def tdx_free_pamt_cache(host: "Host", cache: TdxPamtCache) -> None:
    """tdx_free_pamt_cache()."""
    while cache.pages:
        free_page(host, cache.pages.pop())


def tdx_pamt_keep(host: "Host", pfn: int, cause: tuple[str, str, int, str] | None = None) -> None:
    """The kernel keeps pfn's PAMT_4K reference for good, on purpose: it returns before tdx_pamt_put()
    after a PAGE.WBINVD failure (DPAMT v6 #09: tdx_sept_remove_leaf_spte(), and the TDR's in
    tdx_reclaim_td_control_pages()), and a failed PAMT.REMOVE sets the count back to 1 and leaks.
    MODEL: recorded with the failure's cause so the end-of-run pamt-refcount balance counts it."""
    if host.tdx.dpamt:
        cause = (cause or host.fault_causes.get(pfn) or host.fault_causes.get("td")
                 or ("", "genuine error", host.clock, ""))
        host.fault_causes[("pamt", pfn)] = cause


def tdx_leak_page(host: "Host", pfn: int, why: str) -> None:
    """The kernel gives up on a page the TDX module may still own: never free, never put its PAMT ref
    (kept on purpose: counted by the end-of-run balance once the module no longer owns the page)."""
    leak_page(host, pfn, why)
    tdx_pamt_keep(host, pfn)
