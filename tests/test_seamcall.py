"""SEAMCALL preconditions, error codes and effects of the modelled TDX module (septlab.tdx_module.module).

Every test checks one precondition (the leaf must fail with the documented completion status and leave the
module untouched) or one effect (PAMT type/owner, TD lifecycle/op_state, child count, S-EPT entry state, TLB
epochs). Facts: docs/facts.md (a.4)-(a.7), (c.1)-(c.3), (e).
"""

from __future__ import annotations

import copy

import pytest

from septlab.host.host import Host
from septlab.host.task import OP_SEAMCALL
from septlab.tdx_module import errno as E
from septlab.tdx_module.module import TdxModule
from septlab.tdx_module.pamt import PT_EPT, PT_NDA, PT_PAMT, PT_REG, PT_RSVD, PT_TDCX, PT_TDR, PT_TDVPR, region_of
from septlab.tdx_module.sept import (
    PG_LEVEL_1G,
    PG_LEVEL_2M,
    PG_LEVEL_4K,
    PG_LEVEL_512G,
    SEPT_BLOCKED,
    SEPT_FREE,
    SEPT_MAPPED,
    SEPT_NL_BLOCKED,
    SEPT_NL_MAPPED,
    SEPT_PENDING,
    SEPT_PENDING_BLOCKED,
    SEPT_REMOVED,
    entry_key,
)
from septlab.tdx_module.td import (
    OP_STATE_INITIALIZED,
    OP_STATE_RUNNABLE,
    OP_STATE_UNINITIALIZED,
    TD_BLOCKED,
    TD_HKID_ASSIGNED,
    TD_KEYS_CONFIGURED,
    TD_TEARDOWN,
)
from septlab.virt import seamcall as S

# --- pages (pfns) and addresses -------------------------------------------------------------------------
# All TD pages live in 2 MiB region 8 (pfns 0x1000..0x11ff) so one PAMT.ADD backs them all under DPAMT.
TDR = 0x1000
TDCS = 0x1001
TDVPR = 0x1002
TDCX = 0x1003
TDVPR2 = 0x1004
SEPT_PAGE = {PG_LEVEL_512G: 0x1014, PG_LEVEL_1G: 0x1013, PG_LEVEL_2M: 0x1012}  # page linked below that level
DATA = 0x1020
DATA2 = 0x1021
SPARE = 0x1030
HKID = 7
REGION = region_of(TDR)
PAMT_PAGES = (0x9000, 0x9001)  # region 0x48, never needs backing itself
OTHER_REGION_PAGE = 0x5000  # region 0x28, never backed in these tests

# A gfn with a different, non-zero index at every level, so a wrong entry_key level/shift shows up.
GFN = (2 << 27) | (3 << 18) | (4 << 9) | 5
GFN_SAME_2M = GFN + 1  # same level-2/3/4 entries, different 4K entry
GFN_OTHER_512G = GFN + (1 << 27)  # different level-4 entry

STAGES = ("created", "keys", "initialized", "vcpu", "runnable", "blocked", "wbcache", "teardown")


def ok(err: int) -> None:
    assert err == E.TDX_SUCCESS, E.err_name(err)


def make_td(stage: str, dpamt: bool = False, vcpu: bool = True) -> TdxModule:
    """A module holding one TD (TDR) built up to `stage` (see STAGES); every step must succeed.

    "initialized" includes one TDCS page (TDH.MNG.ADDCX) and TDH.MNG.INIT; "vcpu" one vCPU (TDVPR with one
    TDCX page, initialised, hence associated); "blocked" flushes the vCPU and runs VPFLUSHDONE.
    """
    assert stage in STAGES
    upto = STAGES.index(stage)
    m = TdxModule(dpamt=dpamt)
    if dpamt:
        ok(m.tdh_phymem_pamt_add(REGION, *PAMT_PAGES))
    ok(m.tdh_mng_create(TDR, HKID))
    if upto >= STAGES.index("keys"):
        ok(m.tdh_mng_key_config(TDR))
    if upto >= STAGES.index("initialized"):
        ok(m.tdh_mng_addcx(TDR, TDCS))
        ok(m.tdh_mng_init(TDR))
    if upto >= STAGES.index("vcpu") and vcpu:
        ok(m.tdh_vp_create(TDR, TDVPR))
        ok(m.tdh_vp_addcx(TDVPR, TDCX))
        ok(m.tdh_vp_init(TDVPR))
    if upto >= STAGES.index("runnable"):
        ok(m.tdh_mr_finalize(TDR))
    if upto >= STAGES.index("blocked"):
        if vcpu:
            ok(m.tdh_vp_flush(TDVPR))
        ok(m.tdh_mng_vpflushdone(TDR))
    if upto >= STAGES.index("wbcache"):
        ok(m.tdh_phymem_cache_wb(False))
    if upto >= STAGES.index("teardown"):
        ok(m.tdh_mng_key_freeid(TDR))
    return m


def add_tables(m: TdxModule, gfn: int = GFN, lowest: int = PG_LEVEL_2M, pages: dict[int, int] | None = None) -> None:
    """SEPT.ADD at levels 4 .. `lowest` so that the walk to level `lowest - 1` succeeds."""
    pages = pages or SEPT_PAGE
    for level in range(PG_LEVEL_512G, lowest - 1, -1):
        ok(m.tdh_mem_sept_add(TDR, gfn, level, pages[level]))


def td_with_leaf(stage: str, leaf_state: int = SEPT_MAPPED) -> TdxModule:
    """A TD at `stage` ("initialized"/"vcpu" -> PAGE.ADD, "runnable" -> PAGE.AUG) with DATA mapped at GFN."""
    pre = stage != "runnable"
    m = make_td(stage)
    add_tables(m)
    if pre:
        ok(m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, DATA))
    else:
        ok(m.tdh_mem_page_aug(TDR, GFN, PG_LEVEL_4K, DATA))
    assert m.tds[TDR].sept_state[entry_key(PG_LEVEL_4K, GFN)] == leaf_state
    return m


def snapshot(m: TdxModule) -> TdxModule:
    return copy.deepcopy(m)


def leaf_key(gfn: int = GFN) -> int:
    return entry_key(PG_LEVEL_4K, gfn)


# =========================================================================================================
# errno: leaf numbers and status values (facts c.1, c.2)
# =========================================================================================================
LEAVES_C1 = [
    ("TDH_MNG_ADDCX", "TDH.MNG.ADDCX", 1),
    ("TDH_MEM_PAGE_ADD", "TDH.MEM.PAGE.ADD", 2),
    ("TDH_MEM_SEPT_ADD", "TDH.MEM.SEPT.ADD", 3),
    ("TDH_VP_ADDCX", "TDH.VP.ADDCX", 4),
    ("TDH_MEM_PAGE_AUG", "TDH.MEM.PAGE.AUG", 6),
    ("TDH_MEM_RANGE_BLOCK", "TDH.MEM.RANGE.BLOCK", 7),
    ("TDH_MNG_KEY_CONFIG", "TDH.MNG.KEY.CONFIG", 8),
    ("TDH_MNG_CREATE", "TDH.MNG.CREATE", 9),
    ("TDH_VP_CREATE", "TDH.VP.CREATE", 10),
    ("TDH_MEM_PAGE_DEMOTE", "TDH.MEM.PAGE.DEMOTE", 15),
    ("TDH_MR_EXTEND", "TDH.MR.EXTEND", 16),
    ("TDH_MR_FINALIZE", "TDH.MR.FINALIZE", 17),
    ("TDH_VP_FLUSH", "TDH.VP.FLUSH", 18),
    ("TDH_MNG_VPFLUSHDONE", "TDH.MNG.VPFLUSHDONE", 19),
    ("TDH_MNG_KEY_FREEID", "TDH.MNG.KEY.FREEID", 20),
    ("TDH_MNG_INIT", "TDH.MNG.INIT", 21),
    ("TDH_VP_INIT", "TDH.VP.INIT", 22),
    ("TDH_PHYMEM_PAGE_RECLAIM", "TDH.PHYMEM.PAGE.RECLAIM", 28),
    ("TDH_MEM_PAGE_REMOVE", "TDH.MEM.PAGE.REMOVE", 29),
    ("TDH_MEM_TRACK", "TDH.MEM.TRACK", 38),
    ("TDH_PHYMEM_CACHE_WB", "TDH.PHYMEM.CACHE.WB", 40),
    ("TDH_PHYMEM_PAGE_WBINVD", "TDH.PHYMEM.PAGE.WBINVD", 41),
    ("TDH_PHYMEM_PAMT_ADD", "TDH.PHYMEM.PAMT.ADD", 58),
    ("TDH_PHYMEM_PAMT_REMOVE", "TDH.PHYMEM.PAMT.REMOVE", 59),
]


