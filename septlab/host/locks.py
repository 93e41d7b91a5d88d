"""Locks and lockdep: rwlock_t, spinlock_t, struct mutex, rw_semaphore; kernel/locking/lockdep.c.

Lock types (the modelled instances, as lockdep names their classes):

* rwlock_t: `&kvm->mmu_lock`;
* spinlock_t: `pamt_lock` (DPAMT), `&kvm->arch.tdp_mmu_pages_lock`;
* struct mutex: `&kvm->lock`, `&vcpu->mutex`, `&kvm->slots_lock`, `tdx_lock`;
* rw_semaphore: the guest_memfd mapping's `invalidate_lock` (filemap_invalidate_lock()).

Acquisition of an rwlock and of pamt_lock is a step (`yield Op(...)`): the explorer only resumes a task
when the lock is free, so a waiting task simply is not runnable. The locks added for lockdep
(tdp_mmu_pages_lock, the mutexes, invalidate_lock) are taken in the step that reaches them when they are
free and only wait (a step of their own) when another task holds them. MODEL: acquiring a free lock
commutes with every step except another acquisition of the same lock, so this loses no behaviour the
model can show, and the state space of the small configurations stays what it was.

lockdep, as kernel/locking/lockdep.c does it, per lock *class* (not instance) and per run:

* usage states: the first acquisition in each of SOFTIRQ-ON-W/R (process context, softirqs enabled)
  and IN-SOFTIRQ-W/R; both for one class -> "inconsistent lock state" (report `lock-context`);
* the dependency graph: acquiring B while A is the most recently taken held lock records A -> B with
  lockdep's dependency type (-(SR)->, -(ER)->, -(SN)->, -(EN)->: A held Shared or Exclusive, B taken as a
  Recursive read or Non-recursive). A new dependency that closes a *strong* cycle (no -(*R)-> followed by
  -(S*)->, so read-read cycles of recursive readers are not deadlocks) is reported as "possible circular
  locking dependency detected", and taking a held class again as "possible recursive locking detected"
  (report `lock-order`), even if no run ever deadlocks. read_lock() is a recursive read only in
  interrupt context: x86 uses queued rwlocks (read_lock_is_recursive()); down_read() never is;
* lockdep_assert_held*() (report `lockdep-assert`); might_sleep() in atomic context (report
  `sleep-in-atomic`, kernel/sched/core.c __might_resched()).

MODEL: lockdep stays on after a report (the kernel's debug_locks_off() would silence later ones), so one
run shows every class of problem; each cycle is reported once per closing dependency.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .task import OP_READ_LOCK, OP_RUN, OP_SPIN_LOCK, OP_WAIT, OP_WRITE_LOCK, Op, Task, callchain

if TYPE_CHECKING:
    from .host import Host

# lockdep's wait-type annotation {inner:outer} (LD_WAIT_CONFIG = 3 for spinlock_t/rwlock_t on
# !PREEMPT_RT, LD_WAIT_SLEEP = 4 for sleeping locks), printed as -{3:3}.
WAIT_TYPE = {"spin": 3, "rwlock": 3, "mutex": 4, "rwsem": 4}
# Held-lock modes (Task.held) that lockdep_is_held_type(lock, 0) counts as exclusive.
EXCLUSIVE_MODES = frozenset({"write", "spin", "mutex"})

# Dependency types (lockdep.c __DEP_SR..__DEP_EN): prev held Shared/Exclusive -> next taken as a
# Recursive read / Non-recursive.
DEP_SR, DEP_ER, DEP_SN, DEP_EN = 1, 2, 4, 8


@dataclass(slots=True)
class RwLock:
    """rwlock_t: any number of readers or one writer."""

    name: str
    readers: int = 0
    writer: str | None = None
    cls: str = ""  # lockdep class name as the kernel prints it (default: name)
    kind: str = "rwlock"

    def can_read(self) -> bool:
        return self.writer is None

    def can_write(self) -> bool:
        return self.writer is None and self.readers == 0


@dataclass(slots=True)
class SpinLock:
    """spinlock_t taken with plain spin_lock() (not _bh/_irqsave): not softirq-safe."""

    name: str
    owner: str | None = None
    cls: str = ""
    kind: str = "spin"

    def can_take(self) -> bool:
        return self.owner is None


@dataclass(slots=True)
class Mutex:
    """struct mutex: a sleeping lock (mutex_lock() may sleep, so it is illegal in atomic context)."""

    name: str
    owner: str | None = None
    cls: str = ""
    kind: str = "mutex"


@dataclass(slots=True)
class RwSem:
    """struct rw_semaphore (down_read()/down_write() may sleep); the one modelled is invalidate_lock."""

    name: str
    readers: int = 0
    writer: str | None = None
    cls: str = ""
    kind: str = "rwsem"

    @property
    def owner(self) -> str | None:
        """For OP_SPIN_LOCK enabledness: down_write() waits for readers and writers alike."""
        return self.writer if self.writer is not None else ("readers" if self.readers else None)


AnyLock = RwLock | SpinLock | Mutex | RwSem


@dataclass(slots=True)
class Usage:
    task: str
    ctx: str
    chain: tuple[str, ...]
    step: int


@dataclass(slots=True)
class Dep:
    """One lock_list entry of locks_after: the dependency prev -> next, with every type seen so far and
    the stack of the acquisition that first recorded it (lockdep keeps the first trace)."""

    mask: int
    task: str
    step: int
    chain: tuple[str, ...]


def _site(frame: Any) -> str:
    """file:line of a model frame (what the kernel prints as __FILE__:__LINE__): relative to the package's
    parent for septlab's own files, else to the working directory when below it (a user's variant)."""
    fn = frame.f_code.co_filename.replace("\\", "/")
    i = fn.rfind("/septlab/")
    if i >= 0:
        fn = fn[i + 1:]
    else:
        rel = os.path.relpath(fn)
        fn = fn if rel.startswith("..") else rel.replace("\\", "/")
    return f"{fn}:{frame.f_lineno}"


@dataclass(slots=True)
class Lockdep:
    """Per lock class: usage states with their first-use stacks, and the dependency graph (locks_after)."""

    usage: dict[str, dict[str, Usage]] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    classes: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (class as printed, kind)
    after: dict[str, dict[str, Dep]] = field(default_factory=dict)
    cycles: set[tuple[str, str]] = field(default_factory=set)  # closing dependencies already reported

    # --- usage states (inconsistent lock state) ------------------------------------------------------
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

    def usage_chars(self, name: str) -> str:
        """get_usage_chars(): {hardirq-W, hardirq-R, softirq-W, softirq-R}: '+' used with the irq enabled,
        '-' used in irq context, '?' both, '.' neither. MODEL: hardirqs are always enabled."""
        u = self.usage.get(name, {})

        def ch(on: bool, inside: bool) -> str:
            return "?" if on and inside else "+" if on else "-" if inside else "."

        w_on, w_in = "SOFTIRQ-ON-W" in u, "IN-SOFTIRQ-W" in u
        r_on, r_in = "SOFTIRQ-ON-R" in u, "IN-SOFTIRQ-R" in u
        return ("+" if w_on or w_in else ".") + ("+" if r_on or r_in else ".") + ch(w_on, w_in) + ch(r_on, r_in)

    def lock_name(self, name: str) -> str:
        """print_lock_name(): (class){usage}-{inner:outer}."""
        cls, kind = self.classes.get(name, (name, "spin"))
        w = WAIT_TYPE.get(kind, 3)
        return f"({cls}){{{self.usage_chars(name)}}}-{{{w}:{w}}}"

    def held_locks(self, task: Task) -> list[tuple[str, str]]:
        """lockdep_print_held_locks(): (lock as printed, the function that took it) per held lock."""
        return [(self.lock_name(n), at) for n, _, at in task.hlocks]

    # --- lock_acquire(): dependencies ------------------------------------------------------------------
    def used(self, host: "Host", name: str, read: int) -> None:
        """mark_usage() for an acquisition that succeeded: note() only the first time in a usage state.
        MODEL: marked once the lock is held (the kernel marks it at lock_acquire()), which keeps usage
        states, part of the exhaustive explorer's state, where they were before dependencies existed."""
        state = ("IN-SOFTIRQ-" if host.current.in_softirq else "SOFTIRQ-ON-") + ("R" if read else "W")
        per = self.usage.get(name)
        if per is None or state not in per:
            self.note(host, name, write=not read)

    def acquire(self, host: "Host", lock: AnyLock, read: int, at: str, nest: AnyLock | None = None) -> bool:
        """lock_acquire() -> __lock_acquire(): check_deadlock(), check_prevs_add().

        Called when the current task starts to take `lock` (before it may wait for it). Returns True when
        the acquisition merges into a held lock of the same class under `nest` (lockdep's references),
        i.e. the caller must not push a new held lock."""
        task = host.current
        name = lock.name
        if name not in self.classes:
            self.classes[name] = (lock.cls or name, lock.kind)
        hl = task.hlocks
        if not hl:
            return False
        top = hl[-1]
        if nest is not None and top[0] == name:
            return True
        for hn, hr, hat in hl:  # check_deadlock()
            if hn == name and not (read == 2 and hr):
                if nest is None or not task.holds(nest.name):
                    self._recursive(host, lock, read, hat, at)
                return False
        pn, pr = top[0], top[1]
        if read == 2:
            bit = DEP_ER if pr == 0 else DEP_SR
        else:
            bit = DEP_EN if pr == 0 else DEP_SN
        adj = self.after.get(pn)
        if adj is None:
            adj = self.after[pn] = {}
        d = adj.get(name)
        if d is None or not d.mask & bit:
            self._add_dep(host, pn, pr, top[2], lock, read, at, bit, d, adj)
        return False

    def _add_dep(self, host: "Host", pn: str, pr: int, pat: str, lock: AnyLock, read: int, at: str, bit: int,
                 d: Dep | None, adj: dict[str, Dep]) -> None:
        """check_prev_add(): prove the new prev -> next dependency closes no strong cycle, then record it."""
        name = lock.name
        path = self._strong_path(name, read, pn, pr)
        task = host.current
        chain = callchain()
        if d is None:
            adj[name] = Dep(bit, task.name, host.clock, chain)
        else:
            d.mask |= bit
        if path is None or (pn, name) in self.cycles:
            return
        self.cycles.add((pn, name))
        entries = []  # the existing chain, printed in reverse: -> #k (prev) ... -> #1
        for i in range(len(path) - 1, 0, -1):
            dep = self.after[path[i - 1]][path[i]]
            entries.append((i, self.lock_name(path[i]), dep.task, dep.step, dep.chain))
        entries.append((0, self.lock_name(name), task.name, host.clock, chain))
        cls = self.classes
        host.probe.report(
            "lock-order", "WARNING: possible circular locking dependency detected",
            form="circular", task=task.name, pid=task.pid, cpu=task.cpu, chain=chain,
            acquiring=(self.lock_name(name), at), holding=(self.lock_name(pn), pat),
            entries=entries, source=cls[name][0], target=cls[pn][0], parent=cls[path[-2]][0],
            src_read=read, tgt_read=pr, held=self.held_locks(task), step=host.clock,
            edge=(cls[pn][0], cls[name][0]))

    def _strong_path(self, nxt: str, nread: int, prev: str, pread: int) -> list[str] | None:
        """check_noncircular(next, prev): breadth-first search from `next` for `prev` along strong paths.

        A state is (class, only_xr): only_xr says every dependency into the class on this path is
        -(*R)->, in which case its -(S*)-> dependencies cannot follow. The target conflicts (hlock_conflict)
        if prev is held exclusively or the path into it ends -(*N)->."""
        start = (nxt, nread == 2)
        parent: dict[tuple[str, bool], tuple[str, bool] | None] = {start: None}
        q = deque([start])
        while q:
            st = q.popleft()
            cls, only_xr = st
            if cls == prev and (pread == 0 or not only_xr):
                path = []
                s: tuple[str, bool] | None = st
                while s is not None:
                    path.append(s[0])
                    s = parent[s]
                path.reverse()
                return path
            for c2, dep in self.after.get(cls, {}).items():
                m = dep.mask
                if only_xr:
                    m &= ~(DEP_SR | DEP_SN)
                if not m:
                    continue
                st2 = (c2, not m & (DEP_SN | DEP_EN))
                if st2 not in parent:
                    parent[st2] = st
                    q.append(st2)
        return None

    def _recursive(self, host: "Host", lock: AnyLock, read: int, held_at: str, at: str) -> None:
        """print_deadlock_bug(): the task takes a lock class it already holds (no nest_lock)."""
        name = lock.name
        if (name, name) in self.cycles:
            return
        self.cycles.add((name, name))
        task = host.current
        host.probe.report(
            "lock-order", "WARNING: possible recursive locking detected", form="recursive",
            task=task.name, pid=task.pid, cpu=task.cpu, chain=callchain(), acquiring=(self.lock_name(name), at),
            holding=(self.lock_name(name), held_at), source=self.classes[name][0], src_read=read,
            held=self.held_locks(task), step=host.clock, edge=(self.classes[name][0], self.classes[name][0]))

    def edges(self) -> list[tuple[str, str, int]]:
        """Every recorded dependency (prev, next, type mask), for tests and canonical states."""
        return sorted((a, b, d.mask) for a, adj in self.after.items() for b, d in adj.items())


