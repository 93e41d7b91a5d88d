"""A small septlab-API model of the S-EPT page free lifecycle: the Python side of the SPIN twin.

bench/promela/sept_twin.pml has the same variables and the same atomic steps. Tasks are generators
yielding septlab `Op`s (septlab.host.task): the code between two yields is one atomic step, exactly one
Promela `atomic{}` block; an `OP_WAIT` predicate is the block's guard. Nothing here imports septlab's
KVM/TDX model: this is the *abstraction* of it that SPIN can also run.

Model (N S-EPT pages, N mirror slots, V vCPUs, W lockless walkers):
- page p: host owner state `owner[p]` (FREE, CACHED, ATTACHED, TDX_OWNED, RECLAIMED, FREED, LEAKED),
  module PAMT type `pamt[p]` (NDA, EPT) and `spfree[p]` (KVM's page-table struct -- the sp that the
  S-EPT page is the external half of -- was freed);
- slot s: mirror entry `mirror[s]` (EMPTY, FROZEN, PRESENT) and the page linked there `link[s]`;
- `hkid` (the TD's HKID is assigned), `vrun` (vCPU tasks still running: the VM's users);
- RCU: the callback queue `cbq` (page per callback, FIFO, at most N) with each callback's age in grace
  periods `cbage` (capped at 2: runnable at 2, the two-boundary rule of septlab/host/rcu.py), and per
  walker `rd[w]` (OUT, NEW: entered during the current grace period, OLD: blocks its end); `nold`
  counts OLD readers (derived, kept because the Promela guard needs it);
- `nfaults`: RECLAIM failures injected so far (at most `max_faults`, like septlab's `max_faults`).

Tasks (all locals not starting with "_" are state, as in septlab.explore.state.gen_position):
- vcpu v, slot v % N: ALLOC (topup: lowest FREE page -> CACHED; none -> give up), FREEZE (mirror
  EMPTY -> FROZEN, page ATTACHED; slot taken -> lost the race, the unused page goes back FREE),
  SEPT.ADD (page TDX_OWNED, PAMT EPT), PUBLISH (mirror PRESENT);
- walker w, slot w % N: READ (rcu_read_lock, read the mirror entry: a PRESENT entry's page is held),
  ACCESS (touch the held page table -> "rcu-use-after-free" if its sp was freed; rcu_read_unlock);
- teardown: once vrun == 0 release the HKID, then per slot ZAP (PRESENT -> EMPTY), RECLAIM (EPT -> NDA,
  page RECLAIMED; may fail by injection: the page is LEAKED), FREE (tdx-free only: free the S-EPT page
  now), CALL_RCU (queue the sp free); finally BARRIER (rcu_barrier: wait for the queue to drain, then
  "leak-at-destroy" if a page is neither free nor deliberately leaked);
- rcu (daemon): when there is work, run the head callback if it is 2 grace periods old (free the sp;
  rcu-free: also free the S-EPT page), else end a grace period (NEW readers become OLD, ages + 1).

Mutants (constructor flags, septlab's bug-* variants): free_before_reclaim, reclaim_hkid_assigned,
no_grace_period, free_after_failed_reclaim.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from septlab.check.invariants import Violation
from septlab.host.task import OP_RUN, OP_SEAMCALL, OP_WAIT, Op
from septlab.tdx_module import errno as E

# Values are the Promela model's (#define in sept_twin.pml).
FREE, CACHED, ATTACHED, TDX_OWNED, RECLAIMED, FREED, LEAKED = range(7)
OWNER_NAMES = ("FREE", "CACHED", "ATTACHED", "TDX_OWNED", "RECLAIMED", "FREED", "LEAKED")
NDA, EPT = 0, 1
EMPTY, FROZEN, PRESENT = 0, 1, 2
OUT, NEW, OLD = 0, 1, 2
NONE = 255  # no page (a Promela byte)

RECLAIM_LEAF = E.TDH_PHYMEM_PAGE_RECLAIM
RECLAIM_FAULT = E.TDX_OPERAND_INVALID  # the one failure the fault model may inject

MUTANTS = ("free_before_reclaim", "reclaim_hkid_assigned", "no_grace_period", "free_after_failed_reclaim")
# What catches each mutant (septlab's invariant names) and the Promela macro that turns it on.
CATCHES = {"free_before_reclaim": "free-while-tdx-owned", "reclaim_hkid_assigned": "seamcall-unexpected-error",
           "no_grace_period": "rcu-use-after-free", "free_after_failed_reclaim": "free-while-tdx-owned"}
PROMELA_MACRO = {m: "BUG_" + m.upper() for m in MUTANTS}

Gen = Generator[Op, object, None]


@dataclass(frozen=True)
class TwinConfig:
    n: int = 2  # S-EPT pages = mirror slots
    v: int = 2  # vCPU tasks
    w: int = 1  # lockless walkers (>= 1)
    rcu_free: bool = False  # False: tdx-free (free right after RECLAIM); True: rcu-free (free in the callback)
    max_faults: int = 1  # RECLAIM failures the fault model may inject
    free_before_reclaim: bool = False
    reclaim_hkid_assigned: bool = False
    no_grace_period: bool = False
    free_after_failed_reclaim: bool = False

    def __post_init__(self) -> None:
        if not (1 <= self.n <= 8 and 1 <= self.v <= 8 and 1 <= self.w <= 8 and 0 <= self.max_faults <= 8):
            raise ValueError(f"twin configuration out of range: {self}")

    @property
    def label(self) -> str:
        bugs = [m for m in MUTANTS if getattr(self, m)]
        return (f"N={self.n} V={self.v} W={self.w} {'rcu-free' if self.rcu_free else 'tdx-free'} "
                f"faults<={self.max_faults}" + (f" bug={'+'.join(bugs)}" if bugs else ""))

    def defines(self) -> list[str]:
        """The `spin -D...` flags that select the same configuration in sept_twin.pml."""
        out = [f"-DN={self.n}", f"-DV={self.v}", f"-DW={self.w}", f"-DMAXF={self.max_faults}"]
        if self.rcu_free:
            out.append("-DRCU_FREE")
        out += [f"-D{PROMELA_MACRO[m]}" for m in MUTANTS if getattr(self, m)]
        return out


# For footprints (septlab/explore/footprint.py): attributes that are not state, and the lists indexed by
# page or slot (their elements are separate keys; cbq/cbage are queues: whole values).
NOT_STATE = frozenset({"cfg", "violations", "stopped", "clock", "current"})
ELEMENT_LISTS = ("owner", "pamt", "spfree", "mirror", "link", "rd")


class TwinModel:
    """The shared data of the twin, with the steps' helpers. A new one per run (Executor.reset)."""

    def __init__(self, cfg: TwinConfig):
        self.cfg = cfg
        n = cfg.n
        self.n = n
        self.owner = [FREE] * n
        self.pamt = [NDA] * n
        self.spfree = [0] * n
        self.mirror = [EMPTY] * n
        self.link = [NONE] * n
        self.hkid = 1
        self.vrun = cfg.v
        self.cbq: list[int] = []  # pages, FIFO
        self.cbage: list[int] = []
        self.rd = [OUT] * cfg.w
        self.nold = 0
        self.nfaults = 0
        self.violations: list[Violation] = []
        self.stopped = False
        self.clock = 0
        self.current = ""

    # --- invariants ----------------------------------------------------------------------------------
    def violate(self, invariant: str, title: str) -> None:
        """A fatal violation (Promela: a failing assert): the explorer stops at this step."""
        self.violations.append(Violation(invariant, self.clock, self.current, title))
        self.stopped = True

    def free_ext(self, p: int) -> None:
        """Return S-EPT page p to the allocator (tdx_free_control_page / free_page)."""
        if self.pamt[p] != NDA:
            self.violate("free-while-tdx-owned", f"S-EPT page {p} freed while its PAMT type is PT_EPT")
        self.owner[p] = FREED

    def free_sp(self, p: int) -> None:
        """tdp_mmu_free_sp(): the page table struct goes; rcu-free also frees the S-EPT page with it."""
        self.spfree[p] = 1
        if self.cfg.rcu_free and self.owner[p] == RECLAIMED:
            self.free_ext(p)

    # --- RCU -----------------------------------------------------------------------------------------
    def rcu_has_work(self) -> bool:
        return bool(self.cbq) and (self.cbage[0] >= 2 or self.nold == 0)

    def drained(self) -> bool:
        return not self.cbq


