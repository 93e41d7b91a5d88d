"""arch/x86/kvm/mmu/tdp_mmu.c: map, link, zap and free TDP page tables, mirror roots included (E3).

Every function keeps the kernel's name and lock contract. A read or write of an SPTE that another CPU
may race with is one step; walks under mmu_lock held for write take no steps (nobody can race them).

Lockdep: every SPTE access is the kernel's rcu_dereference(sptep) (kvm_tdp_mmu_read_spte(),
__kvm_tdp_mmu_write_spte(), the cmpxchg in __tdp_mmu_set_spte_atomic(), sptep_to_sp(rcu_dereference())
in tdp_mmu_init_child_sp() / handle_removed_pt() / is_mirror_sptep()) and is checked for an enclosing
rcu_read_lock(); the kernel's lockdep_assert_held*() calls on these paths are made; root-list changes
take tdp_mmu_pages_lock.
"""

from __future__ import annotations

from array import array
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from itertools import compress
from typing import TYPE_CHECKING

from ..host.locks import (
    cond_resched_rwlock,
    lockdep_assert_held,
    lockdep_assert_held_read,
    lockdep_assert_held_write,
    read_lock,
    read_unlock,
    spin_lock,
    spin_lock_nostep,
    spin_unlock,
    write_lock,
    write_unlock,
)
from ..host.memcache import kvm_mmu_memory_cache_alloc
from ..host.page_alloc import EXTERNAL_SPT, GFP_KERNEL_ACCOUNT, SPT, alloc_page, free_page, kasan_check, set_owner
from ..host.progress import progress
from ..host.rcu import call_rcu, rcu_dereference_splat, rcu_read_lock, rcu_read_unlock
from ..host.task import OP_RUN, Op
from .kvm_host import KVM_BUG_ON
from .mmu_page import NO_PAGE, KvmMmuPage
from .spte import (
    FROZEN_SPTE,
    PT_PRESENT_MASK,
    SHADOW_NONPRESENT_VALUE,
    SPTE_ACCESSED_MASK,
    SPTE_ENT_PER_PAGE,
    is_frozen_spte,
    is_large_pte,
    is_last_spte,
    is_shadow_present_pte,
    level_base_gfn,
    make_huge_spte,
    make_nonleaf_spte,
    make_spte,
    present_indices,
    spte_index,
    spte_to_pfn,
)

if TYPE_CHECKING:
    from ..host.host import Host
    from .kvm_host import Kvm, KvmVcpu

Gen = Generator[Op, object, int]

EBUSY = -16
EIO = -5
RET_PF_CONTINUE = 0
RET_PF_CONTINUE = 0
RET_PF_RETRY = 1
RET_PF_FIXED = 2
RET_PF_SPURIOUS = 3
ROOT_LEVEL = 4
# tdp_mmu_zap_root()'s passes below the root: 4K and 2M unless CONFIG_KVM_PROVE_MMU, then 1G.
TDP_MMU_ZAP_ROOT_PASSES = (1, 2, 3)


@dataclass(slots=True)
class TdpIter:
    """struct tdp_iter, reduced: the table, the entry index, its level and gfn, the cached old SPTE."""

    sp: KvmMmuPage
    idx: int
    level: int
    gfn: int
    old_spte: int


@dataclass(slots=True)
class KvmPageFault:
    """struct kvm_page_fault, reduced."""

    gfn: int
    is_private: bool
    pfn: int = -1
    goal_level: int = 1
    mmu_seq: int = 0


# --- SPTE accessors (each racing access is one step; KASAN-checked against the table's page) -------
def tdp_read_spte(host: "Host", sp: KvmMmuPage, idx: int, what: str) -> Gen:
    """kvm_tdp_mmu_read_spte() (tdp_iter.h): READ_ONCE(*rcu_dereference(sptep)) from a walker: one
    step, the RCU-lockdep check, a KASAN check of sp->spt."""
    yield Op(OP_RUN, ("spte", sp.sp_id, idx), what)
    if not host.current.rcu_nesting:
        rcu_dereference_splat(host, f"{what}: kvm_tdp_mmu_read_spte(sptep)")
    kasan_check(host, sp.spt, False, what)
    return sp.sptes[idx]


def tdp_write_spte(host: "Host", sp: KvmMmuPage, idx: int, new: int) -> int:
    """__kvm_tdp_mmu_write_spte() / kvm_tdp_mmu_write_spte_atomic(): WRITE_ONCE / xchg on
    rcu_dereference(sptep), atomic with the caller's current step."""
    if not host.current.rcu_nesting:
        rcu_dereference_splat(host, "__kvm_tdp_mmu_write_spte(sptep)")
    kasan_check(host, sp.spt, True, "__kvm_tdp_mmu_write_spte")
    old = sp.sptes[idx]
    sp.sptes[idx] = new
    host.probe.spte_write(sp, idx, old, new)
    return old


def tdp_cmpxchg_spte(host: "Host", sp: KvmMmuPage, idx: int, old: int, new: int) -> Generator[Op, object, bool]:
    """try_cmpxchg64(rcu_dereference(iter->sptep), &old, new) (__tdp_mmu_set_spte_atomic): one step."""
    yield Op(OP_RUN, ("spte", sp.sp_id, idx), "try_cmpxchg64")
    if not host.current.rcu_nesting:
        rcu_dereference_splat(host, "__tdp_mmu_set_spte_atomic: rcu_dereference(iter->sptep)")
    if sp.sptes[idx] != old:
        return False
    tdp_write_spte(host, sp, idx, new)
    return True


def is_mirror_sptep(host: "Host", sp: KvmMmuPage) -> bool:
    """is_mirror_sptep() (spte.h): is_mirror_sp(sptep_to_sp(rcu_dereference(sptep)))."""
    if not host.current.rcu_nesting:
        rcu_dereference_splat(host, "is_mirror_sptep(sptep)")
    return sp.is_mirror


def sp_entry_gfn(sp: KvmMmuPage, idx: int) -> int:
    """First gfn translated by entry `idx` of `sp`."""
    return sp.gfn + (idx << (9 * (sp.level - 1)))


