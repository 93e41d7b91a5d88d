"""The TDX-module side of 2 MiB private pages (the S-EPT hugepage series, E4; facts a.5, c.1, c.3, e and
the hugepage appendix), driven on septlab.tdx_module.module.TdxModule directly, plus the kernel wrappers
of septlab/virt/seamcall.py that go with them.

* TDH.MEM.PAGE.AUG at 2M (tdh_mem_page_aug.c, check_and_lock_free_range_hpa()): gfn and page 2 MiB
  aligned, the walk to level 2, the entry FREE or REMOVED, the whole 2 MiB range PT_NDA; no PAMT_4K
  needed under DPAMT; 512 pages PT_REG, child count + 512, entry PENDING. PAGE.ADD stays 4K only.
* A 4K leaf SEAMCALL below a 2M leaf fails the walk.
* RANGE.BLOCK / TRACK / PAGE.REMOVE of a 2M leaf.
* TDH.MEM.PAGE.DEMOTE (tdh_mem_page_demote.c; pamt_demote() of the DPAMT module): every precondition,
  its locks, and its effect (512 children, NL_MAPPED parent, PAMT accounting, DPAMT backing).
* tdh_phymem_page_wbinvd_hkid() over a folio: one model step, one WBINVD per 4 KiB page.
"""

from __future__ import annotations

import pytest

from septlab.tdx_module import errno as E
from septlab.tdx_module.module import TdxModule
from septlab.tdx_module.pamt import PAGES_PER_2M, PT_EPT, PT_NDA, PT_PAMT, PT_REG, region_of
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
from septlab.tdx_module.td import LOCK_EX
from septlab.virt import seamcall as S

from .test_module_locks import busy_without_effect
from .test_seamcall import (
    DATA,
    GFN,
    HKID,
    OTHER_REGION_PAGE,
    SEPT_PAGE,
    SPARE,
    TDR,
    TDVPR,
    add_tables,
    finish,
    make_host,
    make_td,
    ok,
    snapshot,
)

GFN2M = GFN & ~(PAGES_PER_2M - 1)  # the 2 MiB-aligned gfn of GFN's level-2 entry
HUGE = 0x2000  # head pfn of a free 2 MiB range (region 0x10, never backed by the shared fixtures)
HUGE2 = 0x2200  # another one (region 0x11)
DEMOTE_PAMT = (0x9002, 0x9003)  # PT_NDA pages for DEMOTE's new PAMT_4K level (region 0x48, like PAMT_PAGES)
KEY2M = entry_key(PG_LEVEL_2M, GFN2M)
R8, R12, R13 = E.TDX_OPERAND_ID_R8, E.TDX_OPERAND_ID_R12, E.TDX_OPERAND_ID_R13
RCX, SEPT = E.TDX_OPERAND_ID_RCX, E.TDX_OPERAND_ID_SEPT


def runnable_2m(dpamt: bool = False) -> TdxModule:
    """A runnable TD with the tables down to level 3 at GFN2M and HUGE AUGed there at 2M (PENDING)."""
    m = make_td("runnable", dpamt=dpamt)
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    ok(m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE))
    return m


def blocked_tracked_2m(dpamt: bool = False, mapped: bool = False) -> TdxModule:
    """runnable_2m(), the leaf (MAPPED first if `mapped`: as after the guest's TDG.MEM.PAGE.ACCEPT, which
    the model has not) blocked and the BLOCK tracked: what REMOVE and DEMOTE need of a runnable TD."""
    m = runnable_2m(dpamt)
    if mapped:
        m.tds[TDR].sept_state[KEY2M] = SEPT_MAPPED
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    ok(m.tdh_mem_track(TDR))
    return m


def huge_pages(head: int = HUGE) -> range:
    return range(head, head + PAGES_PER_2M)


def fails_without_effect(m: TdxModule, call, expected: int) -> None:
    """`call` returns exactly `expected` (status | operand id) and changes nothing."""
    before = snapshot(m)
    err = call()
    err = err[0] if isinstance(err, tuple) else err
    assert err == expected, E.err_desc(err)
    assert m == before