# --- tasks: one yield per atomic step (one Promela atomic{} block each) ------------------------------

def vcpu_task(_m: TwinModel, v: int) -> Gen:
    s = v % _m.n
    p = NONE
    yield Op(OP_RUN, None, "ALLOC: top up the S-EPT page cache")
    for _k in range(_m.n):
        if _m.owner[_k] == FREE:
            p = _k
            break
    if p == NONE:  # -ENOMEM: the fault is retried later, not modelled
        _m.vrun -= 1
        return
    _m.owner[p] = CACHED
    yield Op(OP_RUN, None, "FREEZE: mirror entry EMPTY -> FROZEN")
    if _m.mirror[s] != EMPTY:  # lost the link race: tdp_mmu_free_unused_sp()
        _m.owner[p] = FREE
        _m.vrun -= 1
        return
    _m.mirror[s] = FROZEN
    _m.link[s] = p
    _m.owner[p] = ATTACHED
    yield Op(OP_SEAMCALL, None, "TDH.MEM.SEPT.ADD", leaf=E.TDH_MEM_SEPT_ADD, nofail=True)
    _m.pamt[p] = EPT
    _m.owner[p] = TDX_OWNED
    yield Op(OP_RUN, None, "PUBLISH: mirror entry FROZEN -> PRESENT")
    _m.mirror[s] = PRESENT
    _m.vrun -= 1


