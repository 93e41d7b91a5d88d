"""Zaps at every level, yielding as the kernel does (issue 8, part 3).

tdp_mmu_zap_root() runs its 4K, 2M, 1G and root passes, so every leaf is gone before any table is
freed; tdp_mmu_iter_cond_resched() drops RCU *and* mmu_lock between tables in root zaps and leaf zaps
alike, so other lock takers run in the middle of a zap; the root walks around those zaps hold a root
reference (tdp_mmu_next_root()), without which the zapped root can be freed under the walk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from septlab.check.invariants import Checker
from septlab.explore.choosers import RandomChooser
from septlab.explore.driver import run_schedule
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.explore.runtime import Runtime
from septlab.scenarios import load_scenario
from septlab.scenarios.world import build_world
from septlab.tdx_module import errno as E
from septlab.variants import get_variant


class ReclaimOrder(Checker):
    """The checker, also recording the level of each S-EPT page TDH.PHYMEM.PAGE.RECLAIM gave back."""

    def __init__(self) -> None:
        super().__init__()
        self.levels: list[int] = []

    def seamcall(self, leaf: int, err: int, injected: bool, pages: tuple[int, ...]) -> None:
        if leaf == E.TDH_PHYMEM_PAGE_RECLAIM and err == E.TDX_SUCCESS and pages:
            sp = next((sp for sp in self.kvm.sp_by_spt.values() if sp.external_spt == pages[0]), None)
            if sp is not None:
                self.levels.append(sp.level)
        super().seamcall(leaf, err, injected, pages)


class YieldWatcher(RandomChooser):
    """A random scheduler that also looks at the world before every choice: which zaps are suspended
    without mmu_lock, and whether another task holds mmu_lock meanwhile."""

    def __init__(self, world: Any, seed: int) -> None:
        super().__init__(seed, 0.0)
        self.world = world
        self.seen: set[tuple[str, bool]] = set()  # (zap function, another task held mmu_lock)

    def choose(self, kind: str, n: int) -> int:
        lock = self.world.kvm.mmu_lock
        for th in self.world.threads:
            if th.done or th.task.holds("mmu_lock"):
                continue
            gen, names = th.gen, set()
            while gen is not None and gen.gi_frame is not None:
                names.add(gen.gi_code.co_name)
                gen = gen.gi_yieldfrom
            for fn in ("__tdp_mmu_zap_root", "tdp_mmu_zap_leafs"):
                if fn in names and "tdp_mmu_iter_cond_resched" in names:
                    self.seen.add((fn, lock.readers > 0 or lock.writer not in (None, th.task.name)))
        return super().choose(kind, n)


def _world(scn: Any, chk: Checker, variant: str = "tdx-free") -> Any:
    world = build_world(scn, get_variant(variant), False, chk, False)
    chk.attach(world)
    return world


def _run(world: Any, chk: Checker, chooser: Any) -> None:
    scn = world.scenario
    out = Runtime(world.host, world.threads, chooser, scn.faults, scn.max_steps, scn.max_faults).run()
    chk.finish(out.status, out.steps, out.blocked)
    assert out.status == "done" and not chk.violations, (out, chk.violations)


def test_root_zap_reclaims_s_ept_pages_level_by_level(tmp_path: Path) -> None:
    """The passes run bottom-up over the whole root: with private memory in two 1 GiB regions, every
    4 KiB-level S-EPT page comes back before any 2 MiB-level one, and those before the 1 GiB level
    (zapping at 1G first would interleave them, one 1 GiB subtree at a time)."""
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nvcpus: 1\nmemory: 2GiB\nthreads:\n  - {kind: vcpu, vcpu: 0, access: [{gfn: 0x0}, "
                 "{gfn: 0x200}, {gfn: 0x40000}, {gfn: 0x40200}]}\nfaults: {}\nfault_rate: 0.0\n")
    chk = ReclaimOrder()
    world = _world(load_scenario(str(f)), chk)
    _run(world, chk, RandomChooser(0, 0.0))
    assert sorted(chk.levels) == [1, 1, 1, 1, 2, 2, 3], chk.levels
    assert chk.levels == sorted(chk.levels), chk.levels


def test_zaps_drop_mmu_lock_between_tables_and_others_take_it() -> None:
    """Root zaps (the fast zap, under the read lock) and leaf zaps (mmu-notifier invalidations, under
    the write lock) are both seen suspended in tdp_mmu_iter_cond_resched() without mmu_lock, and both
    with another task holding mmu_lock in the middle of them."""
    scn = load_scenario("zap-yield")
    seen: set[tuple[str, bool]] = set()
    for seed in range(40):
        chk = Checker()
        world = _world(scn, chk)
        watcher = YieldWatcher(world, seed)
        _run(world, chk, watcher)
        seen |= watcher.seen
    assert {("__tdp_mmu_zap_root", True), ("tdp_mmu_zap_leafs", True)} <= seen, seen


def test_the_zap_yield_check_configuration_is_clean_and_random_runs_catch_the_unreferenced_walk() -> None:
    """The small configuration (one preemption, as fast as a unit test) has no violation with the kernel's
    root walk; random schedules of the full scenario catch a walk without the root reference reading the
    freed root."""
    r = run_check(load_scenario("zap-yield", small=True), get_variant("tdx-free"), False,
                  CheckOptions(strategy="dfs", preemptions=1))
    assert r.complete is False and r.violation is None and r.stats.states > 1000
    scn, bad = load_scenario("zap-yield"), get_variant("bug-root-walk-no-reference")
    hit = next((v for s in range(1000) for v in run_schedule(scn, bad, False, s, history=False).violations), None)
    assert hit is not None and hit.invariant == "rcu-use-after-free"


@pytest.mark.slow
def test_check_finds_the_unreferenced_root_walk_on_its_configuration() -> None:
    """`septlab check --scenario zap-yield` (2 preemptions, its check_scenario) finds the mutant (~25 s)."""
    bad = run_check(load_scenario("zap-yield", small=True), get_variant("bug-root-walk-no-reference"), False,
                    CheckOptions(strategy="dfs", preemptions=2))
    assert bad.violation is not None and bad.violation.invariant == "rcu-use-after-free"


def _listed_roots(n: int) -> tuple[Any, list[Any]]:
    """A zap-yield world whose root list holds `n` fresh roots (one reference each), the first task
    current and holding mmu_lock for write, as the root walks require."""
    from septlab.kvm import tdp_mmu as M

    chk = Checker()
    world = _world(load_scenario("zap-yield", small=True), chk)
    kvm = world.kvm
    task = world.threads[0].task
    world.host.current = task
    roots = [M._new_sp(kvm, 0x100 + i) for i in range(n)]
    for r in roots:
        r.is_root, r.root_count, r.level = True, 1, M.ROOT_LEVEL
        kvm.roots.append(r)
    kvm.mmu_lock.writer = task.name
    task.held.append(("mmu_lock", "write"))
    task.hlocks.append(("mmu_lock", 0, "test"))  # lockdep's held_locks[], parallel to `held`
    return kvm, roots


@pytest.mark.parametrize("k", [0, 1])
def test_tdp_mmu_next_root_takes_and_drops_references(k: int) -> None:
    """tdp_mmu_next_root(): the visited root holds one more reference while the body runs, none after."""
    from septlab.kvm import tdp_mmu as M

    kvm, roots = _listed_roots(2)
    roots[k].root_count = 0  # being freed: refcount_inc_not_zero() fails, the walk skips it
    during = [(r.sp_id, r.root_count) for r in M.for_each_tdp_mmu_root_yield_safe(kvm, M.KVM_ALL_ROOTS)]
    live = roots[1 - k]
    assert during == [(live.sp_id, 2)]
    assert live.root_count == 1


def test_walk_from_an_unlinked_root_follows_its_stale_next_pointer(monkeypatch: pytest.MonkeyPatch) -> None:
    """list_del_rcu() leaves ->next pointing at the successor: a walker whose prev was unlinked (it put its
    reference too early: an outsider's reordering of tdp_mmu_next_root) goes on from there, through roots
    unlinked since, to the first one still listed -- it used to crash the model (list.index) instead."""
    from septlab.kvm import tdp_mmu as M

    kvm, roots = _listed_roots(4)
    read: list[int] = []  # the unlinked roots' memory the walk reads (KASAN-checked: freed would be a UAF)
    monkeypatch.setattr(M, "kasan_check", lambda host, pfn, write, what: read.append(pfn) or True)
    for i in (1, 2, 0):  # last references put (unlinked, freeing queued): 1 -> 2 -> 3 and 0 -> 3 by stale ->next
        M.kvm_tdp_mmu_put_root(kvm, roots[i])
    assert [r.link_next for r in roots[:3]] == [roots[3], roots[2], roots[3]]
    assert M.list_next_roots_rcu(kvm, roots[1]) == [roots[3]]
    assert read == [roots[1].spt, roots[2].spt]
    assert M.list_next_roots_rcu(kvm, roots[0]) == [roots[3]]
    assert M.list_next_roots_rcu(kvm, None) == [roots[3]]
    M.kvm_tdp_mmu_put_root(kvm, roots[3])  # the list's end: its ->next is the list head
    assert roots[3].link_next is None and M.list_next_roots_rcu(kvm, roots[1]) == []
