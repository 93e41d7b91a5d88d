"""vCPU run loop, page-fault entry, VM creation and kvm_destroy_vm() (x86.c, mmu.c, kvm_main.c, tdx.c).

These are the task bodies a scenario starts: a vCPU entering the guest and taking EPT violations, a
host task converting memory, the VM-destroy path in the kernel's order (E3: kvm_mmu_uninit_vm()
before tdx_vm_destroy(), TDR reclaimed last).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING

from ..host.locks import (
    cond_resched,
    down_write,
    lockdep_assert_held,
    mutex_lock,
    mutex_unlock,
    read_lock,
    read_unlock,
    up_write,
    write_lock,
    write_unlock,
)
from ..host.memcache import KvmMmuMemoryCache, kvm_mmu_free_memory_cache, kvm_mmu_topup_memory_cache
from ..host.mm import exit_mmap, get_user_pages_unlocked, put_page
from ..host.page_alloc import USER, alloc_page, free_page
from ..host.progress import progress
from ..host.rcu import rcu_barrier
from ..host.task import OP_RUN, OP_WAIT, Op, callchain
from ..tdx_module import errno as E
from ..virt import seamcall as S
from ..virt.dpamt import tdx_free_pamt_cache
from . import tdx as T
from .guest_memfd import kvm_gmem_get_pfn, kvm_gmem_release
from .kvm_host import (
    KVM_BUG_ON,
    KVM_MEMSLOT_DELETED,
    KVM_MEMSLOT_INVALID,
    PT64_ROOT_MAX_LEVEL,
    TD_STATE_RUNNABLE,
    Kvm,
    KvmVcpu,
)
from .kvm_main import mmu_notifier_unregister, srcu_read_lock, srcu_read_unlock
from .spte import is_shadow_present_pte
from .tdp_mmu import (
    RET_PF_CONTINUE,
    RET_PF_FIXED,
    RET_PF_RETRY,
    KvmPageFault,
    kvm_split_cross_boundary_leafs,
    kvm_tdp_mmu_alloc_root,
    kvm_tdp_mmu_invalidate_roots,
    kvm_tdp_mmu_map,
    kvm_tdp_mmu_put_root,
    kvm_tdp_mmu_walk_lockless,
    kvm_tdp_mmu_zap_invalidated_roots,
)

if TYPE_CHECKING:
    pass

Gen = Generator[Op, object, int]
EFAULT = -14


def kvm_vcpu_create(kvm: Kvm, vcpu_id: int) -> KvmVcpu:
    """kvm_vm_ioctl_create_vcpu(): caches get the variant's page_get/page_free for external_spt."""
    ops = kvm.ops
    vcpu = KvmVcpu(
        vcpu_id, kvm,
        KvmMmuMemoryCache(f"vcpu{vcpu_id}.mmu_shadow_page_cache", kvm.cache_capacity),
        KvmMmuMemoryCache(f"vcpu{vcpu_id}.mmu_external_spt_cache", kvm.cache_capacity,
                          page_get=ops.external_spt_cache_page_get, page_free=ops.external_spt_cache_page_free))
    kvm.vcpus.append(vcpu)
    kvm.users += 1
    return vcpu


def mmu_topup_memory_caches(vcpu: KvmVcpu) -> Gen:
    """mmu_topup_memory_caches(): before mmu_lock, may sleep; [E4] topup_external_cache too."""
    host = vcpu.kvm.host
    yield from kvm_mmu_topup_memory_cache(host, vcpu.mmu_shadow_page_cache, PT64_ROOT_MAX_LEVEL)
    yield from kvm_mmu_topup_memory_cache(host, vcpu.mmu_external_spt_cache, PT64_ROOT_MAX_LEVEL)
    if host.tdx.dpamt:
        vcpu.kvm.ops.topup_external_cache(vcpu, PT64_ROOT_MAX_LEVEL)
    return 0


