"""arch/x86/kvm/vmx/tdx.c: KVM's TDX glue, talking to the module only through SEAMCALL wrappers (E3+E4).

S-EPT hooks (set_external_spte = tdx_sept_set_private_spte, free_external_spt =
tdx_sept_free_private_spt), leaf removal (BLOCK, TRACK + kick, REMOVE, WBINVD), TD and vCPU
construction, HKID release and reclaim of control pages. Error grading follows the kernel: BUSY on the
map side -> -EBUSY and retry; any other SEAMCALL error -> TDX_BUG_ON (WARN + bug the VM) and leak the
S-EPT / control page; a guest page whose removal failed is not leaked (E2+, ce7b5695397b).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ..host.locks import (
    lockdep_assert_held,
    lockdep_assert_held_write,
    mutex_lock,
    mutex_unlock,
    write_lock,
    write_unlock,
)
from ..host.page_alloc import EXTERNAL_SPT, TD_CONTROL, set_owner
from ..host.progress import progress
from ..host.task import OP_RUN, Op, callchain
from ..tdx_module import errno as E
from ..virt import seamcall as S
from ..virt.dpamt import (
    tdx_alloc_control_page,
    tdx_free_control_page,
    tdx_free_pamt_cache,
    tdx_leak_page,
    tdx_pamt_demote_pages,
    tdx_pamt_demoted,
    tdx_pamt_get,
    tdx_pamt_keep,
    tdx_pamt_put,
    tdx_topup_pamt_cache,
)
from .kvm_host import (
    KVM_BUG_ON,
    PT64_ROOT_MAX_LEVEL,
    TD_STATE_INITIALIZED,
    TD_STATE_RUNNABLE,
    TD_STATE_UNINITIALIZED,
    Kvm,
    KvmVcpu,
    is_hkid_assigned,
    kvm_vm_bugged,
)
from .mmu_page import NO_PAGE, KvmMmuPage
from .spte import is_last_spte, is_shadow_present_pte, spte_to_pfn

if TYPE_CHECKING:
    from ..host.host import Host

Gen = Generator[Op, object, int]
PG_LEVEL_4K = 1
PG_LEVEL_2M = 2
KVM_PAGES_PER_HPAGE = {PG_LEVEL_4K: 1, PG_LEVEL_2M: 512}
EBUSY = -16
EIO = -5
ENOMEM = -12
NR_TDCS_PAGES = 2  # MODEL: the real count comes from TDX metadata; 2 keeps the TD small
NR_TDCX_PAGES = 1


# Leaves whose genuine failure an earlier injected failure on the same TD can cause without touching
# the same page: the TD-wide teardown steps (a page the failure left with the TD keeps the TDR's child
# count up, a leaked vCPU association keeps VPFLUSHDONE from succeeding, ...).
TD_CHAIN_LEAVES = frozenset((E.TDH_PHYMEM_PAGE_RECLAIM, E.TDH_MNG_VPFLUSHDONE, E.TDH_MNG_KEY_FREEID,
                             E.TDH_VP_FLUSH, E.TDH_PHYMEM_CACHE_WB))


def cause_desc(cause: tuple[str, str, int, str] | None) -> str:
    """The report's causal link: 'TDH.MEM.PAGE.REMOVE -> TDX_... injected at step #12 (zapper)'."""
    return "" if cause is None else f"{cause[0]} -> {cause[1]} injected at step #{cause[2]} ({cause[3]})"


def tdx_fault_cause(host: "Host", leaf: int, err: int, injected: bool, pfn: Any = None,
                    gfn: Any = None, npages: int = 1) -> tuple[str, str, int, str] | None:
    """Checker bookkeeping, not kernel code: the injected SEAMCALL failure a TDX_BUG_ON is due to.

    An injected failure that reaches a failure report is its own cause and starts a TD chain (a BUSY
    reaching TDX_BUG_ON is still busy-in-no-fail-path: the checker looks at that first). A failed TRACK
    leaves the TD's epoch behind, which a later REMOVE meets as TDX_TLB_TRACKING_NOT_DONE. Any other
    genuine error is explained only through the same page or gfn, or -- for the TD-wide teardown
    leaves -- the TD chain (D17: "some fault was injected earlier" explains nothing by itself). The
    page and gfn inherit the cause: all `npages` of them for a 2 MiB mapping."""
    fc = host.fault_causes
    cause: tuple[str, str, int, str] | None
    if injected:
        cause = (E.leaf_name(leaf), E.err_name(err), host.clock, host.current.name)
        fc.setdefault("td", cause)
        if leaf == E.TDH_MEM_TRACK:
            fc.setdefault(("epoch", 0), cause)
    else:
        cause = fc.get(pfn) if isinstance(pfn, int) else None
        if cause is None and gfn is not None:
            cause = fc.get(("gfn", gfn))
        if cause is None and E.status(err) == E.TDX_TLB_TRACKING_NOT_DONE:
            cause = fc.get(("epoch", 0))
        if cause is None and (leaf in TD_CHAIN_LEAVES or (leaf == E.TDH_PHYMEM_PAGE_WBINVD and pfn is None)):
            cause = fc.get("td")
    if cause is not None:
        for i in range(npages):
            if isinstance(pfn, int):
                fc.setdefault(pfn + i, cause)
            if gfn is not None:
                fc.setdefault(("gfn", gfn + i), cause)
    return cause