def _caller(depth: int = 2) -> str:
    """The function that called the lock primitive (lockdep's acquire_ip)."""
    return sys._getframe(depth).f_code.co_name


def _push(task: Task, name: str, mode: str, read: int, at: str) -> None:
    task.held.append((name, mode))
    task.hlocks.append((name, read, at))


def _pop(task: Task, name: str, mode: str) -> None:
    i = task.held.index((name, mode))
    del task.held[i]
    del task.hlocks[i]


# --- rwlock_t --------------------------------------------------------------------------------------
def read_lock(host: "Host", lock: RwLock) -> Generator[Op, object, None]:
    """read_lock(): wait for no writer, then hold the lock shared (preemption disabled)."""
    task = host.current
    read = 2 if task.in_softirq else 1  # read_lock_is_recursive(): queued rwlocks, in_interrupt() only
    at = _caller()
    host.lockdep.acquire(host, lock, read, at)
    yield Op(OP_READ_LOCK, lock, f"read_lock({lock.name})")
    lock.readers += 1
    task = host.current
    _push(task, lock.name, "read", read, at)
    task.preempt_count += 1
    host.lockdep.used(host, lock.name, read)


def read_unlock(host: "Host", lock: RwLock) -> None:
    """read_unlock(): atomic with the preceding step (release is never a scheduling decision)."""
    lock.readers -= 1
    task = host.current
    _pop(task, lock.name, "read")
    task.preempt_count -= 1
    host.probe.lock_release(lock.name, "read")