def kvm_mmu_load(vcpu: KvmVcpu) -> Gen:
    """kvm_mmu_load() / KVM_REQ_MMU_FREE_OBSOLETE_ROOTS: (re)load the mirror and direct roots."""
    kvm = vcpu.kvm
    if vcpu.direct_root is not None and vcpu.direct_root.invalid:
        yield from write_lock(kvm.host, kvm.mmu_lock)
        kvm_tdp_mmu_put_root(kvm, vcpu.direct_root)
        write_unlock(kvm.host, kvm.mmu_lock)
        vcpu.direct_root = None
    if vcpu.mirror_root is None or vcpu.direct_root is None:
        yield from mmu_topup_memory_caches(vcpu)
    if vcpu.mirror_root is None:
        vcpu.mirror_root = yield from kvm_tdp_mmu_alloc_root(vcpu, True)
    if vcpu.direct_root is None:
        vcpu.direct_root = yield from kvm_tdp_mmu_alloc_root(vcpu, False)
    return 0


def kvm_tdp_page_fault(vcpu: KvmVcpu, gfn: int, private: bool) -> Gen:
    """kvm_tdp_page_fault() -> direct_page_fault(): [fast_page_fault], faultin, mmu_lock, map."""
    kvm = vcpu.kvm
    host = kvm.host
    if not private:
        # fast_page_fault(): lockless walk of the loaded root, which may already be invalid.
        spte = yield from kvm_tdp_mmu_walk_lockless(vcpu, gfn)
        if is_shadow_present_pte(spte):
            return 0
    yield from mmu_topup_memory_caches(vcpu)
    fault = KvmPageFault(gfn, private)
    ret = yield from kvm_mmu_faultin_pfn(vcpu, fault)
    if ret != RET_PF_CONTINUE:
        return ret
    yield from read_lock(host, kvm.mmu_lock)
    if kvm.ops.is_page_fault_stale(vcpu, fault):
        ret = RET_PF_RETRY
    else:
        ret = yield from kvm_tdp_mmu_map(vcpu, fault)
    if not private:  # kvm_mmu_finish_page_fault() -> kvm_release_faultin_page(), still under mmu_lock
        put_page(host, fault.pfn)
    read_unlock(host, kvm.mmu_lock)
    return ret


def kvm_mmu_faultin_pfn(vcpu: KvmVcpu, fault: KvmPageFault) -> Gen:
    """kvm_mmu_faultin_pfn(): snapshot mmu_invalidate_seq (smp_rmb) before looking up the pfn; a memslot
    being deleted retries (RET_PF_RETRY), a missing one exits (-EFAULT); a fault whose private/shared
    kind does not match the gfn's attributes exits to userspace with KVM_EXIT_MEMORY_FAULT
    (kvm_mmu_prepare_memory_fault_exit(), -EFAULT) -- only userspace can change the attributes; then the
    pfn from guest_memfd (private) or GUP (shared). RET_PF_CONTINUE when the fault may go on."""
    kvm = vcpu.kvm
    gfn = fault.gfn
    fault.mmu_seq = kvm.mmu_invalidate_seq
    if kvm.memslot == KVM_MEMSLOT_INVALID:  # "being deleted or moved": retry until it is gone
        vcpu.invalid_slot_retries = min(2, vcpu.invalid_slot_retries + 1)  # "more than once" is all that matters
        if vcpu.invalid_slot_retries > 1:
            check_hung_srcu(kvm, f"vcpu{vcpu.vcpu_id}: re-faulting a KVM_MEMSLOT_INVALID slot in one KVM_RUN exit")
        return RET_PF_RETRY
    if kvm.memslot == KVM_MEMSLOT_DELETED:  # no memslot: KVM_EXIT_MEMORY_FAULT / MMIO, -EFAULT here
        return EFAULT
    if fault.is_private == (gfn in kvm.shared_gfns):  # kvm_mmu_prepare_memory_fault_exit()
        return EFAULT
    if fault.is_private:
        fault.pfn, order = kvm_gmem_get_pfn(kvm, gfn)
        kvm_mmu_hugepage_adjust(fault, kvm_max_private_mapping_level(kvm, gfn, order))
    else:  # __kvm_faultin_pfn() -> hva_to_pfn(): GUP takes a page reference
        pfn = yield from get_user_pages_unlocked(kvm.host, gfn)
        if pfn < 0:
            return pfn
        fault.pfn = pfn
    return RET_PF_CONTINUE