def TDX_BUG_ON(err: int, leaf: int, kvm: Kvm | None, host: "Host", **ctx: Any) -> bool:  # noqa: N802
    """TDX_BUG_ON*(): WARN_ON_ONCE + kvm_vm_bugged(); with kvm=NULL (RECLAIM) only the WARN."""
    if not err:
        return False
    injected = host.current.injected_error
    cause = tdx_fault_cause(host, leaf, err, injected, ctx.get("pfn"), ctx.get("gfn"), ctx.pop("npages", 1))
    host.probe.report(
        "TDX_BUG_ON", f"WARNING: {E.leaf_name(leaf)} failed: {E.err_desc(err)}",
        leaf=leaf, err=err, injected=injected, explained=cause is not None, cause=cause_desc(cause),
        task=host.current.name, chain=callchain(), **ctx)
    if kvm is not None:
        kvm_vm_bugged(kvm)
    return True


def kvm_make_all_cpus_request(kvm: Kvm, req: str) -> Generator[Op, object, None]:
    """kvm_make_all_cpus_request(KVM_REQ_OUTSIDE_GUEST_MODE): IPI every vCPU out of guest mode and
    wait for the acknowledgements. MODEL: the IPI and the TD exit it forces are one step."""
    yield Op(OP_RUN, ("kick",), f"kvm_make_all_cpus_request({req})")
    for vcpu in kvm.vcpus:
        if vcpu.in_guest:
            kvm.host.seam.td_exit(vcpu.tdvpr)
            vcpu.in_guest = False


def tdh_do_no_vcpus(fn: Callable[..., Gen], kvm: Kvm, *args: Any) -> Gen:
    """tdh_do_no_vcpus() (3d626ce5a8cc): on BUSY, keep vCPUs out of the guest, kick them, retry once.

    "Note, the retry is guaranteed to succeed, absent KVM and/or TDX-Module bugs": the model does not
    assume it. The retry is nofail only for the fault model (no injected BUSY: a spontaneous BUSY is
    a running vCPU's module lock, which the kick released); the module answers it from its lock state,
    and a BUSY that still reaches TDX_BUG_ON is the violation busy-in-no-fail-path.
    """
    err = yield from fn(kvm.host, *args)
    if E.tdx_operand_busy(err):
        kvm.tdx.wait_for_sept_zap = True
        yield from kvm_make_all_cpus_request(kvm, "KVM_REQ_OUTSIDE_GUEST_MODE")
        err = yield from fn(kvm.host, *args, nofail=True)
        kvm.tdx.wait_for_sept_zap = False
    return err


# --- S-EPT hooks -----------------------------------------------------------------------------------
def tdx_sept_set_private_spte(kvm: Kvm, gfn: int, old_spte: int, new_spte: int, level: int) -> Gen:
    """tdx_sept_set_private_spte() (kvm_x86_ops.set_external_spte, E3 signature with old_spte); E3
    (40342185fd2b) asserts mmu_lock here, held in either mode."""
    lockdep_assert_held(kvm.host, kvm.mmu_lock)
    if is_shadow_present_pte(old_spte):
        # to-non-present: must be under exclusive mmu_lock (the hook asserts it).
        return (yield from kvm.ops.tdx_sept_remove_leaf_spte(kvm, gfn, level, old_spte))
    if KVM_BUG_ON(not is_shadow_present_pte(new_spte), kvm, "tdx_sept_set_private_spte", "!present"):
        return EIO
    if is_last_spte(new_spte, level):
        return (yield from kvm.ops.tdx_sept_map_leaf_spte(kvm, gfn, level, new_spte))
    return (yield from kvm.ops.tdx_sept_map_nonleaf_spte(kvm, gfn, level, new_spte))


def running_vcpu(kvm: Kvm) -> KvmVcpu | None:
    """kvm_get_running_vcpu()."""
    return kvm.host.current.vcpu


def tdx_sept_map_nonleaf_spte(kvm: Kvm, gfn: int, level: int, new_spte: int) -> Gen:
    """tdx_sept_map_nonleaf_spte(): [E4: PAMT get from the vCPU cache] + TDH.MEM.SEPT.ADD."""
    host = kvm.host
    child: KvmMmuPage | None = kvm.sp_by_spt.get(spte_to_pfn(new_spte))
    # tdx_spte_to_sept_pt()
    if KVM_BUG_ON(child is None or child.external_spt == NO_PAGE or child.level != level - 1, kvm,
                  "tdx_spte_to_sept_pt", "no external_spt"):
        return EIO
    page = child.external_spt  # type: ignore[union-attr]
    vcpu = running_vcpu(kvm)
    # DPAMT v6 #09: unconditional; a NULL cache would make tdx_pamt_get() sleep under mmu_lock (D3).
    if KVM_BUG_ON(vcpu is None, kvm, "tdx_sept_map_nonleaf_spte", "!vcpu"):
        return EIO
    if kvm.ops.pamt_get_at_link:
        if (yield from tdx_pamt_get(host, page, vcpu.pamt_cache)):  # type: ignore[union-attr]
            return EIO
    err = yield from S.tdh_mem_sept_add(host, kvm.tdx.tdr, gfn, level, page)
    if E.tdx_operand_busy(err):
        if kvm.ops.pamt_get_at_link:
            yield from tdx_pamt_put(host, page)
        return EBUSY
    if TDX_BUG_ON(err, E.TDH_MEM_SEPT_ADD, kvm, host, pfn=page):
        if kvm.ops.pamt_get_at_link:
            yield from tdx_pamt_put(host, page)
        return EIO
    return 0


