"""septlab's TDX-module model against the module's own tables (septlab/conformance/, docs/fidelity.md).

The expectations are the transcriptions in septlab/conformance/data/ (intel/tdx-module TDX_1.5.01 and the
kernel's headers), never septlab. The suite covers every (leaf, entry state, level) the module's tables
define for the leaves septlab models, passes only while every mismatch is listed as a deliberate
simplification, and fails when a precondition is taken out of the model (the mutation tests below).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from septlab.conformance import drive as D
from septlab.conformance import run_conformance
from septlab.conformance.data import kernel_headers, module_tables, simplifications
from septlab.conformance.runner import Report, Row
from septlab.tdx_module import errno as E
from septlab.tdx_module.module import TdxModule
from septlab.tdx_module.sept import SEPT_MAPPED, SEPT_NL_BLOCKED, SEPT_NL_MAPPED, entry_key
from septlab.tdx_module.td import TD_KEYS_CONFIGURED


@pytest.fixture(scope="module")
def report() -> Report:
    return run_conformance()


def _show(rows: list[Row]) -> str:
    return "\n".join(f"{r.case} module={r.module} septlab={r.septlab}" for r in rows[:20])


# --- the transcriptions ------------------------------------------------------------------------------
def test_transcriptions_name_their_source_commit():
    t, k = module_tables(), kernel_headers()
    assert t.source["repository"] == "intel/tdx-module" and t.source["ref"] == "TDX_1.5.01"
    for src in (t.source, k.leaf_numbers.source, k.status_codes.source, k.operand_ids.source):
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]), src
    assert k.leaf_numbers.source["path"] == "arch/x86/virt/vmx/tdx/tdx.h"
    assert k.status_codes.source["path"] == "arch/x86/include/asm/shared/tdx_errno.h"


def test_transcribed_state_table_is_self_consistent():
    """Sixteen states, distinct encodings, leaf-ness from the PS bit matching the names, the blocked flag
    on exactly the *BLOCKED (not *BLOCKEDW) states, and every row of the lookup 16 wide."""
    t = module_tables()
    assert len(t.sept_states) == 16 and len({s.encoding for s in t.sept_states}) == 16
    for s in t.sept_states:
        assert s.leaf == (s.name not in ("FREE", "REMOVED", "NL_MAPPED", "NL_BLOCKED")), s
        assert s.any_blocked == s.name.endswith("_BLOCKED") or s.any_blocked == (s.name == "BLOCKED"), s
    assert {s.name for s in t.sept_states if s.rwx and not s.leaf} == {"NL_MAPPED"}
    assert [s.name for s in t.sept_states if t.sept_lookup[6][s.index]] == ["FREE", "REMOVED"]  # AUG


def test_every_pair_the_tables_define_is_covered(report: Report):
    """For every S-EPT leaf septlab models: all 16 states of seamcall_sept_state_lookup, at every level an
    entry in that state can be at (4K..512G of a 4-level S-EPT; no table at 4K, no leaf above 1G)."""
    t = module_tables()
    want = {(leaf, s.name, lv) for leaf in D.SEPT_CALLS for s in t.sept_states for lv in t.levels_of(s)}
    got = {(r.case.leaf, r.case.state, r.case.level) for r in report.rows if r.case.table == "sept"}
    assert got == want
    assert report.pairs == len(want) == 50 * len(D.SEPT_CALLS)
    assert {D.PAGE_ADD, D.SEPT_ADD, D.AUG, D.BLOCK, D.REMOVE} <= set(D.SEPT_CALLS)


def test_every_op_state_and_lifecycle_state_is_covered(report: Report):
    t = module_tables()
    ops = Counter(r.case.leaf for r in report.rows if r.case.table == "op-state")
    assert ops == {leaf: len(t.op_states) for leaf in D.TD_LEAVES}
    life = {(r.case.leaf, r.case.context, r.case.state) for r in report.rows if r.case.table == "lifecycle"}
    teardown = {"TDH.MNG.KEY.CONFIG", "TDH.MNG.VPFLUSHDONE", "TDH.MNG.KEY.FREEID", "TDH.PHYMEM.PAGE.RECLAIM"}
    assert {leaf for leaf, _, _ in life} == {leaf for leaf in t.lifecycle_checks if leaf in D.TD_LEAVES} | teardown
    assert all(sum(1 for x in life if x[:2] == key) == 4 for key in {x[:2] for x in life})


def test_every_septlab_leaf_number_and_status_is_checked(report: Report):
    names = {r.case.leaf for r in report.rows if r.case.table == "number"}
    consts = {n for n, v in vars(E).items() if n.startswith(("TDH_", "TDX_")) and isinstance(v, int)}
    assert consts <= names


# --- the verdict ---------------------------------------------------------------------------------------
def test_every_mismatch_is_listed_as_a_deliberate_simplification(report: Report):
    assert report.unlisted == [], _show(report.unlisted)
    assert report.exit_code == 0
    assert all(r.driven_ok for r in report.rows), _show([r for r in report.rows if not r.driven_ok])


def test_numbers_match_exactly(report: Report):
    """Leaf numbers, statuses and operand ids are never listed away: they match, or no header has them."""
    rows = [r for r in report.rows if r.case.table == "number"]
    assert [r for r in rows if r.match is False] == []
    assert {r.case.leaf for r in rows if r.match is None} == {
        "TDH_PHYMEM_PAMT_ADD", "TDH_PHYMEM_PAMT_REMOVE", "TDX_HPA_RANGE_NOT_FREE", "TDX_PAMT_NOT_BACKED"}


def test_every_listed_simplification_still_fits_a_mismatch(report: Report):
    assert report.stale == [], "remove these from septlab/conformance/data/simplifications.yaml"
    for s in simplifications():
        assert s.why and s.effect and s.kind in ("simplification", "pinned")


def test_the_model_fixes_hold(report: Report):
    """Behaviour this check made septlab fix: on these rows septlab returns the module's status (the walk
    row keeps its pinned operand id, see walk-operand)."""
    by = {(r.case.table, r.case.leaf, r.case.state, r.case.level, r.case.context): r for r in report.rows}
    for key in [("walk", D.PAGE_ADD, "NL_BLOCKED", 1, "INITIALIZED, parent at 2"),  # no walk through NL_BLOCKED
                ("walk", D.REMOVE, "NL_BLOCKED", 1, "RUNNABLE, parent at 2"),
                ("op-state", "TDH.VP.ENTER", "INITIALIZED", None, "TD_KEYS_CONFIGURED"),
                ("op-state", "TDH.VP.ADDCX", "UNINITIALIZED", None, "TD_KEYS_CONFIGURED"),
                ("lifecycle", "TDH.VP.FLUSH", "TD_BLOCKED", None, "RUNNABLE"),
                ("lifecycle", "TDH.VP.FLUSH", "TD_TEARDOWN", None, "RUNNABLE")]:
        r = by[key]
        assert r.septlab.split("|")[0] == r.module.split("|")[0] != "accept", r


def test_summary_counts(report: Report):
    c = report.counts()
    assert c["matches"] + c["mismatches"] + c["unverified"] == c["checks"] == len(report.rows)
    assert c["simplifications"] + c["unlisted"] == c["mismatches"]
    line = report.summary()
    assert line.startswith(f"conformance: {report.pairs} (leaf, entry state, level) pairs covered")
    assert f"{c['matches']} match, {c['mismatches']} mismatch" in line and "0 unlisted" in line


def test_rows_are_ordered_mismatches_first(report: Report):
    verdicts = [r.verdict.split(":")[0] for r in report.ordered()]
    assert verdicts.index("match") > max(i for i, v in enumerate(verdicts) if v == "listed")


# --- the suite fails when a precondition is taken out of the model ---------------------------------------
def _aug_any_state(self: TdxModule, tdr: int, gfn: int, level: int, page: int) -> int:
    """PAGE.AUG without its entry-state check: forget the entry before the real AUG looks at it."""
    td = self.tds.get(tdr)
    if td is not None:
        td.sept_state.pop(entry_key(level, gfn), None)
    return ORIG_AUG(self, tdr, gfn, level, page)


ORIG_AUG = TdxModule.tdh_mem_page_aug


def _sept_ready_any_lifecycle(td, initialized=False, tdr_op=E.TDX_OPERAND_ID_RDX, ex=False):
    if td is not None and td.lifecycle != TD_KEYS_CONFIGURED:
        saved, td.lifecycle = td.lifecycle, TD_KEYS_CONFIGURED
        try:
            return ORIG_READY(td, initialized, tdr_op, ex)
        finally:
            td.lifecycle = saved
    return ORIG_READY(td, initialized, tdr_op, ex)


ORIG_READY = TdxModule._sept_ready


@pytest.mark.parametrize("mutant,attr,value,expect", [
    ("AUG accepts a MAPPED entry", "tdh_mem_page_aug", _aug_any_state, ("sept", D.AUG, "MAPPED", 1)),
    ("no lifecycle check on the TD-scoped leaves", "_sept_ready", staticmethod(_sept_ready_any_lifecycle),
     ("lifecycle", D.AUG, "TD_BLOCKED", None)),
    ("the walk descends through an NL_BLOCKED entry", "_walk_ok",
     staticmethod(lambda td, gfn, level: level >= 4
                  or td.sept_state.get(entry_key(level + 1, gfn), 0) in (SEPT_NL_MAPPED, SEPT_NL_BLOCKED)),
     ("walk", D.PAGE_ADD, "NL_BLOCKED", 1)),
    ("REMOVE without the TLB-tracking check", "_is_tracked", staticmethod(lambda td, bepoch: True),
     ("sept", D.REMOVE, "BLOCKED", 1)),
    ("VP.ENTER before MR.FINALIZE", "_op_state_in", staticmethod(lambda td, *allowed: 0),
     ("op-state", "TDH.VP.ENTER", "INITIALIZED", None)),
])
def test_a_precondition_removed_from_the_model_is_reported(monkeypatch, mutant, attr, value, expect):
    monkeypatch.setattr(TdxModule, attr, value)
    report = run_conformance()
    assert report.exit_code == 1, mutant
    found = {(r.case.table, r.case.leaf, r.case.state, r.case.level) for r in report.unlisted}
    assert expect in found, (mutant, _show(report.unlisted))
    assert all(r.verdict == "MISMATCH" for r in report.unlisted)


def test_a_mutated_mapped_entry_state_shows_in_the_expected_row(monkeypatch):
    """The mutant's row says what each side said: the module refuses a MAPPED entry, the mutant accepts."""
    monkeypatch.setattr(TdxModule, "tdh_mem_page_aug", _aug_any_state)
    row = next(r for r in run_conformance().unlisted
               if (r.case.table, r.case.leaf, r.case.state, r.case.level) == ("sept", D.AUG, "MAPPED", 1))
    assert (row.module, row.septlab) == ("TDX_EPT_ENTRY_STATE_INCORRECT|RCX", "accept")
    assert D.SEPT_VALUE["MAPPED"] == SEPT_MAPPED


def test_fidelity_doc_states_the_coverage_and_every_simplification(report: Report):
    """docs/fidelity.md's Conformance section says what this run covers and lists every simplification."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "fidelity.md").read_text()
    section = doc.split("\n## Conformance\n", 1)[1]
    c = report.counts()
    assert f"{report.pairs} (leaf, entry state, level) pairs" in section
    assert f"{c['checks']} checks in all; {c['checks'] - c['injected']} reach their state by SEAMCALLs alone" in section
    for s in simplifications():
        assert f"| {s.id} | {s.kind} |" in section, s.id
