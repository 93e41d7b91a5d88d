"""lockdep in full: might_sleep(), the lock-order graph, lockdep-RCU and lockdep_assert_held*().

Host-level tests drive the primitives directly; model-level tests show each new invariant fires on its
mutant and never on the merged design (tdx-free), with DPAMT off and on.
"""

from __future__ import annotations

import pytest

from septlab.check.invariants import INVARIANTS
from septlab.check.report import render
from septlab.explore.driver import run_schedule
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.host.host import Host
from septlab.host.locks import (
    Mutex,
    RwLock,
    SpinLock,
    cond_resched_rwlock,
    lockdep_assert_held,
    lockdep_assert_held_read,
    lockdep_assert_held_write,
    mutex_lock,
    mutex_unlock,
    read_lock,
    read_unlock,
    spin_lock,
    spin_unlock,
    write_lock,
    write_unlock,
)
from septlab.host.page_alloc import GFP_ATOMIC, GFP_KERNEL, GUEST, alloc_page
from septlab.host.probe import Probe
from septlab.host.rcu import rcu_dereference_check, rcu_read_lock, rcu_read_unlock
from septlab.host.task import CTX_SOFTIRQ, SOFTIRQ_OFFSET, Task
from septlab.scenarios import load_scenario
from septlab.variants import registry

from .conftest import base_seeds, violations_over

NEW = ("sleep-in-atomic", "lock-order", "suspicious-rcu-usage", "lockdep-assert")
MUTANTS = {
    "bug-pamt-get-no-cache": "sleep-in-atomic",
    "bug-topup-under-mmu-lock": "sleep-in-atomic",
    "bug-mmu-lock-inside-pages-lock": "lock-order",
    "bug-lockless-walk-no-rcu": "suspicious-rcu-usage",
    "bug-remove-asserts-held-read": "lockdep-assert",
}


class Recorder(Probe):
    def __init__(self):
        self.reports = []

    def report(self, kind, title, **d):
        self.reports.append((kind, title, d))

    def kinds(self):
        return [k for k, _, _ in self.reports]


def _host(name="t0", softirq=False):
    rec = Recorder()
    host = Host(probe=rec)
    host.current = _task(name, softirq)
    return host, rec


def _task(name, softirq=False):
    t = Task(name, "test", cpu=1)
    if softirq:
        t.ctx.append(CTX_SOFTIRQ)
        t.preempt_count += SOFTIRQ_OFFSET
    return t


def run(gen):
    """Drive a lock generator to completion (the test is its own scheduler)."""
    for _ in gen:
        pass


# --- might_sleep -------------------------------------------------------------------------------------
@pytest.mark.parametrize("ctx", ["spin", "read", "write", "rcu", "softirq"])
def test_sleeping_allocation_in_atomic_context_is_reported(ctx):
    host, rec = _host(softirq=ctx == "softirq")
    spin, rw = SpinLock("pamt_lock"), RwLock("mmu_lock", cls="&kvm->mmu_lock")
    if ctx == "spin":
        run(spin_lock(host, spin))
    elif ctx == "read":
        run(read_lock(host, rw))
    elif ctx == "write":
        run(write_lock(host, rw))
    elif ctx == "rcu":
        rcu_read_lock(host)
    alloc_page(host, GUEST, GFP_ATOMIC)  # never sleeps
    assert rec.reports == []
    alloc_page(host, GUEST, GFP_KERNEL)
    assert rec.kinds() == ["sleep-in-atomic"]
    _, title, d = rec.reports[0]
    assert title.startswith("BUG: sleeping function called from invalid context at septlab/host/page_alloc.py:")
    assert d["what"] == "alloc_page(GFP_KERNEL)" and d["pid"] == 1001 and d["irqs_disabled"] == 0
    assert d["in_atomic"] == (ctx != "rcu") and d["rcu_depth"] == (ctx == "rcu")
    if ctx in ("read", "write"):
        # usage chars: {hardirq-W, hardirq-R, softirq-W, softirq-R}, '+' = used with that irq enabled
        assert d["held"] == [("(&kvm->mmu_lock){" + (".+.+" if ctx == "read" else "+.+.") + "}-{3:3}", "run")]