def tdx_sept_map_leaf_spte(kvm: Kvm, gfn: int, level: int, new_spte: int) -> Gen:
    """tdx_sept_map_leaf_spte(): [E4 PAMT get] + PAGE.ADD before finalize, PAGE.AUG after."""
    host = kvm.host
    if KVM_BUG_ON(level > PG_LEVEL_2M, kvm, "tdx_sept_map_leaf_spte", "level > PG_LEVEL_2M"):
        return EIO
    pfn = spte_to_pfn(new_spte)
    vcpu = running_vcpu(kvm)
    # DPAMT v6 #09: unconditional; a NULL cache would make tdx_pamt_get() sleep under mmu_lock (D3).
    if KVM_BUG_ON(vcpu is None, kvm, "tdx_sept_map_leaf_spte", "!vcpu"):
        return EIO
    if (yield from tdx_pamt_get_4k(host, pfn, level, vcpu.pamt_cache)):  # type: ignore[union-attr]
        return EIO
    if kvm.tdx.state != TD_STATE_RUNNABLE:
        ret = yield from tdx_mem_page_add(kvm, gfn, level, pfn)
        if ret:
            yield from tdx_pamt_put_4k(host, pfn, level)
        return ret
    err = yield from S.tdh_mem_page_aug(host, kvm.tdx.tdr, gfn, level, pfn)
    if E.tdx_operand_busy(err):
        yield from tdx_pamt_put_4k(host, pfn, level)
        return EBUSY
    if TDX_BUG_ON(err, E.TDH_MEM_PAGE_AUG, kvm, host, pfn=pfn, gfn=gfn):
        yield from tdx_pamt_put_4k(host, pfn, level)
        return EIO
    return 0


def tdx_pamt_get_4k(host: "Host", pfn: int, level: int, cache: Any) -> Generator[Op, object, int]:
    """tdx_pamt_get() for a guest mapping of `level`: "get/put iff mapping size is 4KB" -- a 2 MiB
    mapping is covered by the static PAMT_2M."""
    if level != PG_LEVEL_4K:
        return 0
    return (yield from tdx_pamt_get(host, pfn, cache))


def tdx_pamt_put_4k(host: "Host", pfn: int, level: int) -> Generator[Op, object, None]:
    """tdx_pamt_put() for a mapping of `level`: only 4 KiB mappings hold a PAMT_4K reference."""
    if level == PG_LEVEL_4K:
        yield from tdx_pamt_put(host, pfn)


def tdx_mem_page_add(kvm: Kvm, gfn: int, level: int, pfn: int) -> Gen:
    """tdx_mem_page_add(): only from KVM_TDX_INIT_MEM_REGION (b.2): slots_lock held, no pre-fault yet,
    the source page set by tdx_gmem_post_populate(); TDH.MEM.PAGE.ADD copies it into pfn."""
    host = kvm.host
    lockdep_assert_held(host, kvm.slots_lock)
    if (KVM_BUG_ON(kvm.pre_fault_allowed, kvm, "tdx_mem_page_add", "kvm->arch.pre_fault_allowed")
            or KVM_BUG_ON(kvm.tdx.page_add_src < 0, kvm, "tdx_mem_page_add", "!kvm_tdx->page_add_src")):
        return EIO
    err = yield from S.tdh_mem_page_add(host, kvm.tdx.tdr, gfn, level, pfn, kvm.tdx.page_add_src)
    if E.tdx_operand_busy(err):
        return EBUSY
    if TDX_BUG_ON(err, E.TDH_MEM_PAGE_ADD, kvm, host, pfn=pfn, gfn=gfn):
        return EIO
    return 0


def tdx_track(kvm: Kvm) -> Gen:
    """tdx_track(): TDH.MEM.TRACK (skipped before the TD runs) then kick every vCPU out of the guest."""
    if kvm.tdx.state != TD_STATE_RUNNABLE:
        return 0
    lockdep_assert_held_write(kvm.host, kvm.mmu_lock)
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_track, kvm, kvm.tdx.tdr)
    TDX_BUG_ON(err, E.TDH_MEM_TRACK, kvm, kvm.host)
    yield from kvm_make_all_cpus_request(kvm, "KVM_REQ_OUTSIDE_GUEST_MODE")
    return 0