def kvm_max_private_mapping_level(kvm: Kvm, gfn: int, order: int) -> int:
    """kvm_max_private_mapping_level() (+ the hugepage series' hugepage_test_guest_inhibit() and TDX's
    2 MiB cap): a 2 MiB mapping only from a whole 2 MiB folio -- whose region is then all private --
    of a region the guest has not accepted at 4 KiB. MODEL: no 1 GiB mappings."""
    if order < 9 or (gfn >> 9) in kvm.guest_inhibit:
        return 1
    return 2


def kvm_mmu_hugepage_adjust(fault: KvmPageFault, max_level: int) -> None:
    """kvm_mmu_hugepage_adjust(): the goal level is the max level; a huge goal maps the folio's head
    (fault->pfn &= ~(pages - 1))."""
    fault.goal_level = max_level
    if max_level > 1:
        fault.pfn &= ~((1 << (9 * (max_level - 1))) - 1)


def tdx_honor_accept_level(vcpu: KvmVcpu, gfn: int) -> Gen:
    """The hugepage series' "Honor the guest's accept level contained in an EPT violation": the guest
    accepts gfn at 4 KiB, so its 2 MiB region is never mapped huge again (hugepage_set_guest_inhibit())
    and a 2 MiB mirror mapping of it is split now, under write mmu_lock, with the per-VM split cache
    topped up first. MODEL (UNVERIFIED detail): done on every such EPT violation; a fault that still
    meets a 2 MiB leaf (mapped by a racing fault that read the max level before the inhibit) retries."""
    kvm = vcpu.kvm
    host = kvm.host
    kvm.guest_inhibit.add(gfn >> 9)
    T.tdx_topup_split_cache(kvm)
    yield from write_lock(host, kvm.mmu_lock)
    ret = yield from kvm_split_cross_boundary_leafs(kvm, gfn, gfn + 1)
    write_unlock(host, kvm.mmu_lock)
    return ret


def is_page_fault_stale(vcpu: KvmVcpu, fault: KvmPageFault) -> bool:
    """is_page_fault_stale(): obsolete root, or an invalidation raced with faultin (mmu_invalidate_retry_gfn)."""
    root = vcpu.mirror_root if fault.is_private else vcpu.direct_root
    return root is None or root.invalid or mmu_invalidate_retry_gfn(vcpu.kvm, fault.mmu_seq, fault.gfn)


def mmu_invalidate_retry_gfn(kvm: Kvm, mmu_seq: int, gfn: int) -> bool:
    """mmu_invalidate_retry_gfn() (kvm_host.h, mmu_lock held): an invalidation covering gfn is in
    progress, or one completed since mmu_seq was read."""
    if kvm.mmu_invalidate_in_progress and kvm.mmu_invalidate_range_start <= gfn < kvm.mmu_invalidate_range_end:
        return True
    return kvm.mmu_invalidate_seq != mmu_seq