def test_mutex_may_sleep_outside_spinlocks_but_not_inside():
    host, rec = _host()
    slots, spin = Mutex("slots_lock", cls="&kvm->slots_lock"), SpinLock("pamt_lock")
    run(mutex_lock(host, slots))
    alloc_page(host, GUEST, GFP_KERNEL)  # a mutex holder may sleep
    mutex_unlock(host, slots)
    run(spin_lock(host, spin))
    run(mutex_lock(host, slots))
    assert rec.kinds() == ["sleep-in-atomic"] and rec.reports[0][2]["what"] == "mutex_lock(&kvm->slots_lock)"
    assert rec.reports[0][2]["preempt_count"] == 1


def test_cond_resched_rwlock_expects_exactly_the_rwlock_and_no_rcu():
    """tdp_mmu_iter_cond_resched(): __might_resched(PREEMPT_LOCK_RESCHED_OFFSETS) after rcu_read_unlock()."""
    host, rec = _host()
    rw, spin = RwLock("mmu_lock"), SpinLock("pamt_lock")
    run(write_lock(host, rw))
    cond_resched_rwlock(host, rw)
    assert rec.reports == []
    rcu_read_lock(host)
    cond_resched_rwlock(host, rw)  # RCU still held across the resched point
    rcu_read_unlock(host)
    run(spin_lock(host, spin))
    cond_resched_rwlock(host, rw)  # a second lock held: preempt_count 2, expected 1
    assert [(d["preempt_count"], d["expected"], d["rcu_depth"]) for _, _, d in rec.reports] == [(1, 1, 1), (2, 1, 0)]


# --- the lock-order graph ----------------------------------------------------------------------------
def test_abba_is_reported_when_the_cycle_closes_even_without_a_deadlock():
    host, rec = _host()
    a, b = SpinLock("a", cls="&a"), SpinLock("b", cls="&b")
    run(spin_lock(host, a))
    run(spin_lock(host, b))
    spin_unlock(host, b)
    spin_unlock(host, a)
    host.current = _task("t1")  # another task, much later: nobody holds anything
    run(spin_lock(host, b))
    assert rec.reports == []
    run(spin_lock(host, a))
    assert rec.kinds() == ["lock-order"]
    d = rec.reports[0][2]
    assert d["form"] == "circular" and d["acquiring"][0] == "(&a){+.+.}-{3:3}" and d["holding"][0].startswith("(&b)")
    assert [e[0] for e in d["entries"]] == [1, 0] and d["entries"][0][1].startswith("(&b)")
    assert (d["source"], d["target"], d["parent"]) == ("&a", "&b", "&a")
    spin_unlock(host, a)
    spin_unlock(host, b)
    run(spin_lock(host, b))
    run(spin_lock(host, a))  # the same closing dependency again: reported once
    assert rec.kinds() == ["lock-order"]


def _two_rwlocks(first_read: int, second_read: int, softirq: bool) -> list[str]:
    """T0 takes A then B, T1 takes B then A; *_read: 0 write, 1 read. Returns the report kinds."""
    host, rec = _host(softirq=softirq)
    a, b = RwLock("A"), RwLock("B")

    def take(lock, rd):
        run(read_lock(host, lock) if rd else write_lock(host, lock))

    def drop(lock, rd):
        (read_unlock if rd else write_unlock)(host, lock)

    take(a, first_read)
    take(b, second_read)
    drop(b, second_read)
    drop(a, first_read)
    host.current = _task("t1", softirq)
    take(b, first_read)
    take(a, second_read)
    return rec.kinds()


def test_read_read_cycle_of_recursive_readers_is_not_a_deadlock():
    # in softirq read_lock() is a recursive read: A -(SR)-> B -(SR)-> A is not a strong cycle
    assert _two_rwlocks(1, 1, softirq=True) == []


def test_read_read_cycle_is_a_deadlock_with_queued_rwlocks_in_process_context():
    # read_lock_is_recursive() is false in process context on x86: a waiting writer blocks new readers
    assert _two_rwlocks(1, 1, softirq=False) == ["lock-order"]


@pytest.mark.parametrize("first,second", [(0, 1), (1, 0), (0, 0)])
def test_read_write_mixes_are_deadlocks(first, second):
    assert _two_rwlocks(first, second, softirq=True) == ["lock-order"]


def test_recursive_reader_against_a_writer_that_takes_it_for_read_only():
    """A -(SN)-> B then B -(ER)-> A: T1 holds B and re-reads A, which a reader of A never blocks."""
    host, rec = _host(softirq=True)
    a, b = RwLock("A"), RwLock("B")
    run(read_lock(host, a))
    run(write_lock(host, b))
    write_unlock(host, b)
    read_unlock(host, a)
    host.current = _task("t1", softirq=True)
    run(write_lock(host, b))
    run(read_lock(host, a))
    assert rec.reports == []