# --- allocation ------------------------------------------------------------------------------------
def tdp_mmu_alloc_sp(vcpu: "KvmVcpu") -> KvmMmuPage:
    """tdp_mmu_alloc_sp(): header + spt from the vCPU's caches (under mmu_lock, never sleeps)."""
    kvm = vcpu.kvm
    spt = kvm_mmu_memory_cache_alloc(vcpu.mmu_shadow_page_cache)
    set_owner(kvm.host, spt, SPT, "sp->spt (tdp_mmu_alloc_sp)")
    return _new_sp(kvm, spt)


def _new_sp(kvm: "Kvm", spt: int) -> KvmMmuPage:
    """The sp header (kmem_cache_zalloc(mmu_page_header_cache)) for `spt`, numbered per CPU so the
    number does not depend on how tasks interleave."""
    cpu = kvm.host.current.cpu
    n = kvm.sp_seq.get(cpu, 0)
    kvm.sp_seq[cpu] = n + 1
    sp = KvmMmuPage((cpu << 16) | n, spt, 0, 0, False)
    kvm.sp_by_spt[spt] = sp
    return sp


def tdp_mmu_alloc_sp_for_split(kvm: "Kvm", mirror: bool) -> KvmMmuPage:
    """tdp_mmu_alloc_sp_for_split() (+ "Alloc external_spt page for mirror page table splitting"): the
    header, spt and, for a mirror, external_spt, with GFP_KERNEL_ACCOUNT -- so the caller must have
    dropped mmu_lock and left the RCU read-side section (it may sleep in direct reclaim)."""
    host = kvm.host
    spt = alloc_page(host, SPT, GFP_KERNEL_ACCOUNT)
    sp = _new_sp(kvm, spt)
    if mirror:
        sp.external_spt = alloc_page(host, EXTERNAL_SPT, GFP_KERNEL_ACCOUNT)
    return sp


def tdp_mmu_init_child_sp(host: "Host", child: KvmMmuPage, it: TdpIter) -> None:
    """tdp_mmu_init_child_sp(): one level down, same role (mirror stays mirror); the parent is
    sptep_to_sp(rcu_dereference(iter->sptep))."""
    if not host.current.rcu_nesting:
        rcu_dereference_splat(host, "tdp_mmu_init_child_sp: rcu_dereference(iter->sptep)")
    child.level = it.level - 1
    child.gfn = level_base_gfn(it.gfn, child.level)
    child.is_mirror = it.sp.is_mirror
    child.parent = it.sp
    child.parent_idx = it.idx


def kvm_mmu_alloc_external_spt(vcpu: "KvmVcpu", sp: KvmMmuPage) -> None:
    """kvm_mmu_alloc_external_spt() (mmu_internal.h): the S-EPT page from mmu_external_spt_cache."""
    pfn = kvm_mmu_memory_cache_alloc(vcpu.mmu_external_spt_cache)
    set_owner(vcpu.kvm.host, pfn, EXTERNAL_SPT, f"sp->external_spt of sp#{sp.sp_id}")
    sp.external_spt = pfn


def tdp_account_mmu_page(kvm: "Kvm", sp: KvmMmuPage) -> None:
    """tdp_account_mmu_page(): the sp is linked and counted in kvm->arch.tdp_mmu_pages."""
    sp.linked = True
    kvm.tdp_mmu_pages += 1


def tdp_mmu_unlink_sp(kvm: "Kvm", sp: KvmMmuPage) -> None:
    """tdp_mmu_unlink_sp(): unaccount. The kernel then takes tdp_mmu_pages_lock only if
    sp->nx_huge_page_disallowed, which is never set with 4K-only private mappings (req_level 4K, so
    kvm_tdp_mmu_map() never calls track_possible_nx_huge_page()). MODEL: no NX huge page list."""
    sp.unlinked = True
    if sp.linked:
        kvm.tdp_mmu_pages -= 1


# --- setting SPTEs ---------------------------------------------------------------------------------
def __tdp_mmu_set_spte_atomic(kvm: "Kvm", it: TdpIter, new_spte: int) -> Gen:
    """__tdp_mmu_set_spte_atomic(): cmpxchg; for mirror SPTEs freeze, call the TDX hook, then publish.

    -EBUSY: the SPTE changed under us; no side effect other than refreshing it.old_spte (02eaaffdd865).
    """
    host = kvm.host
    sp, idx = it.sp, it.idx
    if is_mirror_sptep(host, sp):
        # No vCPU may see new_spte before the S-EPT entry exists: own the entry while the SEAMCALL runs.
        if not (yield from tdp_cmpxchg_spte(host, sp, idx, it.old_spte, FROZEN_SPTE)):
            it.old_spte = sp.sptes[idx]
            return EBUSY
        # MODEL: E3 routes this through __handle_changed_spte() inside the frozen window; only
        # to-present changes reach the hook here, atomic zaps propagate in handle_changed_spte().
        ret = 0
        if is_shadow_present_pte(new_spte):
            ret = yield from kvm.ops.set_external_spte(kvm, it.gfn, it.old_spte, new_spte, it.level)
        tdp_write_spte(host, sp, idx, it.old_spte if ret else new_spte)
        return ret
    if not (yield from tdp_cmpxchg_spte(host, sp, idx, it.old_spte, new_spte)):
        it.old_spte = sp.sptes[idx]
        return EBUSY
    return 0


def tdp_mmu_set_spte_atomic(kvm: "Kvm", it: TdpIter, new_spte: int) -> Gen:
    """tdp_mmu_set_spte_atomic(): mmu_lock held for read; set, then bookkeeping."""
    lockdep_assert_held_read(kvm.host, kvm.mmu_lock)
    ret = yield from kvm.ops.__tdp_mmu_set_spte_atomic(kvm, it, new_spte)
    if ret:
        return ret
    yield from handle_changed_spte(kvm, it.sp, it.gfn, it.old_spte, new_spte, it.level, True)
    return 0


def tdp_mmu_set_spte(kvm: "Kvm", it: TdpIter, new_spte: int) -> Gen:
    """tdp_mmu_set_spte() / tdp_mmu_iter_set_spte(): mmu_lock held for write; never fails."""
    lockdep_assert_held_write(kvm.host, kvm.mmu_lock)
    yield Op(OP_RUN, ("spte", it.sp.sp_id, it.idx), "tdp_mmu_set_spte")
    old = tdp_write_spte(kvm.host, it.sp, it.idx, new_spte)
    it.old_spte = old
    yield from handle_changed_spte(kvm, it.sp, it.gfn, old, new_spte, it.level, False)
    return 0


