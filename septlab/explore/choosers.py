"""Choosers: seeded random (uniform scheduling, fault injection at a rate) and replay of a choice list."""

from __future__ import annotations

import random

from .runtime import ReplayDivergence


class RandomChooser:
    """Uniform over runnable tasks; a SEAMCALL fails with probability `fault_rate` (then uniform
    over the failures the scenario allows). random.Random(seed) is the same on every machine."""

    def __init__(self, seed: int, fault_rate: float = 0.05):
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate

    def choose(self, kind: str, n: int) -> int:
        r = self.rng
        if kind == "fault":
            if r.random() >= self.fault_rate:
                return 0
            return 1 + r.randrange(n - 1)
        return r.randrange(n)


class ReplayChooser:
    """Feeds back a recorded list of (n, i); diverging means the run is not the recorded one."""

    def __init__(self, choices: list[tuple[int, int]]):
        self.choices = choices
        self.pos = 0

    def choose(self, kind: str, n: int) -> int:
        if self.pos >= len(self.choices):
            raise ReplayDivergence(
                f"trace ends after {self.pos} choices but the run asks for more ({kind}, {n} options): "
                "the model, scenario or septlab version differs from the recording")
        rn, i = self.choices[self.pos]
        if rn != n:
            raise ReplayDivergence(
                f"choice #{self.pos} ({kind}) offers {n} options, the trace recorded {rn}: the model, "
                "scenario or septlab version differs, or something in the run is nondeterministic "
                "(set/dict iteration order, time, id())")
        self.pos += 1
        return i
