"""The kernel's lockup detectors for random runs: soft lockup, hung task, RCU CPU stall.

Each watches one symptom and has one threshold, here in model steps: the scenario's `steps_per_second`
(default 100) turns the kernel's seconds into steps: 2,000 / 2,100 / 12,000 steps. The scale is a
model parameter, not a claim about hardware (a SEAMCALL takes microseconds): it only has to put the
thresholds well above the longest stretch a correct run spends without progress -- measured over every
built-in at most ~200 steps, ~1,000 for the 1 GiB teardown of boot-teardown, which sets 1000 -- and
low enough that a livelock is reported within a few thousand steps.

- soft lockup (kernel/watchdog.c): a CPU that does not schedule for 2 * watchdog_thresh = 20 s prints
  "watchdog: BUG: soft lockup - CPU#n stuck for 22s! [task:pid]". Here: a task that keeps running --
  or spins on an rwlock/spinlock -- without progress (host/progress.py) for 20 s of steps. A loop that
  calls cond_resched() schedules, so the kernel's detector stays quiet on it; the report says so (the
  livelock is real, the kernel just shows it differently: as the hung tasks that wait for the looper).
- hung task (kernel/hung_task.c): khungtaskd reports a task in D state (a mutex, an rwsem, a
  completion, synchronize_srcu(), rcu_barrier()) whose switch count did not move for
  hung_task_timeout_secs = 120 s: "INFO: task name:pid blocked for more than 120 seconds.". Userspace
  waits (a thread that has not made its next syscall yet) are not D state and are not watched.
- RCU CPU stall (kernel/rcu/tree_stall.h): a grace period that does not end within
  CONFIG_RCU_CPU_STALL_TIMEOUT = 21 s prints "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
  naming the CPUs (here: the tasks) still inside a read-side section that began before the grace period.

A task's clock restarts when it makes progress and when it leaves a userspace wait (it was not in the
kernel before). Scans run every WATCH_EVERY steps, so a report comes at most that many steps late.
The exhaustive counterpart (explore/liveness.py) needs no thresholds: it finds the loop itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..explore.runtime import WATCH_MASK, op_enabled
from ..host.locks import Mutex, RwSem
from ..host.task import OP_NAMES, OP_WAIT, Op, Task

if TYPE_CHECKING:
    from ..explore.runtime import Thread
    from .invariants import Checker

SOFTLOCKUP_SECS = 20  # 2 * watchdog_thresh (kernel/watchdog.c: get_softlockup_thresh())
RCU_STALL_SECS = 21  # CONFIG_RCU_CPU_STALL_TIMEOUT
HUNG_TASK_SECS = 120  # CONFIG_DEFAULT_HUNG_TASK_TIMEOUT
WATCH_EVERY = WATCH_MASK + 1  # steps between scans (the runtime calls scan() when step & WATCH_MASK == 0)


@dataclass(frozen=True, slots=True)
class Thresholds:
    soft_lockup: int
    rcu_stall: int
    hung_task: int
    steps_per_second: int

    @classmethod
    def for_scenario(cls, steps_per_second: int) -> "Thresholds":
        s = steps_per_second
        return cls(SOFTLOCKUP_SECS * s, RCU_STALL_SECS * s, HUNG_TASK_SECS * s, s)


def sleeps(op: Op) -> bool:
    """The op blocks in D state (khungtaskd's business) rather than spinning on a CPU."""
    return (op.kind == OP_WAIT and not op.user) or isinstance(op.obj, (Mutex, RwSem))


def gen_chain(gen: Any) -> tuple[str, ...]:
    """The call chain of a suspended task, outermost first: its generators' yield-from chain."""
    out: list[str] = []
    while gen is not None and getattr(gen, "gi_frame", None) is not None:
        out.append(gen.gi_code.co_name)
        gen = gen.gi_yieldfrom
    return tuple(out)


def holder_of(op: Op) -> str:
    """Who holds the lock an op waits for, as lockdep's debug_show_all_locks() would name it."""
    o = op.obj
    for attr in ("owner", "writer"):
        h = getattr(o, attr, None)
        if isinstance(h, str):
            return h
    readers = getattr(o, "readers", 0)
    return f"{readers} reader(s)" if readers else ""


def recent_steps(log: list[tuple[int, str, str]] | None, task: str, n: int = 12) -> list[str]:
    """The task's last n steps from the run's log (kept when history is on)."""
    if not log:
        return []
    out: list[str] = []
    for s, t, w in reversed(log):
        if t == task:
            out.append(f"#{s:<6} {w}")
            if len(out) == n:
                break
    out.reverse()
    return out


def soft_lockup_lines(task: Task, secs: int, what: str, chain: tuple[str, ...], resched: bool) -> list[str]:
    lines = [f"watchdog: BUG: soft lockup - CPU#{task.cpu} stuck for {secs}s! [{task.name}:{task.pid}]",
             f"CPU: {task.cpu} PID: {task.pid} Comm: {task.name}", f"RIP: {chain[-1] if chain else '?'}: {what}",
             "Call Trace:", " <TASK>", *[f"  {f}" for f in reversed(chain)], " </TASK>"]
    if resched:
        lines.append("note: the loop calls cond_resched(), so on a real kernel this watchdog stays quiet; the "
                     "livelock shows instead as the tasks that wait for this one (hung tasks)")
    return lines


def hung_task_lines(task: Task, secs: int, what: str, chain: tuple[str, ...], holder: str) -> list[str]:
    lines = [f"INFO: task {task.name}:{task.pid} blocked for more than {secs} seconds.",
             '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
             f"task:{task.name} state:D pid:{task.pid}", f"waiting for: {what}",
             "Call Trace:", " <TASK>", *[f"  {f}" for f in reversed(chain)], " </TASK>"]
    if holder:
        lines += ["", "Showing all locks held in the system:", f"  held by {holder}"]
    return lines


def rcu_stall_lines(host: Any, threads: list["Thread"], secs: int) -> tuple[str, list[str], list[str]]:
    """The stall report: which tasks hold up the grace period (inside a read-side section that began
    before it), how long, and how many callbacks wait."""
    rcu = host.rcu
    blockers = sorted(rcu.readers)  # every reader blocks this grace period or the next one
    by_name = {t.task.name: t for t in threads}
    cpus = " ".join(str(by_name[n].task.cpu) for n in blockers if n in by_name) or "(none)"
    title = f"rcu: INFO: rcu_sched detected stalls on CPUs/tasks: {{ {cpus} }}"
    lines = [title]
    for n in blockers:
        t = by_name.get(n)
        if t is None:
            continue
        state = "exited" if t.done else (t.op.what if t.op is not None else "?")
        lines.append(f"rcu: \t{t.task.cpu}-....: task {n}:{t.task.pid} in rcu_read_lock() since grace period "
                     f"{rcu.readers[n]}: {state}")
        lines += [f"  {f}" for f in reversed(gen_chain(t.gen))]
    lines.append(f"rcu: \t(detected by the watchdog, t={secs * 250} jiffies g={rcu.gp_seq} q={len(rcu.callbacks)})")
    if not blockers:
        lines.append("rcu: no reader holds the grace period: the RCU kthread itself is starved")
    return title, lines, blockers


class Watchdog:
    """Scans the run's tasks every WATCH_EVERY steps; reports through the checker (each report ends the
    run: a lockup is fatal to what it stalls)."""

    def __init__(self, checker: "Checker", threads: list["Thread"], limits: Thresholds):
        self.checker = checker
        self.threads = threads
        self.limits = limits
        self.log: list[tuple[int, str, str]] | None = None
        self.reported: set[str] = set()  # tasks reported already (once per task, as the kernel reports once)

    def scan(self, step: int) -> None:
        """Report the longest-stuck task over its threshold (the others usually wait for it)."""
        lim = self.limits
        worst: tuple[int, int, Any] | None = None  # (age, detector rank, thread)
        for th in self.threads:
            task = th.task
            if th.done or th.op is None or task.name in self.reported:
                continue
            if not task.owes_progress():  # an idle daemon: its clock starts when it next owes something
                task.last_progress = step
                continue
            age = step - task.last_progress
            if task.daemon:
                if age >= lim.rcu_stall and (worst is None or age > worst[0]):
                    worst = (age, 2, th)
                continue
            op = th.op
            if sleeps(op):
                if age >= lim.hung_task and (not op_enabled(op) or step - task.last_ran >= lim.hung_task) and (
                        worst is None or age > worst[0]):
                    worst = (age, 1, th)
            elif age >= lim.soft_lockup and not op.user and (worst is None or age > worst[0]):
                worst = (age, 0, th)
        if worst is not None:
            self._fire(worst[1], worst[2])

    def _fire(self, rank: int, th: "Thread") -> None:
        lim = self.limits
        task, op = th.task, th.op
        self.reported.add(task.name)
        assert op is not None
        if rank == 2:
            title, lines, blockers = rcu_stall_lines(self.checker.host, self.threads, lim.rcu_stall // lim.steps_per_second)
            self._report("rcu-stall", task, title, lines, blocked_by=blockers)
            return
        chain = gen_chain(th.gen)
        if rank == 1:
            lines = hung_task_lines(task, lim.hung_task // lim.steps_per_second, op.what or OP_NAMES[op.kind], chain,
                                    holder_of(op))
            self._report("hung-task", task, lines[0], lines, blocked_in=op.what, holder=holder_of(op))
            return
        loop = recent_steps(self.log, task.name)
        resched = any("cond_resched" in s for s in loop + list(chain))
        lines = soft_lockup_lines(task, lim.soft_lockup // lim.steps_per_second + 2, op.what, chain, resched)
        if loop:
            lines += ["", f"--- the last steps of {task.name} ---", *loop]
        self._report("soft-lockup", task, lines[0], lines, spinning_in=op.what)

    def _report(self, name: str, task: Task, title: str, lines: list[str], **d: Any) -> None:
        host = self.checker.host
        cur = host.current
        host.current = task  # the report is about this task
        try:
            self.checker.violate(name, title, lines=lines, stuck=task.name, since=task.last_progress, **d)
        finally:
            host.current = cur


