"""Tasks (kernel threads / vCPU threads) and the steps they announce.

A modelled kernel path is a generator. Before every point at which another CPU could interleave (a
lock, an atomic, a SEAMCALL, an RCU boundary, a shared read or write) it `yield`s an `Op` naming what
the next atomic step touches; the code up to the next yield runs atomically when the explorer resumes
it. The value sent back in is the explorer's decision for that op (an injected SEAMCALL error, or None).
The model never learns who decides or why: that is what keeps it ignorant of how it is explored.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Op kinds. Enabledness of the lock kinds is decided by the lock's state; OP_WAIT by a predicate.
OP_RUN = 0  # a plain shared-memory step: always enabled
OP_READ_LOCK = 1
OP_WRITE_LOCK = 2
OP_SPIN_LOCK = 3
OP_SEAMCALL = 4  # a SEAMCALL: always enabled; the explorer may inject a failure the scenario allows
OP_WAIT = 5  # blocked until obj() is true (rcu_barrier, kick acknowledgements, joins)

OP_NAMES = ("run", "read_lock", "write_lock", "spin_lock", "seamcall", "wait")


class Op:
    """One announced step: what kind, which object, and for SEAMCALLs the leaf and whether it may fail."""

    __slots__ = ("kind", "obj", "leaf", "nofail", "what", "user")

    def __init__(self, kind: int, obj: Any = None, what: str = "", leaf: int = -1, nofail: bool = False,
                 user: bool = False):
        self.kind = kind
        self.obj = obj
        self.what = what
        self.leaf = leaf
        self.nofail = nofail
        # An OP_WAIT of userspace (a thread that has not made its next syscall yet, a join), not of a
        # task blocked in the kernel: khungtaskd does not watch it (the task is not in D state). Only
        # OP_WAITs carry it, so `op.user` alone says "a userspace wait".
        self.user = user

    def __repr__(self) -> str:
        return f"Op({OP_NAMES[self.kind]}, {self.what or self.obj!r})"


CTX_PROCESS = "process"
CTX_SOFTIRQ = "softirq"

# preempt_count() (include/linux/preempt.h): every held spinlock/rwlock adds 1 (CONFIG_PREEMPT_COUNT),
# running softirqs adds SOFTIRQ_OFFSET. in_atomic() is preempt_count() != 0.
SOFTIRQ_OFFSET = 0x100
PID_BASE = 1000  # MODEL: a task's pid is PID_BASE + its index among the world's tasks


@dataclass(slots=True)
class Task:
    """The model's `current`: a thread's name, execution context, held locks and RCU nesting."""

    name: str
    kind: str
    daemon: bool = False
    cpu: int = 0  # which per-CPU page list it allocates from (its index among the tasks)
    ctx: list[str] = field(default_factory=lambda: [CTX_PROCESS])
    held: list[tuple[str, str]] = field(default_factory=list)  # (lock name, mode)
    rcu_nesting: int = 0
    # lockdep's held_locks[], parallel to `held`: (lock class, hlock->read, the function that took it);
    # read is 0 exclusive, 1 non-recursive shared, 2 recursive shared, as lockdep's lock_acquire().
    hlocks: list[tuple[str, int, str]] = field(default_factory=list)
    preempt_count: int = 0
    nest_refs: dict[str, int] = field(default_factory=dict)  # same-class locks merged under a nest_lock
    injected_error: bool = False  # the last SEAMCALL's error was injected by the fault model
    vcpu: Any = None
    done: bool = False
    # Liveness (septlab/host/progress.py): the step of the task's last progress in kernel terms, and the
    # step it last ran. A daemon (the RCU softirq) is watched only while `wants()` says it has work.
    last_progress: int = 0
    last_ran: int = 0
    wants: Any = None

    def owes_progress(self) -> bool:
        """Unfinished and expected to get somewhere: every task but an idle daemon (the RCU softirq owes
        progress only while `wants()`, i.e. a callback waits for a grace period)."""
        return not self.done and (not self.daemon or (self.wants is not None and self.wants()))

    @property
    def in_softirq(self) -> bool:
        return self.ctx[-1] == CTX_SOFTIRQ

    def holds(self, lock: str, mode: str | None = None) -> bool:
        return any(n == lock and (mode is None or m == mode) for n, m in self.held)

    @property
    def pid(self) -> int:
        return PID_BASE + self.cpu


# A variant file's module name starts with this (septlab.variants.load_variant_file): its frames are
# part of modelled call chains like the model's own.
USER_VARIANT_PREFIX = "septlab_user_variant_"
_CHAIN_MODULES = ("septlab.", USER_VARIANT_PREFIX)


def add_chain_modules(names: Iterable[str]) -> None:
    """Count these modules' frames as model code in call chains too: an installed plug-in's variant
    (septlab.variants registers its functions' modules), whatever its package is called."""
    global _CHAIN_MODULES
    extra = tuple(n for n in names if n and n != "builtins" and not n.startswith("septlab"))
    _CHAIN_MODULES = tuple(dict.fromkeys(_CHAIN_MODULES + extra))
# Frames of these modules are not part of a modelled call chain.
_CHAIN_SKIP_MODULES = ("septlab.explore", "septlab.check", "septlab.metrics", "septlab.cli")
_CHAIN_SKIP_FUNCS = frozenset({"callchain", "record", "_record", "page_event", "set_owner", "kasan_check",
                               "<genexpr>", "<lambda>", "<listcomp>", "report", "__init__", "note", "kasan_report",
                               "_done", "_seamcall", "warn", "acquire", "_add_dep", "_recursive",
                               "_might_sleep_splat", "_assert_fail", "_rcu_suspicious"})


# Call chains are only for reports. An explorer re-executing steps it has already checked turns them off
# (CHAINS[0] = False) and re-runs a path with them on before reporting anything from it.
CHAINS = [True]


def callchain(limit: int = 12) -> tuple[str, ...]:
    """The modelled call chain of the running task, outermost first, from the live generator frames."""
    if not CHAINS[0]:
        return ()
    return chain_from(sys._getframe(1), limit)


def chain_from(f: Any, limit: int = 12) -> tuple[str, ...]:
    """The modelled call chain ending at frame `f`: the frames of the model's modules and of variant
    files (loaded as USER_VARIANT_PREFIX* modules, so an outsider's replaced function and its callers
    appear in reports like the model's own), up to the first frame of the explorer or checker."""
    names: list[str] = []
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if not mod.startswith(_CHAIN_MODULES) or mod.startswith(_CHAIN_SKIP_MODULES):
            break
        name = f.f_code.co_name
        if name not in _CHAIN_SKIP_FUNCS:
            names.append(name)
        f = f.f_back
    names.reverse()
    return tuple(names[-limit:])