def handle_changed_spte(kvm: "Kvm", sp: KvmMmuPage, gfn: int, old: int, new: int, level: int,
                        shared: bool) -> Gen:
    """handle_changed_spte(): free removed page tables; (E3) propagate mirror leaf removal to TDX."""
    was_present = is_shadow_present_pte(old)
    if not was_present:
        return 0
    was_leaf = is_last_spte(old, level)
    is_present = is_shadow_present_pte(new)
    if not was_leaf:
        if not is_present or is_last_spte(new, level) or spte_to_pfn(new) != spte_to_pfn(old):
            yield from handle_removed_pt(kvm, kvm.sp_by_spt[spte_to_pfn(old)], shared)
        return 0
    if sp.is_mirror and not is_present:
        # E3 (28c77a037804): removal of a private leaf is propagated centrally, whatever the caller.
        yield from kvm.ops.set_external_spte(kvm, gfn, old, new, level)
    return 0


def handle_removed_pt(kvm: "Kvm", sp: KvmMmuPage, shared: bool) -> Gen:
    """handle_removed_pt(): freeze all 512 entries of an unlinked table, handle each, free via RCU.

    MODEL: in shared mode the non-present entries are frozen in one step (each xchg only makes a
    racing installer fail, and entries are independent); present ones are exchanged one step each.
    """
    host = kvm.host
    if not host.current.rcu_nesting:  # sptep_to_sp(rcu_dereference(pt))
        rcu_dereference_splat(host, "handle_removed_pt: rcu_dereference(pt)")
    tdp_mmu_unlink_sp(kvm, sp)
    sptes = sp.sptes
    if shared:
        yield Op(OP_RUN, ("sp", sp.sp_id), "handle_removed_pt: freeze")
        kasan_check(host, sp.spt, True, "handle_removed_pt")
        # present entries, and FROZEN ones another thread owns (spin on those below)
        todo = [i for i in compress(range(SPTE_ENT_PER_PAGE), sptes) if sptes[i] & PT_PRESENT_MASK
                or sptes[i] == FROZEN_SPTE]
        frozen = [FROZEN_SPTE] * SPTE_ENT_PER_PAGE
        for i in present_indices(sptes):
            frozen[i] = sptes[i]
        sptes[:] = array("q", frozen)  # sp.sptes is an array('q') (mmu_page.py)
        for i in todo:
            while True:
                yield Op(OP_RUN, ("spte", sp.sp_id, i), "handle_removed_pt: xchg")
                old = tdp_write_spte(host, sp, i, FROZEN_SPTE)
                if old != FROZEN_SPTE:
                    break
            yield from handle_changed_spte(kvm, sp, sp_entry_gfn(sp, i), old, FROZEN_SPTE, sp.level, shared)
    else:
        for i in present_indices(sptes):
            old = sptes[i]
            if not old & PT_PRESENT_MASK:
                continue
            yield Op(OP_RUN, ("spte", sp.sp_id, i), "handle_removed_pt")
            tdp_write_spte(host, sp, i, FROZEN_SPTE)
            yield from handle_changed_spte(kvm, sp, sp_entry_gfn(sp, i), old, FROZEN_SPTE, sp.level, shared)
    if sp.is_mirror:
        yield from kvm.ops.free_external_spt(kvm, sp)
    kvm.ops.tdp_mmu_schedule_free_sp(kvm, sp)
    return 0


def call_rcu_free_sp(kvm: "Kvm", sp: KvmMmuPage) -> None:
    """call_rcu(&sp->rcu_head, tdp_mmu_free_sp_rcu_callback): lockless walkers may still hold sp."""
    call_rcu(kvm.host, tdp_mmu_free_sp_rcu_callback, (kvm, sp))


def tdp_mmu_free_sp_rcu_callback(host: "Host", arg: tuple["Kvm", KvmMmuPage]) -> Gen:
    """tdp_mmu_free_sp_rcu_callback(): runs in softirq after a grace period."""
    kvm, sp = arg
    yield from kvm.ops.tdp_mmu_free_sp(kvm, sp)
    return 0


def __tdp_mmu_free_sp(kvm: "Kvm", sp: KvmMmuPage) -> None:
    """__tdp_mmu_free_sp() (E3): free sp->spt and the header only."""
    free_page(kvm.host, sp.spt)
    sp.freed = True


def tdp_mmu_free_sp_e3(kvm: "Kvm", sp: KvmMmuPage) -> Gen:
    """E3 RCU-callback body: WARN if TDX code did not take care of external_spt, then free spt."""
    if sp.external_spt != NO_PAGE:
        kvm.host.warn("tdp_mmu_free_sp_rcu_callback", f"sp#{sp.sp_id}->external_spt still set",
                      pfn=sp.external_spt)
    __tdp_mmu_free_sp(kvm, sp)
    return 0
    yield  # pragma: no cover


def tdp_mmu_free_unused_sp(kvm: "Kvm", sp: KvmMmuPage) -> Gen:
    """tdp_mmu_free_unused_sp() (E3): an sp never linked: TDX never saw external_spt, plain free."""
    if sp.external_spt != NO_PAGE:
        free_page(kvm.host, sp.external_spt)
        sp.external_spt = NO_PAGE
    kvm.sp_by_spt.pop(sp.spt, None)
    __tdp_mmu_free_sp(kvm, sp)
    return 0
    yield  # pragma: no cover


# --- the fault path --------------------------------------------------------------------------------
def tdp_mmu_get_root_for_fault(vcpu: "KvmVcpu", fault: KvmPageFault) -> KvmMmuPage:
    """tdp_mmu_get_root_for_fault(): private faults walk the mirror root."""
    return vcpu.mirror_root if fault.is_private else vcpu.direct_root  # type: ignore[return-value]


def tdp_mmu_link_sp(kvm: "Kvm", it: TdpIter, sp: KvmMmuPage, shared: bool) -> Gen:
    """tdp_mmu_link_sp(): publish the new table in its parent (for mirrors: SEPT.ADD inside)."""
    new_spte = make_nonleaf_spte(sp.spt)
    if shared:
        ret = yield from tdp_mmu_set_spte_atomic(kvm, it, new_spte)
        if ret:
            return ret
    else:
        yield from tdp_mmu_set_spte(kvm, it, new_spte)
    tdp_account_mmu_page(kvm, sp)
    return 0


