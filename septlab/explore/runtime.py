"""The scheduler: advance one task to its next announced step, as chosen by a chooser.

Every nondeterministic decision -- which runnable task steps next, whether a SEAMCALL fails -- is one
`chooser.choose(kind, n)` call, recorded as (n, i) only when n > 1. That list is the whole replay
artifact: feeding it back reproduces the run step for step. The model never sees the chooser.
"""

from __future__ import annotations

import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..host.task import OP_READ_LOCK, OP_RUN, OP_SEAMCALL, OP_SPIN_LOCK, OP_WAIT, OP_WRITE_LOCK, Op, Task
from ..kernel import activate

TICK_MASK = (1 << 16) - 1
WATCH_MASK = 63  # the lockup detectors (check/watchdog.py) scan every WATCH_MASK + 1 steps


class Chooser(Protocol):
    def choose(self, kind: str, n: int) -> int: ...


class ReplayDivergence(Exception):
    """A recorded choice no longer fits: the model or scenario changed, or something is nondeterministic."""


@dataclass(slots=True)
class Thread:
    task: Task
    gen: Generator[Op, object, Any]
    op: Op | None = None
    done: bool = False


class Stop(Exception):
    """Raised by an observer to end the run (a fatal violation)."""


@dataclass
class RunOutcome:
    steps: int
    choices: list[tuple[int, int]]
    status: str  # "done", "stopped", "deadlock", "step-bound", "crash"
    blocked: list[str] = field(default_factory=list)
    crash: str = ""


def op_enabled(op: Op) -> bool:
    k = op.kind
    if k == OP_RUN or k == OP_SEAMCALL:
        return True
    if k == OP_READ_LOCK:
        return op.obj.writer is None
    if k == OP_WRITE_LOCK:
        return op.obj.writer is None and op.obj.readers == 0
    if k == OP_SPIN_LOCK:
        return op.obj.owner is None
    if k == OP_WAIT:
        return bool(op.obj())
    raise ValueError(k)


class Runtime:
    """Runs a set of threads over one Host until all non-daemon threads finish."""

    def __init__(self, host: Any, threads: list[Thread], chooser: Chooser,
                 faults: dict[int, tuple[int, ...]] | None = None, max_steps: int = 1_000_000,
                 max_faults: int | None = None):
        self.host = host
        self.threads = threads
        self.chooser = chooser
        self.faults = faults or {}
        self.max_steps = max_steps
        self.max_faults = max_faults
        self.choices: list[tuple[int, int]] = []
        self.step = 0
        self.log: list[tuple[int, str, str]] | None = None  # (step, task, what) when asked for
        self.tick: Any = None  # called with the step count every TICK steps (progress of long runs)
        self.watch: Any = None  # called with the step count every 64 steps (the lockup detectors)
        # called as observe(thread, True) before and observe(thread, False) after every step (even one that
        # ends the run): `septlab explain` records what each step touched (explore/footprint.py)
        self.observe: Any = None

    def _choose(self, kind: str, n: int) -> int:
        i = self.chooser.choose(kind, n)
        self.choices.append((n, i))
        return i

    def start(self) -> None:
        host = self.host
        for t in self.threads:
            host.current = t.task
            t.op = next(t.gen)

    def run(self) -> RunOutcome:
        host = self.host
        activate(getattr(host, "patches", None))  # this world's variant's kernel-function patches
        threads = self.threads
        faults = self.faults
        observe = self.observe
        choose = self._choose
        max_steps = self.max_steps
        max_faults = self.max_faults
        self.start()
        status = "done"
        crash = ""
        # The unfinished threads in thread order (a finished one never runs again), and whether one of
        # them is not a daemon: kept as threads finish instead of recomputed every step, the per-step
        # work is one enabledness test per unfinished thread (op_enabled(), inlined: this loop runs
        # once per modelled step, tens of millions of times at real sizes).
        live = [t for t in threads if not t.done]
        waiting = sum(not t.task.daemon for t in live)  # unfinished non-daemon threads
        step = self.step
        try:
            while True:
                enabled = []
                for t in live:
                    op = t.op
                    k = op.kind  # type: ignore[union-attr]
                    if k == OP_RUN or k == OP_SEAMCALL:
                        enabled.append(t)
                    elif k == OP_WAIT:
                        if op.obj():  # type: ignore[union-attr]
                            enabled.append(t)
                    elif k == OP_SPIN_LOCK:
                        if op.obj.owner is None:  # type: ignore[union-attr]
                            enabled.append(t)
                    elif k == OP_READ_LOCK:
                        if op.obj.writer is None:  # type: ignore[union-attr]
                            enabled.append(t)
                    elif k == OP_WRITE_LOCK:
                        if op.obj.writer is None and op.obj.readers == 0:  # type: ignore[union-attr]
                            enabled.append(t)
                    else:
                        raise ValueError(k)
                if not enabled:
                    if waiting:
                        status = "deadlock"
                    break
                if step >= max_steps:
                    status = "step-bound"
                    break
                if not step & WATCH_MASK:
                    if self.watch is not None:
                        self.watch(step)
                    if not step & TICK_MASK and self.tick is not None:
                        self.tick(step)
                t = enabled[choose("sched", len(enabled))] if len(enabled) > 1 else enabled[0]
                op = t.op
                inj = None
                if op.kind == OP_SEAMCALL and not op.nofail and (  # type: ignore[union-attr]
                        max_faults is None or host.injections < max_faults):
                    opts = faults.get(op.leaf)  # type: ignore[union-attr]
                    if opts:
                        k = choose("fault", len(opts) + 1)
                        if k:
                            inj = opts[k - 1]
                task = t.task
                host.current = task
                host.clock = task.last_ran = step
                if op.user:  # back in the kernel: the lockup clocks restart
                    task.last_progress = step
                if self.log is not None:
                    self.log.append((step, task.name, op.what or repr(op)))  # type: ignore[union-attr]
                step += 1
                self.step = step
                if observe is not None:
                    observe(t, True)
                try:
                    t.op = t.gen.send(inj)
                except StopIteration:
                    t.done = True
                    task.done = True
                    task.last_progress = step
                    live.remove(t)
                    waiting -= not task.daemon
                finally:
                    if observe is not None:
                        observe(t, False)
        except Stop:
            status = "stopped"
        except (ReplayDivergence, KeyboardInterrupt):
            raise
        except BaseException as e:  # a model crash, or sys.exit() in a hook: keep the trace to replay and debug
            status = "crash"
            crash = "".join(traceback.format_exception(e)[-6:]).rstrip()
        blocked = [f"{t.task.name}: {t.op.what or t.op}" for t in threads
                   if not t.done and not t.task.daemon]
        return RunOutcome(self.step, self.choices, status, blocked if status == "deadlock" else [], crash)