# =========================================================================================================
# TDH.MEM.PAGE.AUG at 2M
# =========================================================================================================
@pytest.mark.parametrize("dpamt", [False, True], ids=["dpamt-off", "dpamt-on"])
def test_aug_2m_maps_512_pages_without_pamt_4k(dpamt: bool) -> None:
    """Under DPAMT HUGE's region has no PAMT_4K level: a 2 MiB page uses the static PAMT_2M."""
    m = make_td("runnable", dpamt=dpamt)
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    td = m.tds[TDR]
    children = td.child_count
    assert region_of(HUGE) not in m.pamt.backing
    ok(m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE))
    assert td.sept_state[KEY2M] == SEPT_PENDING and td.sept_page[KEY2M] == HUGE
    assert td.child_count == children + PAGES_PER_2M
    assert all(m.pamt.type_of(p) == PT_REG and m.pamt.owner[p] == TDR for p in huge_pages())
    assert m.pamt.type_of(HUGE + PAGES_PER_2M) == PT_NDA
    # 2M accounting: the region is `huge`, its pages do not count as 4K assignments
    assert m.pamt.huge == {region_of(HUGE)}
    assert region_of(HUGE) not in m.pamt.assigned_in_region
    assert region_of(HUGE) not in m.pamt.backing
    # nothing below the 2M leaf
    assert entry_key(PG_LEVEL_4K, GFN2M) not in td.sept_state


def test_aug_2m_from_removed_entry() -> None:
    """a.5: AUG is legal from FREE and REMOVED, at 2M too."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    m.tds[TDR].sept_state[KEY2M] = SEPT_REMOVED
    ok(m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE))
    assert m.tds[TDR].sept_state[KEY2M] == SEPT_PENDING


@pytest.mark.parametrize("offset", [1, 5, PAGES_PER_2M - 1])
def test_aug_2m_misaligned_gfn(offset: int) -> None:
    """verify_page_info_input(): a GPA not aligned to the level is TDX_OPERAND_INVALID|RCX, before the walk."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M + offset, PG_LEVEL_2M, HUGE),
                         E.TDX_OPERAND_INVALID | RCX)


def test_aug_2m_misaligned_gfn_is_checked_before_the_walk() -> None:
    m = make_td("runnable")  # no S-EPT table at all
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M + 1, PG_LEVEL_2M, HUGE),
                         E.TDX_OPERAND_INVALID | RCX)


@pytest.mark.parametrize("page", [HUGE + 1, HUGE + 0x100, DATA])
def test_aug_2m_misaligned_page(page: int) -> None:
    """check_and_lock_free_range_hpa(): a page not 2 MiB aligned is TDX_OPERAND_INVALID|R8 (the page's register)."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, page), E.TDX_OPERAND_INVALID | R8)


@pytest.mark.parametrize("tables", [(), (PG_LEVEL_512G,)], ids=["no-table", "level-3-missing"])
def test_aug_2m_walk_failed(tables: tuple[int, ...]) -> None:
    m = make_td("runnable")
    for lv in tables:
        ok(m.tdh_mem_sept_add(TDR, GFN2M, lv, SEPT_PAGE[lv]))
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE), E.TDX_EPT_WALK_FAILED)


def test_aug_2m_walk_failed_below_a_blocked_table() -> None:
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_1G))  # level-3 entry NL_BLOCKED
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE), E.TDX_EPT_WALK_FAILED)


def test_aug_2m_over_an_sept_table_entry_state_incorrect() -> None:
    """The level-2 entry links an S-EPT page (NL_MAPPED): AUG's state lookup refuses it."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_2M)
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE),
                         E.TDX_EPT_ENTRY_STATE_INCORRECT | SEPT)


@pytest.mark.parametrize("state", [SEPT_PENDING, SEPT_PENDING_BLOCKED, SEPT_MAPPED])
def test_aug_2m_over_a_2m_leaf_entry_state_incorrect(state: int) -> None:
    m = runnable_2m()
    m.tds[TDR].sept_state[KEY2M] = state
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE2),
                         E.TDX_EPT_ENTRY_STATE_INCORRECT | SEPT)