def disallowed_hugepage_adjust(fault: KvmPageFault, spte: int, level: int, mirror: bool) -> None:
    """disallowed_hugepage_adjust() with "Prevent hugepage promotion for mirror roots in fault path":
    a present table where the fault wants a huge leaf is kept -- the fault maps one level lower. For a
    mirror root, replacing it would be a promotion (TDH.MEM.PAGE.PROMOTE, which KVM does not use);
    MODEL: the NX-huge-page reason for direct roots does not arise (no 2 MiB shared mappings)."""
    if level > 1 and level == fault.goal_level and mirror and is_shadow_present_pte(spte) and not is_large_pte(spte):
        fault.goal_level -= 1
        fault.pfn += fault.gfn & ((1 << (9 * (level - 1))) - 1)  # fault->pfn |= gfn & page_mask


def tdp_mmu_map_handle_target_level(vcpu: "KvmVcpu", fault: KvmPageFault, it: TdpIter) -> Gen:
    """tdp_mmu_map_handle_target_level(): install the leaf, 4 KiB or 2 MiB (for mirrors: AUG/ADD inside)."""
    new_spte = make_spte(fault.pfn) if it.level == 1 else make_huge_spte(fault.pfn)
    if new_spte == it.old_spte:
        return RET_PF_SPURIOUS
    if is_frozen_spte(it.old_spte):
        return RET_PF_RETRY
    if (yield from tdp_mmu_set_spte_atomic(vcpu.kvm, it, new_spte)):
        return RET_PF_RETRY
    return RET_PF_FIXED


def kvm_tdp_mmu_map(vcpu: "KvmVcpu", fault: KvmPageFault) -> Gen:
    """kvm_tdp_mmu_map(): walk (rcu_read_lock, mmu_lock for read), link missing tables, set the leaf."""
    kvm = vcpu.kvm
    host = kvm.host
    root = tdp_mmu_get_root_for_fault(vcpu, fault)
    gfn = fault.gfn
    rcu_read_lock(host)
    sp = root
    level = root.level
    ret = RET_PF_RETRY
    while True:
        idx = spte_index(gfn, level)
        old = yield from tdp_read_spte(host, sp, idx, "kvm_tdp_mmu_map")
        it = TdpIter(sp, idx, level, gfn & ~((1 << (9 * (level - 1))) - 1), old)  # iter.gfn: level-aligned
        disallowed_hugepage_adjust(fault, old, level, sp.is_mirror)
        if level == fault.goal_level:
            ret = yield from tdp_mmu_map_handle_target_level(vcpu, fault, it)
            break
        if is_frozen_spte(old):
            break
        if is_shadow_present_pte(old) and not is_last_spte(old, level):
            sp = kvm.sp_by_spt[spte_to_pfn(old)]
            level -= 1
            continue
        if is_shadow_present_pte(old) and sp.is_mirror:
            # a 2 MiB leaf above the goal level: mirror roots are never split in the fault path ("Don't
            # support large page for mirrored roots"); the split comes from the EPT-violation handler
            # (tdx_honor_accept_level) or the conversion, under write mmu_lock. MODEL: the fault retries.
            break
        child = tdp_mmu_alloc_sp(vcpu)
        tdp_mmu_init_child_sp(host, child, it)
        if child.is_mirror:
            kvm_mmu_alloc_external_spt(vcpu, child)
        if (yield from tdp_mmu_link_sp(kvm, it, child, True)):
            yield from kvm.ops.tdp_mmu_free_unused_sp(kvm, child)
            break
        sp = child
        level -= 1
    rcu_read_unlock(host)
    return ret


def kvm_tdp_mmu_walk_lockless_begin(host: "Host") -> None:
    """kvm_tdp_mmu_walk_lockless_begin() (walk_shadow_page_lockless_begin() for the TDP MMU): rcu_read_lock()."""
    rcu_read_lock(host)


def kvm_tdp_mmu_walk_lockless_end(host: "Host") -> None:
    """kvm_tdp_mmu_walk_lockless_end(): rcu_read_unlock()."""
    rcu_read_unlock(host)


def kvm_tdp_mmu_walk_lockless(vcpu: "KvmVcpu", gfn: int) -> Gen:
    """kvm_tdp_mmu_fast_pf_get_last_sptep() under walk_shadow_page_lockless_begin(): RCU only.

    Used by fast_page_fault(); the root may already be invalid and being zapped under read lock,
    which is exactly what RCU-deferred freeing of page tables protects.
    """
    kvm = vcpu.kvm
    host = kvm.host
    root = vcpu.direct_root
    kvm.ops.kvm_tdp_mmu_walk_lockless_begin(host)
    sp = root
    level = root.level
    spte = SHADOW_NONPRESENT_VALUE
    while True:
        spte = yield from tdp_read_spte(host, sp, spte_index(gfn, level), "kvm_tdp_mmu_fast_pf_get_last_sptep")
        if level == 1 or not is_shadow_present_pte(spte) or is_last_spte(spte, level):
            break
        sp = vcpu.kvm.sp_by_spt.get(spte_to_pfn(spte), sp)
        level -= 1
    kvm.ops.kvm_tdp_mmu_walk_lockless_end(host)
    return spte


# --- roots -----------------------------------------------------------------------------------------
def tdp_mmu_next_root_check(kvm: "Kvm") -> None:
    """The lockdep side of tdp_mmu_next_root() / for_each_*tdp_mmu_root_yield_safe(): "While the roots
    themselves are RCU-protected, fields such as role.invalid are protected by mmu_lock":
    lockdep_assert_held(&kvm->mmu_lock). MODEL: the list walk itself happens inside the caller's step,
    under the rcu_read_lock() tdp_mmu_next_root() takes, so it needs no RCU check of its own."""
    lockdep_assert_held(kvm.host, kvm.mmu_lock)


def kvm_tdp_mmu_get_root(root: KvmMmuPage) -> bool:
    """kvm_tdp_mmu_get_root(): refcount_inc_not_zero(&root->tdp_mmu_root_count)."""
    if root.root_count == 0:
        return False
    root.root_count += 1
    return True


