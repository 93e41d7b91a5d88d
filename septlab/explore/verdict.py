"""One result status for every command, table and JSON: complete, bounded (and why), or violated.

A checker must never say "safe" when it did not look. A schedule cut off by `max_steps` never reached
the end-of-run invariants (leaks, PAMT balance, deadlock), a search cut off by a preemption, depth or
time bound did not see every state, and a Ctrl-C stops either half way: all of these are `bounded`,
printed as such and given their own exit status, never the pass of a run that ended.

Exit statuses (the CLI's contract): 0 complete, 1 violated, 2 bad input, 3 internal error,
4 bounded (nothing violated in what was explored, but not everything was explored),
130 interrupted by Ctrl-C (partial results written; 1 if a violation was already found).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

COMPLETE = "complete"
BOUNDED = "bounded"
VIOLATED = "violated"

EXIT_COMPLETE = 0
EXIT_VIOLATED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_BOUNDED = 4
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # COMPLETE, BOUNDED or VIOLATED
    why: str = ""  # for BOUNDED: what cut the run or search short; for VIOLATED: the invariants
    interrupted: bool = False

    def __str__(self) -> str:
        return f"{self.kind}: {self.why}" if self.why else self.kind

    @property
    def passed(self) -> bool:
        return self.kind == COMPLETE

    @property
    def exit_code(self) -> int:
        if self.kind == VIOLATED:
            return EXIT_VIOLATED
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_BOUNDED if self.kind == BOUNDED else EXIT_COMPLETE

    def as_json(self) -> dict[str, object]:
        return {"status": str(self), "kind": self.kind, "why": self.why, "interrupted": self.interrupted}


def schedule_verdict(status: str, violated: Iterable[str], max_steps: int) -> Verdict:
    """The verdict of one schedule from the runtime's outcome status and the invariants it violated."""
    names = sorted(set(violated))
    if names:
        return Verdict(VIOLATED, ", ".join(names))
    if status == "step-bound":
        return Verdict(BOUNDED, f"step bound (max_steps {max_steps}) reached before the run ended; "
                                "end-of-run invariants not evaluated")
    return Verdict(COMPLETE)


def batch_verdict(total: int, done: int, bounded: int, violated: dict[str, int], interrupted: bool,
                  bound_why: str = "") -> Verdict:
    """The verdict of N schedules: violated if any was; else bounded if any was cut short or not run."""
    if violated:
        return Verdict(VIOLATED, ", ".join(f"{k} in {v} of {done} schedules" for k, v in sorted(violated.items())),
                       interrupted)
    why = []
    if bounded:
        why.append(f"{bounded} of {done} schedules cut short by {bound_why or 'the step bound'}")
    if interrupted or done < total:
        why.append(f"interrupted after {done} of {total} schedules")
    if why:
        return Verdict(BOUNDED, "; ".join(why), interrupted)
    return Verdict(COMPLETE)