def tdx_sept_remove_leaf_spte(kvm: Kvm, gfn: int, level: int, old_spte: int) -> Gen:
    """tdx_sept_remove_leaf_spte(): BLOCK, TRACK + kick, REMOVE, WBINVD, reset, [E4 PAMT put].

    Cannot fail in a recoverable way: any BLOCK/REMOVE/WBINVD error is TDX_BUG_ON (WARN + bug the VM)
    and -EIO. E2+ (ce7b5695397b dropped the pin): nothing is leaked, guest_memfd frees the folio on
    truncate -- even one the module still holds as PT_REG (BLOCK/REMOVE failed) or one that may still
    hold the TD's cache lines (WBINVD failed). The kernel accepts that only because the VM is bugged
    (b.3, D1). [E4: a WBINVD failure returns before tdx_pamt_put(): the reference is kept for good.]
    """
    host = kvm.host
    pfn = spte_to_pfn(old_spte)
    lockdep_assert_held_write(host, kvm.mmu_lock)
    if KVM_BUG_ON(not is_hkid_assigned(kvm.tdx), kvm, "tdx_sept_remove_leaf_spte", "!is_hkid_assigned(kvm_tdx)"):
        tdx_leak_page(host, pfn, "S-EPT leaf left mapped: HKID already released")
        return EIO
    if KVM_BUG_ON(level > PG_LEVEL_2M, kvm, "tdx_sept_remove_leaf_spte", "level > PG_LEVEL_2M"):
        return EIO
    tdr = kvm.tdx.tdr
    n = KVM_PAGES_PER_HPAGE[level]
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_range_block, kvm, tdr, gfn, level)
    if TDX_BUG_ON(err, E.TDH_MEM_RANGE_BLOCK, kvm, host, gfn=gfn, pfn=pfn, npages=n):
        return EIO
    yield from kvm.ops.tdx_track(kvm)
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_page_remove, kvm, tdr, gfn, level)
    if TDX_BUG_ON(err, E.TDH_MEM_PAGE_REMOVE, kvm, host, gfn=gfn, pfn=pfn, npages=n):
        return EIO
    # the huge-page series' tdh_phymem_page_wbinvd_hkid() flushes every 4 KiB page of the folio
    err = yield from S.tdh_phymem_page_wbinvd_hkid(host, kvm.tdx.hkid, pfn, KVM_PAGES_PER_HPAGE[level])
    if TDX_BUG_ON(err, E.TDH_PHYMEM_PAGE_WBINVD, kvm, host, pfn=pfn, npages=n):
        if level == PG_LEVEL_4K:
            tdx_pamt_keep(host, pfn)
        return EIO
    # tdx_quirk_reset_paddr(): MOVDIR64B only on X86_BUG_TDX_PW_MCE parts; no state change here.
    yield from tdx_pamt_put_4k(host, pfn, level)
    return 0


# PAMT pages one split may take: the new S-EPT page's region (tdx_pamt_get) and the demoted 4 KiB level
SPLIT_PAMT_PAGES = 2 * 2


def tdx_need_topup_split_cache(kvm: Kvm, splits: int) -> bool:
    """kvm_x86_ops.need_topup_external_per_vm_split_cache() (hugepage series; name per the series,
    UNVERIFIED): fewer PAMT pages in the per-VM split cache than `splits` splits may take."""
    return kvm.host.tdx.dpamt and len(kvm.tdx.split_pamt_cache.pages) < SPLIT_PAMT_PAGES * splits


def tdx_topup_split_cache(kvm: Kvm, splits: int = 2) -> None:
    """kvm_x86_ops.topup_external_per_vm_split_cache(): fill the per-VM split cache for `splits` splits
    with GFP_KERNEL_ACCOUNT -- outside mmu_lock (the split path drops it to call this)."""
    tdx_topup_pamt_cache(kvm.host, kvm.tdx.split_pamt_cache, SPLIT_PAMT_PAGES * splits // 2)


def tdx_sept_split_private_spte(kvm: Kvm, gfn: int, level: int, old_spte: int, sp: KvmMmuPage) -> Gen:
    """tdx_sept_split_private_spte() (kvm_x86_ops.split_external_spte; the S-EPT hugepage series):
    under write mmu_lock, [a PAMT reference for the new S-EPT page], RANGE.BLOCK of the 2 MiB leaf ->
    tdx_track() -> TDH.MEM.PAGE.DEMOTE with sp->external_spt (and, under DPAMT, the PAMT pages of the new
    4 KiB level), BLOCK and DEMOTE through tdh_do_no_vcpus(). No UNBLOCK after a successful DEMOTE.
    Any other failure is TDX_BUG_ON: the VM is bugged and the split fails (-EIO)."""
    host = kvm.host
    lockdep_assert_held_write(host, kvm.mmu_lock)
    if KVM_BUG_ON(level != PG_LEVEL_2M, kvm, "tdx_sept_split_private_spte", "level != PG_LEVEL_2M"):
        return EIO
    head = spte_to_pfn(old_spte)
    page = sp.external_spt
    cache = kvm.tdx.split_pamt_cache
    if (yield from tdx_pamt_get(host, page, cache)):
        return EIO
    tdr = kvm.tdx.tdr
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_range_block, kvm, tdr, gfn, level)
    if TDX_BUG_ON(err, E.TDH_MEM_RANGE_BLOCK, kvm, host, gfn=gfn, pfn=head, npages=512):
        yield from tdx_pamt_put(host, page)
        return EIO
    yield from kvm.ops.tdx_track(kvm)
    pamt = tdx_pamt_demote_pages(host, cache)
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_page_demote, kvm, tdr, gfn, level, page, pamt)
    if TDX_BUG_ON(err, E.TDH_MEM_PAGE_DEMOTE, kvm, host, gfn=gfn, pfn=head, npages=512):
        cache.pages.extend(pamt or ())
        yield from tdx_pamt_put(host, page)
        return EIO
    tdx_pamt_demoted(host, head, pamt)
    return 0