def tdx_vcpu_run(vcpu: KvmVcpu) -> Gen:
    """vcpu_enter_guest() -> tdx_vcpu_run(): with IRQs off, no entry while wait_for_sept_zap
    (EXIT_FASTPATH_EXIT_HANDLED), else TDH.VP.ENTER; then the guest runs until an exit.

    The wait_for_sept_zap check is made in the TDH.VP.ENTER step itself: the vCPU is IN_GUEST_MODE with
    IRQs off from the check to the entry, so tdh_do_no_vcpus()'s kick either sees the flag refuse the
    entry or waits for (and forces) the exit. A BUSY entry (zero-step S-EPT lock, TD epoch) is
    EXIT_FASTPATH_EXIT_HANDLED too: vcpu_run() re-enters. MODEL: the trips through vcpu_run() while
    the flag is set (each entry refused) are one wait, before kvm_mmu_reload(). KVM_RUN's vcpu_load()
    (and the preempt notifier's, after a migration) is made by vcpu_run() before every entry.
    """
    kvm = vcpu.kvm
    t = kvm.tdx
    while True:
        yield Op(OP_WAIT, lambda: not t.wait_for_sept_zap, f"vcpu{vcpu.vcpu_id}: wait_for_sept_zap")
        yield from kvm_mmu_load(vcpu)
        err = yield from S.tdh_vp_enter(kvm.host, vcpu.tdvpr, lambda: t.wait_for_sept_zap)
        if err != S.VP_ENTER_NOT_ISSUED and not E.tdx_operand_busy(err):
            break
    if err:
        return 0
    vcpu.in_guest = True
    return (yield from tdx_vcpu_enter_exit(vcpu))


def tdx_vcpu_enter_exit(vcpu: KvmVcpu) -> Gen:
    """tdx_vcpu_enter_exit() after TDH.VP.ENTER took its locks: the entry completes (epoch and S-EPT
    tree locks dropped), the guest runs, then the TD exit (EPT violation) drops the TDR lock.
    MODEL: guest execution is these two steps; a kick (vcpu->in_guest cleared) may end it at either."""
    kvm = vcpu.kvm
    seam = kvm.host.seam
    yield Op(OP_RUN, ("guest", vcpu.vcpu_id), f"vcpu{vcpu.vcpu_id}: TDH.VP.ENTER completes, guest runs")
    if vcpu.in_guest:
        seam.tdh_vp_enter_complete(vcpu.tdvpr)
    yield Op(OP_RUN, ("guest", vcpu.vcpu_id), f"vcpu{vcpu.vcpu_id} in guest: EPT violation exit")
    if vcpu.in_guest:  # unless a kick already forced the exit
        seam.td_exit(vcpu.tdvpr, vcpu.guest_access[1])
        vcpu.in_guest = False
    return 0


def tdx_handle_ept_violation(vcpu: KvmVcpu, gfn: int, private: bool, accept_4k: bool = False) -> Gen:
    """tdx_handle_ept_violation(): private faults retry locally (zero-step mitigation) until fixed, the
    VM is dead (KVM_REQ_VM_DEAD), or the memslot is KVM_MEMSLOT_INVALID -- "this task needs to drop SRCU
    in order to let memslot deletion complete" (6.18); shared faults return to the guest, which faults
    again. The loop is the kernel's `while (1)`: unbounded. MODEL: no pending events or signals
    (kvm_vcpu_has_events(), signal_pending()) ever end it: the model has none."""
    kvm = vcpu.kvm
    while True:
        if private and accept_4k and kvm.gmem_huge:
            yield from tdx_honor_accept_level(vcpu, gfn)
        ret = yield from kvm_tdp_page_fault(vcpu, gfn, private)
        if ret != RET_PF_RETRY or not private:
            return ret
        if kvm.bugged:  # kvm_check_request(KVM_REQ_VM_DEAD, vcpu)
            return T.EIO
        if kvm.memslot == KVM_MEMSLOT_INVALID:
            return ret
        yield from cond_resched(kvm.host)