@pytest.mark.parametrize("index", [0, 7, PAGES_PER_2M - 1])
def test_aug_2m_page_range_not_free(index: int) -> None:
    """pamt_is_2mb_range_free(): one 4 KiB page of the range already assigned (here a 4K private page of
    another gfn) is TDX_PAGE_METADATA_INCORRECT|R8."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    other = GFN2M + (1 << 18)  # another 1 GiB of the same 512 GiB: its own tables at levels 3 and 2
    ok(m.tdh_mem_sept_add(TDR, other, PG_LEVEL_1G, 0x1040))
    ok(m.tdh_mem_sept_add(TDR, other, PG_LEVEL_2M, 0x1041))
    ok(m.tdh_mem_page_aug(TDR, other, PG_LEVEL_4K, HUGE + index))
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE),
                         E.TDX_PAGE_METADATA_INCORRECT | R8)


def test_aug_2m_page_range_holds_a_pamt_page() -> None:
    """Under DPAMT a page of the range used as PAMT_4K of another region is not free either."""
    m = make_td("runnable", dpamt=True)
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    ok(m.tdh_phymem_pamt_add(region_of(OTHER_REGION_PAGE), HUGE + 3, HUGE + 4))
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE),
                         E.TDX_PAGE_METADATA_INCORRECT | R8)


def test_aug_2m_into_a_region_with_pamt_4k_installed() -> None:
    """Under DPAMT a region with a PAMT_4K level has a PT_PAMT (non-leaf) PAMT_2M entry: not a free 2 MiB page."""
    m = make_td("runnable", dpamt=True)
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    ok(m.tdh_phymem_pamt_add(region_of(HUGE), *DEMOTE_PAMT))
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE),
                         E.TDX_PAGE_METADATA_INCORRECT | R8)


def test_pamt_add_of_a_region_mapped_at_2m() -> None:
    """The region's PAMT_2M entry is a PT_REG leaf: PAMT.ADD refuses it (TDX_HPA_RANGE_NOT_FREE|RCX, the
    model's alias for DPAMT's unverified value); after the 2M REMOVE it is legal again."""
    m = blocked_tracked_2m(dpamt=True)
    fails_without_effect(m, lambda: m.tdh_phymem_pamt_add(region_of(HUGE), *DEMOTE_PAMT),
                         E.TDX_HPA_RANGE_NOT_FREE | RCX)
    assert m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M) == (E.TDX_SUCCESS, HUGE)
    ok(m.tdh_phymem_pamt_add(region_of(HUGE), *DEMOTE_PAMT))


def test_page_add_is_4k_only() -> None:
    """tdh_mem_page_add.c: verify_page_info_input(LVL_PT, LVL_PT). The module's status is
    TDX_OPERAND_INVALID|RCX; septlab's is the pinned TDX_EPT_WALK_FAILED (conformance leaf-level-error-code)."""
    m = make_td("initialized")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    fails_without_effect(m, lambda: m.tdh_mem_page_add(TDR, GFN2M, PG_LEVEL_2M, HUGE), E.TDX_EPT_WALK_FAILED)


def test_aug_at_1g_is_refused() -> None:
    """AUG takes 4K..2M (pinned code, as above)."""
    m = make_td("runnable")
    ok(m.tdh_mem_sept_add(TDR, GFN2M, PG_LEVEL_512G, SEPT_PAGE[PG_LEVEL_512G]))
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M & ~((1 << 18) - 1), PG_LEVEL_1G, HUGE),
                         E.TDX_EPT_WALK_FAILED)


def test_aug_2m_busy_on_the_sept_tree_and_the_entry() -> None:
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    td = m.tds[TDR]
    td.sept_lock = LOCK_EX  # a zero-step TDH.VP.ENTER holds the tree exclusively
    busy_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE), E.TDX_OPERAND_BUSY | SEPT)
    td.sept_lock = 0
    td.sept_entry_lock.add(KEY2M)  # a guest TDCALL holds the entry
    busy_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE), E.TDX_OPERAND_BUSY | RCX)


# =========================================================================================================
# 4K leaf SEAMCALLs below a 2M leaf
# =========================================================================================================
@pytest.mark.parametrize("index", [0, 5, PAGES_PER_2M - 1])
def test_4k_leaf_seamcalls_below_a_2m_leaf_fail_the_walk(index: int) -> None:
    """The level-2 entry is a leaf, not NL_MAPPED: secure_ept_walk() cannot descend to level 1."""
    m = runnable_2m()
    gfn = GFN2M + index
    fails_without_effect(m, lambda: m.tdh_mem_page_aug(TDR, gfn, PG_LEVEL_4K, DATA), E.TDX_EPT_WALK_FAILED)
    fails_without_effect(m, lambda: m.tdh_mem_range_block(TDR, gfn, PG_LEVEL_4K), E.TDX_EPT_WALK_FAILED)
    fails_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, gfn, PG_LEVEL_4K), E.TDX_EPT_WALK_FAILED)


def test_page_add_below_a_2m_leaf_fails_the_walk() -> None:
    """PAGE.ADD (before finalize) below a 2M leaf: the model has no path to a 2M leaf there, so it is written."""
    m = make_td("initialized")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    m.tds[TDR].sept_state[KEY2M] = SEPT_MAPPED
    fails_without_effect(m, lambda: m.tdh_mem_page_add(TDR, GFN2M + 1, PG_LEVEL_4K, DATA), E.TDX_EPT_WALK_FAILED)


