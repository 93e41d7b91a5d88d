"""The septlab model as a Hypothesis `RuleBasedStateMachine`, driven through explore/executor.py.

Drives the same pieces `septlab run` and `septlab check` use: a scenario (septlab.scenarios), a variant
(septlab.variants), the world built by scenarios/world.py and its invariant Checker, all stepped by
`Executor` (explore/executor.py). Each Hypothesis step executes one of `Executor.transitions()` (which
task moves next, and for a SEAMCALL which fault, if any, the scenario allows to be injected).

Why: users who already know Hypothesis get its shrinking (a failing schedule reduced to few steps) and
a pasteable program that reproduces it, with no new tool to learn; and bench/mutants_time_to_bug.py
uses it to compare time-to-bug of a general-purpose property-based tester with septlab's own random
scheduler and exhaustive checker on the same model.

Hypothesis raises InvalidDefinition when no rule is enabled, and a run of the model normally ends
well before `stateful_step_count`; so once the run is over, `idle` (a no-op) is the rule left to run.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..scenarios import Scenario
from ..variants import Variant
from .executor import Executor


def make_state_machine(scn: Scenario, variant: Variant, dpamt: bool) -> type[RuleBasedStateMachine]:
    """A state machine class whose every example is one schedule of `scn` under `variant`."""

    class SeptlabMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ex: Executor | None = None
            self.over = False  # stopped by a fatal violation, or finished (end-of-run checks done)

        @initialize()
        def start(self) -> None:
            self.ex = Executor(scn, variant, dpamt)  # builds the world and resets it
            self.over = False

        def _running(self) -> bool:
            return self.ex is not None and not self.over

        @precondition(lambda self: self._running())
        @rule(choice=st.integers(0, 63))
        def step(self, choice: int) -> None:
            ex = self.ex
            assert ex is not None
            trs = ex.transitions()
            if trs:
                ex.execute(trs[choice % len(trs)])
                trs = ex.transitions()
            if ex.stopped:
                self.over = True
            elif not trs:
                ex.finish()  # end-of-run invariants: leaks, PAMT balance, deadlock
                self.over = True

        @precondition(lambda self: self.ex is not None and self.over)
        @rule()
        def idle(self) -> None:
            """The run is over; Hypothesis still needs an enabled rule until it stops drawing steps."""

        @invariant()
        def no_violation(self) -> None:
            v = self.ex.violations if self.ex is not None else []
            assert not v, f"{v[0].invariant}: {v[0].title}"

    SeptlabMachine.__name__ = SeptlabMachine.__qualname__ = "SeptlabMachine"
    return SeptlabMachine
