"""arch/x86/kvm/vmx/tdx.c: KVM's TDX glue, talking to the module only through SEAMCALL wrappers (E3+E4).

S-EPT hooks (set_external_spte = tdx_sept_set_private_spte, free_external_spt =
tdx_sept_free_private_spt), leaf removal (BLOCK, TRACK + kick, REMOVE, WBINVD), TD and vCPU
construction, HKID release and reclaim of control pages. Error grading follows the kernel: BUSY on the
map side -> -EBUSY and retry; any other SEAMCALL error -> TDX_BUG_ON (WARN + bug the VM) and leak.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ..host.locks import lockdep_assert_held_write, write_lock, write_unlock
from ..host.page_alloc import EXTERNAL_SPT, TD_CONTROL, set_owner
from ..host.task import OP_RUN, Op, callchain
from ..tdx_module import errno as E
from ..virt import seamcall as S
from ..virt.dpamt import (
    tdx_alloc_control_page,
    tdx_free_control_page,
    tdx_leak_page,
    tdx_pamt_get,
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
EBUSY = -16
EIO = -5
NR_TDCS_PAGES = 2  # MODEL: the real count comes from TDX metadata; 2 keeps the TD small
NR_TDCX_PAGES = 1


def TDX_BUG_ON(err: int, leaf: int, kvm: Kvm | None, host: "Host", **ctx: Any) -> bool:  # noqa: N802
    """TDX_BUG_ON*(): WARN_ON_ONCE + kvm_vm_bugged(); with kvm=NULL (RECLAIM) only the WARN."""
    if not err:
        return False
    injected = host.current.injected_error
    host.probe.report(
        "TDX_BUG_ON", f"WARNING: {E.leaf_name(leaf)} failed: {E.err_name(err)}",
        leaf=leaf, err=err, injected=injected, explained=injected or host.faults_injected > 0,
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

    MODEL: the retry is marked nofail: the kernel (and the module) guarantee it cannot be BUSY again
    once no vCPU holds module locks, so the fault model does not inject there.
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
    """tdx_sept_set_private_spte() (kvm_x86_ops.set_external_spte, E3 signature with old_spte)."""
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
    if kvm.ops.pamt_get_at_link:
        if KVM_BUG_ON(vcpu is None and host.tdx.dpamt, kvm, "tdx_sept_map_nonleaf_spte", "!kvm_get_running_vcpu()"):
            return EIO
        if (yield from tdx_pamt_get(host, page, vcpu.pamt_cache if vcpu else None)):
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
    if KVM_BUG_ON(level != 1, kvm, "tdx_sept_map_leaf_spte", "level != PG_LEVEL_4K"):
        return EIO
    pfn = spte_to_pfn(new_spte)
    vcpu = running_vcpu(kvm)
    if (yield from tdx_pamt_get(host, pfn, vcpu.pamt_cache if vcpu else None)):
        return EIO
    if kvm.tdx.state != TD_STATE_RUNNABLE:
        leaf = E.TDH_MEM_PAGE_ADD
        err = yield from S.tdh_mem_page_add(host, kvm.tdx.tdr, gfn, level, pfn)
    else:
        leaf = E.TDH_MEM_PAGE_AUG
        err = yield from S.tdh_mem_page_aug(host, kvm.tdx.tdr, gfn, level, pfn)
    if E.tdx_operand_busy(err):
        yield from tdx_pamt_put(host, pfn)
        return EBUSY
    if TDX_BUG_ON(err, leaf, kvm, host, pfn=pfn, gfn=gfn):
        yield from tdx_pamt_put(host, pfn)
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

    Cannot fail in a recoverable way: any error bugs the VM and the page is leaked.
    """
    host = kvm.host
    pfn = spte_to_pfn(old_spte)
    lockdep_assert_held_write(host, kvm.mmu_lock)
    if KVM_BUG_ON(not is_hkid_assigned(kvm.tdx), kvm, "tdx_sept_remove_leaf_spte", "!is_hkid_assigned(kvm_tdx)"):
        tdx_leak_page(host, pfn, "S-EPT leaf left mapped: HKID already released")
        return EIO
    if KVM_BUG_ON(level != 1, kvm, "tdx_sept_remove_leaf_spte", "level != PG_LEVEL_4K"):
        return EIO
    tdr = kvm.tdx.tdr
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_range_block, kvm, tdr, gfn, level)
    if TDX_BUG_ON(err, E.TDH_MEM_RANGE_BLOCK, kvm, host, gfn=gfn, pfn=pfn):
        tdx_leak_page(host, pfn, "RANGE.BLOCK failed")
        return EIO
    yield from kvm.ops.tdx_track(kvm)
    err = yield from kvm.ops.tdh_do_no_vcpus(S.tdh_mem_page_remove, kvm, tdr, gfn, level)
    if TDX_BUG_ON(err, E.TDH_MEM_PAGE_REMOVE, kvm, host, gfn=gfn, pfn=pfn):
        tdx_leak_page(host, pfn, "PAGE.REMOVE failed")
        return EIO
    err = yield from S.tdh_phymem_page_wbinvd_hkid(host, kvm.tdx.hkid, pfn)
    if TDX_BUG_ON(err, E.TDH_PHYMEM_PAGE_WBINVD, kvm, host, pfn=pfn):
        tdx_leak_page(host, pfn, "PAGE.WBINVD failed")
        return EIO
    # tdx_quirk_reset_paddr(): MOVDIR64B only on X86_BUG_TDX_PW_MCE parts; no state change here.
    yield from tdx_pamt_put(host, pfn)
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
    """__tdx_td_init(): TDR + TDCS pages, MNG.CREATE, KEY.CONFIG, ADDCX, MNG.INIT."""
    host = kvm.host
    t = kvm.tdx
    host.tdx.hkids += 1
    t.hkid = host.tdx.hkids
    t.tdr = yield from tdx_alloc_control_page(host)
    t.tdcs = []
    for _ in range(NR_TDCS_PAGES):
        t.tdcs.append((yield from tdx_alloc_control_page(host)))
    err = yield from S.tdh_mng_create(host, t.tdr, t.hkid)
    if TDX_BUG_ON(err, E.TDH_MNG_CREATE, kvm, host):
        return EIO
    err = yield from S.tdh_mng_key_config(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_MNG_KEY_CONFIG, kvm, host):
        return EIO
    for page in t.tdcs:
        err = yield from S.tdh_mng_addcx(host, t.tdr, page)
        if TDX_BUG_ON(err, E.TDH_MNG_ADDCX, kvm, host):
            return EIO
    err = yield from S.tdh_mng_init(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_MNG_INIT, kvm, host):
        return EIO
    t.state = TD_STATE_INITIALIZED
    return 0


