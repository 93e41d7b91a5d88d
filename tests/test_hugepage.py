"""2 MiB private pages (the S-EPT hugepage series): the fault path maps 2 MiB leaves where guest_memfd
has a 2 MiB folio, conversions and 4 KiB accepts split them with TDH.MEM.PAGE.DEMOTE, zaps remove
2 MiB leaves whole, and a table the image left is never promoted. Each mechanism is shown by the
SEAMCALLs a run issues (leaf, status, pages touched) and by the mutant that removes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from septlab.check.invariants import Checker
from septlab.explore.choosers import RandomChooser
from septlab.explore.driver import run_schedule
from septlab.explore.runtime import Runtime
from septlab.scenarios import load_scenario
from septlab.scenarios.world import build_world
from septlab.tdx_module import errno as E
from septlab.variants import get_variant

HEAD = "name: h\nvcpus: 1\ncache_capacity: 8\nhugepages: {huge}\n"


class Recorder(Checker):
    """The checker, also recording every SEAMCALL as (leaf name, status, pages it touched)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int, int]] = []

    def seamcall(self, leaf: int, err: int, injected: bool, pages: tuple[int, ...]) -> None:
        self.calls.append((E.leaf_name(leaf), err, len(pages)))
        super().seamcall(leaf, err, injected, pages)


def run(tmp_path: Path, body: str, huge: bool = True, variant: str = "tdx-free", dpamt: bool = False,
        seed: int = 0) -> tuple[Recorder, object]:
    f = tmp_path / "h.yaml"
    f.write_text(HEAD.format(huge="true" if huge else "false") + body)
    scn = load_scenario(str(f))
    chk = Recorder()
    world = build_world(scn, get_variant(variant), dpamt, chk, False)
    chk.attach(world)
    rt = Runtime(world.host, world.threads, RandomChooser(seed, 0.0), scn.faults, scn.max_steps, scn.max_faults)
    out = rt.run()
    chk.finish(out.status, out.steps, out.blocked)
    assert out.status == "done" or chk.violations, out  # a fatal violation stops the run
    return chk, world


def ok(chk: Recorder, leaf: str, pages: int) -> int:
    return sum(1 for n, e, p in chk.calls if n == leaf and e == E.TDX_SUCCESS and p == pages)


ONE = "threads:\n  - {kind: vcpu, vcpu: 0, access: [{gfn: 0x200}, {gfn: 0x201}]}\n"


@pytest.mark.parametrize("dpamt", [False, True])
def test_a_private_fault_maps_a_2m_leaf_and_teardown_removes_it_whole(tmp_path, dpamt):
    chk, world = run(tmp_path, ONE, dpamt=dpamt)
    assert not chk.violations, chk.violations
    assert ok(chk, "TDH.MEM.PAGE.AUG", 512) == 1 and ok(chk, "TDH.MEM.PAGE.AUG", 1) == 0  # 0x201 is in it
    assert ok(chk, "TDH.MEM.PAGE.REMOVE", 512) == 1
    assert ok(chk, "TDH.PHYMEM.PAGE.WBINVD", 512) == 1  # the folio's 512 pages flushed
    # a 2 MiB mapping takes no PAMT_4K reference: the only PAMT.ADDs are for control and S-EPT pages
    guest_regions = {r for r in world.host.tdx.pamt_refcounts}
    assert all(r not in guest_regions for r in world.kvm.gmem_folios_2m)


def test_without_huge_folios_the_same_faults_map_4k(tmp_path):
    chk, _ = run(tmp_path, ONE, huge=False)
    assert ok(chk, "TDH.MEM.PAGE.AUG", 1) == 2 and ok(chk, "TDH.MEM.PAGE.AUG", 512) == 0


CONVERT = ("threads:\n  - {kind: vcpu, vcpu: 0, access: [{gfn: 0x200}]}\n"
           "  - kind: zapper\n    ops: [{after: {vcpu: 0, accesses: 1}}, {convert_to_shared: {gfn: 0x201}}]\n")