@pytest.mark.parametrize("const,name,number", LEAVES_C1, ids=[c for c, _, _ in LEAVES_C1])
def test_leaf_number_matches_kernel(const: str, name: str, number: int) -> None:
    assert getattr(E, const) == number
    assert E.LEAF_NAMES[number] == name
    assert E.LEAF_BY_NAME[name] == number
    assert E.leaf_name(number) == name


def test_leaf_table_has_no_unknown_leaves() -> None:
    assert set(E.LEAF_NAMES) == {n for _, _, n in LEAVES_C1}
    assert E.leaf_name(99) == "SEAMCALL#99"


ERRORS_C2 = [
    ("TDX_SUCCESS", 0),
    ("TDX_NON_RECOVERABLE_VCPU", 0x4000000100000000),
    ("TDX_NON_RECOVERABLE_TD", 0x4000000200000000),  # kernel value, not the ABI header's 0x6000...
    ("TDX_INTERRUPTED_RESUMABLE", 0x8000000300000000),
    ("TDX_OPERAND_INVALID", 0xC000010000000000),
    ("TDX_OPERAND_BUSY", 0x8000020000000000),
    ("TDX_PREVIOUS_TLB_EPOCH_BUSY", 0x8000020100000000),
    ("TDX_SYS_BUSY", 0x8000020200000000),
    ("TDX_PAGE_METADATA_INCORRECT", 0xC000030000000000),
    ("TDX_VCPU_NOT_ASSOCIATED", 0x8000070200000000),
    ("TDX_KEY_GENERATION_FAILED", 0x8000080000000000),
    ("TDX_KEY_STATE_INCORRECT", 0xC000081100000000),
    ("TDX_KEY_CONFIGURED", 0x0000081500000000),
    ("TDX_NO_HKID_READY_TO_WBCACHE", 0x0000082100000000),
    ("TDX_FLUSHVP_NOT_DONE", 0x8000082400000000),
    ("TDX_EPT_WALK_FAILED", 0xC0000B0000000000),
    ("TDX_EPT_ENTRY_STATE_INCORRECT", 0xC0000B0D00000000),
    # module codes not in the kernel header
    ("TDX_TD_KEYS_NOT_CONFIGURED", 0x8000081000000000),
    ("TDX_LIFECYCLE_STATE_INCORRECT", 0xC000060700000000),
    ("TDX_TD_ASSOCIATED_PAGES_EXIST", 0xC000040000000000),
    ("TDX_TD_FATAL", 0xE000060400000000),
    ("TDX_OP_STATE_INCORRECT", 0xC000060800000000),
    ("TDX_WBCACHE_NOT_COMPLETE", 0x8000081700000000),
    ("TDX_GPA_RANGE_NOT_BLOCKED", 0xC0000B0600000000),
    ("TDX_GPA_RANGE_ALREADY_BLOCKED", 0x00000B0700000000),
    ("TDX_TLB_TRACKING_NOT_DONE", 0xC0000B0800000000),
    ("TDX_EPT_ENTRY_FREE", 0xC0000B0100000000),
    ("TDX_EPT_ENTRY_NOT_FREE", 0xC0000B0200000000),
    ("TDX_EPT_PAGE_NOT_FREE", 0xC0000B0E00000000),
    ("TDX_OPERAND_ADDR_RANGE_ERROR", 0xC000010100000000),
]


@pytest.mark.parametrize("name,value", ERRORS_C2, ids=[n for n, _ in ERRORS_C2])
def test_error_value_matches_tdx_errno(name: str, value: int) -> None:
    assert getattr(E, name) == value
    assert E.ERROR_BY_NAME[name] == value
    assert E.status(value) == value  # every listed status lives entirely in bits 63:32


def test_operand_ids_and_status_mask() -> None:
    assert (E.TDX_OPERAND_ID_RCX, E.TDX_OPERAND_ID_TDR, E.TDX_OPERAND_ID_SEPT, E.TDX_OPERAND_ID_TD_EPOCH) == (
        0x01, 0x80, 0x92, 0xA9)
    assert E.TDX_SEAMCALL_STATUS_MASK == 0xFFFFFFFF00000000
    busy_epoch = E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_TD_EPOCH
    assert E.status(busy_epoch) == E.TDX_OPERAND_BUSY
    assert E.tdx_operand_busy(busy_epoch)
    assert E.tdx_operand_busy(E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_SEPT)
    assert not E.tdx_operand_busy(E.TDX_PREVIOUS_TLB_EPOCH_BUSY)
    assert not E.tdx_operand_busy(E.TDX_SUCCESS)
    assert E.err_name(busy_epoch) == "TDX_OPERAND_BUSY (0x80000200000000a9)"
    assert E.err_name(0xC0FFEE0000000000).startswith("TDX_UNKNOWN_ERROR")


def test_pamt_page_type_values() -> None:
    # a.6: pamt_manager.h page types.
    assert (PT_NDA, PT_RSVD, PT_REG, PT_TDR, PT_TDCX, PT_TDVPR, PT_EPT) == (0, 1, 3, 4, 5, 6, 8)


def test_entry_key_addresses_one_entry_per_level() -> None:
    keys = {entry_key(level, GFN) for level in (1, 2, 3, 4)}
    assert len(keys) == 4
    assert entry_key(PG_LEVEL_2M, GFN) == entry_key(PG_LEVEL_2M, GFN_SAME_2M)
    assert entry_key(PG_LEVEL_4K, GFN) != entry_key(PG_LEVEL_4K, GFN_SAME_2M)
    assert entry_key(PG_LEVEL_512G, GFN) != entry_key(PG_LEVEL_512G, GFN_OTHER_512G)


# =========================================================================================================
# TD construction: MNG.CREATE, KEY.CONFIG, MNG.ADDCX, MNG.INIT, VP.CREATE/ADDCX/INIT, MR.FINALIZE
# =========================================================================================================
def test_mng_create_success_assigns_tdr() -> None:
    m = TdxModule()
    ok(m.tdh_mng_create(TDR, HKID))
    assert m.pamt.type_of(TDR) == PT_TDR
    assert m.pamt.owner[TDR] == TDR
    td = m.tds[TDR]
    assert (td.hkid, td.lifecycle, td.op_state, td.child_count) == (HKID, TD_HKID_ASSIGNED, OP_STATE_UNINITIALIZED, 0)


@pytest.mark.parametrize("page", [TDR, TDCS, TDVPR, SEPT_PAGE[PG_LEVEL_512G]], ids=["tdr", "tdcx", "tdvpr", "ept"])
def test_mng_create_page_not_nda(page: int) -> None:
    m = make_td("vcpu")
    ok(m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_512G, SEPT_PAGE[PG_LEVEL_512G]))
    before = snapshot(m)
    err = m.tdh_mng_create(page, HKID + 1)
    assert E.status(err) == E.TDX_PAGE_METADATA_INCORRECT
    assert err & 0xFFFFFFFF == E.TDX_OPERAND_ID_RCX
    assert m == before


def test_mng_key_config_state_machine() -> None:
    m = make_td("created")
    ok(m.tdh_mng_key_config(TDR))
    assert m.tds[TDR].lifecycle == TD_KEYS_CONFIGURED
    assert m.tdh_mng_key_config(TDR) == E.TDX_KEY_CONFIGURED
    assert m.tds[TDR].lifecycle == TD_KEYS_CONFIGURED


@pytest.mark.parametrize("stage,lifecycle", [("blocked", TD_BLOCKED), ("wbcache", TD_BLOCKED),
                                             ("teardown", TD_TEARDOWN)])
def test_mng_key_config_after_blocked(stage: str, lifecycle: int) -> None:
    m = make_td(stage)
    assert m.tdh_mng_key_config(TDR) == E.TDX_KEY_STATE_INCORRECT
    assert m.tds[TDR].lifecycle == lifecycle


def test_mng_key_config_unknown_tdr() -> None:
    assert E.status(TdxModule().tdh_mng_key_config(TDR)) == E.TDX_OPERAND_INVALID


def test_mng_addcx_requires_keys_configured() -> None:
    m = make_td("created")
    before = snapshot(m)
    assert m.tdh_mng_addcx(TDR, TDCS) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m == before
    assert m.pamt.type_of(TDCS) == PT_NDA


def test_mng_addcx_success() -> None:
    m = make_td("keys")
    ok(m.tdh_mng_addcx(TDR, TDCS))
    assert m.pamt.type_of(TDCS) == PT_TDCX
    assert m.pamt.owner[TDCS] == TDR
    assert m.tds[TDR].child_count == 1


def test_mng_addcx_page_not_nda() -> None:
    m = make_td("keys")
    ok(m.tdh_mng_addcx(TDR, TDCS))
    before = snapshot(m)
    assert E.status(m.tdh_mng_addcx(TDR, TDCS)) == E.TDX_PAGE_METADATA_INCORRECT
    assert E.status(m.tdh_mng_addcx(TDR, TDR)) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before