def walker_task(_m: TwinModel, w: int) -> Gen:
    s = w % _m.n
    p = NONE
    yield Op(OP_RUN, None, "READ: rcu_read_lock, read the mirror entry")
    _m.rd[w] = NEW
    if _m.mirror[s] == PRESENT:
        p = _m.link[s]
    yield Op(OP_RUN, None, "ACCESS: touch the page table, rcu_read_unlock")
    if p != NONE and _m.spfree[p]:
        _m.violate("rcu-use-after-free", f"walker {w} read page table {p} after it was freed")
    if _m.rd[w] == OLD:
        _m.nold -= 1
    _m.rd[w] = OUT


def teardown_task(_m: TwinModel) -> Gen:
    _c = _m.cfg
    i = 0
    p = NONE
    yield Op(OP_WAIT, lambda: _m.vrun == 0, "kvm_destroy_vm: wait for the vCPUs, release the HKID")
    if not _c.reclaim_hkid_assigned:
        _m.hkid = 0  # kvm_arch_pre_destroy_vm -> tdx_mmu_release_hkid (the post-Feb-2025 order)
    while i < _m.n:
        yield Op(OP_RUN, None, "ZAP: mirror entry PRESENT -> EMPTY")
        if _m.mirror[i] != PRESENT:
            i += 1
            continue
        p = _m.link[i]
        _m.mirror[i] = EMPTY
        _m.link[i] = NONE
        if _c.free_before_reclaim:
            yield Op(OP_RUN, None, "FREE the S-EPT page (BUG: before RECLAIM)")
            _m.free_ext(p)
        _freed_now = not _c.rcu_free and not _c.free_before_reclaim
        _err = yield Op(OP_SEAMCALL, None, "TDH.PHYMEM.PAGE.RECLAIM", leaf=RECLAIM_LEAF)
        if _m.hkid:
            _m.violate("seamcall-unexpected-error", f"RECLAIM of S-EPT page {p} failed: HKID still assigned")
        elif _err:
            _m.nfaults += 1
            if not _c.free_after_failed_reclaim:
                _m.owner[p] = LEAKED  # tdx_leak_page(): never touch it again
                _freed_now = False
        else:
            _m.pamt[p] = NDA
            _m.owner[p] = RECLAIMED
        if _freed_now:
            yield Op(OP_RUN, None, "FREE the S-EPT page (tdx-free)")
            _m.free_ext(p)
        yield Op(OP_RUN, None, "CALL_RCU: queue the page-table free")
        if _c.no_grace_period:
            _m.free_sp(p)  # BUG: freed at once while a lockless walker may hold it
        else:
            _m.cbq.append(p)
            _m.cbage.append(0)
        p = NONE
        i += 1
    if _c.reclaim_hkid_assigned:
        yield Op(OP_RUN, None, "release the HKID (BUG: after the MMU teardown)")
        _m.hkid = 0
    yield Op(OP_WAIT, _m.drained, "BARRIER: rcu_barrier, then check for leaks")
    for _k in range(_m.n):
        if _m.owner[_k] not in (FREE, FREED, LEAKED):
            _m.violate("leak-at-destroy", f"S-EPT page {_k} still {OWNER_NAMES[_m.owner[_k]]} after teardown")


def rcu_task(_m: TwinModel) -> Gen:
    while True:
        yield Op(OP_WAIT, _m.rcu_has_work, "RCU: run a callback or end a grace period")
        if _m.cbage[0] >= 2:
            _m.cbage.pop(0)
            _m.free_sp(_m.cbq.pop(0))
        else:
            for _k in range(len(_m.rd)):
                if _m.rd[_k] == NEW:
                    _m.rd[_k] = OLD
                    _m.nold += 1
            _m.cbage = [min(2, a + 1) for a in _m.cbage]