def tdx_reclaim_page(kvm: Kvm | None, host: "Host", page: int) -> Gen:
    """tdx_reclaim_page(): TDH.PHYMEM.PAGE.RECLAIM (TDX_BUG_ON with kvm=NULL: WARN only) + reset."""
    err = yield from S.tdh_phymem_page_reclaim(host, page)
    if TDX_BUG_ON(err, E.TDH_PHYMEM_PAGE_RECLAIM, None, host, pfn=page):
        return EIO
    host.probe.page_reclaimed(page)
    return 0


def tdx_sept_reclaim_or_leak(kvm: Kvm, sp: KvmMmuPage) -> Generator[Op, object, bool]:
    """The common first half of every tdx_sept_free_private_spt() version: an S-EPT page can be given
    back only after the HKID is released and RECLAIM succeeds; otherwise it is leaked (True: reclaimed)."""
    host = kvm.host
    page = sp.external_spt
    if KVM_BUG_ON(is_hkid_assigned(kvm.tdx), kvm, "tdx_sept_free_private_spt", "is_hkid_assigned(kvm_tdx)"):
        tdx_leak_page(host, page, "S-EPT page not reclaimable: HKID still assigned")
        return False
    if (yield from tdx_reclaim_page(kvm, host, page)):
        tdx_leak_page(host, page, "TDH.PHYMEM.PAGE.RECLAIM failed")
        return False
    return True


def tdx_sept_free_private_spt(kvm: Kvm, sp: KvmMmuPage) -> Gen:
    """tdx_sept_free_private_spt() (E3, 110d4d263450; E4 frees via tdx_free_control_page()).

    Must be under exclusive mmu_lock and cannot fail: if the HKID is still assigned or RECLAIM fails,
    the page is leaked ("Intentionally leak the page to prevent the kernel from accessing the
    encrypted page"); either way sp->external_spt is cleared so the RCU callback has nothing to do.
    """
    if (yield from tdx_sept_reclaim_or_leak(kvm, sp)):
        yield from tdx_free_control_page(kvm.host, sp.external_spt)
    sp.external_spt = NO_PAGE
    return 0


def tdx_topup_external_cache(vcpu: KvmVcpu, min_nr_spts: int) -> None:
    """tdx_topup_external_cache() (E4 topup_external_cache op): PAMT pages for spts + the leaf."""
    tdx_topup_pamt_cache(vcpu.kvm.host, vcpu.pamt_cache, min_nr_spts + 1)


# --- TD / vCPU construction ------------------------------------------------------------------------
def __tdx_td_init(kvm: Kvm) -> Gen:
    """__tdx_td_init(): TDR + TDCS pages, MNG.CREATE, KEY.CONFIG, ADDCX, MNG.INIT, with the kernel's
    three unwind labels: free_tdcs/free_tdr (nothing given to the module yet: plain frees), and
    teardown (free the TDCS pages not yet added, then tdx_mmu_release_hkid() and
    tdx_reclaim_td_control_pages() at once). MODEL: a KEY.CONFIG failure reaches teardown before
    td.tdcs_pages is set, so the TDCS pages are dropped without a free, as the kernel's are."""
    host = kvm.host
    t = kvm.tdx
    host.tdx.hkids += 1
    t.hkid = host.tdx.hkids
    t.tdr = yield from tdx_alloc_control_page(host)
    tdcs = []
    for _ in range(NR_TDCS_PAGES):
        tdcs.append((yield from tdx_alloc_control_page(host)))
    if t.tdr < 0 or min(tdcs) < 0:  # goto free_tdcs / free_tdr
        return (yield from _tdx_td_init_free(kvm, tdcs, ENOMEM))
    yield from mutex_lock(host, kvm.tdx_lock)  # serialises TDH.MNG.CREATE with KEY.FREEID (b.0)
    err = yield from S.tdh_mng_create(host, t.tdr, t.hkid)
    mutex_unlock(host, kvm.tdx_lock)
    if TDX_BUG_ON(err, E.TDH_MNG_CREATE, kvm, host):  # goto free_packages
        return (yield from _tdx_td_init_free(kvm, tdcs, EIO))
    err = yield from S.tdh_mng_key_config(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_MNG_KEY_CONFIG, kvm, host):
        for page in tdcs:
            tdx_leak_page(host, page, "TDCS page: KEY.CONFIG failed before td.tdcs_pages was set")
        return (yield from _tdx_td_init_teardown(kvm, EIO))
    t.tdcs = tdcs
    for i, page in enumerate(tdcs):
        err = yield from S.tdh_mng_addcx(host, t.tdr, page)
        if TDX_BUG_ON(err, E.TDH_MNG_ADDCX, kvm, host):
            for j in range(i, len(tdcs)):  # "Only free pages not yet added, so start at 'i'"
                yield from tdx_free_control_page(host, tdcs[j])
                t.tdcs[j] = -1
            return (yield from _tdx_td_init_teardown(kvm, EIO))
    err = yield from S.tdh_mng_init(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_MNG_INIT, kvm, host):
        return (yield from _tdx_td_init_teardown(kvm, EIO))
    t.state = TD_STATE_INITIALIZED
    return 0