def check_hung_srcu(kvm: Kvm, spinning: str) -> None:
    """check_hung_uninterruptible_tasks() (kernel/hung_task.c) for one case the model can decide: the
    current task keeps re-faulting a KVM_MEMSLOT_INVALID slot inside one exit (nothing but an event or
    a signal would end that) while it holds kvm->srcu and a synchronize_srcu() waits for it -- the
    waiter can never finish. Reported as the hung-task detector does, naming the holder."""
    me = kvm.host.current.name
    if kvm.memslot != KVM_MEMSLOT_INVALID or me not in kvm.srcu_readers:
        return
    for waiter, waiting in kvm.srcu_waiting.items():
        if me in waiting:
            kvm.host.probe.report(
                "hung-task", f"INFO: task {waiter} blocked for more than 120 seconds.",
                task=waiter, blocked_in="synchronize_srcu_expedited(&kvm->srcu) <- kvm_swap_active_memslots <- "
                "kvm_set_memslot(KVM_MR_DELETE)", holder=me, holder_in=spinning,
                why=f"{me} never leaves its kvm->srcu read-side section while the memslot is KVM_MEMSLOT_INVALID",
                chain=callchain())


def vcpu_run(kvm: Kvm, vcpu: KvmVcpu, accesses: Iterable[tuple[int, bool, bool]]) -> Gen:
    """A vCPU thread: wait until the TD runs, then KVM_RUN (kvm_vcpu_ioctl() holds vcpu->mutex): enter
    the guest and fault on each access. An EPT violation that ends in RET_PF_RETRY re-enters the guest,
    which faults on the same access again: only a resolved access is progress (host/progress.py)."""
    yield Op(OP_WAIT, lambda: kvm.tdx.state == TD_STATE_RUNNABLE or kvm.bugged or kvm.setup_failed,
             "wait for TD_STATE_RUNNABLE", user=True)
    yield from mutex_lock(kvm.host, vcpu.mutex)
    srcu_read_lock(kvm)  # vcpu_run(): kvm_vcpu_srcu_read_lock()
    for gfn, private, accept_4k in accesses:
        if kvm.bugged or kvm.setup_failed:
            break
        vcpu.guest_access = (gfn, private)
        while True:
            srcu_read_unlock(kvm)  # vcpu_enter_guest(): SRCU is dropped around the guest
            yield from T.kvm_arch_vcpu_load(vcpu)  # vcpu_load() / kvm_sched_in() on this CPU
            yield from kvm.ops.tdx_vcpu_run(vcpu)
            srcu_read_lock(kvm)
            vcpu.invalid_slot_retries = 0
            ret = yield from tdx_handle_ept_violation(vcpu, gfn, private, accept_4k)
            if ret != RET_PF_RETRY or kvm.bugged:
                break
            if kvm.memslot == KVM_MEMSLOT_INVALID:
                # MODEL: the guest re-faults until the deletion completes; its SRCU-free trips are one wait.
                srcu_read_unlock(kvm)
                yield Op(OP_WAIT, lambda: kvm.memslot != KVM_MEMSLOT_INVALID,
                         f"vcpu{vcpu.vcpu_id}: memslot being deleted")
                srcu_read_lock(kvm)
        vcpu.accesses_done += 1
        progress(kvm.host, "EPT violation resolved: the guest access completes")
    srcu_read_unlock(kvm)
    mutex_unlock(kvm.host, vcpu.mutex)
    kvm.users -= 1  # vCPU fd closed
    return 0


def kvm_create_td(kvm: Kvm, image: Iterable[int]) -> Gen:
    """Userspace building a TD (see _tdx_build_td); when an ioctl fails userspace gives up: its vCPU
    threads never enter the guest, its other tasks stop and every fd is closed (kvm_put_kvm)."""
    ret = yield from _tdx_build_td(kvm, image)
    if ret:
        kvm.setup_failed = True
    return ret