def list_next_roots_rcu(kvm: "Kvm", prev: KvmMmuPage | None) -> list[KvmMmuPage]:
    """list_first_or_null_rcu() / list_next_or_null_rcu(&prev->link) and the walk on from there: the roots
    after prev on kvm->arch.tdp_mmu_roots. A prev already unlinked (list_del_rcu(): a walker that put
    its reference before moving on) still points to the successor it had, which the walk follows as
    the kernel's would -- through roots unlinked since, to the first one still on the list -- reading
    each unlinked root's memory (KASAN: one its RCU callback has freed is a use-after-free)."""
    roots = kvm.roots
    if prev is None:
        return list(roots)
    if prev in roots:  # a root on the list is not freed (the list holds a reference)
        return roots[roots.index(prev) + 1:]
    kasan_check(kvm.host, prev.spt, False, "tdp_mmu_next_root: list_next_or_null_rcu(&prev->link)")
    nxt = prev.link_next
    while nxt is not None and nxt not in roots:
        kasan_check(kvm.host, nxt.spt, False, "tdp_mmu_next_root: list_next_or_null_rcu(&pos->link)")
        nxt = nxt.link_next
    return [] if nxt is None else roots[roots.index(nxt):]


def tdp_mmu_next_root(kvm: "Kvm", prev: KvmMmuPage | None, types: int) -> KvmMmuPage | None:
    """tdp_mmu_next_root(): the next root after prev on kvm->arch.tdp_mmu_roots (list order; prev stays
    on the list while the walk holds its reference) that matches `types` and whose refcount is not yet
    zero, taking a reference to it; then the reference to prev is put -- which may be the last one."""
    tdp_mmu_next_root_check(kvm)
    nxt = None
    for root in list_next_roots_rcu(kvm, prev):
        if tdp_mmu_root_match(root, types) and kvm_tdp_mmu_get_root(root):
            nxt = root
            break
    if prev is not None:
        kvm_tdp_mmu_put_root(kvm, prev)
    return nxt


def for_each_tdp_mmu_root_yield_safe(kvm: "Kvm", types: int) -> Iterator[KvmMmuPage]:
    """__for_each_tdp_mmu_root_yield_safe(kvm, root, as_id, types): the body may drop mmu_lock, so each
    root is visited holding a reference (tdp_mmu_next_root()); as in the kernel, the loop must run to
    its end (a `break` would leak the reference)."""
    root = tdp_mmu_next_root(kvm, None, types)
    while root is not None:
        yield root
        root = tdp_mmu_next_root(kvm, root, types)


def kvm_tdp_mmu_alloc_root(vcpu: "KvmVcpu", mirror: bool) -> Generator[Op, object, KvmMmuPage]:
    """kvm_tdp_mmu_alloc_root() (v6.12+): under read mmu_lock, reuse a valid root of the same role
    (keeping the iterator's reference); else take tdp_mmu_pages_lock, recheck (another vCPU may have
    added one meanwhile: kvm_tdp_mmu_get_root()), and only then allocate a new root (refcount 2: one
    for the vCPU, one for the root list until it is invalidated) and list_add_rcu() it."""
    kvm = vcpu.kvm
    host = kvm.host
    yield from read_lock(host, kvm.mmu_lock)
    tdp_mmu_next_root_check(kvm)  # for_each_valid_tdp_mmu_root_yield_safe()
    for root in kvm.roots:
        if root.is_mirror == mirror and not root.invalid:
            root.root_count += 1
            read_unlock(host, kvm.mmu_lock)
            return root
    yield from spin_lock(host, kvm.tdp_mmu_pages_lock)
    for root in kvm.roots:  # role.word == role.word: a valid root of this role
        if root.is_mirror == mirror and not root.invalid and root.root_count > 0:
            root.root_count += 1  # kvm_tdp_mmu_get_root()
            break
    else:
        root = tdp_mmu_alloc_sp(vcpu)
        root.level = ROOT_LEVEL
        root.is_mirror = mirror
        root.is_root = True
        root.root_count = 2
        kvm.roots.append(root)
    spin_unlock(host, kvm.tdp_mmu_pages_lock)
    read_unlock(host, kvm.mmu_lock)
    return root


def kvm_tdp_mmu_put_root(kvm: "Kvm", root: KvmMmuPage) -> None:
    """kvm_tdp_mmu_put_root(): the last reference unlinks the root (list_del_rcu under
    tdp_mmu_pages_lock) and frees it via RCU."""
    root.root_count -= 1
    if root.root_count == 0:
        host = kvm.host
        spin_lock_nostep(host, kvm.tdp_mmu_pages_lock)
        i = kvm.roots.index(root)  # list_del_rcu(): ->next keeps pointing at the successor
        root.link_next = kvm.roots[i + 1] if i + 1 < len(kvm.roots) else None
        del kvm.roots[i]
        spin_unlock(host, kvm.tdp_mmu_pages_lock)
        call_rcu(host, tdp_mmu_free_sp_rcu_callback, (kvm, root))


def kvm_tdp_mmu_invalidate_roots(kvm: "Kvm", mirror_too: bool) -> None:
    """kvm_tdp_mmu_invalidate_roots(): mark roots invalid and schedule them for zapping (write lock).

    Mirror roots only with KVM_VALID_ROOTS at teardown: "External page tables don't support fast zapping".
    """
    lockdep_assert_held_write(kvm.host, kvm.mmu_lock)
    for root in kvm.roots:
        if root.invalid or (root.is_mirror and not mirror_too):
            continue
        root.invalid = True
        kvm.scheduled_to_zap.append(root)


def tdp_mmu_next_zap_table(root: KvmMmuPage, gfn: int, level: int, sp_by_spt: dict[int, KvmMmuPage],
                           host: "Host | None" = None) -> KvmMmuPage | None:
    """for_each_tdp_pte_min_level_all(iter, root, level) (re)started at gfn (tdp_iter_restart()),
    reduced to what a zap pass acts on: the first table of `level` at or after gfn that the walk
    reaches from the root (non-present entries and huge leaves above `level` are stepped over), or None
    at the end. Takes no steps: the caller holds mmu_lock and reads under RCU; with `host`, each table
    read is KASAN-checked."""
    if gfn >= root.gfn + SPTE_ENT_PER_PAGE ** root.level:
        return None
    if root.level == level:
        return root

    def walk(sp: KvmMmuPage, g: int) -> KvmMmuPage | None:
        if host is not None and not kasan_check(host, sp.spt, False, "tdp_iter_next: rcu_dereference(sptep)"):
            return None
        for i in present_indices(sp.sptes, spte_index(g, sp.level)):
            s = sp.sptes[i]
            if is_last_spte(s, sp.level):
                continue
            child = sp_by_spt[spte_to_pfn(s)]
            if child.level == level:
                return child
            if (found := walk(child, max(g, child.gfn))) is not None:
                return found
        return None

    return walk(root, gfn)