def test_mng_init_requires_keys_configured() -> None:
    m = make_td("created")
    assert m.tdh_mng_init(TDR) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m.tds[TDR].op_state == OP_STATE_UNINITIALIZED


def test_mng_init_success_then_op_state_incorrect() -> None:
    m = make_td("keys")
    ok(m.tdh_mng_init(TDR))
    assert m.tds[TDR].op_state == OP_STATE_INITIALIZED
    assert m.tdh_mng_init(TDR) == E.TDX_OP_STATE_INCORRECT
    assert m.tds[TDR].op_state == OP_STATE_INITIALIZED
    ok(m.tdh_mr_finalize(TDR))
    assert m.tdh_mng_init(TDR) == E.TDX_OP_STATE_INCORRECT
    assert m.tds[TDR].op_state == OP_STATE_RUNNABLE


def test_vp_create_requires_keys_configured() -> None:
    m = make_td("created")
    before = snapshot(m)
    assert m.tdh_vp_create(TDR, TDVPR) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m == before


def test_vp_create_success() -> None:
    m = make_td("initialized")
    ok(m.tdh_vp_create(TDR, TDVPR))
    assert m.pamt.type_of(TDVPR) == PT_TDVPR
    assert m.pamt.owner[TDVPR] == TDR
    td = m.tds[TDR]
    assert td.child_count == 2  # TDCS + TDVPR
    vp = td.vcpus[TDVPR]
    assert not vp.initialized and not vp.associated
    assert m.tdvpr_to_tdr[TDVPR] == TDR


def test_vp_create_page_not_nda() -> None:
    m = make_td("initialized")
    before = snapshot(m)
    assert E.status(m.tdh_vp_create(TDR, TDCS)) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before
    assert TDCS not in m.tdvpr_to_tdr


def test_vp_addcx_success_and_errors() -> None:
    m = make_td("initialized")
    assert E.status(m.tdh_vp_addcx(TDVPR, TDCX)) == E.TDX_OPERAND_INVALID  # no such vCPU yet
    ok(m.tdh_vp_create(TDR, TDVPR))
    ok(m.tdh_vp_addcx(TDVPR, TDCX))
    assert m.pamt.type_of(TDCX) == PT_TDCX
    assert m.pamt.owner[TDCX] == TDR
    assert m.tds[TDR].child_count == 3
    before = snapshot(m)
    assert E.status(m.tdh_vp_addcx(TDVPR, TDCX)) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before


def test_vp_addcx_requires_keys_configured() -> None:
    m = make_td("vcpu")
    ok(m.tdh_vp_flush(TDVPR))
    ok(m.tdh_mng_vpflushdone(TDR))
    assert m.tdh_vp_addcx(TDVPR, SPARE) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m.pamt.type_of(SPARE) == PT_NDA


def test_vp_init_success_associates() -> None:
    m = make_td("initialized")
    ok(m.tdh_vp_create(TDR, TDVPR))
    ok(m.tdh_vp_init(TDVPR))
    vp = m.tds[TDR].vcpus[TDVPR]
    assert vp.initialized and vp.associated


def test_vp_init_errors() -> None:
    m = make_td("initialized")
    assert E.status(m.tdh_vp_init(TDVPR)) == E.TDX_OPERAND_INVALID
    ok(m.tdh_vp_create(TDR, TDVPR))
    ok(m.tdh_mng_vpflushdone(TDR))  # nothing associated yet -> TD_BLOCKED
    assert m.tdh_vp_init(TDVPR) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert not m.tds[TDR].vcpus[TDVPR].associated


def test_mr_finalize_before_init() -> None:
    m = make_td("keys")
    assert m.tdh_mr_finalize(TDR) == E.TDX_OP_STATE_INCORRECT
    assert m.tds[TDR].op_state == OP_STATE_UNINITIALIZED


def test_mr_finalize_success_then_twice() -> None:
    m = make_td("vcpu")
    ok(m.tdh_mr_finalize(TDR))
    assert m.tds[TDR].op_state == OP_STATE_RUNNABLE
    assert m.tdh_mr_finalize(TDR) == E.TDX_OP_STATE_INCORRECT
    assert m.tds[TDR].op_state == OP_STATE_RUNNABLE


def test_mr_finalize_requires_keys_configured() -> None:
    m = make_td("created")
    assert m.tdh_mr_finalize(TDR) == E.TDX_TD_KEYS_NOT_CONFIGURED


# =========================================================================================================
# TDH.MEM.SEPT.ADD
# =========================================================================================================
@pytest.mark.parametrize("stage", ["created", "blocked", "wbcache", "teardown"])
def test_sept_add_requires_keys_configured(stage: str) -> None:
    m = make_td(stage)
    before = snapshot(m)
    assert m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_512G, SEPT_PAGE[PG_LEVEL_512G]) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m == before


def test_sept_add_unknown_tdr() -> None:
    m = make_td("initialized")
    err = m.tdh_mem_sept_add(0x1FF, GFN, PG_LEVEL_512G, SEPT_PAGE[PG_LEVEL_512G])
    assert E.status(err) == E.TDX_OPERAND_INVALID
    assert err & 0xFFFFFFFF == E.TDX_OPERAND_ID_TDR


@pytest.mark.parametrize("present,level", [
    ((), PG_LEVEL_1G),  # no level-4 entry
    ((), PG_LEVEL_2M),
    ((PG_LEVEL_512G,), PG_LEVEL_2M),  # level 3 missing
])
def test_sept_add_missing_parent_walk_failed(present: tuple[int, ...], level: int) -> None:
    m = make_td("initialized")
    for lv in present:
        ok(m.tdh_mem_sept_add(TDR, GFN, lv, SEPT_PAGE[lv]))
    before = snapshot(m)
    assert m.tdh_mem_sept_add(TDR, GFN, level, SEPT_PAGE[level]) == E.TDX_EPT_WALK_FAILED
    assert m == before


def test_sept_add_walk_uses_the_gfn() -> None:
    """The level-4 entry for GFN does not make the walk for a gfn in another 512 GiB region succeed."""
    m = make_td("initialized")
    ok(m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_512G, SEPT_PAGE[PG_LEVEL_512G]))
    assert m.tdh_mem_sept_add(TDR, GFN_OTHER_512G, PG_LEVEL_1G, SPARE) == E.TDX_EPT_WALK_FAILED
    assert m.pamt.type_of(SPARE) == PT_NDA


@pytest.mark.parametrize("parent_state", [SEPT_MAPPED, SEPT_PENDING, SEPT_BLOCKED, SEPT_REMOVED])
def test_walk_stops_at_non_nonleaf_parent(parent_state: int) -> None:
    """The walk only descends through present non-leaf entries; a 2M leaf (or REMOVED) entry ends it."""
    m = make_td("initialized")
    add_tables(m, lowest=PG_LEVEL_1G)
    m.tds[TDR].sept_state[entry_key(PG_LEVEL_2M, GFN)] = parent_state
    before = snapshot(m)
    assert m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, DATA) == E.TDX_EPT_WALK_FAILED
    assert m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K) == E.TDX_EPT_WALK_FAILED
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_EPT_WALK_FAILED, -1)
    assert m == before


def test_sept_add_level_4k_walk_failed() -> None:
    m = make_td("initialized")
    add_tables(m)  # levels 4, 3, 2 present: the walk itself would reach level 1
    before = snapshot(m)
    assert m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_4K, SPARE) == E.TDX_EPT_WALK_FAILED
    assert m == before


@pytest.mark.parametrize("level", [PG_LEVEL_512G, PG_LEVEL_1G, PG_LEVEL_2M])
def test_sept_add_entry_not_free(level: int) -> None:
    m = make_td("initialized")
    add_tables(m, lowest=level)
    before = snapshot(m)
    err = m.tdh_mem_sept_add(TDR, GFN, level, SPARE)
    assert E.status(err) == E.TDX_EPT_ENTRY_NOT_FREE
    assert err & 0xFFFFFFFF == E.TDX_OPERAND_ID_SEPT
    assert m == before
    assert m.pamt.type_of(SPARE) == PT_NDA


def test_sept_add_entry_not_free_when_blocked() -> None:
    m = make_td("initialized")
    add_tables(m, lowest=PG_LEVEL_1G)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_1G))
    assert E.status(m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_1G, SPARE)) == E.TDX_EPT_ENTRY_NOT_FREE


@pytest.mark.parametrize("page", [TDR, TDCS, TDVPR, TDCX, SEPT_PAGE[PG_LEVEL_512G]],
                         ids=["tdr", "tdcs", "tdvpr", "tdcx", "ept"])
def test_sept_add_page_not_nda(page: int) -> None:
    m = make_td("vcpu")
    ok(m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_512G, SEPT_PAGE[PG_LEVEL_512G]))
    before = snapshot(m)
    err = m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_1G, page)
    assert E.status(err) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before
    assert m.tds[TDR].sept_state.get(entry_key(PG_LEVEL_1G, GFN), SEPT_FREE) == SEPT_FREE