def tdx_vcpu_init(vcpu: KvmVcpu) -> Gen:
    """tdx_vcpu_create() + tdx_td_vcpu_init(): TDVPR/TDCX, VP.CREATE, VP.ADDCX, VP.INIT (E2+: VP.INIT
    under write mmu_lock, so it never meets the no-fail S-EPT paths in the module's TDR lock)."""
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
    for vcpu in kvm.vcpus:
        err = yield from S.tdh_vp_flush(host, vcpu.tdvpr)
        if err and E.status(err) != E.TDX_VCPU_NOT_ASSOCIATED:
            TDX_BUG_ON(err, E.TDH_VP_FLUSH, kvm, host)
    err = yield from S.tdh_mng_vpflushdone(host, t.tdr)
    if E.status(err) == E.TDX_FLUSHVP_NOT_DONE:
        return 0  # HKID stays assigned: everything is leaked later
    if TDX_BUG_ON(err, E.TDH_MNG_VPFLUSHDONE, kvm, host):
        return 0
    resume = False
    for _ in range(10000):  # TDX_SEAMCALL_RETRIES
        err = yield from S.tdh_phymem_cache_wb(host, resume)
        if E.status(err) != E.TDX_INTERRUPTED_RESUMABLE:
            break
        resume = True
    if err and E.status(err) != E.TDX_NO_HKID_READY_TO_WBCACHE:
        host.warn("smp_func_do_phymem_cache_wb", f"TDH.PHYMEM.CACHE.WB failed: {E.err_name(err)}",
                  explained=host.faults_injected > 0)
    err = yield from S.tdh_mng_key_freeid(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_MNG_KEY_FREEID, kvm, host):
        return 0  # "HKID is leaked"
    t.hkid = -1  # tdx_hkid_free()
    return 0


def tdx_reclaim_control_page(kvm: Kvm, page: int) -> Gen:
    """tdx_reclaim_control_page(): RECLAIM + reset + tdx_free_control_page(); leak on failure."""
    host = kvm.host
    if (yield from tdx_reclaim_page(kvm, host, page)):
        tdx_leak_page(host, page, "control page RECLAIM failed")
        return EIO
    yield from tdx_free_control_page(host, page)
    return 0


def tdx_vcpu_free(vcpu: KvmVcpu) -> Gen:
    """tdx_vcpu_free(): leak everything if the HKID is still assigned, else reclaim TDCX and TDVPR."""
    kvm = vcpu.kvm
    host = kvm.host
    if is_hkid_assigned(kvm.tdx):
        for page in vcpu.tdcx + [vcpu.tdvpr]:
            tdx_leak_page(host, page, "vCPU page: HKID still assigned")
        return 0
    for page in vcpu.tdcx:
        yield from tdx_reclaim_control_page(kvm, page)
    vcpu.tdcx = []
    yield from tdx_reclaim_control_page(kvm, vcpu.tdvpr)
    vcpu.tdvpr = -1
    return 0


def tdx_vm_destroy(kvm: Kvm) -> Gen:
    """tdx_vm_destroy() -> tdx_reclaim_td_control_pages(): TDCS, then TDR (last), TDR WBINVD, free."""
    host = kvm.host
    t = kvm.tdx
    if is_hkid_assigned(t):
        for page in t.tdcs + [t.tdr]:
            tdx_leak_page(host, page, "TD control page: HKID still assigned")
        return 0
    for page in t.tdcs:
        yield from tdx_reclaim_control_page(kvm, page)
    t.tdcs = []
    if (yield from tdx_reclaim_page(kvm, host, t.tdr)):
        tdx_leak_page(host, t.tdr, "TDR RECLAIM failed")
        return 0
    err = yield from S.tdh_phymem_page_wbinvd_tdr(host, t.tdr)
    if TDX_BUG_ON(err, E.TDH_PHYMEM_PAGE_WBINVD, kvm, host):
        tdx_leak_page(host, t.tdr, "TDR WBINVD failed")
        return 0
    yield from tdx_free_control_page(host, t.tdr)
    t.tdr = -1
    t.state = TD_STATE_UNINITIALIZED
    return 0


__all__ = ["tdx_sept_free_private_spt", "tdx_sept_set_private_spte", "EXTERNAL_SPT", "TD_CONTROL",
           "set_owner", "PT64_ROOT_MAX_LEVEL"]