def test_sept_add_over_a_2m_leaf_is_refused() -> None:
    """SEPT.ADD of a table where the 2M leaf is: the entry is not FREE (septlab's pinned status)."""
    m = runnable_2m()
    fails_without_effect(m, lambda: m.tdh_mem_sept_add(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_EPT_ENTRY_NOT_FREE | SEPT)


# =========================================================================================================
# RANGE.BLOCK / TRACK / PAGE.REMOVE of a 2M leaf
# =========================================================================================================
@pytest.mark.parametrize("src,dst", [(SEPT_PENDING, SEPT_PENDING_BLOCKED), (SEPT_MAPPED, SEPT_BLOCKED)])
def test_block_2m_leaf(src: int, dst: int) -> None:
    m = runnable_2m()
    td = m.tds[TDR]
    td.sept_state[KEY2M] = src
    ok(m.tdh_mem_track(TDR))
    children = td.child_count
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    assert td.sept_state[KEY2M] == dst and td.sept_bepoch[KEY2M] == 2
    assert (td.sept_page[KEY2M], td.child_count, m.pamt.huge) == (HUGE, children, {region_of(HUGE)})
    fails_without_effect(m, lambda: m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M), E.TDX_GPA_RANGE_ALREADY_BLOCKED)


@pytest.mark.parametrize("dpamt", [False, True], ids=["dpamt-off", "dpamt-on"])
def test_remove_2m_leaf_after_block_and_track(dpamt: bool) -> None:
    m = blocked_tracked_2m(dpamt)
    td = m.tds[TDR]
    children = td.child_count
    assert m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M) == (E.TDX_SUCCESS, HUGE)  # the head pfn
    assert td.child_count == children - PAGES_PER_2M
    assert td.sept_state.get(KEY2M, SEPT_FREE) == SEPT_FREE and KEY2M not in td.sept_page
    assert KEY2M not in td.sept_bepoch
    assert all(m.pamt.type_of(p) == PT_NDA and p not in m.pamt.owner for p in huge_pages())
    assert m.pamt.huge == set() and region_of(HUGE) not in m.pamt.assigned_in_region
    # the entry is FREE again: a new 2M AUG there succeeds
    ok(m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_2M, HUGE2))
    assert td.child_count == children


def _initialized_td_with_mapped_2m_leaf():
    """A TD before finalize whose S-EPT has a MAPPED 2M leaf at GFN2M (as PAGE.ADD would leave one, if
    PAGE.ADD took 2M): the state the two before-finalize tests below start from."""
    m = make_td("initialized")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    td = m.tds[TDR]
    m.pamt.assign_2m(HUGE, PT_REG, TDR)
    td.child_count += PAGES_PER_2M
    td.sept_state[KEY2M], td.sept_page[KEY2M] = SEPT_MAPPED, HUGE
    return m, td


def test_remove_2m_leaf_before_finalize_needs_no_block() -> None:
    """op_state INITIALIZED does not require TLB tracking (the 2M leaf is written: no path before finalize)."""
    m, td = _initialized_td_with_mapped_2m_leaf()
    assert m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M) == (E.TDX_SUCCESS, HUGE)
    assert m.pamt.huge == set()


def test_remove_2m_leaf_not_blocked() -> None:
    m = runnable_2m()
    ok(m.tdh_mem_track(TDR))
    fails_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M), E.TDX_GPA_RANGE_NOT_BLOCKED)


def test_remove_2m_leaf_blocked_not_tracked() -> None:
    m = runnable_2m()
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    fails_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M), E.TDX_TLB_TRACKING_NOT_DONE)


def test_remove_2m_leaf_not_tracked_while_a_vcpu_runs_in_the_blocking_epoch() -> None:
    m = runnable_2m()
    ok(m.tdh_vp_enter(TDVPR))  # in the guest in epoch 1
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))  # bepoch 1
    ok(m.tdh_mem_track(TDR))  # epoch 2; the vCPU is still in epoch 1
    fails_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M), E.TDX_TLB_TRACKING_NOT_DONE)
    m.td_exit(TDVPR)
    assert m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M) == (E.TDX_SUCCESS, HUGE)


