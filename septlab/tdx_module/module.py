"""The TDX module's SEAMCALL leaves: preconditions, effects, completion status, and the module's locks.

Each method models src/vmm_dispatcher/api_calls/<leaf>.c of TDX module 1.5 at the granularity KVM can
observe: it checks the preconditions docs/facts.md c.3 lists and either returns an error with no side
effect, or applies the whole effect and returns TDX_SUCCESS. MODEL: one package, one HKID per TD, no
TD_FATAL, no migration states. `septlab conformance` (septlab/conformance/) checks the leaves against
the module's own tables and lists where this model differs on purpose (docs/fidelity.md, Conformance).

Locks (docs/facts.md c.3, td.py). The module never waits: each lock is a try-lock, and a SEAMCALL that
cannot take one returns TDX_OPERAND_BUSY with the operand id of what was busy in the low bits
(api_error_with_operand_id()) and has no side effect. Who takes what, in the module's order (TDR
first, then the TDCS state checks, then the S-EPT tree, the walk, the entry); [operand id of a BUSY]:

* TDR (`Td.tdr_lock`, the TDR page's PAMT lock): exclusive in MNG.ADDCX, PAGE.ADD [RDX], MNG.INIT,
  KEY.CONFIG, MR.FINALIZE, VPFLUSHDONE, KEY.FREEID [RCX] and TDH.VP.INIT [TDR] (MODEL: the version-1
  leaf the kernel passes takes it exclusively, per 9a89894f30d5's changelog; 1.5.01's version 0 takes
  it shared); shared in SEPT.ADD, AUG, BLOCK, REMOVE, DEMOTE, VP.CREATE [RDX], TRACK [RCX], VP.ADDCX,
  VP.FLUSH, RECLAIM [TDR], and by TDH.VP.ENTER from the entry until the TD exit (td_exit.c drops it).
* S-EPT tree (`Td.sept_lock`, secure_ept_lock via lock_sept_check_and_walk_private_gpa()) [SEPT]:
  exclusive in BLOCK, shared in SEPT.ADD, AUG, REMOVE, DEMOTE (tdh_mem_page_demote.c takes it
  shared in 1.5.01 and in the DPAMT module alike); exclusive in TDH.VP.ENTER's zero-step stepping
  filter (td_entry_stepping_filter()).
* S-EPT entry (`Td.sept_entry_lock`, sept_lock_acquire_host()) [RCX]: SEPT.ADD, AUG, BLOCK, REMOVE,
  DEMOTE on their entry; guest TDCALLs (TDG.MEM.PAGE.ACCEPT) take it guest-side (not modelled).
* TD epoch (`Td.epoch_lock`) [TD_EPOCH]: exclusive in TRACK, shared in TDH.VP.ENTER
  (adjust_tlb_tracking_state()).
* MODEL: not modelled: the TDVPR lock, the TDCS op_state lock, the PAMT locks of the other pages
  (e.g. the 2M PAMT entry PAGE.REMOVE and DEMOTE lock), the KOT lock and the host-priority bit
  (TDX_OPERAND_BUSY_HOST_PRIORITY).

Windows. A method runs atomically, so an atomic leaf's locks only show as a check against holders
that span model steps. A leaf spans steps only where the module holds a lock across a window another
CPU can really hit; it is then an acquire half (`*_begin`: checks, try-locks; BUSY or held) and a
release half, the kernel wrapper (virt/seamcall.py) announcing a step in between:

* TDH.VP.ENTER: tdh_vp_enter_begin() takes the TDR shared, the epoch lock shared and, when the
  zero-step stepping filter is armed (the vCPU's last exit was an EPT violation on a private GPA),
  the S-EPT tree exclusively; tdh_vp_enter_complete() drops the epoch and tree locks as the guest
  starts to run; td_exit() drops the TDR. MODEL: the module holds the epoch lock only inside
  adjust_tlb_tracking_state(), and arms the filter only after STEPPING_EPF_THRESHOLD EPT violations
  at one guest RIP (KVM's local fault retry exists to stay below it); the model holds both locks for
  the whole entry step and arms the filter after one such exit, an over-approximation of when a
  running vCPU makes a host SEAMCALL BUSY (it also stands for guest TDCALLs, not modelled). The guest
  then runs holding only the TDR, so TRACK and REMOVE can still meet a vCPU in an old TLB epoch (a
  missing kick after TRACK stays visible).
* TDH.VP.INIT and TDH.MR.FINALIZE: the TDR exclusively, while the TDVPS is initialised / the
  measurement finalised.

Everything else is one step: S-EPT leaves (DEMOTE included), TRACK, the teardown leaves, and
PAGE.ADD, which KVM issues under mmu_lock and the guest_memfd invalidate lock, so no zap can meet it.
tdh_vp_enter(), tdh_vp_init() and tdh_mr_finalize() are begin + end in one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import errno as E
from .pamt import PAGES_PER_2M, PT_EPT, PT_NDA, PT_PAMT, PT_REG, PT_TDCX, PT_TDR, PT_TDVPR, Pamt
from .sept import (
    BLOCK_OF,
    BLOCKED_STATES,
    LEAF_PRESENT,
    PG_LEVEL_1G,
    PG_LEVEL_2M,
    PG_LEVEL_4K,
    ROOT_LEVEL,
    SEPT_BLOCKED,
    SEPT_FREE,
    SEPT_MAPPED,
    SEPT_NL_MAPPED,
    SEPT_PENDING,
    SEPT_REMOVED,
    entry_key,
)
from .td import (
    LOCK_EX,
    OP_STATE_INITIALIZED,
    OP_STATE_RUNNABLE,
    OP_STATE_UNINITIALIZED,
    TD_BLOCKED,
    TD_HKID_ASSIGNED,
    TD_KEYS_CONFIGURED,
    TD_TEARDOWN,
    Td,
    TdVcpu,
)


@dataclass(slots=True)
class TdxModule:
    """All module state: PAMT for every page, every TD keyed by its TDR pfn, DPAMT switch."""

    dpamt: bool = False
    pamt: Pamt = field(default_factory=Pamt)
    tds: dict[int, Td] = field(default_factory=dict)
    tdvpr_to_tdr: dict[int, int] = field(default_factory=dict)

    # --- helpers -------------------------------------------------------------------------------------
    def _gift_check(self, page: int, op: int = E.TDX_OPERAND_ID_RCX) -> int:
        """A 4 KiB page handed to the module must be PT_NDA and, with DPAMT, have its 4K PAMT installed
        (`op`: the operand id reported; MODEL: the older leaves report RCX whatever register held it)."""
        if self.pamt.type_of(page) != PT_NDA:
            return E.TDX_PAGE_METADATA_INCORRECT | op
        if self.dpamt and (page >> 9) not in self.pamt.backing:
            return E.TDX_PAMT_NOT_BACKED | op
        return E.TDX_SUCCESS

    def _gift_check_2m(self, head: int) -> int:
        """check_and_lock_free_range_hpa(page, OPERAND_ID_R8, PT_2MB) of a 2M PAGE.AUG (helpers.c): the page
        2 MiB-aligned (else TDX_OPERAND_INVALID|R8), its PAMT_2M entry PT_NDA and every 4 KiB page of the
        range PT_NDA (pamt_is_2mb_range_free(); else TDX_PAGE_METADATA_INCORRECT|R8). No PAMT_4K backing
        is needed: a 2 MiB page uses the static PAMT_2M. MODEL: under DPAMT a region whose PAMT_4K level
        is installed has a PT_PAMT (non-leaf) PAMT_2M entry, so it is refused the same way (read from the
        DPAMT module's tdh_phymem_pamt_add.c and pamt_demote(); its 2M AUG path itself is UNVERIFIED)."""
        if head % PAGES_PER_2M:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_R8
        if self.dpamt and (head >> 9) in self.pamt.backing:
            return E.TDX_PAGE_METADATA_INCORRECT | E.TDX_OPERAND_ID_R8
        ptype = self.pamt.ptype
        if any(p in ptype for p in range(head, head + PAGES_PER_2M)):  # absent from ptype == PT_NDA
            return E.TDX_PAGE_METADATA_INCORRECT | E.TDX_OPERAND_ID_R8
        return E.TDX_SUCCESS

    def _td(self, tdr: int) -> Td | None:
        return self.tds.get(tdr)

    @staticmethod
    def _tdr_busy(td: Td, ex: bool, op: int) -> int:
        """Try the TDR lock (check_lock_and_map_explicit_tdr() / lock_and_map_implicit_tdr()): shared
        fails only against an exclusive holder, exclusive against any holder."""
        if td.tdr_lock < 0 or (ex and td.tdr_lock):
            return E.TDX_OPERAND_BUSY | op
        return E.TDX_SUCCESS

    @staticmethod
    def _sept_ready(td: Td | None, initialized: bool = False, tdr_op: int = E.TDX_OPERAND_ID_RDX,
                    ex: bool = False) -> int:
        """The TDR lock (shared, or exclusive if `ex`; BUSY reports `tdr_op`), then
        check_td_in_correct_build_state(): lifecycle TD_KEYS_CONFIGURED and, for leaves that need the
        TDCS (S-EPT root, vCPUs), op_state past TDH.MNG.INIT."""
        if td is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_TDR
        if td.tdr_lock < 0 or (ex and td.tdr_lock):
            return E.TDX_OPERAND_BUSY | tdr_op
        if td.lifecycle != TD_KEYS_CONFIGURED:
            return E.TDX_TD_KEYS_NOT_CONFIGURED
        if initialized and td.op_state == OP_STATE_UNINITIALIZED:
            return E.TDX_OP_STATE_INCORRECT
        return E.TDX_SUCCESS

    @staticmethod
    def _op_state_in(td: Td, *allowed: int) -> int:
        """check_state_map_tdcs_and_lock()'s op-state check (include/auto_gen/op_state_lookup.c
        seamcall_state_lookup) for a leaf whose row allows only `allowed` of the modelled op-states."""
        return E.TDX_SUCCESS if td.op_state in allowed else E.TDX_OP_STATE_INCORRECT

    @staticmethod
    def _sept_busy(td: Td, ex: bool) -> int:
        """Try the S-EPT tree lock (lock_sept_check_and_walk_private_gpa(); operand OPERAND_ID_SEPT_TREE)."""
        if td.sept_lock < 0 or (ex and td.sept_lock):
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_SEPT
        return E.TDX_SUCCESS

    @staticmethod
    def _walk_ok(td: Td, gfn: int, level: int) -> bool:
        """The walk to `level` succeeds iff the entry one level up is NL_MAPPED: secure_ept_walk() stops at
        a leaf or at an entry with RWX clear, and RANGE.BLOCK clears RWX of a non-leaf (NL_BLOCKED)."""
        return level >= ROOT_LEVEL or td.sept_state.get(entry_key(level + 1, gfn), SEPT_FREE) == SEPT_NL_MAPPED

    @staticmethod
    def _is_tracked(td: Td, bepoch: int) -> bool:
        """helpers.h is_tlb_tracked(): BLOCK's epoch has been TRACKed and no vCPU still runs in it."""
        if bepoch < td.td_epoch - 1:
            return True
        return bepoch == td.td_epoch - 1 and td.epoch_refcount[bepoch & 1] == 0

    # --- TD construction -----------------------------------------------------------------------------
    def tdh_mng_create(self, tdr: int, hkid: int) -> int:
        """TDH.MNG.CREATE: TDR page becomes PT_TDR, TD in TD_HKID_ASSIGNED."""
        err = self._gift_check(tdr)
        if err:
            return err
        self.pamt.assign(tdr, PT_TDR, tdr)
        self.tds[tdr] = Td(tdr=tdr, hkid=hkid)
        return E.TDX_SUCCESS

    def tdh_mng_key_config(self, tdr: int) -> int:
        """TDH.MNG.KEY.CONFIG: program the HKID (MODEL: one package); -> TD_KEYS_CONFIGURED."""
        td = self._td(tdr)
        if td is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_TDR
        if td.tdr_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        if td.lifecycle == TD_KEYS_CONFIGURED:
            return E.TDX_KEY_CONFIGURED
        if td.lifecycle != TD_HKID_ASSIGNED:
            return E.TDX_KEY_STATE_INCORRECT
        td.lifecycle = TD_KEYS_CONFIGURED
        return E.TDX_SUCCESS

    def tdh_mng_addcx(self, tdr: int, page: int) -> int:
        """TDH.MNG.ADDCX: add a TDCS page (PT_TDCX, child count +1); TDR exclusive. MODEL: no op-state
        check (the module refuses a page beyond the TDCS minimum after MNG.INIT: conformance
        simplification mng-addcx-after-init)."""
        td = self._td(tdr)
        err = self._sept_ready(td, ex=True) or self._gift_check(page)
        if err:
            return err
        self.pamt.assign(page, PT_TDCX, tdr)
        td.child_count += 1
        return E.TDX_SUCCESS

    def tdh_mng_init(self, tdr: int) -> int:
        """TDH.MNG.INIT: TDCS initialised, op_state INITIALIZED; TDR exclusive."""
        td = self._td(tdr)
        err = self._sept_ready(td, tdr_op=E.TDX_OPERAND_ID_RCX, ex=True)
        if err:
            return err
        if td.op_state != 0:
            return E.TDX_OP_STATE_INCORRECT
        td.op_state = OP_STATE_INITIALIZED
        return E.TDX_SUCCESS

    def tdh_vp_create(self, tdr: int, tdvpr: int) -> int:
        """TDH.VP.CREATE: TDVPR page becomes PT_TDVPR owned by the TD. MODEL: also accepted after
        MR.FINALIZE, which the module refuses (conformance simplification vcpu-setup-after-finalize)."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True) or self._gift_check(tdvpr)
        if err:
            return err
        self.pamt.assign(tdvpr, PT_TDVPR, tdr)
        td.child_count += 1
        td.vcpus[tdvpr] = TdVcpu(tdvpr)
        self.tdvpr_to_tdr[tdvpr] = tdr
        return E.TDX_SUCCESS

    def tdh_vp_addcx(self, tdvpr: int, page: int) -> int:
        """TDH.VP.ADDCX: add a TDCX page to a vCPU (implicit TDR, shared; op_state past MNG.INIT, as
        check_state_map_tdcs_and_lock() demands. MODEL: also after MR.FINALIZE, which the module refuses:
        conformance simplification vcpu-setup-after-finalize)."""
        tdr = self.tdvpr_to_tdr.get(tdvpr)
        td = self._td(tdr) if tdr is not None else None
        err = self._sept_ready(td, initialized=True, tdr_op=E.TDX_OPERAND_ID_TDR) or self._gift_check(page)
        if err:
            return err
        self.pamt.assign(page, PT_TDCX, tdr)
        td.child_count += 1
        return E.TDX_SUCCESS

    def tdh_vp_init_begin(self, tdvpr: int) -> int:
        """TDH.VP.INIT, acquire half: checks, then the TDR exclusively (implicit TDR [TDR]; MODEL:
        the version-1 leaf, see the module docstring) for as long as it initialises the TDVPS. MODEL:
        also accepted after MR.FINALIZE (conformance simplification vcpu-setup-after-finalize)."""
        tdr = self.tdvpr_to_tdr.get(tdvpr)
        td = self._td(tdr) if tdr is not None else None
        err = self._sept_ready(td, initialized=True, tdr_op=E.TDX_OPERAND_ID_TDR, ex=True)
        if err:
            return err
        td.tdr_lock = LOCK_EX
        return E.TDX_SUCCESS

    def tdh_vp_init_end(self, tdvpr: int) -> None:
        """TDH.VP.INIT, release half: vCPU initialised and associated with the current CPU; TDR dropped."""
        td = self.tds[self.tdvpr_to_tdr[tdvpr]]
        vp = td.vcpus[tdvpr]
        vp.initialized = vp.associated = True
        td.tdr_lock = 0

    def tdh_vp_init(self, tdvpr: int) -> int:
        """TDH.VP.INIT in one step (begin + end)."""
        err = self.tdh_vp_init_begin(tdvpr)
        if not err:
            self.tdh_vp_init_end(tdvpr)
        return err

    def tdh_mr_finalize_begin(self, tdr: int) -> int:
        """TDH.MR.FINALIZE, acquire half: TDR exclusively [RCX], op_state must be INITIALIZED."""
        td = self._td(tdr)
        err = self._sept_ready(td, tdr_op=E.TDX_OPERAND_ID_RCX, ex=True)
        if err:
            return err
        if td.op_state != OP_STATE_INITIALIZED:
            return E.TDX_OP_STATE_INCORRECT
        td.tdr_lock = LOCK_EX
        return E.TDX_SUCCESS

    def tdh_mr_finalize_end(self, tdr: int) -> None:
        """TDH.MR.FINALIZE, release half: measurement finalised, op_state RUNNABLE (AUG legal, ADD not)."""
        td = self.tds[tdr]
        td.op_state = OP_STATE_RUNNABLE
        td.tdr_lock = 0

    def tdh_mr_finalize(self, tdr: int) -> int:
        """TDH.MR.FINALIZE in one step (begin + end)."""
        err = self.tdh_mr_finalize_begin(tdr)
        if not err:
            self.tdh_mr_finalize_end(tdr)
        return err

    # --- guest entry (TLB epochs, zero-step mitigation) ----------------------------------------------
    def tdh_vp_enter_begin(self, tdvpr: int) -> int:
        """TDH.VP.ENTER up to the guest entry (src/td_transitions/tdh_vp_enter.c): implicit TDR shared
        [TDR], then adjust_tlb_tracking_state() (epoch lock shared [TD_EPOCH]: the vCPU joins the
        current TLB epoch), then, if the last exit was an EPT violation on a private GPA, the zero-step
        stepping filter (td_entry_stepping_filter(): S-EPT tree exclusive [SEPT]). On BUSY the epoch
        reference is reverted (revert_tlb_tracking_state()): no side effect."""
        td = self._td(self.tdvpr_to_tdr.get(tdvpr, -1))
        err = self._sept_ready(td, initialized=True, tdr_op=E.TDX_OPERAND_ID_TDR) \
            or self._op_state_in(td, OP_STATE_RUNNABLE)
        if err:
            return err
        vp = td.vcpus[tdvpr]
        if not vp.initialized or vp.in_guest_epoch >= 0:
            return E.TDX_OP_STATE_INCORRECT
        if td.epoch_lock < 0:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_TD_EPOCH
        if vp.epf_stepping and td.sept_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_SEPT
        td.tdr_lock += 1
        td.epoch_lock += 1
        if vp.epf_stepping:
            td.sept_lock = LOCK_EX
            vp.sept_locked = True
        vp.entering = True
        vp.associated = True
        vp.in_guest_epoch = td.td_epoch
        td.epoch_refcount[td.td_epoch & 1] += 1
        return E.TDX_SUCCESS

    def tdh_vp_enter_complete(self, tdvpr: int) -> None:
        """TDH.VP.ENTER's entry completes (tdx_return_to_td()): the epoch and S-EPT tree locks are
        dropped, the guest runs in its epoch holding the TDR shared until the TD exit."""
        td = self.tds[self.tdvpr_to_tdr[tdvpr]]
        vp = td.vcpus[tdvpr]
        if vp.entering:
            vp.entering = False
            td.epoch_lock -= 1
        if vp.sept_locked:
            vp.sept_locked = False
            td.sept_lock = 0

    def tdh_vp_enter(self, tdvpr: int) -> int:
        """TDH.VP.ENTER in one step: the vCPU runs in the current TLB epoch until it exits."""
        err = self.tdh_vp_enter_begin(tdvpr)
        if not err:
            self.tdh_vp_enter_complete(tdvpr)
        return err

    def td_exit(self, tdvpr: int, private_epf: bool | None = None) -> None:
        """TD exit (not a SEAMCALL, td_exit.c): the vCPU leaves guest mode, drops its epoch reference and
        the TDR lock TDH.VP.ENTER took (and the entry's locks if it is kicked before the entry completes).
        `private_epf`: the exit is an EPT violation, on a private GPA or not (td_exit_epf_stepping_log()
        arms the next entry's stepping filter; MODEL: a first such exit arms it, any other resets it);
        None for an exit that leaves it as it was (an IPI)."""
        td = self.tds[self.tdvpr_to_tdr[tdvpr]]
        vp = td.vcpus[tdvpr]
        if private_epf is not None:
            vp.epf_stepping = private_epf
        self.tdh_vp_enter_complete(tdvpr)
        if vp.in_guest_epoch >= 0:
            td.epoch_refcount[vp.in_guest_epoch & 1] -= 1
            vp.in_guest_epoch = -1
            td.tdr_lock -= 1

    # --- S-EPT ---------------------------------------------------------------------------------------
    def tdh_mem_sept_add(self, tdr: int, gfn: int, level: int, page: int) -> int:
        """TDH.MEM.SEPT.ADD: link a new S-EPT page below the entry at `level` (entry -> NL_MAPPED)."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True) or self._sept_busy(td, False)
        if err:
            return err
        if level <= PG_LEVEL_4K or not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED
        key = entry_key(level, gfn)
        if key in td.sept_entry_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        if td.sept_state.get(key, SEPT_FREE) != SEPT_FREE:
            return E.TDX_EPT_ENTRY_NOT_FREE | E.TDX_OPERAND_ID_SEPT
        err = self._gift_check(page)
        if err:
            return err
        self.pamt.assign(page, PT_EPT, tdr)
        td.child_count += 1
        td.sept_state[key] = SEPT_NL_MAPPED
        td.sept_page[key] = page
        return E.TDX_SUCCESS

    def _map_leaf(self, tdr: int, gfn: int, level: int, page: int, runnable: bool, state: int) -> int:
        """PAGE.ADD (TDR exclusive, which excludes every S-EPT walker: no tree or entry lock; 4K only,
        verify_page_info_input(LVL_PT, LVL_PT)) or PAGE.AUG (TDR shared, S-EPT tree shared, the entry's
        host lock; 4K or 2M, verify_page_info_input(LVL_PT, LVL_PD)).

        A 2M AUG (tdh_mem_page_aug.c): the gfn 512-aligned (verify_page_info_input(), before the walk:
        TDX_OPERAND_INVALID|RCX); the walk to level 2 (the level-3 entry NL_MAPPED); the level-2 entry
        FREE or REMOVED (an S-EPT table there, NL_MAPPED, is TDX_EPT_ENTRY_STATE_INCORRECT); then the
        2 MiB page free (_gift_check_2m(), operand R8). Effect: its 512 pages PT_REG, child count
        + 512 (1 << 9 * level), the entry PENDING pointing at the head pfn. MODEL: a level the leaf does
        not take is TDX_EPT_WALK_FAILED (conformance pin leaf-level-error-code)."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True, ex=not runnable)
        if err:
            return err
        if (td.op_state == OP_STATE_RUNNABLE) != runnable:
            return E.TDX_OP_STATE_INCORRECT
        huge = runnable and level == PG_LEVEL_2M
        if huge and gfn % PAGES_PER_2M:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX
        if runnable and td.sept_lock < 0:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_SEPT
        if (level != PG_LEVEL_4K and not huge) or not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED
        key = entry_key(level, gfn)
        if key in td.sept_entry_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        allowed = (SEPT_FREE, SEPT_REMOVED) if runnable else (SEPT_FREE,)  # a.5: AUG also from REMOVED
        if td.sept_state.get(key, SEPT_FREE) not in allowed:
            return E.TDX_EPT_ENTRY_STATE_INCORRECT | E.TDX_OPERAND_ID_SEPT
        err = self._gift_check_2m(page) if huge else self._gift_check(page)
        if err:
            return err
        if huge:
            self.pamt.assign_2m(page, PT_REG, tdr)
            td.child_count += PAGES_PER_2M
        else:
            self.pamt.assign(page, PT_REG, tdr)
            td.child_count += 1
        td.sept_state[key] = state
        td.sept_page[key] = page
        return E.TDX_SUCCESS

    def tdh_mem_page_add(self, tdr: int, gfn: int, level: int, page: int) -> int:
        """TDH.MEM.PAGE.ADD: add an initial-image page before MR.FINALIZE (entry -> MAPPED). 4 KiB only,
        as tdh_mem_page_add.c (verify_page_info_input(LVL_PT, LVL_PT)): no 2M PAGE.ADD."""
        return self._map_leaf(tdr, gfn, level, page, runnable=False, state=SEPT_MAPPED)

    def tdh_mem_page_aug(self, tdr: int, gfn: int, level: int, page: int) -> int:
        """TDH.MEM.PAGE.AUG: add a 4 KiB or 2 MiB page to a runnable TD (entry -> PENDING until the guest
        accepts); see _map_leaf() for the 2M checks."""
        return self._map_leaf(tdr, gfn, level, page, runnable=True, state=SEPT_PENDING)

    def tdh_mem_range_block(self, tdr: int, gfn: int, level: int) -> int:
        """TDH.MEM.RANGE.BLOCK: block the entry and record the blocking epoch (TDR shared, S-EPT tree
        exclusive, the entry's host lock)."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True) or self._sept_busy(td, True)
        if err:
            return err
        if not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED
        key = entry_key(level, gfn)
        if key in td.sept_entry_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        st = td.sept_state.get(key, SEPT_FREE)
        if st in BLOCKED_STATES:
            return E.TDX_GPA_RANGE_ALREADY_BLOCKED
        blocked = BLOCK_OF.get(st)
        if blocked is None:
            return E.TDX_EPT_ENTRY_STATE_INCORRECT | E.TDX_OPERAND_ID_SEPT
        td.sept_state[key] = blocked
        td.sept_bepoch[key] = td.td_epoch
        return E.TDX_SUCCESS

    def tdh_mem_track(self, tdr: int) -> int:
        """TDH.MEM.TRACK: advance the TD epoch; busy while vCPUs still run in the previous one (TDR
        shared [RCX], epoch lock exclusive [TD_EPOCH])."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True, tdr_op=E.TDX_OPERAND_ID_RCX)
        if err:
            return err
        if td.epoch_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_TD_EPOCH
        if td.epoch_refcount[(td.td_epoch - 1) & 1]:
            return E.TDX_PREVIOUS_TLB_EPOCH_BUSY
        td.td_epoch += 1
        return E.TDX_SUCCESS

    def tdh_mem_page_remove(self, tdr: int, gfn: int, level: int) -> tuple[int, int]:
        """TDH.MEM.PAGE.REMOVE: unmap a 4 KiB or 2 MiB leaf; a runnable TD needs it blocked and TLB-tracked
        first (TDR shared, S-EPT tree shared, the entry's host lock). Returns the (head) pfn; a 2M leaf
        releases its 512 pages, child count - 512 (tdh_mem_page_remove.c: 1 << 9 * level). MODEL: no 1G
        leaves (a level-3 REMOVE is TDX_EPT_ENTRY_STATE_INCORRECT, conformance private-leaves-4k-only)."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True) or self._sept_busy(td, False)
        if err:
            return err, -1
        if not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED, -1
        key = entry_key(level, gfn)
        if key in td.sept_entry_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX, -1
        st = td.sept_state.get(key, SEPT_FREE)
        if level not in (PG_LEVEL_4K, PG_LEVEL_2M) or st not in LEAF_PRESENT:
            return E.TDX_EPT_ENTRY_STATE_INCORRECT | E.TDX_OPERAND_ID_SEPT, -1
        if td.op_state == OP_STATE_RUNNABLE:
            if st not in BLOCKED_STATES:
                return E.TDX_GPA_RANGE_NOT_BLOCKED, -1
            if not self._is_tracked(td, td.sept_bepoch[key]):
                return E.TDX_TLB_TRACKING_NOT_DONE, -1
        page = td.sept_page.pop(key)
        del td.sept_state[key]
        td.sept_bepoch.pop(key, None)
        if level == PG_LEVEL_2M:
            self.pamt.release_2m(page)
            td.child_count -= PAGES_PER_2M
        else:
            self.pamt.release(page)
            td.child_count -= 1
        return E.TDX_SUCCESS, page

    def tdh_mem_page_demote(self, tdr: int, gfn: int, level: int, new_sept_page: int,
                            pamt_pages: tuple[int, int] | None = None) -> int:
        """TDH.MEM.PAGE.DEMOTE (tdh_mem_page_demote.c): split the 2 MiB leaf at (gfn, level) into 512 4 KiB
        leaves in `new_sept_page`, which becomes the S-EPT page below the entry.

        Checks, in the module's order (each failure without side effect): the TDR shared [RDX] and the
        op-state (seamcall_state_lookup row 15: past MNG.INIT); verify_page_info_input(LVL_PD, LVL_PDPT):
        a level other than 2M or 1G, or a gfn not aligned to it, is TDX_OPERAND_INVALID|RCX; the S-EPT
        tree SHARED [SEPT]; the walk (TDX_EPT_WALK_FAILED|RCX); the entry's host lock [RCX]; the entry
        state (seamcall_sept_state_lookup row 15: MAPPED, BLOCKED, PENDING, PENDING_BLOCKED, else
        TDX_EPT_ENTRY_STATE_INCORRECT|RCX); when the op-state requires TLB tracking (RUNNABLE) the entry
        blocked (TDX_GPA_RANGE_NOT_BLOCKED|RCX) and its BLOCK epoch tracked (TDX_TLB_TRACKING_NOT_DONE|RCX):
        DEMOTE does not support NON-BLOCKING-RESIZE yet; the new S-EPT page PT_NDA and, with DPAMT,
        backed [R8] (_gift_check()); with DPAMT, pamt_demote()'s checks of `pamt_pages`, the two pages
        of the new PAMT_4K level [R12, R13]: PT_NDA and distinct, else TDX_PAGE_NOT_FREE (as the DPAMT
        module: its dynamic_pamt_4k_bitmap_set() fails for the second use of a page). Without DPAMT
        `pamt_pages` is ignored (the static PAMT_4K level takes the split).

        Effect: the new page PT_EPT, child count + 1; the entry NL_MAPPED with sept_page = the new page
        (the module unblocks the copy it splits: no RANGE.UNBLOCK needed); 512 level-1 entries MAPPED
        (from MAPPED / BLOCKED) or PENDING (from PENDING / PENDING_BLOCKED), entry i -> head + i; the 512
        pages counted as 4 KiB assignments of their region (Pamt.demote_2m()) and, with DPAMT, the
        region's PAMT_4K level installed from `pamt_pages` (Pamt.install_backing(), as PAMT.ADD).

        Statuses carry the module's operand ids (the older leaves keep pinned bare / S-EPT-tree ones:
        septlab/conformance/data/simplifications.yaml). UNVERIFIED: no `pamt_pages` under DPAMT is
        TDX_OPERAND_INVALID|R12 here; the module reads R12/R13 whatever the caller left there (pamt_demote():
        OPERAND_INVALID|R12 for an HPA with HKID bits, misaligned or above MAX_PA, OPERAND_ADDR_RANGE_ERROR
        |R12 outside every TDMR), so the exact code depends on those register values. Likewise UNVERIFIED:
        a PAMT page equal to the new S-EPT page is TDX_OPERAND_BUSY|R12 (pamt_walk()'s shared lock meets
        the exclusive PAMT lock DEMOTE holds on the new page). MODEL: 1G leaves are not modelled, so a
        level-3 DEMOTE meets a non-leaf or FREE entry; no L2 VMs (R9..R11); no interruption.
        """
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True)
        if err:
            return err
        if level not in (PG_LEVEL_2M, PG_LEVEL_1G) or gfn % (1 << (9 * (level - 1))):
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX
        err = self._sept_busy(td, False)
        if err:
            return err
        if not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED | E.TDX_OPERAND_ID_RCX
        key = entry_key(level, gfn)
        if key in td.sept_entry_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        st = td.sept_state.get(key, SEPT_FREE)
        if level != PG_LEVEL_2M or st not in LEAF_PRESENT:
            return E.TDX_EPT_ENTRY_STATE_INCORRECT | E.TDX_OPERAND_ID_RCX
        if td.op_state == OP_STATE_RUNNABLE:
            if st not in BLOCKED_STATES:
                return E.TDX_GPA_RANGE_NOT_BLOCKED | E.TDX_OPERAND_ID_RCX
            if not self._is_tracked(td, td.sept_bepoch[key]):
                return E.TDX_TLB_TRACKING_NOT_DONE | E.TDX_OPERAND_ID_RCX
        err = self._gift_check(new_sept_page, E.TDX_OPERAND_ID_R8)
        if err:
            return err
        if self.dpamt:
            err = self._demote_pamt_check(new_sept_page, pamt_pages)
            if err:
                return err
        head = td.sept_page[key]
        if self.dpamt:
            assert pamt_pages is not None
            self.pamt.install_backing(head >> 9, *pamt_pages)
        self.pamt.demote_2m(head)
        self.pamt.assign(new_sept_page, PT_EPT, tdr)
        td.child_count += 1
        child = SEPT_MAPPED if st in (SEPT_MAPPED, SEPT_BLOCKED) else SEPT_PENDING
        for i in range(PAGES_PER_2M):
            k = entry_key(PG_LEVEL_4K, gfn + i)
            td.sept_state[k] = child
            td.sept_page[k] = head + i
        td.sept_state[key] = SEPT_NL_MAPPED
        td.sept_page[key] = new_sept_page
        td.sept_bepoch.pop(key, None)
        return E.TDX_SUCCESS

    def _demote_pamt_check(self, new_sept_page: int, pamt_pages: tuple[int, int] | None) -> int:
        """pamt_demote() of the DPAMT module on DEMOTE's two PAMT pages (R12, R13); see
        tdh_mem_page_demote() for the UNVERIFIED parts."""
        if pamt_pages is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_R12
        for p, op in zip(pamt_pages, (E.TDX_OPERAND_ID_R12, E.TDX_OPERAND_ID_R13), strict=True):
            if p == new_sept_page:
                return E.TDX_OPERAND_BUSY | op
            if self.pamt.type_of(p) != PT_NDA:
                return E.TDX_PAGE_NOT_FREE | op
        if pamt_pages[0] == pamt_pages[1]:
            return E.TDX_PAGE_NOT_FREE | E.TDX_OPERAND_ID_R13
        return E.TDX_SUCCESS

    # --- teardown ------------------------------------------------------------------------------------
    def tdh_vp_flush(self, tdvpr: int) -> int:
        """TDH.VP.FLUSH: flush a vCPU's TLB/cache state and disassociate it from its CPU (lifecycle
        TD_KEYS_CONFIGURED first, as tdh_vp_flush.c checks it before the association), on whichever
        LP it is associated with."""
        return self.tdh_vp_flush_on(tdvpr, None)

    def tdh_mng_vpflushdone(self, tdr: int) -> int:
        """TDH.MNG.VPFLUSHDONE: every vCPU flushed -> TD_BLOCKED (no more S-EPT SEAMCALLs)."""
        td = self._td(tdr)
        if td is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_TDR
        if td.tdr_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        if td.lifecycle not in (TD_HKID_ASSIGNED, TD_KEYS_CONFIGURED):
            return E.TDX_LIFECYCLE_STATE_INCORRECT
        if any(vp.associated for vp in td.vcpus.values()):
            return E.TDX_FLUSHVP_NOT_DONE
        td.lifecycle = TD_BLOCKED
        return E.TDX_SUCCESS

    def tdh_phymem_cache_wb(self, resume: bool) -> int:
        """TDH.PHYMEM.CACHE.WB: write back caches for every blocked TD's HKID (MODEL: one package)."""
        ready = [td for td in self.tds.values() if td.lifecycle == TD_BLOCKED and not td.wbcache_done]
        if not ready:
            return E.TDX_NO_HKID_READY_TO_WBCACHE
        for td in ready:
            td.wbcache_done = True
        return E.TDX_SUCCESS

    def tdh_mng_key_freeid(self, tdr: int) -> int:
        """TDH.MNG.KEY.FREEID: release the HKID -> TD_TEARDOWN (pages can now be RECLAIMed)."""
        td = self._td(tdr)
        if td is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_TDR
        if td.tdr_lock:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        if td.lifecycle != TD_BLOCKED:
            return E.TDX_LIFECYCLE_STATE_INCORRECT
        if not td.wbcache_done:
            return E.TDX_WBCACHE_NOT_COMPLETE
        td.lifecycle = TD_TEARDOWN
        return E.TDX_SUCCESS

    def tdh_phymem_page_reclaim(self, page: int) -> int:
        """TDH.PHYMEM.PAGE.RECLAIM: give a TD page back to the host; its TD must be in TD_TEARDOWN."""
        ptype = self.pamt.type_of(page)
        if ptype in (PT_NDA, PT_PAMT):
            return E.TDX_PAGE_METADATA_INCORRECT | E.TDX_OPERAND_ID_RCX
        tdr = self.pamt.owner[page]
        td = self.tds[tdr]
        if ptype == PT_TDR and td.tdr_lock:  # the reclaimed page's own PAMT lock, exclusive
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RCX
        if ptype != PT_TDR and td.tdr_lock < 0:  # its owner's TDR, implicit and shared
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_TDR
        if td.lifecycle != TD_TEARDOWN:
            return E.TDX_LIFECYCLE_STATE_INCORRECT
        if ptype == PT_TDR:
            if td.child_count:
                return E.TDX_TD_ASSOCIATED_PAGES_EXIST
            del self.tds[tdr]
            for vp in td.vcpus:
                self.tdvpr_to_tdr.pop(vp, None)
        else:
            td.child_count -= 1
        self.pamt.release(page)
        return E.TDX_SUCCESS

    def tdh_phymem_page_wbinvd(self, page: int, hkid: int) -> int:
        """TDH.PHYMEM.PAGE.WBINVD: flush a host-owned (PT_NDA) page's cache lines for `hkid`."""
        if self.pamt.type_of(page) != PT_NDA or hkid < 0:
            return E.TDX_PAGE_METADATA_INCORRECT | E.TDX_OPERAND_ID_RCX
        return E.TDX_SUCCESS

    # --- Dynamic PAMT (E4) ---------------------------------------------------------------------------
    def tdh_phymem_pamt_add(self, region: int, p1: int, p2: int) -> int:
        """TDH.PHYMEM.PAMT.ADD: install the PAMT_4K level of a 2 MiB region from two host pages. A region
        mapped as one 2 MiB page has a PT_REG PAMT_2M entry: the DPAMT module's tdh_phymem_pamt_add.c
        refuses it with TDX_HPA_RANGE_NOT_FREE|RCX (value UNVERIFIED: errno.py's alias)."""
        if region in self.pamt.backing:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX
        if region in self.pamt.huge:
            return E.TDX_HPA_RANGE_NOT_FREE | E.TDX_OPERAND_ID_RCX
        for p in (p1, p2):
            if self.pamt.type_of(p) != PT_NDA:
                return E.TDX_PAGE_METADATA_INCORRECT
        self.pamt.install_backing(region, p1, p2)
        return E.TDX_SUCCESS

    def tdh_phymem_pamt_remove(self, region: int) -> tuple[int, tuple[int, int] | None]:
        """TDH.PHYMEM.PAMT.REMOVE: uninstall a region's PAMT_4K level; no 4K page in it may be assigned."""
        pages = self.pamt.backing.get(region)
        if pages is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX, None
        if self.pamt.assigned_in_region.get(region):
            return E.TDX_HPA_RANGE_NOT_FREE, None
        del self.pamt.backing[region]
        for p in pages:
            del self.pamt.ptype[p]
        return E.TDX_SUCCESS, pages

    # --- measurement and vCPU association (TDH.MR.EXTEND, associate_vcpu()) ---------------------------
    def tdh_mr_extend(self, tdr: int, gfn: int, chunk: int) -> int:
        """TDH.MR.EXTEND: extend MRTD with 256-byte chunk `chunk` of the PAGE.ADDed page at gfn (TDR
        exclusive [RDX], op_state INITIALIZED, the walk to a MAPPED leaf: 4K, or a 2M one if one maps gfn). MODEL: the digest itself is
        not kept; a chunk outside the page is TDX_OPERAND_INVALID (the 256-byte alignment check)."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True, ex=True)
        if err:
            return err
        if td.op_state != OP_STATE_INITIALIZED:  # seamcall_state_lookup[16]: INITIALIZED only
            return E.TDX_OP_STATE_INCORRECT
        if not 0 <= chunk < 16:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX
        key_2m = entry_key(PG_LEVEL_2M, gfn)
        if self._walk_ok(td, gfn, PG_LEVEL_2M) and td.sept_state.get(key_2m, SEPT_FREE) in LEAF_PRESENT:
            # the walk to the leaf ends on a 2M leaf: found only if present (RWX set), i.e. MAPPED
            ok = td.sept_state[key_2m] == SEPT_MAPPED
            return E.TDX_SUCCESS if ok else TDX_EPT_ENTRY_NOT_PRESENT | E.TDX_OPERAND_ID_RCX
        if not self._walk_ok(td, gfn, PG_LEVEL_4K):
            return TDX_EPT_ENTRY_NOT_PRESENT | E.TDX_OPERAND_ID_RCX
        if td.sept_state.get(entry_key(PG_LEVEL_4K, gfn), SEPT_FREE) != SEPT_MAPPED:  # sept_state_lookup[16]
            return TDX_EPT_ENTRY_NOT_PRESENT
        return E.TDX_SUCCESS

    def associate_vcpu_initial(self, tdvpr: int, lp: int) -> None:
        """associate_vcpu_initial() at the end of TDH.VP.INIT: the vCPU is associated with this LP."""
        td = self.tds[self.tdvpr_to_tdr[tdvpr]]
        td.vcpus[tdvpr].assoc_lpid = lp

    def tdh_vp_enter_begin_on(self, tdvpr: int, lp: int) -> int:
        """TDH.VP.ENTER on logical processor `lp`: after the TDR and TD-state checks,
        check_and_associate_vcpu() (a vCPU associated with another LP: TDX_VCPU_ASSOCIATED, no side
        effect), then tdh_vp_enter_begin(). The association stays even if the entry is then BUSY."""
        td = self._td(self.tdvpr_to_tdr.get(tdvpr, -1))
        err = self._sept_ready(td, initialized=True, tdr_op=E.TDX_OPERAND_ID_TDR)
        if err:
            return err
        vp = td.vcpus[tdvpr]
        if vp.initialized and vp.assoc_lpid not in (-1, lp):
            return TDX_VCPU_ASSOCIATED
        err = self.tdh_vp_enter_begin(tdvpr)
        if vp.initialized and (not err or E.tdx_operand_busy(err)):
            vp.assoc_lpid = lp
            vp.associated = True
        return err

    def tdh_vp_flush_on(self, tdvpr: int, lp: int | None) -> int:
        """TDH.VP.FLUSH on logical processor `lp` (tdh_vp_flush.c): TDVPR, implicit TDR shared [TDR],
        lifecycle TD_KEYS_CONFIGURED, then the vCPU must be associated with this very LP (None: any;
        TDX_VCPU_NOT_ASSOCIATED otherwise); success disassociates it."""
        tdr = self.tdvpr_to_tdr.get(tdvpr)
        if tdr is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX
        td = self.tds[tdr]
        if td.tdr_lock < 0:
            return E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_TDR
        if td.lifecycle != TD_KEYS_CONFIGURED:
            return E.TDX_TD_KEYS_NOT_CONFIGURED
        vp = td.vcpus[tdvpr]
        if not vp.associated or (lp is not None and vp.assoc_lpid != lp):
            return E.TDX_VCPU_NOT_ASSOCIATED
        vp.associated = False
        vp.assoc_lpid = -1
        return E.TDX_SUCCESS


# Module completion statuses the kernel header lacks (defined with the others in errno.py).
TDX_VCPU_ASSOCIATED = E.TDX_VCPU_ASSOCIATED
TDX_EPT_ENTRY_NOT_PRESENT = E.TDX_EPT_ENTRY_NOT_PRESENT