def test_recursive_locking_and_nest_lock():
    host, rec = _host()
    kvm_lock, v0, v1 = Mutex("kvm->lock"), Mutex("vcpu->mutex"), Mutex("vcpu->mutex")
    run(mutex_lock(host, kvm_lock))
    run(mutex_lock(host, v0, nest=kvm_lock))
    run(mutex_lock(host, v1, nest=kvm_lock))  # kvm_lock_all_vcpus(): one held lock, two references
    assert rec.reports == [] and host.current.held == [("kvm->lock", "mutex"), ("vcpu->mutex", "mutex")]
    mutex_unlock(host, v1)
    mutex_unlock(host, v0)
    mutex_unlock(host, kvm_lock)
    assert host.current.held == [] and host.current.hlocks == []
    run(mutex_lock(host, v0))
    run(mutex_lock(host, v1))  # without the nest lock: the same class twice
    assert rec.kinds() == ["lock-order"] and rec.reports[0][1] == "WARNING: possible recursive locking detected"


# --- lockdep_assert_held*() --------------------------------------------------------------------------
def test_lockdep_assert_held_read_fails_for_a_writer():
    host, rec = _host()
    rw = RwLock("mmu_lock", cls="&kvm->mmu_lock")
    for check in (lockdep_assert_held, lockdep_assert_held_read, lockdep_assert_held_write):
        check(host, rw)
    assert [d["why"] for _, _, d in rec.reports] == ["not held"] * 3
    rec.reports.clear()
    run(write_lock(host, rw))
    lockdep_assert_held(host, rw)
    lockdep_assert_held_write(host, rw)
    lockdep_assert_held_read(host, rw)
    assert rec.kinds() == ["lockdep-assert"]
    _, title, d = rec.reports[0]
    assert d["assertion"] == "lockdep_assert_held_read(&kvm->mmu_lock)" and d["why"] == "held for write"
    assert title.startswith("WARNING: CPU: 1 PID: 1001 at tests/test_lockdep.py:")
    write_unlock(host, rw)
    run(read_lock(host, rw))
    lockdep_assert_held_read(host, rw)
    lockdep_assert_held_write(host, rw)
    assert [d["why"] for _, _, d in rec.reports] == ["held for write", "held for read"]


# --- lockdep-RCU -------------------------------------------------------------------------------------
def test_rcu_dereference_needs_a_read_side_section_or_its_condition():
    host, rec = _host()
    spin = SpinLock("tdp_mmu_pages_lock")
    rcu_dereference_check(host, True, "p")  # the documented lockdep condition holds
    rcu_read_lock(host)
    rcu_dereference_check(host, False, "p")
    rcu_read_unlock(host)
    assert rec.reports == []
    run(spin_lock(host, spin))  # a spinlock is not an RCU read-side section for rcu_dereference()
    rcu_dereference_check(host, False, "sptep")
    assert rec.kinds() == ["suspicious-rcu-usage"]
    _, title, d = rec.reports[0]
    assert title.startswith("tests/test_lockdep.py:") and title.endswith(" suspicious rcu_dereference_check() usage!")
    assert d["what"] == "sptep" and len(d["held"]) == 1


# --- the model ---------------------------------------------------------------------------------------
def test_every_new_invariant_has_a_mutant_with_a_reference():
    reg = registry()
    for m, inv in MUTANTS.items():
        v = reg[m]
        assert inv in INVARIANTS and v.kind == "mutant" and v.catches == (inv,)
        assert v.reference and v.description and v.check_scenario
    assert set(NEW) <= set(MUTANTS.values())


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_violates_its_invariant(mutant):
    inv = MUTANTS[mutant]
    # nearly every schedule of seed's own configuration (DPAMT on: bug-pamt-get-no-cache needs it)
    got = violations_over("seed", mutant, True, 10, base_seeds("seed", 10))
    assert got.get(inv, 0) >= 9, got
    v = registry()[mutant]
    r = run_check(load_scenario(v.check_scenario, small=True), v, True, CheckOptions(strategy="dfs"))
    assert r.violation is not None and r.violation.invariant == inv