def test_remove_of_the_level_2_table_is_still_refused() -> None:
    """A level-2 entry that links a table (NL_MAPPED / NL_BLOCKED) is no leaf, 2M support or not."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_2M)
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    ok(m.tdh_mem_track(TDR))
    fails_without_effect(m, lambda: m.tdh_mem_page_remove(TDR, GFN2M, PG_LEVEL_2M),
                         E.TDX_EPT_ENTRY_STATE_INCORRECT | SEPT)
    assert m.tds[TDR].sept_state[KEY2M] == SEPT_NL_BLOCKED


# =========================================================================================================
# TDH.MEM.PAGE.DEMOTE
# =========================================================================================================
@pytest.mark.parametrize("dpamt", [False, True], ids=["dpamt-off", "dpamt-on"])
@pytest.mark.parametrize("mapped,child", [(False, SEPT_PENDING), (True, SEPT_MAPPED)],
                         ids=["from-pending-blocked", "from-blocked"])
def test_demote_2m_leaf(dpamt: bool, mapped: bool, child: int) -> None:
    m = blocked_tracked_2m(dpamt, mapped)
    td = m.tds[TDR]
    children = td.child_count
    region = region_of(HUGE)
    ok(m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE, DEMOTE_PAMT if dpamt else None))
    # the parent: a table entry pointing at the new S-EPT page, no BLOCK left to undo (no UNBLOCK)
    assert td.sept_state[KEY2M] == SEPT_NL_MAPPED and td.sept_page[KEY2M] == SPARE
    assert KEY2M not in td.sept_bepoch
    assert m.pamt.type_of(SPARE) == PT_EPT and m.pamt.owner[SPARE] == TDR
    assert td.child_count == children + 1
    # 512 unblocked 4K children, child i -> HUGE + i
    for i in range(PAGES_PER_2M):
        k = entry_key(PG_LEVEL_4K, GFN2M + i)
        assert (td.sept_state[k], td.sept_page[k]) == (child, HUGE + i)
        assert k not in td.sept_bepoch
    assert entry_key(PG_LEVEL_4K, GFN2M + PAGES_PER_2M) not in td.sept_state
    # PAMT: same pages, same type and owner, now counted as 4 KiB assignments of their region
    assert all(m.pamt.type_of(p) == PT_REG and m.pamt.owner[p] == TDR for p in huge_pages())
    assert region not in m.pamt.huge
    assert m.pamt.assigned_in_region[region] == PAGES_PER_2M
    if dpamt:
        assert m.pamt.backing[region] == DEMOTE_PAMT
        assert all(m.pamt.type_of(p) == PT_PAMT for p in DEMOTE_PAMT)
    else:
        assert region not in m.pamt.backing
        assert all(m.pamt.type_of(p) == PT_NDA for p in DEMOTE_PAMT)


@pytest.mark.parametrize("dpamt", [False, True], ids=["dpamt-off", "dpamt-on"])
def test_demoted_children_are_ordinary_4k_leaves(dpamt: bool) -> None:
    """After DEMOTE each child is BLOCKed, TRACKed and REMOVEd at 4K; under DPAMT the region's PAMT_4K
    level can be removed once the last child is gone, not before."""
    m = blocked_tracked_2m(dpamt)
    ok(m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE, DEMOTE_PAMT if dpamt else None))
    region = region_of(HUGE)
    for i in range(PAGES_PER_2M):
        ok(m.tdh_mem_range_block(TDR, GFN2M + i, PG_LEVEL_4K))
    ok(m.tdh_mem_track(TDR))
    for i in range(PAGES_PER_2M):
        if dpamt and i == PAGES_PER_2M - 1:
            assert m.tdh_phymem_pamt_remove(region)[0] == E.TDX_HPA_RANGE_NOT_FREE
        assert m.tdh_mem_page_remove(TDR, GFN2M + i, PG_LEVEL_4K) == (E.TDX_SUCCESS, HUGE + i)
    assert region not in m.pamt.assigned_in_region
    assert all(m.pamt.type_of(p) == PT_NDA for p in huge_pages())
    assert m.tds[TDR].sept_state[KEY2M] == SEPT_NL_MAPPED  # the new S-EPT page stays linked
    if dpamt:
        assert m.tdh_phymem_pamt_remove(region) == (E.TDX_SUCCESS, DEMOTE_PAMT)


def test_demote_before_finalize_needs_no_block() -> None:
    """op_state INITIALIZED does not require TLB tracking: a MAPPED 2M leaf demotes unblocked."""
    m, td = _initialized_td_with_mapped_2m_leaf()
    ok(m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE))
    assert td.sept_state[entry_key(PG_LEVEL_4K, GFN2M + 9)] == SEPT_MAPPED


def test_demote_not_blocked() -> None:
    m = runnable_2m()
    ok(m.tdh_mem_track(TDR))
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_GPA_RANGE_NOT_BLOCKED | RCX)


def test_demote_blocked_not_tracked() -> None:
    m = runnable_2m()
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_TLB_TRACKING_NOT_DONE | RCX)


def test_demote_not_tracked_while_a_vcpu_runs_in_the_blocking_epoch() -> None:
    m = runnable_2m()
    ok(m.tdh_vp_enter(TDVPR))
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    ok(m.tdh_mem_track(TDR))
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_TLB_TRACKING_NOT_DONE | RCX)
    m.td_exit(TDVPR)
    ok(m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE))


@pytest.mark.parametrize("level,gfn", [(PG_LEVEL_4K, GFN2M), (PG_LEVEL_512G, GFN2M & ~((1 << 27) - 1)),
                                       (PG_LEVEL_2M, GFN2M + 1), (0, GFN2M)],
                         ids=["4k", "512g", "2m-misaligned-gfn", "level-0"])
def test_demote_level_or_gfn_invalid(level: int, gfn: int) -> None:
    """verify_page_info_input(LVL_PD, LVL_PDPT): DEMOTE takes 2M or 1G, at a gfn aligned to it."""
    m = blocked_tracked_2m()
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, gfn, level, SPARE), E.TDX_OPERAND_INVALID | RCX)


def test_demote_at_1g_finds_no_leaf() -> None:
    """1G is a level DEMOTE takes, but the model has no 1G leaves: the level-3 entry is a table."""
    m = blocked_tracked_2m()
    gfn = GFN2M & ~((1 << 18) - 1)
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, gfn, PG_LEVEL_1G, SPARE),
                         E.TDX_EPT_ENTRY_STATE_INCORRECT | RCX)


def test_demote_of_a_level_2_table_entry_state_incorrect() -> None:
    """The level-2 entry links an S-EPT page holding a 4K leaf: nothing to demote."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_2M)
    ok(m.tdh_mem_page_aug(TDR, GFN2M + 3, PG_LEVEL_4K, DATA))
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    ok(m.tdh_mem_track(TDR))
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_EPT_ENTRY_STATE_INCORRECT | RCX)