def write_lock(host: "Host", lock: RwLock) -> Generator[Op, object, None]:
    """write_lock(): wait for the lock to be free, then hold it exclusively (preemption disabled)."""
    at = _caller()
    host.lockdep.acquire(host, lock, 0, at)
    yield Op(OP_WRITE_LOCK, lock, f"write_lock({lock.name})")
    task = host.current
    lock.writer = task.name
    _push(task, lock.name, "write", 0, at)
    task.preempt_count += 1
    host.lockdep.used(host, lock.name, 0)


def write_unlock(host: "Host", lock: RwLock) -> None:
    """write_unlock(): atomic with the preceding step."""
    lock.writer = None
    task = host.current
    _pop(task, lock.name, "write")
    task.preempt_count -= 1
    host.probe.lock_release(lock.name, "write")


# --- spinlock_t ------------------------------------------------------------------------------------
def spin_lock(host: "Host", lock: SpinLock) -> Generator[Op, object, None]:
    """spin_lock(): busy-wait until free (modelled as not runnable), then own it."""
    at = _caller()
    host.lockdep.acquire(host, lock, 0, at)
    yield Op(OP_SPIN_LOCK, lock, f"spin_lock({lock.name})")
    task = host.current
    lock.owner = task.name
    _push(task, lock.name, "spin", 0, at)
    task.preempt_count += 1
    host.lockdep.used(host, lock.name, 0)