def _tdx_build_td(kvm: Kvm, image: Iterable[int]) -> Gen:
    """Userspace building a TD: KVM_CREATE_VM + KVM_TDX_INIT_VM, KVM_TDX_INIT_VCPU of the boot vCPU,
    KVM_TDX_INIT_MEM_REGION with it, KVM_TDX_INIT_VCPU of the other vCPUs (while any pre-finalize
    hole punch of the scenario runs), then KVM_TDX_FINALIZE_VM (retried on -EBUSY, as userspace does).
    KVM_CREATE_VCPU (kvm_arch_vcpu_create()'s vcpu_load(): the vCPU joins this CPU's
    associated_tdvcpus) follows KVM_TDX_INIT_VM. The image is copied from pages userspace allocates
    before KVM_TDX_INIT_MEM_REGION and frees after it; an image item is a gfn or (gfn, measure).
    MODEL: the ioctls come from one thread, in this order; a dead VM refuses the rest (-EIO); the
    vCPU ioctls' own vcpu_load() calls are no-ops (same CPU as KVM_CREATE_VCPU's)."""
    host = kvm.host
    if (yield from T.tdx_vm_state_guard(kvm, T.__tdx_td_init, kvm)):
        return -5
    for vcpu in kvm.vcpus:
        yield from T.kvm_arch_vcpu_load(vcpu)
    boot = kvm.vcpus[0]
    if (yield from T.tdx_vm_state_guard(kvm, kvm.ops.tdx_vcpu_init, boot)):
        return -5
    if image:
        region = [(g, True) if isinstance(g, int) else (g[0], bool(g[1])) for g in image]
        srcs = [alloc_page(host, USER) for _ in region]
        host.current.vcpu = boot
        ret = yield from T.tdx_vm_state_guard(kvm, tdx_vcpu_init_mem_region, boot, region, srcs)
        host.current.vcpu = None
        for src in srcs:
            free_page(host, src)
        if ret:
            return ret
    kvm.populated = True
    for vcpu in kvm.vcpus[1:]:
        if kvm.bugged or (yield from T.tdx_vm_state_guard(kvm, kvm.ops.tdx_vcpu_init, vcpu)):
            return -5
    if kvm.setup_zappers:
        yield Op(OP_WAIT, lambda: kvm.setup_zappers <= 0, "wait for the pre-finalize hole punches", user=True)
    while not kvm.bugged:
        ret = yield from T.tdx_vm_state_guard(kvm, T.tdx_td_finalize, kvm)
        if ret != T.EBUSY:
            return ret
    return -5


def tdx_vcpu_init_mem_region(vcpu: KvmVcpu, region: list[tuple[int, bool]], srcs: list[int]) -> Gen:
    """tdx_vcpu_init_mem_region() (KVM_TDX_INIT_MEM_REGION, under tdx_vm_state_guard): per page,
    kvm_gmem_populate() asserts slots_lock, takes the guest_memfd invalidate lock, gets the folio and
    calls tdx_gmem_post_populate() with the userspace source page (b.2). MODEL: kvm_gmem_populate() is
    inlined; a gfn whose attributes are shared fails it (-EINVAL)."""
    kvm = vcpu.kvm
    host = kvm.host
    if not T.is_hkid_assigned(kvm.tdx) or kvm.tdx.state == TD_STATE_RUNNABLE:
        return -22
    for (gfn, measure), src in zip(region, srcs, strict=True):
        lockdep_assert_held(host, kvm.slots_lock)
        yield from down_write(host, kvm.gmem_invalidate_lock)  # filemap_invalidate_lock()
        if gfn in kvm.shared_gfns:
            ret = -22
        else:
            ret = yield from tdx_gmem_post_populate(kvm, vcpu, gfn, kvm_gmem_get_pfn(kvm, gfn)[0], src, measure)
        up_write(host, kvm.gmem_invalidate_lock)
        if ret:
            return ret
    return 0