@pytest.mark.parametrize("state", [SEPT_FREE, SEPT_REMOVED])
def test_demote_of_a_free_entry_state_incorrect(state: int) -> None:
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_1G)
    if state != SEPT_FREE:
        m.tds[TDR].sept_state[KEY2M] = state
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_EPT_ENTRY_STATE_INCORRECT | RCX)


def test_demote_of_a_4k_leaf_is_refused() -> None:
    """A 4K leaf is not a level DEMOTE takes (TDX_OPERAND_INVALID|RCX, before the walk)."""
    m = make_td("runnable")
    add_tables(m, gfn=GFN2M, lowest=PG_LEVEL_2M)
    ok(m.tdh_mem_page_aug(TDR, GFN2M, PG_LEVEL_4K, DATA))
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_4K))
    ok(m.tdh_mem_track(TDR))
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_4K, SPARE),
                         E.TDX_OPERAND_INVALID | RCX)


def test_demote_walk_failed() -> None:
    m = blocked_tracked_2m()
    ok(m.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_1G))  # the level-3 entry NL_BLOCKED
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_EPT_WALK_FAILED | RCX)


@pytest.mark.parametrize("page", [TDR, SEPT_PAGE[PG_LEVEL_1G], HUGE, HUGE + 1], ids=["tdr", "ept", "head", "tail"])
def test_demote_new_sept_page_not_nda(page: int) -> None:
    m = blocked_tracked_2m()
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, page),
                         E.TDX_PAGE_METADATA_INCORRECT | R8)


def test_demote_new_sept_page_without_pamt_4k_under_dpamt() -> None:
    """The new S-EPT page is a 4 KiB page like SEPT.ADD's: its region needs PAMT_4K (the kernel's
    tdx_pamt_get() for it); DPAMT's status is unverified, the model's alias is TDX_PAGE_METADATA_INCORRECT."""
    m = blocked_tracked_2m(dpamt=True)
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, OTHER_REGION_PAGE, DEMOTE_PAMT),
                         E.TDX_PAMT_NOT_BACKED | R8)


def test_demote_without_pamt_pages_under_dpamt() -> None:
    """The exact status is UNVERIFIED (it depends on what the caller left in R12/R13); the model's is
    TDX_OPERAND_INVALID|R12."""
    m = blocked_tracked_2m(dpamt=True)
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE, None),
                         E.TDX_OPERAND_INVALID | R12)


@pytest.mark.parametrize("pamt,expected", [
    ((TDR, DEMOTE_PAMT[1]), E.TDX_PAGE_NOT_FREE | R12),  # a TD page
    ((DEMOTE_PAMT[0], HUGE + 2), E.TDX_PAGE_NOT_FREE | R13),  # a page of the demoted 2 MiB page itself
    ((DEMOTE_PAMT[0], DEMOTE_PAMT[0]), E.TDX_PAGE_NOT_FREE | R13),  # the same page twice
    ((SPARE, DEMOTE_PAMT[1]), E.TDX_OPERAND_BUSY | R12),  # the new S-EPT page, locked by DEMOTE itself
], ids=["td-page", "demoted-page", "twice", "new-sept-page"])
def test_demote_pamt_pages_not_free(pamt: tuple[int, int], expected: int) -> None:
    m = blocked_tracked_2m(dpamt=True)
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE, pamt), expected)