def spin_lock_nostep(host: "Host", lock: SpinLock) -> None:
    """spin_lock() around a critical section that the model runs inside one step (no yield until the
    matching spin_unlock()): nobody can find the lock held, so taking it is not a scheduling point.
    MODEL: used for tdp_mmu_pages_lock, whose every critical section is a few list operations."""
    if lock.owner is not None:
        raise RuntimeError(f"model bug: spin_lock_nostep({lock.name}) found it held by {lock.owner}")
    at = _caller()
    host.lockdep.acquire(host, lock, 0, at)
    task = host.current
    lock.owner = task.name
    _push(task, lock.name, "spin", 0, at)
    task.preempt_count += 1
    host.lockdep.used(host, lock.name, 0)


def spin_unlock(host: "Host", lock: SpinLock) -> None:
    """spin_unlock(): atomic with the preceding step."""
    lock.owner = None
    task = host.current
    _pop(task, lock.name, "spin")
    task.preempt_count -= 1
    host.probe.lock_release(lock.name, "spin")


def might_lock(host: "Host", lock: SpinLock) -> None:
    """might_lock(): lock_acquire() + lock_release(): lockdep learns the usage and the dependency on
    the locks held now, even when this run does not take `lock`."""
    host.lockdep.used(host, lock.name, 0)
    host.lockdep.acquire(host, lock, 0, _caller())


