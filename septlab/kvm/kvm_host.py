"""struct kvm, struct kvm_vcpu, struct kvm_tdx / vcpu_tdx (include/linux/kvm_host.h, vmx/tdx.h).

Only the fields the S-EPT lifecycle touches. `ops` is the hook table a design variant overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..host.host import Host
from ..host.locks import Mutex, RwLock, RwSem, SpinLock
from ..host.memcache import KvmMmuMemoryCache
from ..intmap import IntMap
from ..virt.dpamt import TdxPamtCache
from .mmu_page import KvmMmuPage

KVM_MEMSLOT_VALID = 0
KVM_MEMSLOT_INVALID = 1
KVM_MEMSLOT_DELETED = 2

TD_STATE_UNINITIALIZED = 0
TD_STATE_INITIALIZED = 1
TD_STATE_RUNNABLE = 2

KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE = 40
PT64_ROOT_MAX_LEVEL = 5


@dataclass(slots=True, eq=False)
class KvmTdx:
    """struct kvm_tdx: TDR/TDCS pages, HKID, TD state and the wait_for_sept_zap gate."""

    tdr: int = -1
    tdcs: list[int] = field(default_factory=list)
    hkid: int = -1
    state: int = TD_STATE_UNINITIALIZED
    wait_for_sept_zap: bool = False
    # KVM_TDX_INIT_MEM_REGION: the userspace source page of the PAGE.ADD in flight (-1: none)
    page_add_src: int = -1
    # the hugepage series' per-VM PAMT page cache for splits, which run without a vCPU (topped up
    # before mmu_lock is taken; MODEL: its spinlock is not modelled, splits hold mmu_lock for write)
    split_pamt_cache: TdxPamtCache = field(default_factory=TdxPamtCache)


def is_hkid_assigned(kvm_tdx: KvmTdx) -> bool:
    """is_hkid_assigned(): the TD still has its private key (S-EPT SEAMCALLs legal, RECLAIM not)."""
    return kvm_tdx.hkid > 0


@dataclass(slots=True, eq=False)
class KvmVcpu:
    """struct kvm_vcpu + vcpu_tdx: MMU caches, loaded roots, TDVPR/TDCX, guest-mode flag."""

    vcpu_id: int
    kvm: "Kvm"
    mmu_shadow_page_cache: KvmMmuMemoryCache
    mmu_external_spt_cache: KvmMmuMemoryCache
    pamt_cache: TdxPamtCache = field(default_factory=TdxPamtCache)
    mutex: Mutex = field(default_factory=lambda: Mutex("vcpu->mutex", cls="&vcpu->mutex"))  # one lockdep class
    mirror_root: KvmMmuPage | None = None
    direct_root: KvmMmuPage | None = None
    tdvpr: int = -1
    tdcx: list[int] = field(default_factory=list)
    in_guest: bool = False
    initialized: bool = False
    accesses_done: int = 0  # guest accesses handled so far (lets a scenario order host events)
    invalid_slot_retries: int = 0  # faults on a KVM_MEMSLOT_INVALID slot in this exit (hung-task check)
    # MODEL: the guest's next access, (gfn, private): what its EPT violation exit will report
    guest_access: tuple[int, bool] = (-1, False)
    # vcpu->cpu: the CPU it was last loaded on (-1: never, or disassociated by tdx_disassociate_vp());
    # cpu_list: whose per-CPU associated_tdvcpus list vcpu_tdx->cpu_list is on (-1: none)
    cpu: int = -1
    cpu_list: int = -1


@dataclass(slots=True, eq=False)
class Kvm:
    """struct kvm with kvm->arch (TDP MMU roots) and the TDX VM state."""

    host: Host
    ops: Any
    mmu_lock: RwLock = field(default_factory=lambda: RwLock("mmu_lock", cls="&kvm->mmu_lock"))
    # kvm->arch.tdp_mmu_pages_lock: the root list (list_add_rcu/list_del_rcu) and the NX-huge-page list
    tdp_mmu_pages_lock: SpinLock = field(
        default_factory=lambda: SpinLock("tdp_mmu_pages_lock", cls="&kvm->arch.tdp_mmu_pages_lock"))
    lock: Mutex = field(default_factory=lambda: Mutex("kvm->lock", cls="&kvm->lock"))
    slots_lock: Mutex = field(default_factory=lambda: Mutex("slots_lock", cls="&kvm->slots_lock"))
    # MODEL: vmx/tdx.c's global tdx_lock and the guest_memfd inode's mapping->invalidate_lock live here:
    # one VM and one guest_memfd file are modelled.
    tdx_lock: Mutex = field(default_factory=lambda: Mutex("tdx_lock", cls="tdx_lock"))
    gmem_invalidate_lock: RwSem = field(
        default_factory=lambda: RwSem("invalidate_lock", cls="mapping.invalidate_lock"))
    tdx: KvmTdx = field(default_factory=KvmTdx)
    vcpus: list[KvmVcpu] = field(default_factory=list)
    roots: list[KvmMmuPage] = field(default_factory=list)
    scheduled_to_zap: list[KvmMmuPage] = field(default_factory=list)
    sp_by_spt: dict[int, KvmMmuPage] = field(default_factory=dict)
    sp_seq: dict[int, int] = field(default_factory=dict)  # per-CPU sp numbering (interleaving-independent)
    tdp_mmu_pages: int = 0
    bugged: bool = False
    pre_fault_allowed: bool = False
    mmu_invalidate_seq: int = 0
    mmu_invalidate_in_progress: int = 0
    # kvm->mmu_invalidate_range_start/end: the union of the ranges being invalidated (INVALID_GPA: none)
    mmu_invalidate_range_start: int = -1
    mmu_invalidate_range_end: int = -1
    mn_active_invalidate_count: int = 0  # mmu-notifier invalidations between start and end
    # The one memslot (MODEL: gfn g at hva page g): KVM_MEMSLOT_VALID / KVM_MEMSLOT_INVALID (being deleted,
    # faults retry) / KVM_MEMSLOT_DELETED (gone until userspace re-creates it).
    memslot: int = 0
    # kvm->srcu: tasks inside srcu_read_lock(&kvm->srcu), and for each synchronize_srcu() caller the
    # readers whose read-side sections it still waits for (task names).
    srcu_readers: set[str] = field(default_factory=set)
    srcu_waiting: dict[str, set[str]] = field(default_factory=dict)
    shared_gfns: set[int] = field(default_factory=set)
    gmem: IntMap = field(default_factory=IntMap)  # private gfn -> guest_memfd page (septlab/intmap.py)
    # guest_memfd with 2 MiB folios (the scenario's `hugepages: true`): 2 MiB region (gfn >> 9) -> head
    # pfn of its still-whole folio; and the regions hugepage_set_guest_inhibit() marked (the guest
    # accepted a page of them at 4 KiB: never mapped at 2 MiB again)
    gmem_huge: bool = False
    gmem_folios_2m: dict[int, int] = field(default_factory=dict)
    guest_inhibit: set[int] = field(default_factory=set)
    users: int = 0  # references from vCPU fds and guest_memfd files (kvm_get_kvm/kvm_put_kvm)
    # Userspace sequencing while the TD is built (not kernel state): KVM_TDX_INIT_MEM_REGION returned,
    # and the hole punches userspace runs before KVM_TDX_FINALIZE_VM still running.
    populated: bool = False
    setup_zappers: int = 0
    setup_failed: bool = False  # a build ioctl failed: userspace gives up and closes its fds
    cache_capacity: int = KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE


def kvm_vm_bugged(kvm: Kvm) -> None:
    """kvm_vm_bugged(): the VM is dead to userspace; teardown still runs."""
    kvm.bugged = True


def KVM_BUG_ON(cond: bool, kvm: Kvm, site: str, msg: str) -> bool:  # noqa: N802 - kernel name
    """KVM_BUG_ON(): WARN once and mark the VM bugged; explained if an injected failure started the TD chain."""
    if cond:
        host = kvm.host
        from ..host.task import callchain

        cause = host.fault_causes.get("td")  # the TD chain an injected failure started (D17)
        host.probe.report("KVM_BUG_ON", f"WARNING: KVM_BUG_ON({msg}) in {site}", site=site,
                          task=host.current.name, chain=callchain(), explained=cause is not None,
                          cause="" if cause is None else f"{cause[0]} -> {cause[1]} injected at step #{cause[2]} ({cause[3]})")
        kvm_vm_bugged(kvm)
    return cond