def test_demote_pamt_page_already_backing_a_region() -> None:
    m = blocked_tracked_2m(dpamt=True)
    ok(m.tdh_phymem_pamt_add(region_of(OTHER_REGION_PAGE), *DEMOTE_PAMT))
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE, (0x9010, DEMOTE_PAMT[1])),
                         E.TDX_PAGE_NOT_FREE | R13)


def test_demote_ignores_pamt_pages_without_dpamt() -> None:
    m = blocked_tracked_2m()
    ok(m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE, (TDR, TDR)))
    assert m.pamt.backing == {} and m.pamt.type_of(TDR) != PT_PAMT


def test_demote_busy_against_an_exclusive_holder_of_the_sept_tree() -> None:
    """DEMOTE takes the S-EPT tree shared (tdh_mem_page_demote.c): an exclusive holder, a zero-step
    TDH.VP.ENTER here, makes it BUSY|SEPT; a shared holder does not."""
    m = blocked_tracked_2m()
    td = m.tds[TDR]
    vp = td.vcpus[TDVPR]
    vp.epf_stepping = True  # the last exit was an EPT violation on a private GPA
    ok(m.tdh_vp_enter_begin(TDVPR))
    assert td.sept_lock == LOCK_EX
    busy_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE), E.TDX_OPERAND_BUSY | SEPT)
    m.td_exit(TDVPR)  # kicked before the entry completed: every entry lock dropped
    td.sept_lock = 2  # two shared holders (AUG / REMOVE in flight elsewhere)
    ok(m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE))


def test_demote_busy_on_the_entry_and_the_tdr() -> None:
    m = blocked_tracked_2m()
    td = m.tds[TDR]
    td.sept_entry_lock.add(KEY2M)
    busy_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE), E.TDX_OPERAND_BUSY | RCX)
    td.sept_entry_lock.clear()
    td.tdr_lock = LOCK_EX
    busy_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                        E.TDX_OPERAND_BUSY | E.TDX_OPERAND_ID_RDX)
    td.tdr_lock = 1  # shared: a vCPU in the guest
    ok(m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE))


def test_demote_requires_keys_configured() -> None:
    m = blocked_tracked_2m()
    ok(m.tdh_vp_flush(TDVPR))
    ok(m.tdh_mng_vpflushdone(TDR))
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(TDR, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_TD_KEYS_NOT_CONFIGURED)


def test_demote_unknown_tdr() -> None:
    m = blocked_tracked_2m()
    fails_without_effect(m, lambda: m.tdh_mem_page_demote(0x1FF, GFN2M, PG_LEVEL_2M, SPARE),
                         E.TDX_OPERAND_INVALID | E.TDX_OPERAND_ID_TDR)


def test_demote_errno_names() -> None:
    assert E.leaf_name(E.TDH_MEM_PAGE_DEMOTE) == "TDH.MEM.PAGE.DEMOTE" and E.TDH_MEM_PAGE_DEMOTE == 15
    assert E.err_desc(E.TDX_PAGE_NOT_FREE | R13) == "TDX_PAGE_NOT_FREE | TDX_OPERAND_ID_R13 (0xc00003030000000d)"
    assert E.err_desc(E.TDX_OPERAND_INVALID | R8) == "TDX_OPERAND_INVALID | TDX_OPERAND_ID_R8 (0xc000010000000008)"


# =========================================================================================================
# Kernel wrappers: DEMOTE, AUG / REMOVE at 2M, WBINVD over a folio
# =========================================================================================================
def test_wrapper_aug_2m_gifts_the_whole_folio() -> None:
    host = make_host()
    add_tables(host.seam, gfn=GFN2M, lowest=PG_LEVEL_1G)
    g = S.tdh_mem_page_aug(host, TDR, GFN2M, PG_LEVEL_2M, HUGE)
    assert next(g).leaf == E.TDH_MEM_PAGE_AUG
    assert finish(g, None) == E.TDX_SUCCESS
    assert all(host.td_keyed.get(p) == HKID for p in huge_pages())


