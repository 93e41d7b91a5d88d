"""mmu_lock (rwlock_t), spinlocks (pamt_lock, tdp_mmu_pages_lock) and a lockdep model of them.

Acquisition is a step (`yield Op(...)`): the explorer only resumes a task when the lock is free, so a
waiting task simply is not runnable. Lockdep records, per lock class, the first acquisition in each
usage state (SOFTIRQ-ON-W: process context with softirqs enabled; IN-SOFTIRQ-W: in softirq) and
reports "inconsistent lock state" the moment both exist, as kernel/locking/lockdep.c does.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .task import OP_READ_LOCK, OP_SPIN_LOCK, OP_WRITE_LOCK, Op, callchain

if TYPE_CHECKING:
    from .host import Host


@dataclass(slots=True)
class RwLock:
    """rwlock_t: any number of readers or one writer."""

    name: str
    readers: int = 0
    writer: str | None = None

    def can_read(self) -> bool:
        return self.writer is None

    def can_write(self) -> bool:
        return self.writer is None and self.readers == 0


@dataclass(slots=True)
class SpinLock:
    """spinlock_t taken with plain spin_lock() (not _bh/_irqsave): not softirq-safe."""

    name: str
    owner: str | None = None

    def can_take(self) -> bool:
        return self.owner is None


@dataclass(slots=True)
class Usage:
    task: str
    ctx: str
    chain: tuple[str, ...]
    step: int


@dataclass(slots=True)
class Lockdep:
    """Per-lock-class usage states, like lockdep's usage_mask plus the first-use stack of each."""

    usage: dict[str, dict[str, Usage]] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

    def note(self, host: "Host", lock: str, write: bool = True) -> None:
        """Record one acquisition (or might_lock()) by the current task; splat on inconsistency."""
        task = host.current
        suffix = "W" if write else "R"
        state = ("IN-SOFTIRQ-" if task.in_softirq else "SOFTIRQ-ON-") + suffix
        per = self.usage.setdefault(lock, {})
        if state in per:
            return
        per[state] = Usage(task.name, task.ctx[-1], callchain(), host.clock)
        other = ("SOFTIRQ-ON-" if task.in_softirq else "IN-SOFTIRQ-") + suffix
        if other in per and lock not in self.reported:
            self.reported.add(lock)
            prev = per[other]
            host.probe.report(
                "lock-context", f"inconsistent {{{other}}} -> {{{state}}} usage",
                lock=lock, held_state=other, new_state=state, first=prev, second=per[state],
                task=task.name)


def read_lock(host: "Host", lock: RwLock) -> Generator[Op, object, None]:
    """read_lock(): wait for no writer, then hold the lock shared."""
    yield Op(OP_READ_LOCK, lock, f"read_lock({lock.name})")
    lock.readers += 1
    host.current.held.append((lock.name, "read"))
    host.lockdep.note(host, lock.name, write=False)


def read_unlock(host: "Host", lock: RwLock) -> None:
    """read_unlock(): atomic with the preceding step (release is never a scheduling decision)."""
    lock.readers -= 1
    host.current.held.remove((lock.name, "read"))
    host.probe.lock_release(lock.name, "read")


def write_lock(host: "Host", lock: RwLock) -> Generator[Op, object, None]:
    """write_lock(): wait for the lock to be free, then hold it exclusively."""
    yield Op(OP_WRITE_LOCK, lock, f"write_lock({lock.name})")
    lock.writer = host.current.name
    host.current.held.append((lock.name, "write"))
    host.lockdep.note(host, lock.name, write=True)


def write_unlock(host: "Host", lock: RwLock) -> None:
    """write_unlock(): atomic with the preceding step."""
    lock.writer = None
    host.current.held.remove((lock.name, "write"))
    host.probe.lock_release(lock.name, "write")


def spin_lock(host: "Host", lock: SpinLock) -> Generator[Op, object, None]:
    """spin_lock(): busy-wait until free (modelled as not runnable), then own it."""
    yield Op(OP_SPIN_LOCK, lock, f"spin_lock({lock.name})")
    lock.owner = host.current.name
    host.current.held.append((lock.name, "spin"))
    host.lockdep.note(host, lock.name)


def spin_unlock(host: "Host", lock: SpinLock) -> None:
    """spin_unlock(): atomic with the preceding step."""
    lock.owner = None
    host.current.held.remove((lock.name, "spin"))
    host.probe.lock_release(lock.name, "spin")


def might_lock(host: "Host", lock: SpinLock) -> None:
    """might_lock(): tell lockdep this path can take `lock` even when this run does not."""
    host.lockdep.note(host, lock.name)


def lockdep_assert_held_write(host: "Host", lock: RwLock) -> None:
    """lockdep_assert_held_write(): WARN if the current task does not hold `lock` for write."""
    if not host.current.holds(lock.name, "write"):
        host.warn("lockdep_assert_held_write", f"{lock.name} not held for write")


def lockdep_assert_held_read(host: "Host", lock: RwLock) -> None:
    """lockdep_assert_held(): WARN if the current task does not hold `lock` (read or write)."""
    if not host.current.holds(lock.name):
        host.warn("lockdep_assert_held", f"{lock.name} not held")