def __tdp_mmu_zap_root(kvm: "Kvm", root: KvmMmuPage, shared: bool, zap_level: int) -> Gen:
    """__tdp_mmu_zap_root(): zap every present SPTE at zap_level (a leaf, or a table whose subtree
    handle_removed_pt() tears down), yielding with tdp_mmu_iter_cond_resched(flush=false) and
    restarting the walk from the root where it stopped.

    MODEL: the yield is offered once per table of zap_level, after the walk has made progress (the
    kernel checks at every entry, once the walk has moved since its start or last yield, when
    need_resched() or mmu_lock is contended): a pass over one table never yields. Within a table the
    present entries are listed once and each is re-checked before its zap (the lock is not dropped
    inside a table, and no fault maps into a root being zapped: invalid roots, or teardown's)."""
    host = kvm.host
    gfn = 0
    moved = False
    while True:
        if not host.current.rcu_nesting:  # the iterator's kvm_tdp_mmu_read_spte()
            rcu_dereference_splat(host, "__tdp_mmu_zap_root: kvm_tdp_mmu_read_spte(sptep)")
        table = tdp_mmu_next_zap_table(root, gfn, zap_level, kvm.sp_by_spt, host)
        if table is None:
            return 0
        if moved:
            progress(host, "__tdp_mmu_zap_root: forward progress (iter->yielded_gfn advanced)")
            yield from tdp_mmu_iter_cond_resched(kvm, shared)
            moved = False
            continue  # iter->yielded: tdp_iter_restart() walks down from the root again at gfn
        for i in present_indices(table.sptes):
            if table.sptes[i] & PT_PRESENT_MASK:
                yield from tdp_mmu_zap_spte(kvm, TdpIter(table, i, zap_level, sp_entry_gfn(table, i), table.sptes[i]),
                                            shared)
                progress(host, "__tdp_mmu_zap_root: an entry zapped, the walk moves forward")
        gfn = table.gfn + SPTE_ENT_PER_PAGE ** zap_level
        moved = True


def tdp_mmu_zap_root(kvm: "Kvm", root: KvmMmuPage, shared: bool) -> Gen:
    """tdp_mmu_zap_root(): under rcu_read_lock(), zap in passes of decreasing granularity -- 4K, 2M
    (production; CONFIG_KVM_PROVE_MMU skips these two), 1G, then the root's entries -- so tables are
    reclaimed bottom-up in batches and every pass may yield mmu_lock. The root must hold a reference
    (WARN_ON_ONCE): it stays reachable by mmu-notifiers while the zap drops the lock."""
    host = kvm.host
    if not root.root_count:
        host.warn("tdp_mmu_zap_root", f"{root!r}: tdp_mmu_root_count is 0")
    if shared:
        lockdep_assert_held_read(host, kvm.mmu_lock)
    else:
        lockdep_assert_held_write(host, kvm.mmu_lock)
    rcu_read_lock(host)
    for zap_level in TDP_MMU_ZAP_ROOT_PASSES + (root.level,):
        yield from __tdp_mmu_zap_root(kvm, root, shared, zap_level)
    rcu_read_unlock(host)
    progress(host, "tdp_mmu_zap_root() finished")
    return 0


def tdp_mmu_zap_spte(kvm: "Kvm", it: TdpIter, shared: bool) -> Gen:
    """tdp_mmu_zap_spte_atomic() when shared (retry on -EBUSY), else tdp_mmu_iter_set_spte()."""
    if not shared:
        return (yield from tdp_mmu_set_spte(kvm, it, SHADOW_NONPRESENT_VALUE))
    while is_shadow_present_pte(it.old_spte):
        if not (yield from tdp_mmu_set_spte_atomic(kvm, it, SHADOW_NONPRESENT_VALUE)):
            break
    return 0


def kvm_tdp_mmu_zap_invalidated_roots(kvm: "Kvm", shared: bool) -> Gen:
    """kvm_tdp_mmu_zap_invalidated_roots(): under mmu_lock (read when shared), walk the roots with the
    yield-safe iterator, zap each one scheduled to zap, then drop the reference the root list held --
    after the zap, so the root stays reachable by mmu-notifiers while the zap yields."""
    host = kvm.host
    if shared:
        yield from read_lock(host, kvm.mmu_lock)
    else:
        yield from write_lock(host, kvm.mmu_lock)
    for root in for_each_tdp_mmu_root_yield_safe(kvm, KVM_ALL_ROOTS):
        if root not in kvm.scheduled_to_zap:  # root->tdp_mmu_scheduled_root_to_zap
            continue
        kvm.scheduled_to_zap.remove(root)
        KVM_BUG_ON(not root.invalid, kvm, "kvm_tdp_mmu_zap_invalidated_roots", "!root->role.invalid")
        yield from tdp_mmu_zap_root(kvm, root, shared)
        kvm_tdp_mmu_put_root(kvm, root)
    if shared:
        read_unlock(host, kvm.mmu_lock)
    else:
        write_unlock(host, kvm.mmu_lock)
    return 0


def tdp_mmu_find_leaf_table(root: KvmMmuPage, gfn: int, sp_by_spt: dict[int, KvmMmuPage],
                            level: int = 1, host: "Host | None" = None) -> KvmMmuPage | None:
    """Walk to the table at `level` (4K by default) translating gfn, without taking steps (callers hold
    mmu_lock for write): None if a non-present entry or a huge leaf is met above it. With `host`, each
    table read is KASAN-checked (the walk's rcu_dereference(sptep) loads)."""
    sp = root
    for lv in range(root.level, level, -1):
        if host is not None and not kasan_check(host, sp.spt, False, "tdp_iter_next: rcu_dereference(sptep)"):
            return None
        s = sp.sptes[spte_index(gfn, lv)]
        if not is_shadow_present_pte(s) or is_last_spte(s, lv):
            return None
        sp = sp_by_spt[spte_to_pfn(s)]
    return sp