@pytest.mark.parametrize("stage", ["initialized", "runnable"])
@pytest.mark.parametrize("level", [PG_LEVEL_512G, PG_LEVEL_1G, PG_LEVEL_2M])
def test_sept_add_success(stage: str, level: int) -> None:
    m = make_td(stage)
    if level < PG_LEVEL_512G:
        add_tables(m, lowest=level + 1)
    td = m.tds[TDR]
    children = td.child_count
    page = SEPT_PAGE[level]
    ok(m.tdh_mem_sept_add(TDR, GFN, level, page))
    assert m.pamt.type_of(page) == PT_EPT
    assert m.pamt.owner[page] == TDR
    assert td.child_count == children + 1
    key = entry_key(level, GFN)
    assert td.sept_state[key] == SEPT_NL_MAPPED
    assert td.sept_page[key] == page
    # nothing else moved: only that one entry changed
    assert set(td.sept_state) == {entry_key(lv, GFN) for lv in range(level, PG_LEVEL_512G + 1)}


# =========================================================================================================
# TDH.MEM.PAGE.ADD / TDH.MEM.PAGE.AUG
# =========================================================================================================
ADD_AUG = [("add", "initialized", SEPT_MAPPED), ("aug", "runnable", SEPT_PENDING)]


def leaf_fn(m: TdxModule, which: str):
    return m.tdh_mem_page_add if which == "add" else m.tdh_mem_page_aug


@pytest.mark.parametrize("which,stage", [("add", "runnable"), ("aug", "initialized"), ("aug", "vcpu")])
def test_add_aug_op_state(which: str, stage: str) -> None:
    """PAGE.ADD only before MR.FINALIZE, PAGE.AUG only after it."""
    m = make_td(stage)
    add_tables(m)
    before = snapshot(m)
    assert leaf_fn(m, which)(TDR, GFN, PG_LEVEL_4K, DATA) == E.TDX_OP_STATE_INCORRECT
    assert m == before


@pytest.mark.parametrize("which", ["add", "aug"])
def test_add_aug_require_keys_configured(which: str) -> None:
    m = make_td("blocked", vcpu=False) if which == "add" else make_td("runnable")
    if which == "aug":
        ok(m.tdh_vp_flush(TDVPR))
        ok(m.tdh_mng_vpflushdone(TDR))
    before = snapshot(m)
    assert leaf_fn(m, which)(TDR, GFN, PG_LEVEL_4K, DATA) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m == before


@pytest.mark.parametrize("which,stage,_state", ADD_AUG)
@pytest.mark.parametrize("lowest", [PG_LEVEL_512G + 1, PG_LEVEL_512G, PG_LEVEL_1G])
def test_add_aug_walk_failed(which: str, stage: str, _state: int, lowest: int) -> None:
    m = make_td(stage)
    if lowest <= PG_LEVEL_512G:
        add_tables(m, lowest=lowest)
    before = snapshot(m)
    assert leaf_fn(m, which)(TDR, GFN, PG_LEVEL_4K, DATA) == E.TDX_EPT_WALK_FAILED
    assert m == before


@pytest.mark.parametrize("which,stage,_state", ADD_AUG[:1])
def test_add_aug_huge_level_walk_failed(which: str, stage: str, _state: int) -> None:
    """PAGE.ADD is 4K only (tdh_mem_page_add.c: verify_page_info_input(LVL_PT, LVL_PT)): a 2M request
    fails the walk even though levels 4 and 3 exist. (2M AUG: tests/test_hugepage_module.py.)"""
    m = make_td(stage)
    add_tables(m, lowest=PG_LEVEL_1G)
    before = snapshot(m)
    assert leaf_fn(m, which)(TDR, GFN, PG_LEVEL_2M, DATA) == E.TDX_EPT_WALK_FAILED
    assert m == before


@pytest.mark.parametrize("which,stage,_state", ADD_AUG)
def test_add_aug_entry_not_free(which: str, stage: str, _state: int) -> None:
    m = make_td(stage)
    add_tables(m)
    ok(leaf_fn(m, which)(TDR, GFN, PG_LEVEL_4K, DATA))
    before = snapshot(m)
    err = leaf_fn(m, which)(TDR, GFN, PG_LEVEL_4K, DATA2)
    assert E.status(err) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert err & 0xFFFFFFFF == E.TDX_OPERAND_ID_SEPT
    assert m == before
    assert m.pamt.type_of(DATA2) == PT_NDA


def test_aug_into_blocked_entry_fails() -> None:
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    assert E.status(m.tdh_mem_page_aug(TDR, GFN, PG_LEVEL_4K, DATA2)) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert m.pamt.type_of(DATA2) == PT_NDA


@pytest.mark.parametrize("which,stage,_state", ADD_AUG)
@pytest.mark.parametrize("page", [TDR, TDCS, SEPT_PAGE[PG_LEVEL_2M], DATA2], ids=["tdr", "tdcs", "ept", "reg"])
def test_add_aug_page_not_nda(which: str, stage: str, _state: int, page: int) -> None:
    m = make_td(stage)
    add_tables(m)
    ok(leaf_fn(m, which)(TDR, GFN_SAME_2M, PG_LEVEL_4K, DATA2))
    before = snapshot(m)
    assert E.status(leaf_fn(m, which)(TDR, GFN, PG_LEVEL_4K, page)) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before


@pytest.mark.parametrize("which,stage,state", ADD_AUG)
def test_add_aug_success(which: str, stage: str, state: int) -> None:
    m = make_td(stage)
    add_tables(m)
    td = m.tds[TDR]
    children = td.child_count
    ok(leaf_fn(m, which)(TDR, GFN, PG_LEVEL_4K, DATA))
    assert m.pamt.type_of(DATA) == PT_REG
    assert m.pamt.owner[DATA] == TDR
    assert td.child_count == children + 1
    assert td.sept_state[leaf_key()] == state
    assert td.sept_page[leaf_key()] == DATA
    # the neighbouring 4K entry under the same 2M table is untouched and still usable
    assert td.sept_state.get(leaf_key(GFN_SAME_2M), SEPT_FREE) == SEPT_FREE
    ok(leaf_fn(m, which)(TDR, GFN_SAME_2M, PG_LEVEL_4K, DATA2))
    assert td.child_count == children + 2


def test_add_before_mng_init_is_not_runnable_path() -> None:
    """PAGE.ADD is a pre-finalize leaf: after finalize it fails even for a free entry with tables present."""
    m = make_td("vcpu")
    add_tables(m)
    ok(m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, DATA))
    ok(m.tdh_mr_finalize(TDR))
    assert m.tdh_mem_page_add(TDR, GFN_SAME_2M, PG_LEVEL_4K, DATA2) == E.TDX_OP_STATE_INCORRECT
    ok(m.tdh_mem_page_aug(TDR, GFN_SAME_2M, PG_LEVEL_4K, DATA2))
    assert m.tds[TDR].sept_state[leaf_key(GFN_SAME_2M)] == SEPT_PENDING


def test_aug_allowed_from_removed_state() -> None:
    """a.5: PAGE.AUG source states are FREE and REMOVED."""
    m = make_td("runnable")
    add_tables(m)
    m.tds[TDR].sept_state[leaf_key()] = SEPT_REMOVED
    ok(m.tdh_mem_page_aug(TDR, GFN, PG_LEVEL_4K, DATA))
    assert m.tds[TDR].sept_state[leaf_key()] == SEPT_PENDING


def test_add_not_allowed_from_removed_state() -> None:
    m = make_td("initialized")
    add_tables(m)
    m.tds[TDR].sept_state[leaf_key()] = SEPT_REMOVED
    before = snapshot(m)
    err = m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, DATA)
    assert E.status(err) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert m == before


def test_aug_after_remove_reuses_entry() -> None:
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    ok(m.tdh_mem_track(TDR))
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_SUCCESS, DATA)
    ok(m.tdh_mem_page_aug(TDR, GFN, PG_LEVEL_4K, DATA2))
    assert m.tds[TDR].sept_page[leaf_key()] == DATA2


# =========================================================================================================
# TDH.MEM.RANGE.BLOCK
# =========================================================================================================
@pytest.mark.parametrize("level", [PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G])
def test_block_free_entry_state_incorrect(level: int) -> None:
    m = make_td("runnable")
    add_tables(m, lowest=level + 1)
    before = snapshot(m)
    err = m.tdh_mem_range_block(TDR, GFN, level)
    assert E.status(err) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert m == before


def test_block_walk_failed() -> None:
    m = make_td("runnable")
    add_tables(m, lowest=PG_LEVEL_1G)  # no level-2 table: the 4K entry cannot be reached
    before = snapshot(m)
    assert m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K) == E.TDX_EPT_WALK_FAILED
    assert m == before