def _tdx_td_init_free(kvm: Kvm, tdcs: list[int], ret: int) -> Gen:
    """__tdx_td_init()'s free_tdcs/free_tdr/free_hkid labels: the module never saw these pages."""
    t = kvm.tdx
    for page in [*tdcs, t.tdr]:
        yield from tdx_free_control_page(kvm.host, page)
    t.tdr, t.tdcs = -1, []
    t.hkid = -1  # tdx_hkid_free()
    return ret


def _tdx_td_init_teardown(kvm: Kvm, ret: int) -> Gen:
    """__tdx_td_init()'s teardown label: tdx_mmu_release_hkid() + tdx_reclaim_td_control_pages()."""
    yield from tdx_mmu_release_hkid(kvm)
    yield from tdx_reclaim_td_control_pages(kvm)
    return ret


def tdx_vcpu_init(vcpu: KvmVcpu) -> Gen:
    """tdx_vcpu_create() + tdx_td_vcpu_init(): TDVPR/TDCX, VP.CREATE, VP.ADDCX, VP.INIT (9a89894f30d5:
    VP.INIT, which holds the TDR exclusively, under write mmu_lock, so it never meets the no-fail S-EPT
    paths, which hold mmu_lock for write and take the TDR shared)."""
    kvm = vcpu.kvm
    host = kvm.host
    vcpu.tdvpr = yield from tdx_alloc_control_page(host)
    for _ in range(NR_TDCX_PAGES):
        vcpu.tdcx.append((yield from tdx_alloc_control_page(host)))
    err = yield from S.tdh_vp_create(host, kvm.tdx.tdr, vcpu.tdvpr)
    if TDX_BUG_ON(err, E.TDH_VP_CREATE, kvm, host):
        return EIO
    for page in vcpu.tdcx:
        err = yield from S.tdh_vp_addcx(host, vcpu.tdvpr, page)
        if TDX_BUG_ON(err, E.TDH_VP_ADDCX, kvm, host):
            return EIO
    yield from write_lock(host, kvm.mmu_lock)
    err = yield from S.tdh_vp_init(host, vcpu.tdvpr)
    write_unlock(host, kvm.mmu_lock)
    if TDX_BUG_ON(err, E.TDH_VP_INIT, kvm, host):
        return EIO
    vcpu.initialized = True
    return 0


def tdx_td_finalize(kvm: Kvm) -> Gen:
    """tdx_td_finalize(): TDH.MR.FINALIZE, then TD_STATE_RUNNABLE, smp_wmb, pre_fault_allowed."""
    err = yield from S.tdh_mr_finalize(kvm.host, kvm.tdx.tdr)
    if E.tdx_operand_busy(err):
        return EBUSY
    if TDX_BUG_ON(err, E.TDH_MR_FINALIZE, kvm, kvm.host):
        return EIO
    kvm.tdx.state = TD_STATE_RUNNABLE
    kvm.pre_fault_allowed = True
    return 0


# --- teardown --------------------------------------------------------------------------------------
def tdx_mmu_release_hkid(kvm: Kvm) -> Gen:
    """tdx_mmu_release_hkid() (vt_vm_pre_destroy): VP.FLUSH all, VPFLUSHDONE, CACHE.WB, KEY.FREEID."""
    host = kvm.host
    t = kvm.tdx
    if not is_hkid_assigned(t):
        return 0
    for vcpu in kvm.vcpus:  # kvm_for_each_vcpu(), under cpus_read_lock()
        yield from tdx_flush_vp_on_cpu(vcpu)
    yield from mutex_lock(host, kvm.tdx_lock)  # held to "out:" (VPFLUSHDONE .. KEY.FREEID)
    err = yield from S.tdh_mng_vpflushdone(host, t.tdr)
    if E.status(err) == E.TDX_FLUSHVP_NOT_DONE:
        mutex_unlock(host, kvm.tdx_lock)
        return 0  # HKID stays assigned: everything is leaked later
    if TDX_BUG_ON(err, E.TDH_MNG_VPFLUSHDONE, kvm, host):
        mutex_unlock(host, kvm.tdx_lock)
        return 0
    resume = False
    for _ in range(10000):  # TDX_SEAMCALL_RETRIES
        err = yield from S.tdh_phymem_cache_wb(host, resume)
        if E.status(err) != E.TDX_INTERRUPTED_RESUMABLE:
            break
        resume = True
    if err and E.status(err) != E.TDX_NO_HKID_READY_TO_WBCACHE:
        cause = tdx_fault_cause(host, E.TDH_PHYMEM_CACHE_WB, err, host.current.injected_error)
        host.warn("smp_func_do_phymem_cache_wb", f"TDH.PHYMEM.CACHE.WB failed: {E.err_name(err)}",
                  explained=cause is not None, cause=cause_desc(cause))
    err = yield from S.tdh_mng_key_freeid(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_MNG_KEY_FREEID, kvm, host):
        mutex_unlock(host, kvm.tdx_lock)
        return 0  # "HKID is leaked"
    t.hkid = -1  # tdx_hkid_free()
    mutex_unlock(host, kvm.tdx_lock)
    return 0