def tdp_mmu_iter_cond_resched(kvm: "Kvm", shared: bool) -> Gen:
    """tdp_mmu_iter_cond_resched() with can_yield: leave RCU, drop mmu_lock so a contending task can
    take it (cond_resched_rwlock_read/write), re-take both. MODEL: offered between leaf tables only
    (the kernel checks at every entry, after forward progress, when need_resched() or the lock is
    contended); there is nothing to flush first, as no zap here leaves a TLB flush pending across it."""
    host = kvm.host
    rcu_read_unlock(host)
    cond_resched_rwlock(host, kvm.mmu_lock)
    if shared:
        read_unlock(host, kvm.mmu_lock)
        yield from read_lock(host, kvm.mmu_lock)
    else:
        write_unlock(host, kvm.mmu_lock)
        yield from write_lock(host, kvm.mmu_lock)
    rcu_read_lock(host)
    return 0


def tdp_mmu_zap_leafs(kvm: "Kvm", root: KvmMmuPage, start: int, end: int, can_yield: bool = False) -> Gen:
    """tdp_mmu_zap_leafs(): zap every present leaf -- 4 KiB, or a 2 MiB one the range touches -- in
    [start, end) (mmu_lock held for write), yielding mmu_lock between leaf tables when the caller may
    block (range->may_block). For private memory guest_memfd split every 2 MiB leaf the range covers
    only in part beforehand (kvm_split_cross_boundary_leafs()), so a 2 MiB leaf zapped here is wholly
    in the range. MODEL: no 1 GiB leaves.
    """
    host = kvm.host
    lockdep_assert_held_write(host, kvm.mmu_lock)
    rcu_read_lock(host)
    gfn = start
    while gfn < end:
        block_end = min(end, (gfn | 511) + 1)
        if not host.current.rcu_nesting:  # the walk's kvm_tdp_mmu_read_spte()
            rcu_dereference_splat(host, "tdp_mmu_zap_leafs: kvm_tdp_mmu_read_spte(sptep)")
        l2 = tdp_mmu_find_leaf_table(root, gfn, kvm.sp_by_spt, 2, host)
        huge = l2.sptes[spte_index(gfn, 2)] if l2 is not None else SHADOW_NONPRESENT_VALUE
        if is_shadow_present_pte(huge) and is_large_pte(huge):
            yield from tdp_mmu_set_spte(kvm, TdpIter(l2, spte_index(gfn, 2), 2, gfn & ~511, huge),  # type: ignore[arg-type]
                                        SHADOW_NONPRESENT_VALUE)
            progress(host, "tdp_mmu_zap_leafs: a leaf zapped, the walk moves forward")
            if can_yield and block_end < end:
                yield from tdp_mmu_iter_cond_resched(kvm, False)
            gfn = block_end
            continue
        sp = tdp_mmu_find_leaf_table(root, gfn, kvm.sp_by_spt, 1, host)
        if sp is not None:
            for g in range(gfn, block_end):
                i = g & 511
                old = sp.sptes[i]
                if is_shadow_present_pte(old):
                    yield from tdp_mmu_set_spte(kvm, TdpIter(sp, i, 1, g, old), SHADOW_NONPRESENT_VALUE)
                    progress(host, "tdp_mmu_zap_leafs: a leaf zapped, the walk moves forward")
            if can_yield and block_end < end:
                yield from tdp_mmu_iter_cond_resched(kvm, False)
        gfn = block_end
    rcu_read_unlock(host)
    return 0


# --- huge page splitting (the S-EPT hugepage series) ----------------------------------------------
def tdp_mmu_split_huge_page(kvm: "Kvm", it: TdpIter, sp: KvmMmuPage, shared: bool) -> Gen:
    """tdp_mmu_split_huge_page(): fill the new table with the 512 4 KiB SPTEs the huge SPTE maps
    (make_small_spte()), then link it in the huge SPTE's place; for a mirror, the TDX module's entry is
    demoted first (kvm_x86_ops.split_external_spte) -- no vCPU may see the 4 KiB SPTEs before the
    S-EPT has them."""
    host = kvm.host
    head = spte_to_pfn(it.old_spte)
    tdp_mmu_init_child_sp(host, sp, it)
    for i in range(512):
        tdp_write_spte(host, sp, i, make_spte(head + i))
    if sp.is_mirror:
        ret = yield from kvm.ops.split_external_spte(kvm, it.gfn, it.level, it.old_spte, sp)
        if ret:
            return ret
    return (yield from tdp_mmu_link_sp(kvm, it, sp, shared))


def tdp_mmu_split_huge_pages_root(kvm: "Kvm", root: KvmMmuPage, start: int, end: int, shared: bool) -> Gen:
    """tdp_mmu_split_huge_pages_root(): split every 2 MiB leaf of `root` in [start, end) to 4 KiB.

    Each new sp is allocated by tdp_mmu_alloc_sp_for_split() with RCU and mmu_lock dropped (it may
    sleep), and for a mirror root the per-VM split cache is topped up in the same window when it runs
    low (the hugepage series' need_topup/topup_external_per_vm_split_cache); then the walk re-reads the
    entry (iter.yielded): another task may have split or zapped it meanwhile. An sp allocated but not
    used is freed at the end."""
    host = kvm.host
    sp: KvmMmuPage | None = None
    ret = 0
    rcu_read_lock(host)
    gfn = start & ~511
    while gfn < end:
        l2 = tdp_mmu_find_leaf_table(root, gfn, kvm.sp_by_spt, 2, host)
        old = l2.sptes[spte_index(gfn, 2)] if l2 is not None and not root.invalid else SHADOW_NONPRESENT_VALUE
        if not (is_shadow_present_pte(old) and is_large_pte(old)):
            gfn += 512
            continue
        topup = root.is_mirror and kvm.ops.need_topup_external_per_vm_split_cache(kvm, 2)
        if sp is None or topup:
            rcu_read_unlock(host)
            if shared:
                read_unlock(host, kvm.mmu_lock)
            else:
                write_unlock(host, kvm.mmu_lock)
            if topup:
                kvm.ops.topup_external_per_vm_split_cache(kvm, 2)
            if sp is None:
                sp = tdp_mmu_alloc_sp_for_split(kvm, root.is_mirror)
            if shared:
                yield from read_lock(host, kvm.mmu_lock)
            else:
                yield from write_lock(host, kvm.mmu_lock)
            rcu_read_lock(host)
            continue  # iter.yielded: re-read the entry
        if (ret := (yield from tdp_mmu_split_huge_page(kvm, TdpIter(l2, spte_index(gfn, 2), 2, gfn, old), sp, shared))):  # type: ignore[arg-type]
            break
        sp = None
        gfn += 512
    rcu_read_unlock(host)
    if sp is not None:
        yield from kvm.ops.tdp_mmu_free_unused_sp(kvm, sp)
    return ret