@pytest.mark.parametrize("dpamt", [False, True])
@pytest.mark.parametrize("scenario", ["seed", "conversion-storm", "boot-teardown"])
def test_merged_design_has_no_lockdep_false_alarms(scenario, dpamt):
    """50 schedules each; boot-teardown in its small configuration (1 GiB is the benchmark's size), which
    injects map-side BUSY and RECLAIM failures."""
    if scenario == "boot-teardown":
        scn = load_scenario(scenario, small=True)
        got: dict[str, int] = {}
        for seed in range(50):
            r = run_schedule(scn, registry()["tdx-free"], dpamt, seed, history=False)
            assert r.status == "done", r.crash
            for name in {x.invariant for x in r.violations}:
                got[name] = got.get(name, 0) + 1
    else:
        got = violations_over(scenario, "tdx-free", dpamt, 50)
    assert not set(got) & set(NEW), got


@pytest.mark.parametrize("dpamt", [False, True])
def test_merged_design_at_a_size_where_leaf_gets_open_pamt_regions(dpamt):
    """4 MiB: guest pages spill into 2 MiB regions no S-EPT page opened, so leaf maps do 0 -> 1 gets."""
    scn = load_scenario("boot-teardown", {"memory": "4MiB"})
    r = run_schedule(scn, registry()["tdx-free"], dpamt, 0, history=False)
    assert r.status == "done" and r.violations == []


@pytest.mark.parametrize("design", ["rcu-free", "tdx-alloc-hook"])
def test_other_designs_still_only_break_lock_context(design):
    assert set(violations_over("seed", design, True, 20)) == {"lock-context"}
    assert violations_over("seed", design, False, 20) == {}


def test_merged_design_lock_graph_follows_the_kernel_order():
    r = run_schedule(load_scenario("seed"), registry()["tdx-free"], True, 1, history=False)
    ld = r.world.host.lockdep
    edges = {(ld.classes[a][0], ld.classes[b][0]) for a, b, _ in ld.edges()}
    order = [("&kvm->lock", "&vcpu->mutex"), ("&vcpu->mutex", "&kvm->slots_lock"),
             ("&kvm->slots_lock", "mapping.invalidate_lock"), ("mapping.invalidate_lock", "&kvm->mmu_lock"),
             ("&kvm->slots_lock", "&kvm->mmu_lock"), ("&kvm->mmu_lock", "pamt_lock"),
             ("&kvm->mmu_lock", "&kvm->arch.tdp_mmu_pages_lock"), ("&kvm->slots_lock", "tdx_lock")]
    assert set(order) <= edges
    assert not {(b, a) for a, b in edges} & edges


@pytest.mark.parametrize("mutant,needles", [
    ("bug-pamt-get-no-cache", ["BUG: sleeping function called from invalid context at septlab/host/page_alloc.py:",
                               "in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 100",
                               "preempt_count: 1, expected: 0", "RCU nest depth: 1, expected: 0",
                               " #1: (&kvm->mmu_lock){++++}-{3:3}, at: kvm_tdp_page_fault",
                               "sleeping call: alloc_page(GFP_KERNEL_ACCOUNT)", "\n tdx_pamt_get\n"]),
    ("bug-mmu-lock-inside-pages-lock", ["WARNING: possible circular locking dependency detected",
                                        "is trying to acquire lock:\n (&kvm->mmu_lock){++++}-{3:3}, at: kvm_arch_destroy_vm",
                                        "-> #1 (&kvm->arch.tdp_mmu_pages_lock){+.+.}-{3:3}:",
                                        "-> #0 (&kvm->mmu_lock){++++}-{3:3}:", "       kvm_tdp_mmu_alloc_root",
                                        " Possible unsafe locking scenario:", "       CPU0                    CPU1",
                                        "  lock(&kvm->arch.tdp_mmu_pages_lock);", " *** DEADLOCK ***"]),
    ("bug-lockless-walk-no-rcu", ["WARNING: suspicious RCU usage",
                                  "septlab/kvm/tdp_mmu.py:", "suspicious rcu_dereference_check() usage!",
                                  "rcu_scheduler_active = 2, debug_locks = 1", "\n kvm_tdp_mmu_walk_lockless\n"]),
    ("bug-remove-asserts-held-read", ["------------[ cut here ]------------",
                                      "lockdep_assert_held_read(&kvm->mmu_lock): held for write",
                                      "locks held by", "(&kvm->mmu_lock){++++}-{3:3}"]),
])
def test_reports_read_like_the_kernel(mutant, needles):
    scn = load_scenario(registry()[mutant].check_scenario, small=True)
    r = run_schedule(scn, registry()[mutant], True, 0, history=True)
    v = next(x for x in r.violations if x.invariant == MUTANTS[mutant])
    text = render(v, r.world.host, r.log, "septlab replay TRACE", "header")
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
