"""Run drivers: one seeded schedule, many schedules, replay of a trace; trace files.

A trace is JSON: a header (septlab version, scenario source + digest + overrides, variant, DPAMT,
seed, fault rate) and the choice list, plus the violations and metrics it produced so that a replay
can assert it reproduced them. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..check.invariants import Checker, Violation
from ..scenarios import Scenario, load_scenario
from ..scenarios.world import World, build_world
from ..variants import Variant, get_variant
from .choosers import RandomChooser, ReplayChooser
from .runtime import Runtime

TRACE_FORMAT = 1


class TraceError(Exception):
    """A trace file that cannot be used (exit status 2)."""


@dataclass
class RunResult:
    seed: int
    status: str
    steps: int
    choices: list[tuple[int, int]]
    violations: list[Violation]
    metrics: dict[str, Any]
    series: list[tuple[int, int]]
    expected: int
    crash: str = ""
    log: list[tuple[int, str, str]] | None = None
    world: World | None = field(default=None, repr=False)
    checker: Checker | None = field(default=None, repr=False)


def run_schedule(scn: Scenario, variant: Variant, dpamt: bool, seed: int, *, fault_rate: float | None = None,
                 choices: list[tuple[int, int]] | None = None, history: bool | None = None,
                 stop_on_fatal: bool = True) -> RunResult:
    """One schedule: seeded random choices, or a recorded choice list."""
    checker = Checker(stop_on_fatal=stop_on_fatal)
    world = build_world(scn, variant, dpamt, checker, history)
    checker.attach(world)
    rate = scn.fault_rate if fault_rate is None else fault_rate
    chooser = ReplayChooser(choices) if choices is not None else RandomChooser(seed, rate)
    rt = Runtime(world.host, world.threads, chooser, scn.faults, scn.max_steps, scn.max_faults)
    if world.host.history is not None:
        rt.log = []
    out = rt.run()
    checker.finish(out.status, out.steps, out.blocked)
    return RunResult(seed, out.status, out.steps, out.choices, checker.violations, checker.metrics.as_json(),
                     checker.metrics.series, len(checker.expected), out.crash, rt.log, world, checker)


def trace_header(scn: Scenario, variant: Variant, dpamt: bool, seed: int, fault_rate: float,
                 overrides: dict[str, str]) -> dict[str, Any]:
    return {"septlab": __version__, "format": TRACE_FORMAT, "scenario": scn.source,
            "scenario_digest": scn.digest, "set": dict(sorted(overrides.items())), "variant": variant.name,
            "variant_source": variant.source, "dpamt": dpamt, "seed": seed,
            "fault_rate": fault_rate}


def trace_json(header: dict[str, Any], res: RunResult) -> dict[str, Any]:
    return {**header, "status": res.status, "steps": res.steps,
            "violations": [v.as_json() for v in res.violations], "metrics": res.metrics,
            "choices": ".".join(f"{n}:{i}" for n, i in res.choices)}


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_trace(path: Path) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise TraceError(f"{path}: no such trace file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = getattr(e, "lineno", 1)
        raise TraceError(f"{path}:{line}: not a septlab trace (invalid JSON: {getattr(e, 'msg', e)})") from None
    if not isinstance(data, dict):
        raise TraceError(f"{path}:1: not a septlab trace (top level is not an object)")
    for k, typ in (("format", int), ("scenario", str), ("variant", str), ("dpamt", bool), ("seed", int),
                   ("choices", str)):
        if not isinstance(data.get(k), typ):
            raise TraceError(f"{path}: field {k!r}: missing or not {typ.__name__}")
    if data["format"] != TRACE_FORMAT:
        raise TraceError(f"{path}: field 'format': trace format {data['format']}, this septlab reads {TRACE_FORMAT}")
    try:
        choices = [tuple(int(x) for x in c.split(":")) for c in data["choices"].split(".") if c]
        if any(len(c) != 2 for c in choices):
            raise ValueError
    except ValueError:
        raise TraceError(f"{path}: field 'choices': expected n:i pairs separated by dots") from None
    return data, choices  # type: ignore[return-value]


def replay_trace(path: Path) -> tuple[dict[str, Any], RunResult]:
    data, choices = load_trace(path)
    overrides = {str(k): str(v) for k, v in (data.get("set") or {}).items()}
    scn = load_scenario(data["scenario"], overrides, small=bool(data.get("scenario_small", False)))
    if data.get("scenario_digest") and data["scenario_digest"] != scn.digest:
        raise TraceError(f"{path}: field 'scenario_digest': scenario {data['scenario']} changed since the "
                         "trace was recorded; the replay would not be the same run")
    variant = get_variant(data.get("variant_source") or data["variant"])
    res = run_schedule(scn, variant, data["dpamt"], data["seed"], choices=choices, history=True)
    return data, res