def kvm_split_cross_boundary_leafs(kvm: "Kvm", start: int, end: int) -> Gen:
    """kvm_split_cross_boundary_leafs() for the mirror roots (write mmu_lock held): split the 2 MiB
    leaves [start, end) covers only in part, so the zap that follows removes exactly the range (the
    guest_memfd pre-zap arch hook of the hugepage series; the guest's 4 KiB accept uses it on one gfn)."""
    lockdep_assert_held_write(kvm.host, kvm.mmu_lock)
    for root in for_each_tdp_mmu_root_yield_safe(kvm, KVM_MIRROR_ROOTS):
        for g in sorted({start & ~511, (end - 1) & ~511}):
            if not (start <= g and g + 512 <= end):
                if (ret := (yield from tdp_mmu_split_huge_pages_root(kvm, root, g, g + 1, False))):
                    kvm_tdp_mmu_put_root(kvm, root)  # leaving the yield-safe walk early
                    return ret
    return 0


# enum kvm_tdp_mmu_root_types (tdp_mmu.h) and enum kvm_gfn_range_filter (kvm_host.h)
KVM_INVALID_ROOTS = 1 << 0
KVM_DIRECT_ROOTS = 1 << 1
KVM_MIRROR_ROOTS = 1 << 2
KVM_VALID_ROOTS = KVM_DIRECT_ROOTS | KVM_MIRROR_ROOTS
KVM_ALL_ROOTS = KVM_VALID_ROOTS | KVM_INVALID_ROOTS
KVM_FILTER_SHARED = 1 << 0
KVM_FILTER_PRIVATE = 1 << 1


def kvm_gfn_range_filter_to_root_types(kvm: "Kvm", attr_filter: int) -> int:
    """kvm_gfn_range_filter_to_root_types() (a TD has mirrored TDP): PRIVATE -> mirror roots,
    SHARED -> direct roots."""
    types = 0
    if attr_filter & KVM_FILTER_PRIVATE:
        types |= KVM_MIRROR_ROOTS
    if attr_filter & KVM_FILTER_SHARED:
        types |= KVM_DIRECT_ROOTS
    return types


def tdp_mmu_root_match(root: KvmMmuPage, types: int) -> bool:
    """tdp_mmu_root_match(): an invalid root only with KVM_INVALID_ROOTS; then by mirror/direct."""
    if root.invalid and not types & KVM_INVALID_ROOTS:
        return False
    return bool(types & (KVM_MIRROR_ROOTS if root.is_mirror else KVM_DIRECT_ROOTS))


def kvm_tdp_mmu_unmap_gfn_range(kvm: "Kvm", start: int, end: int, attr_filter: int,
                                may_block: bool = False) -> Gen:
    """kvm_tdp_mmu_unmap_gfn_range(): roots matching the range's attribute filter, invalid ones included
    (types | KVM_INVALID_ROOTS), leaf zaps yielding when range->may_block."""
    types = kvm_gfn_range_filter_to_root_types(kvm, attr_filter) | KVM_INVALID_ROOTS
    for root in for_each_tdp_mmu_root_yield_safe(kvm, types):
        yield from tdp_mmu_zap_leafs(kvm, root, start, end, may_block)
    return 0


def kvm_tdp_mmu_zap_all(kvm: "Kvm") -> Gen:
    """kvm_tdp_mmu_zap_all() (mmu-notifier ->release, VM exit): every direct root, valid or invalid;
    "For TDX, mirror roots don't need handling in response to the mmu notifier"."""
    lockdep_assert_held_write(kvm.host, kvm.mmu_lock)
    for root in for_each_tdp_mmu_root_yield_safe(kvm, KVM_DIRECT_ROOTS | KVM_INVALID_ROOTS):
        yield from tdp_mmu_zap_root(kvm, root, False)
    return 0


def kvm_tdp_mmu_age_gfn_range(kvm: "Kvm", start: int, end: int, attr_filter: int) -> Generator[Op, object, bool]:
    """kvm_tdp_mmu_age_gfn_range() -> __kvm_tdp_mmu_age_gfn_range(): lockless (KVM_MMU_LOCKLESS_AGING),
    under rcu_read_lock() only, over the *valid* roots of the filter (for_each_valid_tdp_mmu_root_rcu):
    each present leaf's Accessed bit is cleared atomically (kvm_tdp_mmu_clear_spte_bits_atomic), the
    TLB is not flushed. Returns whether any leaf was young. A lockless walker of page tables another CPU
    may be freeing: what RCU-deferred freeing of page tables protects."""
    host = kvm.host
    young = False
    rcu_read_lock(host)
    if not host.current.rcu_nesting:
        rcu_dereference_splat(host, "__kvm_tdp_mmu_age_gfn_range: list_for_each_entry_rcu(tdp_mmu_roots)")
    types = kvm_gfn_range_filter_to_root_types(kvm, attr_filter)
    for root in [r for r in kvm.roots if not r.invalid and tdp_mmu_root_match(r, types)]:
        for gfn in range(start, end):
            sp, level = root, root.level
            while True:
                idx = spte_index(gfn, level)
                spte = yield from tdp_read_spte(host, sp, idx, "__kvm_tdp_mmu_age_gfn_range")
                if not is_shadow_present_pte(spte) or is_last_spte(spte, level):
                    break
                nxt = kvm.sp_by_spt.get(spte_to_pfn(spte))
                if nxt is None:
                    break
                sp, level = nxt, level - 1
            if is_shadow_present_pte(spte) and spte & SPTE_ACCESSED_MASK:
                young = True
                yield from tdp_cmpxchg_spte(host, sp, idx, spte, spte & ~SPTE_ACCESSED_MASK)
    rcu_read_unlock(host)
    return young


__all__ = ["kvm_tdp_mmu_map", "handle_removed_pt", "tdp_mmu_free_unused_sp", "make_spte"]