@pytest.mark.parametrize("stage", ["blocked", "teardown"])
def test_block_requires_keys_configured(stage: str) -> None:
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_vp_flush(TDVPR))
    ok(m.tdh_mng_vpflushdone(TDR))
    if stage == "teardown":
        ok(m.tdh_phymem_cache_wb(False))
        ok(m.tdh_mng_key_freeid(TDR))
    before = snapshot(m)
    assert m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m == before


@pytest.mark.parametrize("stage,level,src,dst", [
    ("initialized", PG_LEVEL_4K, SEPT_MAPPED, SEPT_BLOCKED),
    ("runnable", PG_LEVEL_4K, SEPT_PENDING, SEPT_PENDING_BLOCKED),
    ("runnable", PG_LEVEL_2M, SEPT_NL_MAPPED, SEPT_NL_BLOCKED),
    ("runnable", PG_LEVEL_512G, SEPT_NL_MAPPED, SEPT_NL_BLOCKED),
])
def test_block_success_records_bepoch(stage: str, level: int, src: int, dst: int) -> None:
    m = td_with_leaf(stage, SEPT_MAPPED if stage == "initialized" else SEPT_PENDING)
    td = m.tds[TDR]
    ok(m.tdh_mem_track(TDR))
    ok(m.tdh_mem_track(TDR))
    assert td.td_epoch == 3
    key = entry_key(level, GFN)
    assert td.sept_state[key] == src
    page, ptype, children = td.sept_page[key], m.pamt.type_of(td.sept_page[key]), td.child_count
    ok(m.tdh_mem_range_block(TDR, GFN, level))
    assert td.sept_state[key] == dst
    assert td.sept_bepoch[key] == 3
    # the mapping itself is kept: same page, same PAMT type, same child count
    assert (td.sept_page[key], m.pamt.type_of(page), td.child_count) == (page, ptype, children)


@pytest.mark.parametrize("stage,level", [("initialized", PG_LEVEL_4K), ("runnable", PG_LEVEL_4K),
                                         ("runnable", PG_LEVEL_2M)])
def test_block_already_blocked(stage: str, level: int) -> None:
    m = td_with_leaf(stage, SEPT_MAPPED if stage == "initialized" else SEPT_PENDING)
    ok(m.tdh_mem_range_block(TDR, GFN, level))
    ok(m.tdh_mem_track(TDR))  # the epoch moves: a second BLOCK must not re-record bepoch
    before = snapshot(m)
    assert m.tdh_mem_range_block(TDR, GFN, level) == E.TDX_GPA_RANGE_ALREADY_BLOCKED
    assert m == before
    assert m.tds[TDR].sept_bepoch[entry_key(level, GFN)] == 1


# =========================================================================================================
# TDH.MEM.TRACK and TLB epochs
# =========================================================================================================
def test_track_advances_epoch() -> None:
    m = make_td("runnable")
    td = m.tds[TDR]
    assert td.td_epoch == 1
    ok(m.tdh_mem_track(TDR))
    ok(m.tdh_mem_track(TDR))
    assert td.td_epoch == 3


def test_track_busy_while_vcpu_in_previous_epoch() -> None:
    m = make_td("runnable")
    td = m.tds[TDR]
    ok(m.tdh_vp_enter(TDVPR))  # enters in epoch 1
    assert td.vcpus[TDVPR].in_guest_epoch == 1
    ok(m.tdh_mem_track(TDR))  # previous epoch (0) is empty -> epoch 2
    assert td.td_epoch == 2
    before = snapshot(m)
    assert m.tdh_mem_track(TDR) == E.TDX_PREVIOUS_TLB_EPOCH_BUSY  # vCPU still runs in epoch 1
    assert m == before
    m.td_exit(TDVPR)
    assert td.vcpus[TDVPR].in_guest_epoch == -1
    assert td.epoch_refcount == [0, 0]
    ok(m.tdh_mem_track(TDR))
    assert td.td_epoch == 3


def test_track_not_busy_for_vcpu_in_current_epoch_only() -> None:
    m = make_td("runnable")
    ok(m.tdh_mem_track(TDR))
    ok(m.tdh_vp_enter(TDVPR))  # enters epoch 2; previous epoch (1) is empty
    ok(m.tdh_mem_track(TDR))
    assert m.tds[TDR].td_epoch == 3


def test_track_busy_with_two_vcpus_until_both_exit() -> None:
    m = make_td("runnable")
    ok(m.tdh_vp_create(TDR, TDVPR2))
    ok(m.tdh_vp_init(TDVPR2))
    ok(m.tdh_vp_enter(TDVPR))
    ok(m.tdh_vp_enter(TDVPR2))
    ok(m.tdh_mem_track(TDR))
    m.td_exit(TDVPR)
    assert m.tdh_mem_track(TDR) == E.TDX_PREVIOUS_TLB_EPOCH_BUSY
    m.td_exit(TDVPR2)
    ok(m.tdh_mem_track(TDR))


@pytest.mark.parametrize("stage", ["created", "blocked", "teardown"])
def test_track_requires_keys_configured(stage: str) -> None:
    m = make_td(stage)
    assert m.tdh_mem_track(TDR) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m.tds[TDR].td_epoch == 1


# =========================================================================================================
# TDH.MEM.PAGE.REMOVE
# =========================================================================================================
def assert_removed(m: TdxModule, children_before: int, page: int = DATA, gfn: int = GFN) -> None:
    td = m.tds[TDR]
    key = leaf_key(gfn)
    assert td.sept_state.get(key, SEPT_FREE) == SEPT_FREE
    assert key not in td.sept_page and key not in td.sept_bepoch
    assert m.pamt.type_of(page) == PT_NDA
    assert page not in m.pamt.owner
    assert td.child_count == children_before - 1


def test_remove_runnable_not_blocked() -> None:
    m = td_with_leaf("runnable", SEPT_PENDING)
    before = snapshot(m)
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_GPA_RANGE_NOT_BLOCKED, -1)
    assert m == before


def test_remove_blocked_not_tracked() -> None:
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    before = snapshot(m)
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_TLB_TRACKING_NOT_DONE, -1)
    assert m == before


def test_remove_blocked_after_track_done_before_block() -> None:
    """A TRACK that happened before the BLOCK does not count."""
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_mem_track(TDR))
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K)[0] == E.TDX_TLB_TRACKING_NOT_DONE


def test_remove_tracked_but_vcpu_still_in_blocking_epoch() -> None:
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_vp_enter(TDVPR))  # in guest during epoch 1
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))  # bepoch 1
    ok(m.tdh_mem_track(TDR))  # epoch 2, but the vCPU may still hold a stale translation from epoch 1
    before = snapshot(m)
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_TLB_TRACKING_NOT_DONE, -1)
    assert m == before
    m.td_exit(TDVPR)
    children = m.tds[TDR].child_count
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_SUCCESS, DATA)
    assert_removed(m, children)


@pytest.mark.parametrize("tracks", [1, 2, 3])
@pytest.mark.parametrize("stage,state", [("runnable", SEPT_PENDING), ("initialized", SEPT_MAPPED)])
def test_remove_blocked_and_tracked_success(stage: str, state: int, tracks: int) -> None:
    m = td_with_leaf(stage, state)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    for _ in range(tracks):
        ok(m.tdh_mem_track(TDR))
    children = m.tds[TDR].child_count
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_SUCCESS, DATA)
    assert_removed(m, children)


@pytest.mark.parametrize("stage", ["initialized", "vcpu"])
def test_remove_not_blocked_allowed_before_finalize(stage: str) -> None:
    m = td_with_leaf(stage, SEPT_MAPPED)
    children = m.tds[TDR].child_count
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_SUCCESS, DATA)
    assert_removed(m, children)


def test_remove_blocked_untracked_allowed_before_finalize() -> None:
    m = td_with_leaf("initialized", SEPT_MAPPED)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    children = m.tds[TDR].child_count
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_SUCCESS, DATA)
    assert_removed(m, children)


@pytest.mark.parametrize("stage", ["initialized", "runnable"])
def test_remove_free_entry_state_incorrect(stage: str) -> None:
    m = make_td(stage)
    add_tables(m)
    before = snapshot(m)
    err, page = m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K)
    assert E.status(err) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert page == -1
    assert m == before


def test_remove_removed_entry_state_incorrect() -> None:
    """a.5: REMOVED is not a PAGE.REMOVE source state."""
    m = make_td("initialized")
    add_tables(m)
    m.tds[TDR].sept_state[leaf_key()] = SEPT_REMOVED
    before = snapshot(m)
    assert E.status(m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K)[0]) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert m == before


def test_remove_twice_detected() -> None:
    m = td_with_leaf("initialized", SEPT_MAPPED)
    ok(m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K)[0])
    before = snapshot(m)
    assert E.status(m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K)[0]) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert m == before


