"""The invariants of docs/facts.md section (f), each with a stable name, evaluated from the model's probe events.

Kernel debug checks the model already has (KASAN, lockdep, WARN/KVM_BUG_ON/TDX_BUG_ON) arrive as
`report()` events and are classified here; the rest are checked on the events themselves (a free, a
SEAMCALL, an SPTE write, a lock release) or at the end of the run. A failure the scenario's fault model
injected is answered the way the kernel intends (WARN, bug the VM, leak) and violates nothing; a
consequence of such a failure (a later WARN, the TDR that cannot be reclaimed) is "explained".
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..explore.runtime import Stop
from ..host.page_alloc import EXTERNAL_SPT, FREE, GUEST, LEAKED, OWNER_NAMES
from ..host.probe import Probe
from ..host.task import chain_from
from ..intmap import IntMap
from ..kvm.kvm_host import is_hkid_assigned
from ..kvm.spte import (
    FROZEN_SPTE,
    PT_PRESENT_MASK,
    is_last_spte,
    is_shadow_present_pte,
    spte_pfns,
    spte_to_pfn,
)
from ..metrics.metrics import Metrics
from ..tdx_module import errno as E
from ..tdx_module.pamt import PT_NAMES, PT_NDA, PT_PAMT
from ..tdx_module.sept import LEAF_PRESENT, NONLEAF_PRESENT, SEPT_FREE, SEPT_NAMES, entry_key
from .watchdog import (
    HUNG_TASK_SECS,
    RCU_STALL_SECS,
    SOFTLOCKUP_SECS,
    gen_chain,
    holder_of,
    hung_task_lines,
    rcu_stall_lines,
    sleeps,
    soft_lockup_lines,
)

if TYPE_CHECKING:
    from ..scenarios.world import World


def _model_chain(limit: int = 12) -> tuple[str, ...]:
    """host.task.callchain() as seen from the model code that called into the probe."""
    f = sys._getframe(1)
    while f is not None and f.f_globals.get("__name__", "").startswith("septlab.check"):
        f = f.f_back
    return chain_from(f, limit)


_RMAP_MULTI = -1  # Checker._rmap: the pfn is mapped by more than one SPTE (see _rmap_multi)

# The SEAMCALLs of the no-fail S-EPT removal, issued through tdh_do_no_vcpus() (b.3): KVM must turn a
# BUSY there into a kick and a retry, so an injected BUSY reaching TDX_BUG_ON is a violation too (D5).
NO_FAIL_LEAVES = frozenset({E.TDH_MEM_RANGE_BLOCK, E.TDH_MEM_TRACK, E.TDH_MEM_PAGE_REMOVE})


@dataclass(frozen=True)
class Invariant:
    name: str
    rule: str
    kernel: str
    fatal: bool = True  # stop the run at the first violation (memory is corrupt from here on)
    fix: str = ""


INVARIANTS: dict[str, Invariant] = {i.name: i for i in [
    Invariant("free-while-tdx-owned",
              "a page returns to the allocator only if its PAMT type is PT_NDA (never gifted, or REMOVEd/RECLAIMed)",
              "tdx_sept_free_private_spt, tdp_mmu_free_sp, tdx_free_control_page (f.1, f.2)"),
    Invariant("td-keyed-page-reused",
              "a page goes back to the allocator, or is handed out again, only once no cache line keyed with a TD's "
              "HKID (or the TDX global KeyID) can remain: PAGE.WBINVD with that HKID, or CACHE.WB before KEY.FREEID; "
              "after a failed leaf removal the kernel frees the folio anyway and relies on the bugged VM (explained)",
              "tdx_sept_remove_leaf_spte -> tdh_phymem_page_wbinvd_hkid, tdx_mmu_release_hkid -> "
              "tdh_phymem_cache_wb, tdx_reclaim_td_control_pages (b.3, b.6, f.12, D1)", fix="ce7b5695397b (window)"),
    Invariant("use-after-free",
              "no memory access or SEAMCALL references a page after it was freed",
              "KASAN; every SEAMCALL wrapper (f.3)"),
    Invariant("rcu-use-after-free",
              "page tables are freed only after a grace period that began after they were unlinked",
              "handle_removed_pt -> call_rcu(tdp_mmu_free_sp_rcu_callback) (f.5)", fix="7cca2d0b7e7d"),
    Invariant("double-free", "every page is freed exactly once", "KASAN double-free (f.3)"),
    Invariant("lock-context",
              "no non-softirq-safe lock that process context takes is taken in softirq (RCU callbacks)",
              "lockdep; tdx_pamt_put from tdp_mmu_free_sp_rcu_callback (f.6)", fatal=False,
              fix="110d4d263450 (moved the free out of the RCU callback)"),
    Invariant("sleep-in-atomic",
              "nothing that may sleep (mutex_lock, down_*, a GFP_KERNEL allocation, a cache topup that allocates, "
              "rcu_barrier) runs with a spinlock or mmu_lock held, inside rcu_read_lock() or in softirq",
              "might_sleep() / __might_resched(); tdx_pamt_get(cache=NULL) under mmu_lock (f.6, f.23, D3)",
              fatal=False),
    Invariant("lock-order",
              "the lock-class dependency graph recorded over the run has no cycle that lockdep calls a deadlock "
              "(read-read cycles of recursive readers excepted), and no task takes a lock class it already holds",
              "lockdep check_noncircular() / check_deadlock(): mmu_lock, pamt_lock, tdp_mmu_pages_lock, kvm->lock, "
              "vcpu->mutex, slots_lock, invalidate_lock, tdx_lock (b.0, D3)", fatal=False),
    Invariant("suspicious-rcu-usage",
              "every rcu_dereference() of an SPTE pointer (TDP iterator, is_mirror_sptep, sptep_to_sp) happens inside "
              "rcu_read_lock() or under its documented lockdep condition",
              "CONFIG_PROVE_RCU lockdep_rcu_suspicious() (f.5, D11)", fatal=False, fix="7cca2d0b7e7d"),
    Invariant("lockdep-assert",
              "every lockdep_assert_held*() holds: the lock is held, and in the asserted mode (held_read fails "
              "for a writer)",
              "lockdep_assert_held*() in tdp_mmu.c, tdx.c, mmu.c (b.0, f.18, D23)", fatal=False, fix="2ff14116982c"),
    Invariant("seamcall-unexpected-error",
              "no SEAMCALL fails unless the fault model injected it (the module's preconditions hold)",
              "TDX_BUG_ON* in tdx.c (f.7-f.13)"),
    Invariant("busy-in-no-fail-path",
              "TDX_OPERAND_BUSY from a TDX-module lock never reaches TDX_BUG_ON (KVM retries or returns -EBUSY "
              "where a SEAMCALL can meet a lock), and no BUSY, injected or not, reaches it from the no-fail S-EPT "
              "removal (RANGE.BLOCK, TRACK, PAGE.REMOVE), whose one retry, after every vCPU was kicked out of the "
              "guest, must not be BUSY",
              "tdh_do_no_vcpus, tdx_sept_remove_leaf_spte, tdx_track, tdx_vcpu_init (b.3, c.3, g.12, g.13)",
              fix="3d626ce5a8cc, 9a89894f30d5"),
    Invariant("kernel-warn",
              "no WARN/KVM_BUG_ON fires except as a consequence of an injected failure",
              "WARN_ON_ONCE / KVM_BUG_ON sites (c.4)", fatal=False),
    Invariant("leak-at-destroy",
              "after VM teardown every page is back in the allocator, except pages the kernel deliberately leaked",
              "kvm_mmu_uninit_tdp_mmu, tdx_vm_destroy (f.3, f.8)", fix="524a1e4e381f"),
    Invariant("pamt-refcount",
              "pamt_refcounts[R] counts exactly the pages of region R that need PAMT_4K; it never underflows",
              "tdx_pamt_get/tdx_pamt_put (f.21, f.22)", fatal=False),
    Invariant("mirror-sept-coherent",
              "outside FROZEN windows a mirror SPTE is present iff the S-EPT entry is (same pfn / S-EPT page)",
              "__tdp_mmu_set_spte_atomic, handle_changed_spte (f.15, f.16)", fix="28c77a037804"),
    Invariant("frozen-spte-left",
              "no SPTE stays FROZEN_SPTE after the thread that froze it drops mmu_lock",
              "__tdp_mmu_set_spte_atomic restore-on-failure (f.16, f.17)"),
    Invariant("mmu-lock-rules",
              "wait_for_sept_zap is set only inside a write-locked mmu_lock section (the mode of the lock at "
              "mirror zaps is checked by the kernel's asserts: lockdep-assert)",
              "lockdep_assert_held_write in tdx.c, tdh_do_no_vcpus (f.18)", fatal=False, fix="2ff14116982c"),
    Invariant("stale-spte",
              "no present SPTE in any root -- valid or invalid, mirror or direct, in use or not -- maps a page the "
              "host frees (so none can map one it reuses)",
              "mmu notifier invalidate_range_start / ->release, mmu_invalidate_retry_gfn, guest_memfd invalidation, "
              "kvm_tdp_mmu_zap_all, kvm_tdp_mmu_unmap_gfn_range (D6)"),
    Invariant("hung-task",
              "no task sleeps in the kernel (D state: a mutex, an rwsem, a completion, synchronize_srcu(), "
              "rcu_barrier(), wait_for_sept_zap) forever without progress: not for hung_task_timeout_secs (120 s "
              "of steps) in a random run, not on a fair cycle of the state graph in `check`; nor waits on "
              "another that spins in the kernel holding what it waits for (a synchronize_srcu() behind a "
              "vCPU's local fault retry)",
              "khungtaskd check_hung_uninterruptible_tasks(); tdx_handle_ept_violation's KVM_MEMSLOT_INVALID "
              "bail (g.17, D7)"),
    Invariant("soft-lockup",
              "no task runs (or spins on an rwlock/spinlock) forever without progress: a retry loop exits, a walk "
              "moves forward; not for 2 * watchdog_thresh (20 s of steps) in a random run, not on a fair cycle "
              "of the state graph in `check` (a livelock)",
              "kernel/watchdog.c soft-lockup detector; RET_PF_RETRY / local retry, tdp_mmu_iter_cond_resched()'s "
              "forward-progress rule, BUSY retries, FROZEN_SPTE spins (host/progress.py)"),
    Invariant("rcu-stall",
              "every grace period a callback waits for ends: no reader stays inside rcu_read_lock() forever "
              "(CONFIG_RCU_CPU_STALL_TIMEOUT, 21 s of steps, in a random run; a fair cycle or the end of the run "
              "in `check`)",
              "kernel/rcu/tree_stall.h; every rcu_read_lock() in the TDP MMU walks has its rcu_read_unlock() (f.5)"),
    Invariant("deadlock", "some task can always make progress until every task has finished",
              "the scheduler (all tasks blocked): reported as khungtaskd would, with who holds what"),
]}


@dataclass
class Violation:
    invariant: str
    step: int
    task: str
    title: str
    details: dict[str, Any] = field(default_factory=dict)
    pfns: tuple[int, ...] = ()

    def as_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.details.items() if isinstance(v, (int, str, bool, float, list, tuple)) or (
            isinstance(v, dict) and all(isinstance(x, (int, str, bool, float)) for x in v.values()))}
        return {"invariant": self.invariant, "step": self.step, "task": self.task, "title": self.title,
                "pfns": [f"{p:#x}" for p in self.pfns], "details": d}


class Checker(Probe):
    """Evaluates every invariant and collects metrics for one run."""

    def __init__(self, stop_on_fatal: bool = True):
        self.world: World | None = None
        self.violations: list[Violation] = []
        self.expected: list[dict[str, Any]] = []  # kernel-intended failure handling we saw
        self.metrics = Metrics()
        self.stop_on_fatal = stop_on_fatal
        self._reclaimed_at: dict[int, tuple[int, int]] = {}
        self._touched: dict[str, list[tuple[Any, int]]] = {}
        self.last_seamcall: tuple[int, int, bool] | None = None
        self._pamt_refs: dict[int, int] = {}
        # pfn -> the present SPTE mapping it, coded as (sp number << 9) | index, or _RMAP_MULTI for a page
        # mapped more than once (a page table is mapped once, a guest page by one mirror leaf), whose
        # codes are in _rmap_multi. An IntMap slot per mapped page (septlab/intmap.py) instead of a set
        # of (sp, index) tuples: ~300 bytes a page less at real sizes. The sp number is the checker's
        # own (_sps, in order of first SPTE write; sp_id is per CPU and could repeat): it means the same
        # sp whatever the order of writes, and only within one run -- all the reverse map is for.
        self._rmap = IntMap()
        self._rmap_multi: dict[int, set[int]] = {}
        self._sps: list[Any] = []  # sp number -> sp
        self._sp_number: dict[Any, int] = {}  # sp -> its number
        self._pamt_total = 0

    def attach(self, world: "World") -> None:
        self.world = world
        self.host = world.host
        self.pages = world.host.pages
        self.seam = world.host.seam
        self.kvm = world.kvm

    # --- helpers -------------------------------------------------------------------------------------
    def violate(self, name: str, title: str, pfns: tuple[int, ...] = (), **details: Any) -> None:
        if any(v.invariant == name and v.pfns == pfns and v.title == title for v in self.violations):
            return
        host = self.host
        self.violations.append(Violation(name, host.clock, host.current.name, title, details, pfns))
        if self.stop_on_fatal and INVARIANTS[name].fatal:
            raise Stop(name)

    def _in_use(self) -> int:
        return self.pages.in_use()

    # --- page events ---------------------------------------------------------------------------------
    def page_alloc(self, pfn: int, owner: int) -> None:
        if pfn in self.host.td_keyed:
            self._td_keyed(pfn, "reused", owner)
        m = self.metrics
        pa = self.pages
        c = pa.counts
        if c[owner] > m.peak_by_owner[owner]:
            m.peak_by_owner[owner] = c[owner]
        u = pa.total - c[FREE]  # _in_use(), inlined: this runs for every page handed out
        if u > m.peak_pages:
            m.peak_pages = u
        m.sample(self.host.clock, u)

    def page_owner(self, pfn: int, old: int, new: int) -> None:
        m = self.metrics
        if self.pages.counts[new] > m.peak_by_owner[new]:
            m.peak_by_owner[new] = self.pages.counts[new]

    def _deliberate(self, pfn: int, owner: int) -> Any:
        """The injected failure whose TDX_BUG_ON made the kernel give up on this guest page: after a
        failed leaf removal, E2+ returns -EIO and guest_memfd frees the folio (ce7b5695397b), accepted
        only because the VM is bugged. Once given up that way, the page's later lives (handed out and
        freed again, any owner) are the same accepted window. None for any other page or without that
        causal link (D17)."""
        fc = self.host.fault_causes
        given_up = fc.get(("freed", pfn))
        if given_up is not None or not self.kvm.bugged:
            return given_up
        cause = fc.get(pfn) if owner == GUEST else None
        if cause is not None:
            fc[("freed", pfn)] = cause
        return cause

    def _explained(self, name: str, title: str, cause: Any, pfn: int) -> None:
        from ..kvm.tdx import cause_desc

        self.expected.append({"kind": name, "title": title, "step": self.host.clock, "pfn": pfn,
                              "cause": cause_desc(cause)})

    def _td_keyed(self, pfn: int, how: str, owner: int) -> None:
        hkid = self.host.td_keyed[pfn]
        key = "the TDX global private KeyID" if hkid == 0 else f"HKID {hkid}"
        title = (f"BUG: TDX: page {pfn:#x} {how} while it may hold TD-private cache lines ({key})")
        cause = self._deliberate(pfn, owner)
        if cause is not None:
            self._explained("td-keyed-page-reused", title, cause, pfn)
            return
        self.violate("td-keyed-page-reused", title, (pfn,), pfn=pfn, hkid=hkid, owner=OWNER_NAMES[owner],
                     chain=_model_chain(), task=self.host.current.name)

    def _stale_sptes(self, pfn: int, how: str) -> None:
        """stale-spte: pfn leaves its owner while a live SPTE still maps it (the reverse map is kept from
        every SPTE write; a table that was itself freed maps nothing)."""
        users = self._rmap.get(pfn)
        if users is None:
            return
        sps = self._sps
        codes = self._rmap_multi[pfn] if users == _RMAP_MULTI else (users,)
        live = sorted(((sp, i) for sp, i in ((sps[c >> 9], c & 511) for c in codes)
                       if not sp.freed and sp.sptes[i] & PT_PRESENT_MASK and pfn in spte_pfns(sp.sptes[i])),
                      key=lambda e: (e[0].sp_id, e[1]))
        if not live:
            return
        sp, i = live[0]
        kind = "mirror" if sp.is_mirror else "direct"
        root = sp
        while root.parent is not None:
            root = root.parent
        root = root if root.is_root else None
        where = (f"{kind} sp {sp.sp_id} level {sp.level} entry {i} (gfn {sp.gfn + (i << (9 * (sp.level - 1))):#x})"
                 + ("" if root is None else f", root {root.sp_id} {'invalid' if root.invalid else 'valid'}"
                    f"{'' if root in self.kvm.roots else ', off the root list'}"))
        self.violate("stale-spte", f"BUG: KVM: page {pfn:#x} {how} while a present SPTE maps it: {where}", (pfn,),
                     spte_owner=kind, sp=sp.sp_id, entry=i, level=sp.level, chain=_model_chain(),
                     task=self.host.current.name)

    def page_free(self, pfn: int, old_owner: int) -> None:
        self._stale_sptes(pfn, "freed")
        pt = self.seam.pamt.type_of(pfn)
        if pt != PT_NDA:
            title = f"BUG: page {pfn:#x} freed while the TDX module owns it ({PT_NAMES.get(pt, pt)})"
            cause = self._deliberate(pfn, old_owner)
            if cause is not None:
                self._explained("free-while-tdx-owned", title, cause, pfn)
            else:
                self.violate("free-while-tdx-owned", title, (pfn,), ptype=PT_NAMES.get(pt, str(pt)),
                             owner=OWNER_NAMES[old_owner])
        if pfn in self.host.td_keyed:
            self._td_keyed(pfn, "returned to the page allocator", old_owner)
        r = self._reclaimed_at.pop(pfn, None)
        if r is not None:
            self.metrics.retained_page_steps += self.host.clock - r[0]
            self.metrics.retained_page_gps += self.host.rcu.gp_seq - r[1]
            self.metrics.sample_retained(self.host.clock, len(self._reclaimed_at))
        self.metrics.sample(self.host.clock, self._in_use() - 1)

    def page_reclaimed(self, pfn: int) -> None:
        if self.pages.state(pfn) == EXTERNAL_SPT:
            self._reclaimed_at[pfn] = (self.host.clock, self.host.rcu.gp_seq)
            self.metrics.sept_pages_reclaimed += 1
            self.metrics.sample_retained(self.host.clock, len(self._reclaimed_at))

    def page_leak(self, pfn: int, why: str) -> None:
        m = self.metrics
        m.leaked_pages += 1
        m.leak_reasons[why] = m.leak_reasons.get(why, 0) + 1

    # --- SEAMCALLs -----------------------------------------------------------------------------------
    def seamcall(self, leaf: int, err: int, injected: bool, pages: tuple[int, ...]) -> None:
        self.last_seamcall = (leaf, err, injected)
        self.metrics.count_seamcall(leaf, err, injected)
        if leaf == E.TDH_MEM_PAGE_DEMOTE and not err and not injected:
            self.metrics.splits += 1
            self.metrics.split_pamt_pages += len(pages) - 1  # (new S-EPT page, [2 PAMT pages])
        st = self.pages.state
        for p in pages:
            if st(p) == FREE:
                from ..tdx_module.errno import leaf_name

                self.violate("use-after-free", f"BUG: {leaf_name(leaf)} on freed page {p:#x}", (p,),
                             access=leaf_name(leaf), in_rcu_reader=False)

    # --- kernel reports ------------------------------------------------------------------------------
    def report(self, kind: str, title: str, **d: Any) -> None:
        pfn = d.get("pfn")
        pfns = (pfn,) if isinstance(pfn, int) and pfn >= 0 else ()
        if kind == "use-after-free":
            self.violate("rcu-use-after-free" if d.get("in_rcu_reader") else "use-after-free", title, pfns, **d)
        elif kind in ("double-free", "lock-context", "pamt-refcount", "sleep-in-atomic", "lock-order",
                      "suspicious-rcu-usage", "lockdep-assert", "hung-task"):
            self.violate(kind, title, pfns, **d)
        elif kind == "TDX_BUG_ON":
            if E.tdx_operand_busy(d.get("err", 0)) and (not d.get("injected") or d.get("leaf") in NO_FAIL_LEAVES):
                self.violate("busy-in-no-fail-path", title, pfns, holders=self._busy_holders(d.get("injected")), **d)
            elif d.get("injected") or d.get("explained"):
                self.expected.append({"kind": kind, "title": title, "step": self.host.clock,
                                      "cause": d.get("cause", "")})
            else:
                self.violate("seamcall-unexpected-error", title, pfns, **d)
        elif kind in ("KVM_BUG_ON", "WARN"):
            if d.get("explained") or d.get("injected"):
                self.expected.append({"kind": kind, "title": title, "step": self.host.clock,
                                      "cause": d.get("cause", "")})
            else:
                self.violate("kernel-warn", title, pfns, **d)
        else:
            self.violate("kernel-warn", title, pfns, **d)

    def _busy_holders(self, injected: Any) -> str:
        """Who held TDX-module locks when a BUSY reached TDX_BUG_ON (the report's 'holders=')."""
        if injected:
            return "none: injected by the fault model"
        out = [f"{t.task.name}: {t.op.what}" for t in self.world.threads  # type: ignore[union-attr]
               if not t.done and isinstance(t.op.obj, tuple) and t.op.obj[:1] == ("in-module",)]
        for td in self.seam.tds.values():
            for v in self.kvm.vcpus:
                vp = td.vcpus.get(v.tdvpr)
                if vp is not None and vp.entering:
                    tree = "S-EPT tree exclusive (zero-step), " if vp.sept_locked else ""
                    out.append(f"vcpu{v.vcpu_id}: inside TDH.VP.ENTER ({tree}TD epoch shared, TDR shared)")
                elif vp is not None and vp.in_guest_epoch >= 0:
                    out.append(f"vcpu{v.vcpu_id}: in the guest (TDR shared)")
        return "; ".join(out) or "none"

    # --- mirror SPTEs ------------------------------------------------------------------------------------
    def spte_write(self, sp: Any, idx: int, old: int, new: int) -> None:
        """Keep the reverse map (pfn -> SPTEs) for stale-spte; remember touched mirror entries for the
        coherence check at the next mmu_lock release. Each element of `_rmap` is read (get) and written
        exactly when the set of SPTEs mapping that pfn changes, as the set-valued map this replaces was
        (the footprints stay the same; _rmap_multi is not traced, a change there re-stores the element)."""
        rmap = self._rmap
        if old & PT_PRESENT_MASK or new & PT_PRESENT_MASK:
            num = self._sp_number.get(sp)
            if num is None:
                num = self._sp_number[sp] = len(self._sps)
                self._sps.append(sp)
            code = (num << 9) | idx
            multi = self._rmap_multi
            if old & PT_PRESENT_MASK:
                for pfn in spte_pfns(old):
                    users = rmap.get(pfn)
                    if users == code:
                        del rmap[pfn]
                    elif users == _RMAP_MULTI and code in multi[pfn]:
                        codes = multi[pfn]
                        codes.discard(code)
                        if len(codes) == 1:
                            rmap[pfn] = codes.pop()
                            del multi[pfn]
                        else:
                            rmap[pfn] = _RMAP_MULTI
            if new & PT_PRESENT_MASK:
                for pfn in spte_pfns(new):
                    users = rmap.get(pfn)
                    if users is None:
                        rmap[pfn] = code
                    elif users == _RMAP_MULTI:
                        if code not in multi[pfn]:
                            multi[pfn].add(code)
                            rmap[pfn] = _RMAP_MULTI
                    elif users != code:
                        multi[pfn] = {users, code}
                        rmap[pfn] = _RMAP_MULTI
        if sp.is_mirror:
            self._touched.setdefault(self.host.current.name, []).append((sp, idx))

    def lock_release(self, lock: str, mode: str) -> None:
        if lock != "mmu_lock":
            return
        if mode == "write" and self.kvm.tdx.wait_for_sept_zap:
            self.violate("mmu-lock-rules", "BUG: mmu_lock released for write with kvm_tdx->wait_for_sept_zap still set",
                         (), task=self.host.current.name)
        touched = self._touched.pop(self.host.current.name, None)
        if not touched:
            return
        kvm = self.kvm
        td = self.seam.tds.get(kvm.tdx.tdr)
        for sp, idx in touched:
            if sp.unlinked or sp.freed:
                continue
            v = sp.sptes[idx]
            gfn = sp.gfn + (idx << (9 * (sp.level - 1)))
            if v == FROZEN_SPTE:
                self.violate("frozen-spte-left",
                             f"BUG: mirror SPTE of gfn {gfn:#x} (L{sp.level}) left FROZEN_SPTE when mmu_lock was dropped",
                             (sp.spt,), gfn=gfn, level=sp.level)
                continue
            if td is None or not is_hkid_assigned(kvm.tdx):
                continue
            if kvm.bugged and "td" in self.host.fault_causes:
                continue  # the kernel bugged the VM on an injected failure: divergence is intended
            self._check_coherent(td, sp, idx, v, gfn)

    def _check_coherent(self, td: Any, sp: Any, idx: int, v: int, gfn: int) -> None:
        key = entry_key(sp.level, gfn)
        st = td.sept_state.get(key, SEPT_FREE)
        present = is_shadow_present_pte(v)
        if sp.level == 1 or (present and is_last_spte(v, sp.level)):  # a 4 KiB or 2 MiB leaf
            ok = (st in LEAF_PRESENT and td.sept_page[key] == spte_to_pfn(v)) if present else st not in LEAF_PRESENT
        else:
            if present:
                child = self.kvm.sp_by_spt.get(spte_to_pfn(v))
                ok = st in NONLEAF_PRESENT and child is not None and td.sept_page[key] == child.external_spt
            else:
                ok = st not in NONLEAF_PRESENT and st not in LEAF_PRESENT
        if not ok:
            self.violate("mirror-sept-coherent",
                         f"BUG: mirror SPTE {'present' if present else 'not present'} for gfn {gfn:#x} L{sp.level} "
                         f"but S-EPT entry is {SEPT_NAMES.get(st, st)}", (sp.spt,), gfn=gfn, level=sp.level,
                         sept_state=SEPT_NAMES.get(st, str(st)))

    # --- RCU / metrics -------------------------------------------------------------------------------
    def pamt_refcount(self, region: int, value: int) -> None:
        self._pamt_total += value - self._pamt_refs.get(region, 0)
        self._pamt_refs[region] = value
        if self._pamt_total > self.metrics.peak_pamt_refs:
            self.metrics.peak_pamt_refs = self._pamt_total

    def rcu_callback(self) -> None:
        self.metrics.rcu_callbacks += 1

    def grace_period(self, seq: int) -> None:
        self.metrics.grace_periods += 1

    # --- end of run ----------------------------------------------------------------------------------
    def finish(self, status: str, steps: int, blocked: list[str]) -> None:
        """End-of-run invariants: deadlock, leak-at-destroy, PAMT refcount balance."""
        self.metrics.steps = steps
        self.metrics.sample(steps, self._in_use())
        rcu = self.host.rcu
        if status in ("done", "deadlock") and rcu.callbacks and not rcu.has_work():
            # nothing can run any more and a grace period a callback waits for can never end
            title, lines, blockers = rcu_stall_lines(self.host, self.world.threads, RCU_STALL_SECS)  # type: ignore[union-attr]
            self._end_violation("rcu-stall", title, (), lines=lines, blocked_by=blockers)
        if status == "deadlock":
            title, extra = self._deadlock_report(blocked)
            self._end_violation("deadlock", title, (), blocked=blocked, **extra)
            return
        if status != "done":
            return
        pages = self.pages
        th = self.host.tdx
        # PAMT_4K pages backing a region that still has leaked TD pages are part of that deliberate
        # leak (their reference is never put); pamt-refcount below checks that the count is right.
        held = {p for r, pp in self.seam.pamt.backing.items() if th.pamt_refcounts.get(r, 0) > 0 for p in pp}
        left = [(p, o) for p, o in pages.pages_in_use() if o != LEAKED and p not in held]
        if left:
            by: dict[str, int] = {}
            for _, o in left:
                by[OWNER_NAMES[o]] = by.get(OWNER_NAMES[o], 0) + 1
            desc = ", ".join(f"{n} {k}" for k, n in sorted(by.items()))
            self._end_violation("leak-at-destroy", f"BUG: {len(left)} page(s) never freed after VM teardown: {desc}",
                                tuple(p for p, _ in left[:8]), by_owner=by)
        if th.dpamt:
            need: dict[int, int] = {}
            huge = self.seam.pamt.huge  # assigned as one 2 MiB page: the static PAMT_2M, no PAMT_4K reference
            for pfn, pt in self.seam.pamt.ptype.items():
                if pt not in (PT_NDA, PT_PAMT) and pfn >> 9 not in huge:
                    need[pfn >> 9] = need.get(pfn >> 9, 0) + 1
            # References the kernel keeps on purpose (tdx_pamt_keep: WBINVD failure returns before the
            # put, DPAMT v6 #09, D2): counted when the page is back with the host, with their cause.
            for key, cause in self.host.fault_causes.items():
                if isinstance(key, tuple) and key[0] == "pamt" and self.seam.pamt.type_of(key[1]) in (PT_NDA, PT_PAMT):
                    need[key[1] >> 9] = need.get(key[1] >> 9, 0) + 1
                    from ..kvm.tdx import cause_desc

                    self.expected.append({"kind": "pamt-refcount", "step": self.host.clock, "pfn": key[1],
                                          "title": f"PAMT_4K reference of page {key[1]:#x} kept on purpose",
                                          "cause": cause_desc(cause)})
            regions = set(need) | {r for r, c in th.pamt_refcounts.items() if c} | set(self.seam.pamt.backing)
            for r in sorted(regions):
                have = th.pamt_refcounts.get(r, 0)
                if have != need.get(r, 0) or (have > 0) != (r in self.seam.pamt.backing):
                    self._end_violation("pamt-refcount",
                                        f"BUG: pamt_refcounts[{r:#x}] = {have} after teardown, "
                                        f"{need.get(r, 0)} page(s) of the region still need PAMT_4K",
                                        (), region=r, refcount=have, expected=need.get(r, 0))

    def _deadlock_report(self, blocked: list[str]) -> tuple[str, dict[str, Any]]:
        """No task can run: what khungtaskd would print for each task asleep in the kernel, with who
        holds what it waits for (a task spinning on a lock would be a soft lockup; userspace waits are
        listed last)."""
        lines: list[str] = []
        user: list[str] = []
        first = ""
        for th in self.world.threads:  # type: ignore[union-attr]
            if th.done or th.task.daemon or th.op is None:
                continue
            if th.op.user:
                user.append(f"(userspace) {th.task.name}: {th.op.what}")
                continue
            chain = gen_chain(th.gen)
            if sleeps(th.op):
                more = hung_task_lines(th.task, HUNG_TASK_SECS, th.op.what, chain, holder_of(th.op))
            else:
                more = soft_lockup_lines(th.task, SOFTLOCKUP_SECS + 2, f"spinning: {th.op.what}", chain, False)
                more.append(f"  the lock is held by {holder_of(th.op) or '?'}")
            first = first or more[0]
            lines += more + [""]
        lines += user
        return (first or f"BUG: no task can make progress: {'; '.join(blocked)}"), {"lines": lines}

    def _end_violation(self, name: str, title: str, pfns: tuple[int, ...], **d: Any) -> None:
        self.violations.append(Violation(name, self.host.clock, "end-of-run", title, d, pfns))
