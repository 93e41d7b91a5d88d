"""Host primitives: RCU grace periods, lockdep usage states, the page allocator's KASAN checks."""

from __future__ import annotations

from septlab.host.host import Host
from septlab.host.locks import SpinLock, might_lock, spin_lock, spin_unlock
from septlab.host.page_alloc import FREE, GUEST, PCP_SHIFT, alloc_page, free_page, kasan_check
from septlab.host.probe import Probe
from septlab.host.rcu import call_rcu, rcu_read_lock, rcu_read_unlock
from septlab.host.task import CTX_SOFTIRQ, Task


class Recorder(Probe):
    def __init__(self):
        self.reports = []

    def report(self, kind, title, **d):
        self.reports.append((kind, title, d))


def _cb(host, arg):
    arg.append("ran")
    return
    yield


def test_grace_period_waits_for_readers_that_started_before_it():
    host = Host()
    reader = Task("reader", "vcpu")
    host.current = reader
    rcu_read_lock(host)
    host.current = Task("zapper", "zapper")
    call_rcu(host, _cb, [])
    rcu = host.rcu
    assert rcu.gp_can_end()  # the GP already in progress may end...
    rcu.gp_seq += 1
    assert not rcu.cb_ready()  # ...but the callback needs a full GP that began after call_rcu()
    assert not rcu.gp_can_end()  # and that one must wait for the reader
    host.current = reader
    rcu_read_unlock(host)
    assert rcu.gp_can_end()
    rcu.gp_seq += 1
    assert rcu.cb_ready()


def test_reader_entering_after_gp_start_does_not_block_it():
    host = Host()
    call_rcu(host, _cb, [])
    host.rcu.gp_seq = 1
    host.current = Task("late", "vcpu")
    rcu_read_lock(host)  # entered during GP 2, which may end without it
    assert host.rcu.gp_can_end()


def test_lockdep_inconsistent_lock_state():
    rec = Recorder()
    host = Host(probe=rec)
    lock = SpinLock("pamt_lock")
    host.current = Task("vcpu0", "vcpu")
    g = spin_lock(host, lock)
    next(g)
    try:
        g.send(None)
    except StopIteration:
        pass
    spin_unlock(host, lock)
    assert rec.reports == []
    sirq = Task("rcu", "softirq")
    sirq.ctx.append(CTX_SOFTIRQ)
    host.current = sirq
    might_lock(host, lock)
    assert [r[0] for r in rec.reports] == ["lock-context"]
    assert "{SOFTIRQ-ON-W} -> {IN-SOFTIRQ-W}" in rec.reports[0][1]
    might_lock(host, lock)
    assert len(rec.reports) == 1  # lockdep reports a lock class once


def test_softirq_only_lock_is_fine():
    rec = Recorder()
    host = Host(probe=rec)
    sirq = Task("rcu", "softirq")
    sirq.ctx.append(CTX_SOFTIRQ)
    host.current = sirq
    might_lock(host, SpinLock("x"))
    assert rec.reports == []


def test_double_free_and_use_after_free_are_reported():
    rec = Recorder()
    host = Host(probe=rec)
    p = alloc_page(host, GUEST)
    assert kasan_check(host, p, False, "reader")
    free_page(host, p)
    assert host.pages.state(p) == FREE
    assert not kasan_check(host, p, True, "writer")
    free_page(host, p)
    assert [r[0] for r in rec.reports] == ["use-after-free", "double-free"]


def test_allocator_reuses_the_lowest_free_page_first():
    host = Host()
    host.current = Task("vcpu0", "vcpu", cpu=1)
    a, b, c = (alloc_page(host, GUEST) for _ in range(3))
    assert (b, c) == (a + 1, a + 2)
    free_page(host, c)
    free_page(host, a)
    assert alloc_page(host, GUEST) == a  # lowest first, whatever the order of frees
    assert alloc_page(host, GUEST) == c
    assert alloc_page(host, GUEST) == c + 1
    host.current = Task("vcpu1", "vcpu", cpu=2)
    d = alloc_page(host, GUEST)
    assert d >> PCP_SHIFT == (a >> PCP_SHIFT) + 1  # another CPU's list: its pfns don't depend on interleaving
    free_page(host, c)  # freed back to the list it came from
    host.current = Task("vcpu0", "vcpu", cpu=1)
    assert alloc_page(host, GUEST) == c


def test_pages_in_use_is_pages_without_the_free_ones():
    """The end-of-run leak check lists pages in use at C speed: the same pages, in the same order."""
    h = Host()
    got = []
    for cpu in (2, 0, 1):
        h.current = Task(f"t{cpu}", "t", cpu=cpu)
        got += [alloc_page(h, GUEST) for _ in range(50)]
    for p in got[::3]:
        free_page(h, p)
    assert h.pages.pages_in_use() == [(p, o) for p, o in h.pages.pages() if o != FREE]
    assert len(h.pages.pages_in_use()) == len(got) - len(got[::3])