def test_remove_walk_failed() -> None:
    m = make_td("initialized")
    add_tables(m, lowest=PG_LEVEL_1G)
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_EPT_WALK_FAILED, -1)


@pytest.mark.parametrize("stage", ["initialized", "runnable"])
def test_remove_non_leaf_entry_state_incorrect(stage: str) -> None:
    m = make_td(stage)
    add_tables(m)  # the level-2 entry is NL_MAPPED
    before = snapshot(m)
    err, page = m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_2M)
    assert E.status(err) == E.TDX_EPT_ENTRY_STATE_INCORRECT
    assert page == -1
    assert m == before


def test_remove_non_leaf_is_rejected_without_effect() -> None:
    """Whatever the code, removing a non-leaf entry must fail and leave the S-EPT page linked."""
    m = make_td("runnable")
    add_tables(m)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_2M))
    ok(m.tdh_mem_track(TDR))
    before = snapshot(m)
    err, page = m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_2M)
    assert err != E.TDX_SUCCESS and page == -1
    assert m == before
    assert m.pamt.type_of(SEPT_PAGE[PG_LEVEL_2M]) == PT_EPT


@pytest.mark.parametrize("stage", ["blocked", "teardown"])
def test_remove_requires_keys_configured(stage: str) -> None:
    """a.4: private leaf pages can only be removed while the HKID is assigned."""
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_4K))
    ok(m.tdh_mem_track(TDR))
    ok(m.tdh_vp_flush(TDVPR))
    ok(m.tdh_mng_vpflushdone(TDR))
    if stage == "teardown":
        ok(m.tdh_phymem_cache_wb(False))
        ok(m.tdh_mng_key_freeid(TDR))
    before = snapshot(m)
    assert m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K) == (E.TDX_TD_KEYS_NOT_CONFIGURED, -1)
    assert m == before
    assert m.pamt.type_of(DATA) == PT_REG


# =========================================================================================================
# TDH.PHYMEM.PAGE.RECLAIM
# =========================================================================================================
def test_reclaim_nda_page() -> None:
    m = make_td("teardown")
    before = snapshot(m)
    err = m.tdh_phymem_page_reclaim(SPARE)
    assert E.status(err) == E.TDX_PAGE_METADATA_INCORRECT
    assert err & 0xFFFFFFFF == E.TDX_OPERAND_ID_RCX
    assert m == before


def test_reclaim_double_reclaim_detected() -> None:
    m = make_td("teardown")
    ok(m.tdh_phymem_page_reclaim(TDCX))
    before = snapshot(m)
    assert E.status(m.tdh_phymem_page_reclaim(TDCX)) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before
    assert m.tds[TDR].child_count == 2  # TDCS + TDVPR, decremented once only


RECLAIM_EARLY = [(st, TDR) for st in STAGES[:-1]] + [(st, pg) for st in STAGES[2:-1] for pg in (TDCS, TDVPR)
                                                     if pg == TDCS or st != "initialized"]


@pytest.mark.parametrize("stage,page", RECLAIM_EARLY)
def test_reclaim_td_not_in_teardown(stage: str, page: int) -> None:
    m = make_td(stage)
    assert m.pamt.type_of(page) != PT_NDA
    before = snapshot(m)
    assert m.tdh_phymem_page_reclaim(page) == E.TDX_LIFECYCLE_STATE_INCORRECT
    assert m == before


def test_reclaim_sept_page_while_hkid_assigned_fails() -> None:
    """a.4: S-EPT pages can only be reclaimed after the HKID is freed."""
    m = make_td("runnable")
    add_tables(m)
    before = snapshot(m)
    assert m.tdh_phymem_page_reclaim(SEPT_PAGE[PG_LEVEL_2M]) == E.TDX_LIFECYCLE_STATE_INCORRECT
    assert m == before


def test_reclaim_tdr_with_children() -> None:
    m = make_td("teardown")
    before = snapshot(m)
    assert m.tdh_phymem_page_reclaim(TDR) == E.TDX_TD_ASSOCIATED_PAGES_EXIST
    assert m == before
    for page in (TDCS, TDVPR):
        ok(m.tdh_phymem_page_reclaim(page))
    assert m.tdh_phymem_page_reclaim(TDR) == E.TDX_TD_ASSOCIATED_PAGES_EXIST  # TDCX still there
    assert TDR in m.tds


@pytest.mark.parametrize("page,ptype", [(TDCS, PT_TDCX), (TDVPR, PT_TDVPR), (TDCX, PT_TDCX)])
def test_reclaim_control_page_success(page: int, ptype: int) -> None:
    m = make_td("teardown")
    assert m.pamt.type_of(page) == ptype
    ok(m.tdh_phymem_page_reclaim(page))
    assert m.pamt.type_of(page) == PT_NDA
    assert page not in m.pamt.owner
    assert m.tds[TDR].child_count == 2


def test_reclaim_sept_and_leaf_pages_then_tdr() -> None:
    """Full teardown: leaf page left mapped + three S-EPT pages + control pages, then the TDR last."""
    m = td_with_leaf("runnable", SEPT_PENDING)
    ok(m.tdh_vp_flush(TDVPR))
    ok(m.tdh_mng_vpflushdone(TDR))
    ok(m.tdh_phymem_cache_wb(False))
    ok(m.tdh_mng_key_freeid(TDR))
    td = m.tds[TDR]
    assert td.child_count == 7  # TDCS, TDVPR, TDCX, 3 S-EPT, 1 data page
    pages = [DATA, SEPT_PAGE[PG_LEVEL_2M], SEPT_PAGE[PG_LEVEL_1G], SEPT_PAGE[PG_LEVEL_512G], TDCX, TDVPR, TDCS]
    for n, page in enumerate(pages, 1):
        ok(m.tdh_phymem_page_reclaim(page))
        assert m.pamt.type_of(page) == PT_NDA
        assert td.child_count == 7 - n
    ok(m.tdh_phymem_page_reclaim(TDR))
    assert TDR not in m.tds
    assert m.pamt.type_of(TDR) == PT_NDA
    assert TDVPR not in m.tdvpr_to_tdr
    assert m.pamt.ptype == {} and m.pamt.owner == {} and m.pamt.assigned_in_region == {}
    # the TDR is now NDA: reclaiming it again is a detected double reclaim
    assert E.status(m.tdh_phymem_page_reclaim(TDR)) == E.TDX_PAGE_METADATA_INCORRECT
    # and the page can be gifted again
    ok(m.tdh_mng_create(TDR, HKID))


def test_reclaim_pamt_page_is_rsvd() -> None:
    """a.6: RECLAIM of a PT_RSVD page (DPAMT backing) fails with TDX_PAGE_METADATA_INCORRECT."""
    m = make_td("teardown", dpamt=True)
    assert m.pamt.type_of(PAMT_PAGES[0]) == PT_PAMT == PT_RSVD
    before = snapshot(m)
    assert E.status(m.tdh_phymem_page_reclaim(PAMT_PAGES[0])) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before


# =========================================================================================================
# TDH.PHYMEM.PAGE.WBINVD, TDH.VP.FLUSH, TDH.MNG.VPFLUSHDONE, TDH.PHYMEM.CACHE.WB, TDH.MNG.KEY.FREEID
# =========================================================================================================
def test_wbinvd_nda_page_ok() -> None:
    m = make_td("runnable")
    before = snapshot(m)
    ok(m.tdh_phymem_page_wbinvd(SPARE, HKID))
    ok(m.tdh_phymem_page_wbinvd(SPARE, 0))
    assert m == before


@pytest.mark.parametrize("page", [TDR, TDCS, TDVPR, DATA, SEPT_PAGE[PG_LEVEL_2M]])
def test_wbinvd_assigned_page_fails(page: int) -> None:
    m = td_with_leaf("runnable", SEPT_PENDING)
    assert E.status(m.tdh_phymem_page_wbinvd(page, HKID)) == E.TDX_PAGE_METADATA_INCORRECT


def test_wbinvd_after_remove_and_after_reclaim() -> None:
    m = td_with_leaf("initialized", SEPT_MAPPED)
    assert E.status(m.tdh_phymem_page_wbinvd(DATA, HKID)) == E.TDX_PAGE_METADATA_INCORRECT
    ok(m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K)[0])
    ok(m.tdh_phymem_page_wbinvd(DATA, HKID))
    m2 = make_td("teardown")
    assert E.status(m2.tdh_phymem_page_wbinvd(TDCS, 0)) == E.TDX_PAGE_METADATA_INCORRECT
    ok(m2.tdh_phymem_page_reclaim(TDCS))
    ok(m2.tdh_phymem_page_wbinvd(TDCS, 0))