@pytest.mark.parametrize("dpamt", [False, True])
def test_converting_one_page_splits_the_2m_mapping_and_zaps_only_that_page(tmp_path, dpamt):
    chk, world = run(tmp_path, CONVERT, dpamt=dpamt)
    assert not chk.violations, chk.violations
    calls = [(n, p) for n, e, p in chk.calls if e == E.TDX_SUCCESS]
    demote = calls.index(("TDH.MEM.PAGE.DEMOTE", 1 + (2 if dpamt else 0)))  # + the new 4K level's PAMT pages
    assert calls[demote - 2:demote] == [("TDH.MEM.RANGE.BLOCK", 0), ("TDH.MEM.TRACK", 0)]
    # after the split: one 4 KiB removal for the converted page, then at teardown the other 511
    assert ok(chk, "TDH.MEM.PAGE.REMOVE", 1) == 512 and ok(chk, "TDH.MEM.PAGE.REMOVE", 512) == 0
    assert ok(chk, "TDH.MEM.PAGE.DEMOTE", 3 if dpamt else 1) == 1


def test_a_4k_accept_splits_and_the_region_is_never_mapped_huge_again(tmp_path):
    body = "threads:\n  - {kind: vcpu, vcpu: 0, access: [{gfn: 0x400}, {gfn: 0x401, accept: 4K}, {gfn: 0x600, accept: 4K}]}\n"
    chk, world = run(tmp_path, body)
    assert not chk.violations, chk.violations
    assert ok(chk, "TDH.MEM.PAGE.DEMOTE", 1) == 1  # 0x400's region, mapped 2 MiB, is split
    assert ok(chk, "TDH.MEM.PAGE.AUG", 512) == 1 and ok(chk, "TDH.MEM.PAGE.AUG", 1) == 1  # 0x600: 4K at once
    assert world.kvm.guest_inhibit == {0x400 >> 9, 0x600 >> 9}


def test_a_table_the_image_left_is_not_promoted(tmp_path):
    body = "image: [{gfn: 0x600}]\nthreads:\n  - {kind: vcpu, vcpu: 0, access: [{gfn: 0x601}]}\n"
    chk, _ = run(tmp_path, body)
    assert not chk.violations, chk.violations
    assert ok(chk, "TDH.MEM.PAGE.ADD", 2) == 1 and ok(chk, "TDH.MEM.PAGE.AUG", 1) == 1  # (page, source)
    assert ok(chk, "TDH.MEM.PAGE.AUG", 512) == 0
    bad, _ = run(tmp_path, body, variant="bug-mirror-promotion")
    assert {v.invariant for v in bad.violations} >= {"lockdep-assert"}


HUGE_MUTANTS = ["bug-demote-without-block", "bug-demote-no-pamt-pages", "bug-pamt-get-for-2m", "bug-mirror-promotion",
                "bug-split-alloc-under-mmu-lock"]


@pytest.mark.parametrize("mutant", HUGE_MUTANTS)
def test_each_hugepage_mutant_is_caught_in_the_hugepage_scenario(mutant):
    v = get_variant(mutant)
    assert v.check_scenario == "hugepage"
    scn = load_scenario("hugepage")
    r = run_schedule(scn, v, True, 0, history=False)
    assert {x.invariant for x in r.violations} & set(v.catches), r.violations


@pytest.mark.parametrize("dpamt", [False, True])
def test_tdx_free_hugepage_random_schedules_are_clean(dpamt):
    scn = load_scenario("hugepage")
    for seed in range(6):
        r = run_schedule(scn, get_variant("tdx-free"), dpamt, seed, history=False)
        assert r.status == "done" and not r.violations, (seed, r.violations)


@pytest.mark.slow
@pytest.mark.parametrize("dpamt", [False, True])
def test_hugepage_small_configuration_is_proved_and_reaches_every_2m_leaf(dpamt):
    """`septlab check --scenario hugepage --variant tdx-free --exhaustive` (about two minutes each): complete,
    no violation, and the coverage shows 2 MiB AUG, BLOCK, REMOVE and DEMOTE succeeding."""
    from septlab.explore.exhaustive import CheckOptions, run_check

    r = run_check(load_scenario("hugepage", small=True), get_variant("tdx-free"), dpamt,
                  CheckOptions(strategy="dfs"))
    assert r.complete and r.violation is None
    assert r.stats.states == (3_458 if dpamt else 3_434)
    ok2m = {(row["leaf"], row["entry_state"]) for row in r.coverage["seamcall_entry_state"] if row["outcome"] == "ok"}
    assert {("TDH.MEM.PAGE.AUG", "L2:FREE"), ("TDH.MEM.RANGE.BLOCK", "L2:PENDING"),
            ("TDH.MEM.PAGE.REMOVE", "L2:PENDING_BLOCKED"), ("TDH.MEM.PAGE.DEMOTE", "L2:PENDING_BLOCKED")} <= ok2m, ok2m
