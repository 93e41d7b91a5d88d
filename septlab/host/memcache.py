"""kvm_mmu_memory_cache: pages topped up before mmu_lock, consumed under it without sleeping.

The RFC v5 "alloc via TDX hook" design wired page_get/page_free hooks into this cache; the hooks
default to the plain page allocator.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .page_alloc import CACHED, GFP_KERNEL_ACCOUNT, alloc_page, free_page
from .task import OP_RUN, Op

if TYPE_CHECKING:
    from .host import Host

PageGet = Callable[["Host"], Generator[Op, object, int]]
PageFree = Callable[["Host", int], Generator[Op, object, None]]


def default_page_get(host: "Host") -> Generator[Op, object, int]:
    """The cache's default page_get: mmu_memory_cache_alloc_obj() -> __get_free_page(GFP_KERNEL_ACCOUNT)
    (may sleep: kvm_mmu_topup_memory_cache() is legal only outside mmu_lock)."""
    return alloc_page(host, CACHED, GFP_KERNEL_ACCOUNT)
    yield  # pragma: no cover - makes this a generator


def default_page_free(host: "Host", pfn: int) -> Generator[Op, object, None]:
    """The cache's default page_free: free_page()."""
    free_page(host, pfn)
    return
    yield  # pragma: no cover


@dataclass(slots=True)
class KvmMmuMemoryCache:
    name: str
    capacity: int
    objects: list[int] = field(default_factory=list)
    page_get: PageGet = default_page_get
    page_free: PageFree = default_page_free


def kvm_mmu_topup_memory_cache(host: "Host", mc: KvmMmuMemoryCache, min_nr: int) -> Generator[Op, object, int]:
    """kvm_mmu_topup_memory_cache(): fill to capacity if fewer than min_nr objects. Each allocation is
    GFP_KERNEL_ACCOUNT, so a topup that allocates may sleep (might_sleep() in alloc_page()); one that
    finds the cache full does not, as in the kernel."""
    if len(mc.objects) >= min_nr:
        return 0
    yield Op(OP_RUN, ("cache", mc.name), f"topup({mc.name})")
    while len(mc.objects) < mc.capacity:
        pfn = yield from mc.page_get(host)
        mc.objects.append(pfn)
    return 0


def kvm_mmu_memory_cache_alloc(mc: KvmMmuMemoryCache) -> int:
    """kvm_mmu_memory_cache_alloc(): never sleeps; an empty cache here is a KVM bug (BUG_ON)."""
    if not mc.objects:
        raise RuntimeError(f"BUG: {mc.name} empty under mmu_lock")
    return mc.objects.pop()


def kvm_mmu_free_memory_cache(host: "Host", mc: KvmMmuMemoryCache) -> Generator[Op, object, None]:
    """kvm_mmu_free_memory_cache(): give back whatever was topped up but not used."""
    while mc.objects:
        yield from mc.page_free(host, mc.objects.pop())