def test_vp_flush_success_then_not_associated() -> None:
    m = make_td("runnable")
    vp = m.tds[TDR].vcpus[TDVPR]
    assert vp.associated
    ok(m.tdh_vp_flush(TDVPR))
    assert not vp.associated
    assert m.tdh_vp_flush(TDVPR) == E.TDX_VCPU_NOT_ASSOCIATED
    ok(m.tdh_vp_enter(TDVPR))  # entering re-associates
    assert vp.associated
    ok(m.tdh_vp_flush(TDVPR))


def test_vp_flush_never_initialized_vcpu() -> None:
    m = make_td("initialized")
    ok(m.tdh_vp_create(TDR, TDVPR))
    assert m.tdh_vp_flush(TDVPR) == E.TDX_VCPU_NOT_ASSOCIATED


def test_vp_flush_unknown_vcpu() -> None:
    m = make_td("runnable")
    assert E.status(m.tdh_vp_flush(SPARE)) == E.TDX_OPERAND_INVALID


def test_vpflushdone_flushvp_not_done() -> None:
    m = make_td("runnable")
    ok(m.tdh_vp_create(TDR, TDVPR2))
    ok(m.tdh_vp_init(TDVPR2))
    before = snapshot(m)
    assert m.tdh_mng_vpflushdone(TDR) == E.TDX_FLUSHVP_NOT_DONE
    assert m == before
    ok(m.tdh_vp_flush(TDVPR))
    assert m.tdh_mng_vpflushdone(TDR) == E.TDX_FLUSHVP_NOT_DONE  # TDVPR2 still associated
    assert m.tds[TDR].lifecycle == TD_KEYS_CONFIGURED
    ok(m.tdh_vp_flush(TDVPR2))
    ok(m.tdh_mng_vpflushdone(TDR))
    assert m.tds[TDR].lifecycle == TD_BLOCKED


@pytest.mark.parametrize("stage", ["created", "keys"])
def test_vpflushdone_from_hkid_assigned_or_keys_configured(stage: str) -> None:
    m = make_td(stage)
    ok(m.tdh_mng_vpflushdone(TDR))
    assert m.tds[TDR].lifecycle == TD_BLOCKED


@pytest.mark.parametrize("stage", ["blocked", "wbcache", "teardown"])
def test_vpflushdone_lifecycle_incorrect(stage: str) -> None:
    m = make_td(stage)
    before = snapshot(m)
    assert m.tdh_mng_vpflushdone(TDR) == E.TDX_LIFECYCLE_STATE_INCORRECT
    assert m == before


def test_vpflushdone_blocks_sept_seamcalls() -> None:
    m = make_td("runnable")
    add_tables(m)
    ok(m.tdh_vp_flush(TDVPR))
    ok(m.tdh_mng_vpflushdone(TDR))
    assert m.tdh_mem_page_aug(TDR, GFN, PG_LEVEL_4K, DATA) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m.tdh_mem_sept_add(TDR, GFN_OTHER_512G, PG_LEVEL_512G, SPARE) == E.TDX_TD_KEYS_NOT_CONFIGURED
    assert m.tdh_mem_range_block(TDR, GFN, PG_LEVEL_2M) == E.TDX_TD_KEYS_NOT_CONFIGURED


@pytest.mark.parametrize("stage", [None, "created", "keys", "runnable"])
def test_cache_wb_nothing_blocked(stage: str | None) -> None:
    m = TdxModule() if stage is None else make_td(stage)
    before = snapshot(m)
    assert m.tdh_phymem_cache_wb(False) == E.TDX_NO_HKID_READY_TO_WBCACHE
    assert m == before


def test_cache_wb_success_once() -> None:
    m = make_td("blocked")
    assert not m.tds[TDR].wbcache_done
    ok(m.tdh_phymem_cache_wb(False))
    assert m.tds[TDR].wbcache_done
    assert m.tdh_phymem_cache_wb(True) == E.TDX_NO_HKID_READY_TO_WBCACHE


def test_cache_wb_covers_every_blocked_td_only() -> None:
    m = make_td("blocked")
    tdr2 = 0x1100
    ok(m.tdh_mng_create(tdr2, HKID + 1))
    ok(m.tdh_mng_key_config(tdr2))
    ok(m.tdh_phymem_cache_wb(False))
    assert m.tds[TDR].wbcache_done
    assert not m.tds[tdr2].wbcache_done  # still KEYS_CONFIGURED: not written back
    assert m.tdh_mng_key_freeid(tdr2) == E.TDX_LIFECYCLE_STATE_INCORRECT


@pytest.mark.parametrize("stage", ["created", "keys", "initialized", "runnable"])
def test_key_freeid_before_blocked(stage: str) -> None:
    m = make_td(stage)
    before = snapshot(m)
    assert m.tdh_mng_key_freeid(TDR) == E.TDX_LIFECYCLE_STATE_INCORRECT
    assert m == before


def test_key_freeid_before_cache_wb() -> None:
    m = make_td("blocked")
    before = snapshot(m)
    assert m.tdh_mng_key_freeid(TDR) == E.TDX_WBCACHE_NOT_COMPLETE
    assert m == before


def test_key_freeid_success_then_twice() -> None:
    m = make_td("wbcache")
    ok(m.tdh_mng_key_freeid(TDR))
    assert m.tds[TDR].lifecycle == TD_TEARDOWN
    assert m.tdh_mng_key_freeid(TDR) == E.TDX_LIFECYCLE_STATE_INCORRECT
    assert m.tds[TDR].lifecycle == TD_TEARDOWN


@pytest.mark.parametrize("leaf", ["vpflushdone", "key_freeid"])
def test_teardown_leaves_unknown_tdr(leaf: str) -> None:
    m = TdxModule()
    err = m.tdh_mng_vpflushdone(TDR) if leaf == "vpflushdone" else m.tdh_mng_key_freeid(TDR)
    assert E.status(err) == E.TDX_OPERAND_INVALID
    assert err & 0xFFFFFFFF == E.TDX_OPERAND_ID_TDR


# =========================================================================================================
# Dynamic PAMT (E4)
# =========================================================================================================
def test_dpamt_region_index() -> None:
    assert region_of(0x11FF) == region_of(TDR) == 8
    assert region_of(0x1200) == 9
    assert region_of(OTHER_REGION_PAGE) == 0x28


def _gift_unbacked(m: TdxModule, leaf: str) -> int:
    page = OTHER_REGION_PAGE
    if leaf == "mng_create":
        return m.tdh_mng_create(page, HKID + 1)
    if leaf == "mng_addcx":
        return m.tdh_mng_addcx(TDR, page)
    if leaf == "vp_create":
        return m.tdh_vp_create(TDR, page)
    if leaf == "vp_addcx":
        return m.tdh_vp_addcx(TDVPR, page)
    if leaf == "sept_add":
        return m.tdh_mem_sept_add(TDR, GFN, PG_LEVEL_512G, page)
    add_tables(m)
    return m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, page)


@pytest.mark.parametrize("leaf", ["mng_create", "mng_addcx", "vp_create", "vp_addcx", "sept_add", "page_add"])
def test_dpamt_gift_without_backing_fails(leaf: str) -> None:
    m = make_td("vcpu", dpamt=True)
    err = _gift_unbacked(m, leaf)
    assert E.status(err) == E.status(E.TDX_PAMT_NOT_BACKED)
    assert m.pamt.type_of(OTHER_REGION_PAGE) == PT_NDA
    assert region_of(OTHER_REGION_PAGE) not in m.pamt.assigned_in_region


@pytest.mark.parametrize("leaf", ["mng_create", "mng_addcx", "vp_create", "vp_addcx", "sept_add", "page_add"])
def test_dpamt_gift_after_pamt_add_succeeds(leaf: str) -> None:
    m = make_td("vcpu", dpamt=True)
    ok(m.tdh_phymem_pamt_add(region_of(OTHER_REGION_PAGE), 0x9010, 0x9011))
    ok(_gift_unbacked(m, leaf))
    assert m.pamt.type_of(OTHER_REGION_PAGE) != PT_NDA
    assert m.pamt.assigned_in_region[region_of(OTHER_REGION_PAGE)] == 1


def test_no_dpamt_needs_no_backing() -> None:
    m = make_td("vcpu")
    assert m.pamt.backing == {}
    ok(m.tdh_mng_addcx(TDR, OTHER_REGION_PAGE))


def test_dpamt_pamt_add_success() -> None:
    m = TdxModule(dpamt=True)
    ok(m.tdh_phymem_pamt_add(REGION, *PAMT_PAGES))
    assert m.pamt.backing[REGION] == PAMT_PAGES
    assert all(m.pamt.type_of(p) == PT_PAMT for p in PAMT_PAGES)
    # PAMT pages are not gift-able while in use
    assert E.status(m.tdh_mng_create(PAMT_PAGES[0], HKID)) == E.TDX_PAGE_METADATA_INCORRECT


