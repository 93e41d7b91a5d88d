"""The TDX module's SEAMCALL leaves: preconditions, effects and completion status.

Each method models src/vmm_dispatcher/api_calls/<leaf>.c of TDX module 1.5 at the granularity KVM can
observe: it checks the preconditions docs/facts.md c.3 lists and either returns an error with no side
effect, or applies the whole effect and returns TDX_SUCCESS. Methods are atomic: the kernel wrapper
(virt/seamcall.py) yields a step *before* calling, so another CPU can interleave between SEAMCALLs
but never inside one. MODEL: one package, one HKID per TD, no TD_FATAL, no migration states.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import errno as E
from .pamt import PT_EPT, PT_NDA, PT_PAMT, PT_REG, PT_TDCX, PT_TDR, PT_TDVPR, Pamt
from .sept import (
    BLOCK_OF,
    BLOCKED_STATES,
    LEAF_PRESENT,
    NONLEAF_PRESENT,
    PG_LEVEL_4K,
    ROOT_LEVEL,
    SEPT_FREE,
    SEPT_MAPPED,
    SEPT_NL_MAPPED,
    SEPT_PENDING,
    SEPT_REMOVED,
    entry_key,
)
from .td import (
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
    def _gift_check(self, page: int) -> int:
        """A page handed to the module must be PT_NDA and, with DPAMT, have its 4K PAMT installed."""
        if self.pamt.type_of(page) != PT_NDA:
            return E.TDX_PAGE_METADATA_INCORRECT | E.TDX_OPERAND_ID_RCX
        if self.dpamt and (page >> 9) not in self.pamt.backing:
            return E.TDX_PAMT_NOT_BACKED | E.TDX_OPERAND_ID_RCX
        return E.TDX_SUCCESS

    def _td(self, tdr: int) -> Td | None:
        return self.tds.get(tdr)

    @staticmethod
    def _sept_ready(td: Td | None, initialized: bool = False) -> int:
        """check_td_in_correct_build_state(): lifecycle TD_KEYS_CONFIGURED and, for leaves that need
        the TDCS (S-EPT root, vCPUs), op_state past TDH.MNG.INIT."""
        if td is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_TDR
        if td.lifecycle != TD_KEYS_CONFIGURED:
            return E.TDX_TD_KEYS_NOT_CONFIGURED
        if initialized and td.op_state == OP_STATE_UNINITIALIZED:
            return E.TDX_OP_STATE_INCORRECT
        return E.TDX_SUCCESS

    @staticmethod
    def _walk_ok(td: Td, gfn: int, level: int) -> bool:
        """The walk to `level` succeeds iff the entry one level up is a present non-leaf."""
        return level >= ROOT_LEVEL or td.sept_state.get(entry_key(level + 1, gfn), SEPT_FREE) in NONLEAF_PRESENT

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
        if td.lifecycle == TD_KEYS_CONFIGURED:
            return E.TDX_KEY_CONFIGURED
        if td.lifecycle != TD_HKID_ASSIGNED:
            return E.TDX_KEY_STATE_INCORRECT
        td.lifecycle = TD_KEYS_CONFIGURED
        return E.TDX_SUCCESS

    def tdh_mng_addcx(self, tdr: int, page: int) -> int:
        """TDH.MNG.ADDCX: add a TDCS page (PT_TDCX, child count +1)."""
        td = self._td(tdr)
        err = self._sept_ready(td) or self._gift_check(page)
        if err:
            return err
        self.pamt.assign(page, PT_TDCX, tdr)
        td.child_count += 1
        return E.TDX_SUCCESS

    def tdh_mng_init(self, tdr: int) -> int:
        """TDH.MNG.INIT: TDCS initialised, op_state INITIALIZED."""
        td = self._td(tdr)
        err = self._sept_ready(td)
        if err:
            return err
        if td.op_state != 0:
            return E.TDX_OP_STATE_INCORRECT
        td.op_state = OP_STATE_INITIALIZED
        return E.TDX_SUCCESS

    def tdh_vp_create(self, tdr: int, tdvpr: int) -> int:
        """TDH.VP.CREATE: TDVPR page becomes PT_TDVPR owned by the TD."""
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
        """TDH.VP.ADDCX: add a TDCX page to a vCPU."""
        tdr = self.tdvpr_to_tdr.get(tdvpr)
        td = self._td(tdr) if tdr is not None else None
        err = self._sept_ready(td) or self._gift_check(page)
        if err:
            return err
        self.pamt.assign(page, PT_TDCX, tdr)
        td.child_count += 1
        return E.TDX_SUCCESS

    def tdh_vp_init(self, tdvpr: int) -> int:
        """TDH.VP.INIT: vCPU initialised and associated with the current CPU."""
        tdr = self.tdvpr_to_tdr.get(tdvpr)
        td = self._td(tdr) if tdr is not None else None
        err = self._sept_ready(td, initialized=True)
        if err:
            return err
        vp = td.vcpus[tdvpr]
        vp.initialized = vp.associated = True
        return E.TDX_SUCCESS

    def tdh_mr_finalize(self, tdr: int) -> int:
        """TDH.MR.FINALIZE: measurement finalised, op_state RUNNABLE (AUG legal, ADD not)."""
        td = self._td(tdr)
        err = self._sept_ready(td)
        if err:
            return err
        if td.op_state != OP_STATE_INITIALIZED:
            return E.TDX_OP_STATE_INCORRECT
        td.op_state = OP_STATE_RUNNABLE
        return E.TDX_SUCCESS

    # --- guest entry (TLB epochs) --------------------------------------------------------------------
    def tdh_vp_enter(self, tdvpr: int) -> int:
        """TDH.VP.ENTER (epoch part only): the vCPU runs in the current TLB epoch until it exits."""
        td = self._td(self.tdvpr_to_tdr.get(tdvpr, -1))
        err = self._sept_ready(td, initialized=True)
        if err:
            return err
        vp = td.vcpus[tdvpr]
        if not vp.initialized or vp.in_guest_epoch >= 0:
            return E.TDX_OP_STATE_INCORRECT
        vp.associated = True
        vp.in_guest_epoch = td.td_epoch
        td.epoch_refcount[td.td_epoch & 1] += 1
        return E.TDX_SUCCESS

    def td_exit(self, tdvpr: int) -> None:
        """TD exit (not a SEAMCALL): the vCPU leaves guest mode and drops its epoch reference."""
        td = self.tds[self.tdvpr_to_tdr[tdvpr]]
        vp = td.vcpus[tdvpr]
        if vp.in_guest_epoch >= 0:
            td.epoch_refcount[vp.in_guest_epoch & 1] -= 1
            vp.in_guest_epoch = -1

    # --- S-EPT ---------------------------------------------------------------------------------------
    def tdh_mem_sept_add(self, tdr: int, gfn: int, level: int, page: int) -> int:
        """TDH.MEM.SEPT.ADD: link a new S-EPT page below the entry at `level` (entry -> NL_MAPPED)."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True)
        if err:
            return err
        if level <= PG_LEVEL_4K or not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED
        key = entry_key(level, gfn)
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
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True)
        if err:
            return err
        if (td.op_state == OP_STATE_RUNNABLE) != runnable:
            return E.TDX_OP_STATE_INCORRECT
        if level != PG_LEVEL_4K or not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED
        key = entry_key(level, gfn)
        allowed = (SEPT_FREE, SEPT_REMOVED) if runnable else (SEPT_FREE,)  # a.5: AUG also from REMOVED
        if td.sept_state.get(key, SEPT_FREE) not in allowed:
            return E.TDX_EPT_ENTRY_STATE_INCORRECT | E.TDX_OPERAND_ID_SEPT
        err = self._gift_check(page)
        if err:
            return err
        self.pamt.assign(page, PT_REG, tdr)
        td.child_count += 1
        td.sept_state[key] = state
        td.sept_page[key] = page
        return E.TDX_SUCCESS

    def tdh_mem_page_add(self, tdr: int, gfn: int, level: int, page: int) -> int:
        """TDH.MEM.PAGE.ADD: add an initial-image page before MR.FINALIZE (entry -> MAPPED)."""
        return self._map_leaf(tdr, gfn, level, page, runnable=False, state=SEPT_MAPPED)

    def tdh_mem_page_aug(self, tdr: int, gfn: int, level: int, page: int) -> int:
        """TDH.MEM.PAGE.AUG: add a page to a runnable TD (entry -> PENDING until the guest accepts)."""
        return self._map_leaf(tdr, gfn, level, page, runnable=True, state=SEPT_PENDING)

    def tdh_mem_range_block(self, tdr: int, gfn: int, level: int) -> int:
        """TDH.MEM.RANGE.BLOCK: block the entry and record the blocking epoch."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True)
        if err:
            return err
        if not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED
        key = entry_key(level, gfn)
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
        """TDH.MEM.TRACK: advance the TD epoch; busy while vCPUs still run in the previous one."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True)
        if err:
            return err
        if td.epoch_refcount[(td.td_epoch - 1) & 1]:
            return E.TDX_PREVIOUS_TLB_EPOCH_BUSY
        td.td_epoch += 1
        return E.TDX_SUCCESS

    def tdh_mem_page_remove(self, tdr: int, gfn: int, level: int) -> tuple[int, int]:
        """TDH.MEM.PAGE.REMOVE: unmap a leaf; a runnable TD needs it blocked and TLB-tracked first."""
        td = self._td(tdr)
        err = self._sept_ready(td, initialized=True)
        if err:
            return err, -1
        if not self._walk_ok(td, gfn, level):
            return E.TDX_EPT_WALK_FAILED, -1
        key = entry_key(level, gfn)
        st = td.sept_state.get(key, SEPT_FREE)
        if level != PG_LEVEL_4K or st not in LEAF_PRESENT:
            return E.TDX_EPT_ENTRY_STATE_INCORRECT | E.TDX_OPERAND_ID_SEPT, -1
        if td.op_state == OP_STATE_RUNNABLE:
            if st not in BLOCKED_STATES:
                return E.TDX_GPA_RANGE_NOT_BLOCKED, -1
            if not self._is_tracked(td, td.sept_bepoch[key]):
                return E.TDX_TLB_TRACKING_NOT_DONE, -1
        page = td.sept_page.pop(key)
        del td.sept_state[key]
        td.sept_bepoch.pop(key, None)
        self.pamt.release(page)
        td.child_count -= 1
        return E.TDX_SUCCESS, page

    # --- teardown ------------------------------------------------------------------------------------
    def tdh_vp_flush(self, tdvpr: int) -> int:
        """TDH.VP.FLUSH: flush a vCPU's TLB/cache state and disassociate it from its CPU."""
        tdr = self.tdvpr_to_tdr.get(tdvpr)
        if tdr is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX
        vp = self.tds[tdr].vcpus[tdvpr]
        if not vp.associated:
            return E.TDX_VCPU_NOT_ASSOCIATED
        vp.associated = False
        return E.TDX_SUCCESS

    def tdh_mng_vpflushdone(self, tdr: int) -> int:
        """TDH.MNG.VPFLUSHDONE: every vCPU flushed -> TD_BLOCKED (no more S-EPT SEAMCALLs)."""
        td = self._td(tdr)
        if td is None:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_TDR
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
        """TDH.PHYMEM.PAMT.ADD: install the PAMT_4K level of a 2 MiB region from two host pages."""
        if region in self.pamt.backing:
            return E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_RCX
        for p in (p1, p2):
            if self.pamt.type_of(p) != PT_NDA:
                return E.TDX_PAGE_METADATA_INCORRECT
        self.pamt.backing[region] = (p1, p2)
        self.pamt.ptype[p1] = self.pamt.ptype[p2] = PT_PAMT
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