def tdx_acquire_vm_state_locks(kvm: Kvm) -> Gen:
    """tdx_acquire_vm_state_locks() (15945e9ec195, the tdx_vm_state_guard class): kvm->lock, every
    vcpu->mutex (kvm_lock_all_vcpus(): one lockdep class, nested under kvm->lock), then kvm->slots_lock.
    "Note the unintuitive ordering! vcpu->mutex must be taken outside kvm->slots_lock!" (b.0)"""
    host = kvm.host
    yield from mutex_lock(host, kvm.lock)
    for vcpu in kvm.vcpus:
        yield from mutex_lock(host, vcpu.mutex, nest=kvm.lock)
    yield from mutex_lock(host, kvm.slots_lock)
    return 0


def tdx_release_vm_state_locks(kvm: Kvm) -> None:
    """tdx_release_vm_state_locks(): slots_lock, the vCPU mutexes, kvm->lock."""
    host = kvm.host
    mutex_unlock(host, kvm.slots_lock)
    for vcpu in kvm.vcpus:
        mutex_unlock(host, vcpu.mutex)
    mutex_unlock(host, kvm.lock)


def tdx_vm_state_guard(kvm: Kvm, fn: Callable[..., Gen], *args: Any) -> Gen:
    """CLASS(tdx_vm_state_guard, guard)(kvm) in tdx_vm_ioctl() / tdx_vcpu_unlocked_ioctl(): one of
    KVM_TDX_INIT_VM, KVM_TDX_INIT_VCPU, KVM_TDX_INIT_MEM_REGION, KVM_TDX_FINALIZE_VM runs as fn(*args)
    with "all" the locks held (g.13)."""
    yield from tdx_acquire_vm_state_locks(kvm)
    ret = yield from fn(*args)
    tdx_release_vm_state_locks(kvm)
    progress(kvm.host, "the KVM_TDX ioctl returns")
    return ret


def tdx_reclaim_control_page(kvm: Kvm, page: int) -> Gen:
    """tdx_reclaim_control_page(): RECLAIM + reset + tdx_free_control_page(); leak on failure."""
    host = kvm.host
    if (yield from tdx_reclaim_page(kvm, host, page)):
        tdx_leak_page(host, page, "control page RECLAIM failed")
        return EIO
    yield from tdx_free_control_page(host, page)
    return 0


def tdx_vcpu_free(vcpu: KvmVcpu) -> Gen:
    """tdx_vcpu_free(): a vCPU still loaded somewhere is only disassociated (1e3a825c9ec9: legal only for
    one that never got initialised); else leak everything if the HKID is still assigned, else reclaim
    TDCX and TDVPR; the vCPU is VCPU_TD_STATE_UNINITIALIZED again."""
    kvm = vcpu.kvm
    host = kvm.host
    if vcpu.cpu != -1:
        KVM_BUG_ON(vcpu.initialized, kvm, "tdx_vcpu_free", "tdx->state == VCPU_TD_STATE_INITIALIZED")
        yield from tdx_flush_vp_on_cpu(vcpu)
        return 0
    if is_hkid_assigned(kvm.tdx):
        # The kernel just returns: the pages stay allocated for good. NULL tdcx_pages[i] / tdvpr_page (a
        # vCPU whose creation failed or never ran KVM_TDX_INIT_VCPU) are no pages to leak.
        for page in vcpu.tdcx + [vcpu.tdvpr]:
            if page >= 0:
                tdx_leak_page(host, page, "vCPU page: HKID still assigned")
        return 0
    for page in vcpu.tdcx:
        if page >= 0:  # the kernel skips NULL tdcx_pages[i] (allocation or VP.CREATE failed)
            yield from tdx_reclaim_control_page(kvm, page)
    vcpu.tdcx = []
    if vcpu.tdvpr >= 0:  # if (tdx->vp.tdvpr_page)
        yield from tdx_reclaim_control_page(kvm, vcpu.tdvpr)
    vcpu.tdvpr = -1
    vcpu.initialized = False
    return 0


# --- vCPU association: the per-CPU associated_tdvcpus lists ------------------------------------------
def tdx_disassociate_vp(vcpu: KvmVcpu) -> None:
    """tdx_disassociate_vp(): list_del(&tdx->cpu_list), smp_wmb(), vcpu->cpu = -1 (IRQs off)."""
    vcpu.cpu_list = -1
    vcpu.cpu = -1