def test_dpamt_pamt_add_twice_fails() -> None:
    m = TdxModule(dpamt=True)
    ok(m.tdh_phymem_pamt_add(REGION, *PAMT_PAGES))
    before = snapshot(m)
    err = m.tdh_phymem_pamt_add(REGION, 0x9010, 0x9011)
    assert E.status(err) == E.TDX_OPERAND_INVALID
    assert m == before
    assert m.pamt.type_of(0x9010) == PT_NDA


@pytest.mark.parametrize("bad", [0, 1])
def test_dpamt_pamt_add_pages_not_nda(bad: int) -> None:
    m = make_td("keys", dpamt=True)
    pages = [0x9010, 0x9011]
    pages[bad] = TDR
    before = snapshot(m)
    assert E.status(m.tdh_phymem_pamt_add(0x30, *pages)) == E.TDX_PAGE_METADATA_INCORRECT
    assert m == before
    assert 0x30 not in m.pamt.backing


def test_dpamt_pamt_remove_with_assigned_page_fails() -> None:
    m = make_td("created", dpamt=True)  # the TDR is one assigned 4K page in REGION
    before = snapshot(m)
    err, pages = m.tdh_phymem_pamt_remove(REGION)
    assert E.status(err) == E.status(E.TDX_HPA_RANGE_NOT_FREE)
    assert pages is None
    assert m == before


def test_dpamt_pamt_remove_unbacked_region() -> None:
    m = TdxModule(dpamt=True)
    err, pages = m.tdh_phymem_pamt_remove(REGION)
    assert E.status(err) == E.TDX_OPERAND_INVALID
    assert pages is None


def test_dpamt_pamt_remove_success_returns_pages() -> None:
    m = TdxModule(dpamt=True)
    ok(m.tdh_phymem_pamt_add(REGION, *PAMT_PAGES))
    err, pages = m.tdh_phymem_pamt_remove(REGION)
    ok(err)
    assert pages == PAMT_PAGES
    assert REGION not in m.pamt.backing
    assert all(m.pamt.type_of(p) == PT_NDA for p in PAMT_PAGES)
    # the region is unbacked again: gifting fails, PAMT.ADD works again
    assert E.status(m.tdh_mng_create(TDR, HKID)) == E.status(E.TDX_PAMT_NOT_BACKED)
    ok(m.tdh_phymem_pamt_add(REGION, *PAMT_PAGES))


def test_dpamt_pamt_remove_after_last_page_leaves_region() -> None:
    """Region refcount follows REMOVE and RECLAIM: the last page leaving makes PAMT.REMOVE legal."""
    m = make_td("initialized", dpamt=True)
    add_tables(m)
    ok(m.tdh_phymem_pamt_add(region_of(OTHER_REGION_PAGE), 0x9010, 0x9011))
    ok(m.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, OTHER_REGION_PAGE))
    assert m.tdh_phymem_pamt_remove(region_of(OTHER_REGION_PAGE))[0] == E.TDX_HPA_RANGE_NOT_FREE
    ok(m.tdh_mem_page_remove(TDR, GFN, PG_LEVEL_4K)[0])
    assert m.tdh_phymem_pamt_remove(region_of(OTHER_REGION_PAGE)) == (E.TDX_SUCCESS, (0x9010, 0x9011))
    # REGION still holds TDR, TDCS and three S-EPT pages
    assert m.pamt.assigned_in_region[REGION] == 5
    ok(m.tdh_mng_vpflushdone(TDR))
    ok(m.tdh_phymem_cache_wb(False))
    ok(m.tdh_mng_key_freeid(TDR))
    for page in (SEPT_PAGE[PG_LEVEL_2M], SEPT_PAGE[PG_LEVEL_1G], SEPT_PAGE[PG_LEVEL_512G], TDCS):
        ok(m.tdh_phymem_page_reclaim(page))
        assert m.tdh_phymem_pamt_remove(REGION)[0] == E.TDX_HPA_RANGE_NOT_FREE
    ok(m.tdh_phymem_page_reclaim(TDR))
    assert m.tdh_phymem_pamt_remove(REGION) == (E.TDX_SUCCESS, PAMT_PAGES)


# =========================================================================================================
# Kernel wrappers (septlab/virt/seamcall.py): one OP_SEAMCALL step, then the leaf or an injected error
# =========================================================================================================
def make_host(stage: str = "runnable") -> Host:
    host = Host()
    host.seam = make_td(stage)
    return host


def finish(gen, value):
    with pytest.raises(StopIteration) as stop:
        gen.send(value)
    return stop.value.value


def test_wrapper_track_runs_leaf() -> None:
    host = make_host()
    host.current.injected_error = True  # must be reset by a real run
    g = S.tdh_mem_track(host, TDR)
    op = next(g)
    assert op.kind == OP_SEAMCALL
    assert op.leaf == E.TDH_MEM_TRACK == 38
    assert op.what == "TDH.MEM.TRACK"
    assert host.seam.tds[TDR].td_epoch == 1  # nothing happens before the step is answered
    assert finish(g, None) == E.TDX_SUCCESS
    assert host.seam.tds[TDR].td_epoch == 2
    assert host.current.injected_error is False
    assert host.faults_injected == 0


def test_wrapper_track_injected_busy_has_no_effect() -> None:
    host = make_host()
    before = snapshot(host.seam)
    g = S.tdh_mem_track(host, TDR)
    next(g)
    assert finish(g, E.TDX_OPERAND_BUSY) == E.TDX_OPERAND_BUSY
    assert host.seam == before
    assert host.seam.tds[TDR].td_epoch == 1
    assert host.current.injected_error is True
    assert host.faults_injected == 0  # BUSY is always handled: not counted as an explaining fault


def test_wrapper_track_reports_real_module_error() -> None:
    host = make_host()
    ok(host.seam.tdh_vp_enter(TDVPR))
    ok(host.seam.tdh_mem_track(TDR))
    g = S.tdh_mem_track(host, TDR)
    next(g)
    assert finish(g, None) == E.TDX_PREVIOUS_TLB_EPOCH_BUSY
    assert host.current.injected_error is False


def test_wrapper_sept_add_injected_error_does_not_gift_page() -> None:
    host = make_host()
    page = SEPT_PAGE[PG_LEVEL_512G]
    g = S.tdh_mem_sept_add(host, TDR, GFN, PG_LEVEL_512G, page)
    op = next(g)
    assert (op.kind, op.leaf) == (OP_SEAMCALL, E.TDH_MEM_SEPT_ADD)
    assert finish(g, E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_SEPT) == E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_SEPT
    assert host.seam.pamt.type_of(page) == PT_NDA
    assert host.current.injected_error is True
    g = S.tdh_mem_sept_add(host, TDR, GFN, PG_LEVEL_512G, page)
    next(g)
    assert finish(g, None) == E.TDX_SUCCESS
    assert host.seam.pamt.type_of(page) == PT_EPT
    assert host.seam.tds[TDR].sept_state[entry_key(PG_LEVEL_512G, GFN)] == SEPT_NL_MAPPED
    assert host.current.injected_error is False


def test_wrapper_non_busy_injection_counts_as_fault() -> None:
    host = make_host("teardown")
    g = S.tdh_phymem_page_reclaim(host, TDCS)
    assert next(g).leaf == E.TDH_PHYMEM_PAGE_RECLAIM == 28
    assert finish(g, E.TDX_LIFECYCLE_STATE_INCORRECT) == E.TDX_LIFECYCLE_STATE_INCORRECT
    assert host.faults_injected == 1
    assert host.seam.pamt.type_of(TDCS) == PT_TDCX  # not reclaimed
    assert host.current.injected_error is True


def test_wrapper_page_remove_and_pamt_remove_return_shapes() -> None:
    host = Host()
    host.seam = make_td("initialized", dpamt=True)
    add_tables(host.seam)
    ok(host.seam.tdh_mem_page_add(TDR, GFN, PG_LEVEL_4K, DATA))
    g = S.tdh_mem_page_remove(host, TDR, GFN, PG_LEVEL_4K)
    assert next(g).leaf == E.TDH_MEM_PAGE_REMOVE == 29
    assert finish(g, None) == E.TDX_SUCCESS  # only the status, not (status, page)
    assert host.seam.pamt.type_of(DATA) == PT_NDA
    g = S.tdh_phymem_pamt_remove(host, REGION)
    assert next(g).leaf == E.TDH_PHYMEM_PAMT_REMOVE == 59
    err, pages = finish(g, None)
    assert E.status(err) == E.status(E.TDX_HPA_RANGE_NOT_FREE) and pages is None
    g = S.tdh_phymem_pamt_remove(host, REGION)
    next(g)
    assert finish(g, E.TDX_OPERAND_BUSY) == (E.TDX_OPERAND_BUSY, None)
    assert REGION in host.seam.pamt.backing
