"""Progress in kernel terms: what a task does that a lockup detector would count as getting somewhere.

The kernel's detectors each watch one thing: the soft-lockup watchdog a CPU that never schedules, khungtaskd
a task in D state whose context-switch count does not move for hung_task_timeout_secs, the RCU stall
detector a grace period that does not end. The model states the underlying property directly: each task
declares its progress points -- a guest access whose EPT violation was resolved, an ioctl or syscall that
returns, a zap walk that moved forward or finished, a grace period that ended, an RCU callback that ran,
a task that finished -- and the checkers ask whether a task can go on forever without reaching one.

A retry loop of the kernel (RET_PF_RETRY and the TDX local retry, BUSY retries, tdh_do_no_vcpus(),
wait_for_sept_zap, spinning on a FROZEN SPTE, the rescheduling of a walk) is an ordinary loop of the
model: its iterations are not progress; only its exit is. Re-entering the guest to fault again is not
progress either: the guest is stuck on the same access.

The model only declares; the random-run watchdog (check/watchdog.py) and the exhaustive liveness check
(explore/liveness.py) decide what a missing progress means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host import Host


def progress(host: "Host", what: str) -> None:
    """The current task made progress (`what` names it in kernel terms, for readers of the model)."""
    t = host.current
    t.last_progress = host.clock
    host.progressed |= 1 << t.cpu
