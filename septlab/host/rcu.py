"""RCU: read-side sections per task, call_rcu(), grace periods and the softirq that runs callbacks.

A grace period ends (gp_seq s -> s+1) only when no reader that entered before it began is still in
its read-side section: no reader with entry sequence < s. A callback queued at sequence s runs only
once gp_seq >= s + 2, i.e. after a full grace period that started after call_rcu() (the classic
two-boundary rule). Callbacks run in the "rcu" task in softirq context, one per step, FIFO.
MODEL: one global callback list (no per-CPU lists), no expedited grace periods, no synchronize_rcu.

Lockdep-RCU (CONFIG_PROVE_RCU): rcu_dereference_check(p, c) warns "suspicious rcu_dereference_check()
usage" unless `c` holds or the task is inside rcu_read_lock() (rcu_read_lock_held(); holding a spinlock
or mmu_lock does not count for plain rcu_dereference()). The check is one attribute test, so it runs on
every SPTE access.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .locks import _site, might_sleep
from .progress import progress
from .task import CTX_SOFTIRQ, OP_WAIT, SOFTIRQ_OFFSET, Op, callchain

if TYPE_CHECKING:
    from .host import Host


@dataclass(slots=True)
class RcuCallback:
    seq: int
    func: Callable[..., Generator[Op, object, None]]
    arg: Any
    queued_by: str
    chain: tuple[str, ...]
    step: int


@dataclass(slots=True)
class Rcu:
    gp_seq: int = 0
    readers: dict[str, int] = field(default_factory=dict)  # task -> gp_seq at outermost rcu_read_lock
    callbacks: deque[RcuCallback] = field(default_factory=deque)
    queued: int = 0
    invoked: int = 0

    def gp_can_end(self) -> bool:
        s = self.gp_seq
        return all(e >= s for e in self.readers.values())

    def cb_ready(self) -> bool:
        return bool(self.callbacks) and self.gp_seq >= self.callbacks[0].seq + 2

    def has_work(self) -> bool:
        """The RCU softirq is runnable: a callback is ready, or one waits for a grace period that can end."""
        if not self.callbacks:
            return False
        return self.gp_seq >= self.callbacks[0].seq + 2 or self.gp_can_end()


def rcu_read_lock(host: "Host") -> None:
    """rcu_read_lock(): enter a read-side section (nesting counted per task)."""
    task = host.current
    if task.rcu_nesting == 0:
        host.rcu.readers[task.name] = host.rcu.gp_seq
    task.rcu_nesting += 1


def rcu_read_unlock(host: "Host") -> None:
    """rcu_read_unlock(): leave the read-side section; the outermost exit unblocks grace periods."""
    task = host.current
    task.rcu_nesting -= 1
    if task.rcu_nesting == 0:
        del host.rcu.readers[task.name]


def rcu_read_lock_held(host: "Host") -> bool:
    """rcu_read_lock_held(): the current task is inside an rcu_read_lock() section."""
    return host.current.rcu_nesting > 0


def rcu_dereference_check(host: "Host", c: bool, what: str) -> None:
    """rcu_dereference_check(p, c): `what` is the pointer dereferenced (e.g. kvm_tdp_mmu_read_spte's
    sptep); `c` the lockdep condition the caller documents (lockdep_is_held(...)). rcu_dereference(p) is
    rcu_dereference_check(p, 0). Callers on hot paths inline the `rcu_nesting` test and call
    rcu_dereference_splat() only when it fails."""
    if not c and not host.current.rcu_nesting:
        _rcu_suspicious(host, sys._getframe(1), "suspicious rcu_dereference_check() usage", what)


def rcu_dereference_splat(host: "Host", what: str) -> None:
    """The failing branch of rcu_dereference() (RCU_LOCKDEP_WARN() -> lockdep_rcu_suspicious())."""
    _rcu_suspicious(host, sys._getframe(1), "suspicious rcu_dereference_check() usage", what)


def _rcu_suspicious(host: "Host", frame: object, s: str, what: str) -> None:
    """lockdep_rcu_suspicious(file, line, s) (kernel/locking/lockdep.c)."""
    t = host.current
    host.probe.report(
        "suspicious-rcu-usage", f"{_site(frame)} {s}!", what=what, task=t.name, pid=t.pid, cpu=t.cpu,
        rcu_scheduler_active=2, debug_locks=1, held=host.lockdep.held_locks(t),
        in_softirq=t.in_softirq, chain=callchain(), step=host.clock)


def call_rcu(host: "Host", func: Callable[..., Generator[Op, object, None]], arg: Any) -> None:
    """call_rcu(): queue func(arg) to run in softirq after a grace period."""
    rcu = host.rcu
    chain = callchain() if host.history is not None else ()
    rcu.callbacks.append(RcuCallback(rcu.gp_seq, func, arg, host.current.name, chain, host.clock))
    rcu.queued += 1


def rcu_barrier(host: "Host") -> Generator[Op, object, None]:
    """rcu_barrier(): wait until every callback queued so far has been invoked (may sleep: it takes
    rcu_state.barrier_mutex and waits for a completion)."""
    might_sleep(host, "rcu_barrier()")
    target = host.rcu.queued
    rcu = host.rcu
    yield Op(OP_WAIT, lambda: rcu.invoked >= target, "rcu_barrier()")


def rcu_core(host: "Host") -> Generator[Op, object, None]:
    """The RCU softirq (rcu_core / ksoftirqd): end grace periods and invoke ready callbacks, forever."""
    rcu = host.rcu
    task = host.current
    while True:
        yield Op(OP_WAIT, rcu.has_work, "rcu_core()")
        if rcu.cb_ready():
            cb = rcu.callbacks.popleft()
            host.current_cb = cb
            task.ctx.append(CTX_SOFTIRQ)
            task.preempt_count += SOFTIRQ_OFFSET  # __do_softirq(): in_softirq(), in_atomic()
            yield from cb.func(host, cb.arg)
            task.preempt_count -= SOFTIRQ_OFFSET
            task.ctx.pop()
            host.current_cb = None
            rcu.invoked += 1
            progress(host, "RCU callback invoked")
            host.probe.rcu_callback()
        else:
            rcu.gp_seq += 1
            progress(host, "grace period ended")
            host.probe.grace_period(rcu.gp_seq)