# --- sleeping locks --------------------------------------------------------------------------------
def mutex_lock(host: "Host", m: Mutex, nest: Mutex | None = None) -> Generator[Op, object, None]:
    """mutex_lock() (kernel/locking/mutex.c): might_sleep(), then own the mutex, sleeping while another
    task holds it. `nest` is mutex_lock_nest_lock()'s nest lock (kvm_lock_all_vcpus() takes every
    vcpu->mutex, one class, under kvm->lock)."""
    might_sleep(host, f"mutex_lock({m.cls or m.name})")
    at = _caller()
    merged = host.lockdep.acquire(host, m, 0, at, nest)
    if m.owner is not None:
        yield Op(OP_SPIN_LOCK, m, f"mutex_lock({m.name})")
    task = host.current
    m.owner = task.name
    if merged:
        task.nest_refs[m.name] = task.nest_refs.get(m.name, 1) + 1
    else:
        _push(task, m.name, "mutex", 0, at)
    host.lockdep.used(host, m.name, 0)


def mutex_unlock(host: "Host", m: Mutex) -> None:
    """mutex_unlock(): atomic with the preceding step."""
    m.owner = None
    task = host.current
    refs = task.nest_refs.get(m.name, 0)
    if refs > 1:
        task.nest_refs[m.name] = refs - 1
        return
    task.nest_refs.pop(m.name, None)
    _pop(task, m.name, "mutex")
    host.probe.lock_release(m.name, "mutex")


def down_write(host: "Host", sem: RwSem) -> Generator[Op, object, None]:
    """down_write() (kernel/locking/rwsem.c): might_sleep(), then hold the semaphore exclusively."""
    might_sleep(host, f"down_write({sem.cls or sem.name})")
    at = _caller()
    host.lockdep.acquire(host, sem, 0, at)
    if sem.owner is not None:
        yield Op(OP_SPIN_LOCK, sem, f"down_write({sem.name})")
    task = host.current
    sem.writer = task.name
    _push(task, sem.name, "write", 0, at)
    host.lockdep.used(host, sem.name, 0)


def up_write(host: "Host", sem: RwSem) -> None:
    """up_write()."""
    sem.writer = None
    _pop(host.current, sem.name, "write")
    host.probe.lock_release(sem.name, "write")


def down_read(host: "Host", sem: RwSem) -> Generator[Op, object, None]:
    """down_read(): might_sleep(); a non-recursive read for lockdep (a waiting writer blocks readers)."""
    might_sleep(host, f"down_read({sem.cls or sem.name})")
    at = _caller()
    host.lockdep.acquire(host, sem, 1, at)
    if sem.writer is not None:
        yield Op(OP_WAIT, lambda: sem.writer is None, f"down_read({sem.name})")
    sem.readers += 1
    _push(host.current, sem.name, "read", 1, at)
    host.lockdep.used(host, sem.name, 1)


def up_read(host: "Host", sem: RwSem) -> None:
    """up_read()."""
    sem.readers -= 1
    _pop(host.current, sem.name, "read")
    host.probe.lock_release(sem.name, "read")