def tdx_gmem_post_populate(kvm: Kvm, vcpu: KvmVcpu, gfn: int, pfn: int, src: int, measure: bool) -> Gen:
    """tdx_gmem_post_populate(): page_add_src = src around kvm_tdp_mmu_map_private_pfn() (whose leaf is
    PAGE.ADD, inside mmu_lock), then with KVM_TDX_MEASURE_MEMORY_REGION TDH.MR.EXTEND per 256-byte
    chunk, any failure a TDX_BUG_ON (ad44aa4c5d3f)."""
    host = kvm.host
    t = kvm.tdx
    if KVM_BUG_ON(t.page_add_src >= 0, kvm, "tdx_gmem_post_populate", "kvm_tdx->page_add_src"):
        return T.EIO
    t.page_add_src = src
    ret = yield from kvm_tdp_mmu_map_private_pfn(vcpu, gfn, pfn)
    t.page_add_src = -1
    if ret or not measure:
        return ret
    for chunk in range(4096 // S.TDX_EXTENDMR_CHUNKSIZE):  # PAGE_SIZE
        err = yield from S.tdh_mr_extend(host, t.tdr, gfn, chunk)
        if T.TDX_BUG_ON(err, E.TDH_MR_EXTEND, kvm, host, gfn=gfn, pfn=pfn):
            return T.EIO
    return 0


def kvm_tdp_mmu_map_private_pfn(vcpu: KvmVcpu, gfn: int, pfn: int) -> Gen:
    """kvm_tdp_mmu_map_private_pfn() (mmu.c): map a guest_memfd pfn at gfn for populate: slots_lock and
    the invalidate lock held, kvm_mmu_reload(), then kvm_tdp_mmu_map() under read mmu_lock until it is
    not RET_PF_RETRY or the VM is dead (no mmu_seq check). MODEL: the caches are topped up before
    every attempt; no signal (-EINTR) is ever pending: the loop is unbounded, as the kernel's."""
    kvm = vcpu.kvm
    host = kvm.host
    lockdep_assert_held(host, kvm.slots_lock)
    lockdep_assert_held(host, kvm.gmem_invalidate_lock)  # kvm_assert_gmem_invalidate_lock_held()
    yield from kvm_mmu_load(vcpu)
    while True:
        if kvm.bugged:  # kvm_test_request(KVM_REQ_VM_DEAD)
            return T.EIO
        yield from mmu_topup_memory_caches(vcpu)
        fault = KvmPageFault(gfn, True, pfn=pfn, mmu_seq=kvm.mmu_invalidate_seq)
        yield from read_lock(host, kvm.mmu_lock)
        r = yield from kvm_tdp_mmu_map(vcpu, fault)
        read_unlock(host, kvm.mmu_lock)
        if r != RET_PF_RETRY:
            return 0 if r == RET_PF_FIXED else T.EIO


def kvm_mmu_destroy(vcpu: KvmVcpu) -> Gen:
    """kvm_mmu_destroy(): kvm_mmu_unload() drops root references, then the caches are freed."""
    kvm = vcpu.kvm
    yield from write_lock(kvm.host, kvm.mmu_lock)
    for root in (vcpu.mirror_root, vcpu.direct_root):
        if root is not None:
            kvm_tdp_mmu_put_root(kvm, root)
    vcpu.mirror_root = vcpu.direct_root = None
    write_unlock(kvm.host, kvm.mmu_lock)
    yield from kvm_mmu_free_memory_cache(kvm.host, vcpu.mmu_shadow_page_cache)
    yield from kvm_mmu_free_memory_cache(kvm.host, vcpu.mmu_external_spt_cache)
    tdx_free_pamt_cache(kvm.host, vcpu.pamt_cache)
    return 0


def kvm_mmu_uninit_tdp_mmu(kvm: Kvm) -> Gen:
    """kvm_mmu_uninit_vm() -> kvm_mmu_uninit_tdp_mmu(): invalidate all roots (mirror included), zap
    them under the write lock (every S-EPT page reclaimed here), WARN on leftovers, rcu_barrier()."""
    host = kvm.host
    yield from write_lock(host, kvm.mmu_lock)
    kvm_tdp_mmu_invalidate_roots(kvm, True)
    write_unlock(host, kvm.mmu_lock)
    yield from kvm_tdp_mmu_zap_invalidated_roots(kvm, False)
    if kvm.tdp_mmu_pages or kvm.roots:
        host.warn("kvm_mmu_uninit_tdp_mmu", f"{kvm.tdp_mmu_pages} TDP MMU pages / {len(kvm.roots)} roots left",
                  explained="td" in host.fault_causes)
    yield from rcu_barrier(host)
    return 0


def kvm_arch_destroy_vm(kvm: Kvm) -> Gen:
    """kvm_arch_destroy_vm() (E3 order): vCPUs, then kvm_mmu_uninit_vm(), then tdx_vm_destroy()."""
    for vcpu in kvm.vcpus:
        yield from kvm_mmu_destroy(vcpu)
        yield from T.tdx_vcpu_free(vcpu)
        progress(kvm.host, "kvm_destroy_vcpus(): one vCPU freed")
    yield from kvm_mmu_uninit_tdp_mmu(kvm)
    yield from T.tdx_vm_destroy(kvm)
    return 0


def kvm_destroy_vm(kvm: Kvm) -> Gen:
    """kvm_destroy_vm(): runs once every vCPU fd and guest_memfd file dropped its reference."""
    yield from T.tdx_mmu_release_hkid(kvm)  # kvm_arch_pre_destroy_vm() -> vt_vm_pre_destroy()
    progress(kvm.host, "tdx_mmu_release_hkid() returns")
    yield from mmu_notifier_unregister(kvm)
    yield from kvm.ops.kvm_arch_destroy_vm(kvm)
    return 0


def vm_teardown(kvm: Kvm, gmem_users: int) -> Gen:
    """The VMM exits once the vCPUs are done: exit_mmap() (do_exit() -> exit_mm(), mmu notifier
    ->release first), then its files close (exit_files()): guest_memfd, and the last kvm_put_kvm()
    destroys the VM."""
    host = kvm.host
    yield Op(OP_WAIT, lambda: kvm.users <= gmem_users, "wait for vCPU fds to close", user=True)
    yield from exit_mmap(host)
    progress(host, "exit_mmap() returns")
    yield from kvm_gmem_release(kvm)
    progress(host, "guest_memfd release returns")
    yield Op(OP_WAIT, lambda: kvm.users <= 0, "kvm_put_kvm()", user=True)
    yield from kvm.ops.kvm_destroy_vm(kvm)
    return 0


def kvm_set_memory_region(kvm: Kvm) -> Gen:
    """A memslot update under kvm->slots_lock that wraps the MMIO generation: kvm_mmu_invalidate_mmio_sptes()
    -> kvm_mmu_zap_all_fast(), the only fast zap a TD gets (its memslot deletions zap leaves:
    kvm_main.kvm_vm_ioctl_set_memory_region)."""
    host = kvm.host
    yield from mutex_lock(host, kvm.slots_lock)
    yield from kvm_mmu_zap_all_fast(kvm)
    mutex_unlock(host, kvm.slots_lock)
    return 0


def kvm_mmu_zap_all_fast(kvm: Kvm) -> Gen:
    """kvm_mmu_zap_all_fast() (MMIO generation wrap): invalidate direct roots only, zap them under read lock."""
    host = kvm.host
    lockdep_assert_held(host, kvm.slots_lock)
    yield from write_lock(host, kvm.mmu_lock)
    kvm_tdp_mmu_invalidate_roots(kvm, False)
    write_unlock(host, kvm.mmu_lock)
    yield from kvm_tdp_mmu_zap_invalidated_roots(kvm, True)
    return 0


__all__ = ["vcpu_run", "kvm_create_td", "vm_teardown", "kvm_mmu_zap_all_fast", "kvm_set_memory_region",
           "read_lock", "read_unlock"]
