"""A counterexample as a timeline: one column per task, one row per step (P-style, grep-able)."""

from __future__ import annotations

from typing import Any

COL = 30


def render_timeline(log: list[tuple[int, str, str]], tasks: list[str], upto: int | None = None) -> str:
    active = [t for t in tasks if any(name == t for _, name, _ in log)]
    head = "step   " + "".join(f"{t:<{COL}}" for t in active)
    out = [head, "-" * len(head)]
    for step, name, what in log:
        if upto is not None and step > upto:
            break
        cells = [(what[: COL - 2] if t == name else "") for t in active]
        out.append(f"#{step:<5} " + "".join(f"{c:<{COL}}" for c in cells).rstrip())
    return "\n".join(out)


def task_names(world: Any) -> list[str]:
    return [t.task.name for t in world.threads]