# --- might_sleep() ---------------------------------------------------------------------------------
def might_sleep(host: "Host", what: str = "might_sleep()") -> None:
    """might_sleep() -> __might_sleep() -> __might_resched() (kernel/sched/core.c): in atomic context
    -- preempt_count() != 0 (a spinlock or rwlock held, softirq) or, with CONFIG_PREEMPT_RCU, inside
    rcu_read_lock() -- print "BUG: sleeping function called from invalid context". `what` names the
    sleeping primitive (mutex_lock(...), alloc_page(GFP_KERNEL...)). Cheap when nothing is wrong."""
    t = host.current
    if t.preempt_count or t.rcu_nesting:
        _might_sleep_splat(host, t, what, sys._getframe(1))


def cond_resched(host: "Host") -> Generator[Op, object, None]:
    """cond_resched(): a voluntary preemption point (may sleep): another task may run here."""
    might_sleep(host, "cond_resched()")
    yield Op(OP_RUN, ("sched", host.current.name), "cond_resched()")


def cond_resched_rwlock(host: "Host", lock: RwLock) -> None:
    """The annotation of cond_resched_rwlock_read()/_write(): __might_resched(PREEMPT_LOCK_RESCHED_OFFSETS),
    i.e. exactly the one rwlock about to be dropped held (preempt_count() == 1) and no rcu_read_lock()
    (tdp_mmu_iter_cond_resched() leaves RCU first). MODEL: the model keeps the lock (no resched)."""
    t = host.current
    if t.preempt_count != 1 or t.rcu_nesting:
        _might_sleep_splat(host, t, f"cond_resched_rwlock({lock.cls or lock.name})", sys._getframe(1),
                           expected=1)


def _might_sleep_splat(host: "Host", t: Task, what: str, frame: Any, expected: int = 0) -> None:
    host.probe.report(
        "sleep-in-atomic", f"BUG: sleeping function called from invalid context at {_site(frame)}",
        what=what, task=t.name, pid=t.pid, cpu=t.cpu, in_atomic=int(t.preempt_count != 0), irqs_disabled=0,
        non_block=0, preempt_count=t.preempt_count, expected=expected, rcu_depth=t.rcu_nesting,
        in_softirq=t.in_softirq, held=host.lockdep.held_locks(t), chain=callchain(), step=host.clock)


# --- lockdep_assert_held*() ------------------------------------------------------------------------
def _assert_fail(host: "Host", assertion: str, lock: AnyLock, why: str) -> None:
    t = host.current
    frame = sys._getframe(2)
    host.probe.report(
        "lockdep-assert", f"WARNING: CPU: {t.cpu} PID: {t.pid} at {_site(frame)} {frame.f_code.co_name}",
        site=assertion, assertion=f"{assertion}(&{(lock.cls or lock.name).lstrip('&')})", why=why,
        function=frame.f_code.co_name, task=t.name, pid=t.pid, cpu=t.cpu,
        held=host.lockdep.held_locks(t), chain=callchain(), step=host.clock)


def _mode(task: Task, name: str) -> str | None:
    for n, m in task.held:
        if n == name:
            return m
    return None


def lockdep_assert_held(host: "Host", lock: AnyLock) -> None:
    """lockdep_assert_held(): WARN unless the current task holds `lock` in any mode."""
    if _mode(host.current, lock.name) is None:
        _assert_fail(host, "lockdep_assert_held", lock, "not held")


def lockdep_assert_held_write(host: "Host", lock: AnyLock) -> None:
    """lockdep_assert_held_write() = lockdep_is_held_type(lock, 0): WARN unless held exclusively."""
    m = _mode(host.current, lock.name)
    if m not in EXCLUSIVE_MODES:
        _assert_fail(host, "lockdep_assert_held_write", lock, "not held" if m is None else "held for read")


def lockdep_assert_held_read(host: "Host", lock: AnyLock) -> None:
    """lockdep_assert_held_read() = lockdep_is_held_type(lock, 1): WARN unless held *for read*; a writer
    fails it too (audit D23)."""
    m = _mode(host.current, lock.name)
    if m != "read":
        _assert_fail(host, "lockdep_assert_held_read", lock, "not held" if m is None else "held for write")