def tdx_flush_vp(vcpu: KvmVcpu, cpu: int) -> Gen:
    """tdx_flush_vp() (the IPI callback on `cpu`): TDH.VP.FLUSH unless the vCPU is still
    VCPU_TD_STATE_UNINITIALIZED (TDX_VCPU_NOT_ASSOCIATED tolerated), then disassociate it anyway;
    returns the error for the caller to report."""
    err = 0
    if vcpu.initialized:
        err = yield from S.tdh_vp_flush(vcpu.kvm.host, vcpu.tdvpr, cpu)
        if err == E.TDX_VCPU_NOT_ASSOCIATED:
            err = 0
    tdx_disassociate_vp(vcpu)
    return err


def tdx_flush_vp_on_cpu(vcpu: KvmVcpu) -> Gen:
    """tdx_flush_vp_on_cpu(): nothing if vcpu->cpu == -1, else smp_call_function_single(vcpu->cpu,
    tdx_flush_vp) and KVM_BUG_ON(arg.err). MODEL: the IPI runs in the caller's step; its SEAMCALL is
    issued on the vCPU's last CPU (the module checks that logical processor)."""
    cpu = vcpu.cpu
    if cpu == -1:
        return 0
    kvm = vcpu.kvm
    err = yield from tdx_flush_vp(vcpu, cpu)
    TDX_BUG_ON(err, E.TDH_VP_FLUSH, kvm, kvm.host)
    return 0


def tdx_vcpu_load(vcpu: KvmVcpu, cpu: int) -> Gen:
    """tdx_vcpu_load(): nothing if the vCPU is already on this CPU or the HKID is gone ("Fix list_add
    corruption during vcpu_load"); else flush it on its old CPU, then list_add() it to this CPU's
    associated_tdvcpus (CONFIG_DEBUG_LIST reports an entry still on a list)."""
    kvm = vcpu.kvm
    if vcpu.cpu == cpu or not is_hkid_assigned(kvm.tdx):
        return 0
    yield from tdx_flush_vp_on_cpu(vcpu)
    if vcpu.cpu_list != -1:
        host = kvm.host
        host.probe.report("list-corruption",
                          f"BUG: list_add corruption: vcpu{vcpu.vcpu_id}'s cpu_list is still on CPU "
                          f"{vcpu.cpu_list}'s associated_tdvcpus (list_add on CPU {cpu})",
                          task=host.current.name, chain=callchain(), explained=False)
    vcpu.cpu_list = cpu
    return 0


def kvm_arch_vcpu_load(vcpu: KvmVcpu) -> Gen:
    """vcpu_load() -> kvm_arch_vcpu_load() on this task's CPU: the vendor load (tdx_vcpu_load()), then
    vcpu->cpu = cpu."""
    cpu = vcpu.kvm.host.current.cpu
    yield from tdx_vcpu_load(vcpu, cpu)
    vcpu.cpu = cpu
    return 0


def tdx_vm_destroy(kvm: Kvm) -> Gen:
    """tdx_vm_destroy(): tdx_reclaim_td_control_pages(), then the TD state is UNINITIALIZED."""
    yield from tdx_reclaim_td_control_pages(kvm)
    tdx_free_pamt_cache(kvm.host, kvm.tdx.split_pamt_cache)
    kvm.tdx.state = TD_STATE_UNINITIALIZED
    return 0


def tdx_reclaim_td_control_pages(kvm: Kvm) -> Gen:
    """tdx_reclaim_td_control_pages(): leak all if the HKID is still assigned, else reclaim the TDCS
    pages, then the TDR (last), TDR WBINVD, free."""
    host = kvm.host
    t = kvm.tdx
    if is_hkid_assigned(t):
        for page in t.tdcs + [t.tdr]:
            if page >= 0:
                tdx_leak_page(host, page, "TD control page: HKID still assigned")
        return 0
    for page in t.tdcs:
        if page >= 0:  # if (!kvm_tdx->td.tdcs_pages[i]) continue;
            yield from tdx_reclaim_control_page(kvm, page)
    t.tdcs = []
    if t.tdr < 0:  # if (!kvm_tdx->td.tdr_page) return;
        return 0
    if (yield from tdx_reclaim_page(kvm, host, t.tdr)):
        tdx_leak_page(host, t.tdr, "TDR RECLAIM failed")
        return 0
    err = yield from S.tdh_phymem_page_wbinvd_tdr(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_PHYMEM_PAGE_WBINVD, kvm, host):
        tdx_leak_page(host, t.tdr, "TDR WBINVD failed")
        tdx_pamt_keep(host, t.tdr)
        return 0
    yield from tdx_free_control_page(host, t.tdr)
    t.tdr = -1
    return 0


__all__ = ["tdx_sept_free_private_spt", "tdx_sept_set_private_spte", "EXTERNAL_SPT", "TD_CONTROL",
           "set_owner", "PT64_ROOT_MAX_LEVEL"]