def test_wrapper_demote_is_one_step_on_the_entry() -> None:
    host = make_host()
    host.seam = blocked_tracked_2m()
    g = S.tdh_mem_page_demote(host, TDR, GFN2M, PG_LEVEL_2M, SPARE, nofail=True)
    op = next(g)
    assert (op.leaf, op.what, op.obj, op.nofail) == (15, "TDH.MEM.PAGE.DEMOTE", ("sept", TDR, PG_LEVEL_2M, GFN2M), True)
    assert host.seam.tds[TDR].sept_state[KEY2M] == SEPT_PENDING_BLOCKED  # nothing before the step is answered
    assert finish(g, None) == E.TDX_SUCCESS
    assert host.seam.tds[TDR].sept_state[KEY2M] == SEPT_NL_MAPPED
    assert host.td_keyed.get(SPARE) == HKID  # written by the module with the TD's key
    assert host.current.injected_error is False


def test_wrapper_demote_injected_busy_has_no_effect() -> None:
    host = make_host()
    host.seam = blocked_tracked_2m(dpamt=True)
    before = snapshot(host.seam)
    g = S.tdh_mem_page_demote(host, TDR, GFN2M, PG_LEVEL_2M, SPARE, DEMOTE_PAMT)
    assert next(g).nofail is False
    busy = E.TDX_OPERAND_BUSY | SEPT
    assert finish(g, busy) == busy
    assert host.seam == before and SPARE not in host.td_keyed
    assert host.current.injected_error is True and host.injections == 1 and host.faults_injected == 0


def test_wrapper_demote_reports_the_module_error() -> None:
    host = make_host()
    host.seam = runnable_2m()
    g = S.tdh_mem_page_demote(host, TDR, GFN2M, PG_LEVEL_2M, SPARE)
    next(g)
    assert finish(g, None) == E.TDX_GPA_RANGE_NOT_BLOCKED | RCX
    assert host.current.injected_error is False and SPARE not in host.td_keyed


def _removed_2m_host() -> tuple:
    """A host whose TD had HUGE AUGed at 2M through the wrapper (so its 512 pages are TD-keyed), then
    blocked, tracked and removed at 2M."""
    host = make_host()
    add_tables(host.seam, gfn=GFN2M, lowest=PG_LEVEL_1G)
    g = S.tdh_mem_page_aug(host, TDR, GFN2M, PG_LEVEL_2M, HUGE)
    next(g)
    ok(finish(g, None))
    ok(host.seam.tdh_mem_range_block(TDR, GFN2M, PG_LEVEL_2M))
    ok(host.seam.tdh_mem_track(TDR))
    g = S.tdh_mem_page_remove(host, TDR, GFN2M, PG_LEVEL_2M)
    next(g)
    ok(finish(g, None))
    return host


def test_wrapper_wbinvd_of_a_folio_is_one_step_flushing_every_page() -> None:
    host = _removed_2m_host()
    g = S.tdh_phymem_page_wbinvd_hkid(host, HKID, HUGE, PAGES_PER_2M)
    op = next(g)
    assert (op.leaf, op.obj) == (E.TDH_PHYMEM_PAGE_WBINVD, ("page", HUGE))
    assert finish(g, None) == E.TDX_SUCCESS  # the whole loop ran in the one step
    assert not any(p in host.td_keyed for p in huge_pages())


def test_wrapper_wbinvd_of_a_folio_injected_failure_flushes_nothing() -> None:
    host = _removed_2m_host()
    g = S.tdh_phymem_page_wbinvd_hkid(host, HKID, HUGE, PAGES_PER_2M)
    next(g)
    err = E.TDX_PAGE_METADATA_INCORRECT | RCX
    assert finish(g, err) == err
    assert all(host.td_keyed.get(p) == HKID for p in huge_pages())
    assert host.faults_injected == 1


def test_wrapper_wbinvd_of_a_folio_stops_at_the_first_module_error() -> None:
    """The kernel's loop returns the first failing WBINVD: the pages before it are flushed, the rest not."""
    host = _removed_2m_host()
    bad = HUGE + 100
    host.seam.pamt.assign(bad, PT_REG, TDR)  # not PT_NDA: WBINVD refuses it
    g = S.tdh_phymem_page_wbinvd_hkid(host, HKID, HUGE, PAGES_PER_2M)
    next(g)
    assert finish(g, None) == E.TDX_PAGE_METADATA_INCORRECT | RCX
    assert not any(p in host.td_keyed for p in range(HUGE, bad))
    assert all(host.td_keyed.get(p) == HKID for p in range(bad, HUGE + PAGES_PER_2M))


def test_wrapper_wbinvd_of_one_page_is_unchanged() -> None:
    host = make_host()
    host.td_keyed[DATA] = HKID
    g = S.tdh_phymem_page_wbinvd_hkid(host, HKID, DATA)
    next(g)
    assert finish(g, None) == E.TDX_SUCCESS and DATA not in host.td_keyed
