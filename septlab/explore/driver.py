"""Run drivers: one seeded schedule, a batch of schedules, replay of a trace; trace files.

A trace is data, never code: JSON with a format version, a header (septlab version, scenario source
+ digest + overrides, variant *name*, DPAMT, seed, fault rate), the choice list, the violations and
metrics it produced (so a replay can assert it reproduced them) and a SHA-256 digest over all of it
(an edited or truncated trace is refused, not half-replayed). A trace names its variant; a variant
file is loaded only when the user gives it on the command line. Files are written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..check.invariants import INVARIANTS, Checker, Violation
from ..check.watchdog import Thresholds, Watchdog
from ..metrics.metrics import merge
from ..outputs import printable, read_json_object
from ..outputs import write_json_atomic as write_json_atomic
from ..scenarios import Scenario, builtin_names, load_scenario
from ..scenarios.world import World, build_world
from ..variants import Variant, VariantError, get_variant
from .choosers import RandomChooser, ReplayChooser
from .pool import chunks, ordered_map
from .runtime import ReplayDivergence, Runtime
from .verdict import Verdict, batch_verdict, schedule_verdict

TRACE_FORMAT = 2
# A batch remembers up to MEMO_RUNS schedules of at most MEMO_CHOICES choices and does not re-run a seed
# that would repeat one of them (same_schedule): checking a seed costs a few random draws per remembered run.
MEMO_RUNS = 16
MEMO_CHOICES = 256
TRACE_MAX_BYTES = 64 << 20  # a trace is a choice list: 64 MiB is ~10^7 choices


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
    verdict: Verdict = field(default_factory=lambda: Verdict("complete"))
    retained: list[tuple[int, int]] | None = None  # the retained-page series, when `checker` is not kept
    kinds: str = ""  # the kind of each choice of a seeded run: "s" scheduling, "f" fault (see same_schedule)


class _KindRecorder(RandomChooser):
    """A RandomChooser that also notes which kind of question each choice answered."""

    def __init__(self, seed: int, fault_rate: float) -> None:
        super().__init__(seed, fault_rate)
        self.kinds: list[str] = []

    def choose(self, kind: str, n: int) -> int:
        self.kinds.append("f" if kind == "fault" else "s")
        return super().choose(kind, n)


def same_schedule(seed: int, fault_rate: float, kinds: str, choices: list[tuple[int, int]]) -> bool:
    """Would seed `seed` make exactly the choices of a run that asked these questions? The run is
    deterministic given its answers (each question depends only on the answers before it), so if the
    seed's random stream gives every recorded answer, its run is that run, step for step -- a scenario
    with few choice points (one vCPU booting and tearing down a TD) has few distinct schedules."""
    c = RandomChooser(seed, fault_rate)
    return all(c.choose("fault" if k == "f" else "sched", n) == i for k, (n, i) in zip(kinds, choices, strict=True))


def run_schedule(scn: Scenario, variant: Variant, dpamt: bool, seed: int, *, fault_rate: float | None = None,
                 choices: list[tuple[int, int]] | None = None, history: bool | None = None,
                 stop_on_fatal: bool = True, tick: Callable[[int], None] | None = None,
                 observer: Callable[[World], Callable[[Any, bool], None]] | None = None) -> RunResult:
    """One schedule: seeded random choices, or a recorded choice list. `observer(world)`, if given,
    returns the hook the runtime calls around every step (Runtime.observe).

    A schedule cut off by the scenario's `max_steps` is `bounded`: the end-of-run invariants (leaks,
    PAMT balance, deadlock) cannot be evaluated on a run that has not ended, so it is never a pass."""
    scn = scn.alternative(seed)  # a scenario with a `swarm:` spreads its seeds over its configurations
    checker = Checker(stop_on_fatal=stop_on_fatal)
    world = build_world(scn, variant, dpamt, checker, history)
    checker.attach(world)
    rate = scn.fault_rate if fault_rate is None else fault_rate
    chooser = ReplayChooser(choices) if choices is not None else _KindRecorder(seed, rate)
    rt = Runtime(world.host, world.threads, chooser, scn.faults, scn.max_steps, scn.max_faults)
    if world.host.history is not None:
        rt.log = []
    rt.tick = tick
    rt.observe = observer(world) if observer is not None else None
    dog = Watchdog(checker, world.threads, Thresholds.for_scenario(scn.steps_per_second))
    dog.log = rt.log
    rt.watch = dog.scan
    out = rt.run()
    checker.finish(out.status, out.steps, out.blocked)
    verdict = schedule_verdict(out.status, (v.invariant for v in checker.violations), scn.max_steps)
    return RunResult(seed, out.status, out.steps, out.choices, checker.violations, checker.metrics.as_json(),
                     checker.metrics.series, len(checker.expected), out.crash, rt.log, world, checker, verdict,
                     kinds="".join(chooser.kinds) if isinstance(chooser, _KindRecorder) else "")


class ModelCrash(Exception):
    """The model raised inside a schedule (a septlab bug, or an exception in a variant's hook): exit 3.
    `detail` is the model's own traceback (the run keeps it as text: the schedule may have run in a worker
    process), which SEPTLAB_DEBUG=1 prints."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def crash_line(crash: str) -> str:
    """One line for a model crash: the exception, and where it was raised (the innermost frame of the
    traceback text a run keeps), e.g. `KeyError: -2 (in _set, page_alloc.py:131)`."""
    lines = crash.splitlines()
    if not lines:
        return "?"
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', crash)
    if not frames:
        return lines[-1]
    path, line, func = frames[-1]
    return f"{lines[-1]} (in {func}, {Path(path).name}:{line})"


RETAINED_SERIES = 64  # schedules whose retained-page series a batch keeps for its plot (the rest: counts only)


@dataclass
class Batch:
    """N schedules of one (scenario, variant, DPAMT), summarised as they finish: memory stays flat in N."""

    scenario: Scenario
    variant: Variant
    dpamt: bool
    seed: int
    total: int
    done: int = 0
    bounded: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # invariant -> schedules violating it
    metrics: dict[str, Any] = field(default_factory=dict)
    first_bad: RunResult | None = None
    first_series: list[tuple[int, int]] | None = None
    retained_series: list[list[tuple[int, int]]] = field(default_factory=list)
    interrupted: bool = False
    loaded: dict[str, Any] | None = None  # the JSON row `compare --resume` rebuilt this batch from

    def add(self, r: RunResult) -> None:
        self.done += 1
        for name in sorted({v.invariant for v in r.violations}):
            self.counts[name] = self.counts.get(name, 0) + 1
        if r.status == "step-bound":
            self.bounded += 1
        self.metrics = merge([self.metrics, r.metrics]) if self.metrics else merge([r.metrics])
        if self.first_series is None:
            self.first_series = r.series
        if len(self.retained_series) < RETAINED_SERIES and (r.checker is not None or r.retained is not None):
            self.retained_series.append(r.checker.metrics.retained_series if r.checker is not None
                                        else r.retained or [])
        if r.violations and self.first_bad is None:
            r.world = r.checker = None
            self.first_bad = r

    @property
    def verdict(self) -> Verdict:
        return batch_verdict(self.total, self.done, self.bounded, self.counts, self.interrupted,
                             f"the step bound (max_steps {self.scenario.max_steps})")

    def violation_counts(self) -> dict[str, int]:
        """Every invariant by stable name, 0 where none was violated (stable JSON shape)."""
        return {k: self.counts.get(k, 0) for k in INVARIANTS}


def run_batch(scn: Scenario, variant: Variant, dpamt: bool, seed: int, schedules: int, *,
              fault_rate: float | None = None, history: bool | None = False,
              on_schedule: Callable[[Batch], None] | None = None,
              tick: Callable[[int], None] | None = None, workers: int = 1, ray: bool = False) -> Batch:
    """Seeds seed..seed+N-1 of one (variant, DPAMT); Ctrl-C stops between schedules and keeps what
    finished. See run_batches()."""
    return run_batches(scn, [(variant, dpamt)], seed, schedules, fault_rate=fault_rate, history=history,
                       on_schedule=on_schedule, tick=tick, workers=workers, ray=ray)[0]


def run_batches(scn: Scenario, rows: list[tuple[Variant, bool]], seed: int, schedules: int, *,
                fault_rate: float | None = None, history: bool | None = False,
                on_schedule: Callable[[Batch], None] | None = None,
                tick: Callable[[int], None] | None = None, workers: int = 1, ray: bool = False) -> list[Batch]:
    """Seeds seed..seed+N-1 of every (variant, DPAMT) row: `compare`'s rows, `run`'s one.

    With `workers` > 1 the seeds of all rows run in chunks on one local process pool (explore/pool.py),
    with `ray` as Ray tasks (explore/cluster.py) -- so a few long schedules of several rows (a 64 GiB TD
    per design) run side by side -- and are summarised in row and seed order, so each batch -- counts,
    metrics, the first violating schedule (its seed and choices: `run` re-runs it to report it) -- is
    the one a single process computes. Ctrl-C marks every unfinished batch interrupted and keeps what
    finished."""
    batches = [Batch(scn, v, d, seed, schedules) for v, d in rows]
    pooled = workers > 1 or ray
    if ray:
        from .cluster import portable_variant

        jobs = [_Chunk(scn, portable_variant(v), d, seed, fault_rate, history) for v, d in rows]
        per = chunks(schedules, max(workers, 8))
    elif pooled:
        jobs = [_Chunk(scn, v, d, seed, fault_rate, history) for v, d in rows]
        per = chunks(schedules, workers)
    else:  # one schedule per item: Ctrl-C keeps every finished one; the live world is kept, ticks shown
        jobs = [_Chunk(scn, v, d, seed, fault_rate, history, tick, portable=False) for v, d in rows]
        per = chunks(schedules, 1, 1)
    items = [(i, rng) for i in range(len(rows)) for rng in per]
    try:
        for (i, _rng), rs in zip(items, ordered_map(_Rows(jobs), items, workers, ray), strict=False):
            b = batches[i]
            for r in rs:
                if r.status == "crash":
                    raise ModelCrash(f"model crashed in schedule seed={r.seed} ({b.variant.name}, DPAMT "
                                     f"{'on' if b.dpamt else 'off'}): {crash_line(r.crash)}",
                                     r.crash)
                b.add(r)
                if on_schedule is not None:
                    on_schedule(b)
    except KeyboardInterrupt:
        for b in batches:
            b.interrupted = b.done < b.total
    return batches


@dataclass
class _Rows:
    """The pool's job for several rows: item (row, seeds) runs that row's chunk (plain data for Ray)."""

    jobs: list[_Chunk]

    def __call__(self, item: tuple[int, range]) -> list[RunResult]:
        return self.jobs[item[0]](item[1])


@dataclass
class _Chunk:
    """Schedules seed+i for i in a range, here or as a pool or Ray task: plain data (the variant may be a
    portable spec, loaded once per worker) returning, when `portable`, results without their live worlds."""

    scn: Scenario
    variant: Any
    dpamt: bool
    seed: int
    fault_rate: float | None
    history: bool | None
    tick: Callable[[int], None] | None = None
    portable: bool = True  # the result crosses a process boundary

    memo: list[RunResult] = field(default_factory=list)  # distinct schedules run so far (see same_schedule)

    def __call__(self, rng: range) -> list[RunResult]:
        from .cluster import variant_from

        var = variant_from(self.variant)
        out = []
        for i in rng:
            r = self._known(self.seed + i)
            if r is None:
                r = run_schedule(self.scn, var, self.dpamt, self.seed + i, fault_rate=self.fault_rate,
                                 history=self.history, tick=self.tick)
                if not self.scn.swarm and len(r.choices) <= MEMO_CHOICES and len(self.memo) < MEMO_RUNS:
                    self.memo.append(r)
            out.append(r)
        return [_portable(r) for r in out] if self.portable else out

    def _known(self, seed: int) -> RunResult | None:
        """A schedule already run that this seed would repeat exactly (its result, under this seed)."""
        rate = self.scn.fault_rate if self.fault_rate is None else self.fault_rate
        for r in self.memo:
            if same_schedule(seed, rate, r.kinds, r.choices):
                return dataclasses.replace(r, seed=seed)
        return None


def _portable(r: RunResult) -> RunResult:
    """A worker's result without the live world: violations as plain data, the retained series kept."""
    vs = [Violation(v.invariant, v.step, v.task, v.title, v.as_json()["details"], v.pfns) for v in r.violations]
    retained = r.checker.metrics.retained_series if r.checker is not None else []
    return RunResult(r.seed, r.status, r.steps, r.choices, vs, r.metrics, r.series, r.expected, r.crash,
                     None, None, None, r.verdict, retained)


def trace_header(scn: Scenario, variant: Variant, dpamt: bool, seed: int, fault_rate: float,
                 overrides: dict[str, str]) -> dict[str, Any]:
    return {"septlab": __version__, "format": TRACE_FORMAT, "scenario": scn.source,
            "scenario_digest": scn.digest, "set": dict(sorted(overrides.items())), "variant": variant.name,
            "variant_file": Path(variant.source).name if variant.source else None, "dpamt": dpamt, "seed": seed,
            "fault_rate": fault_rate}


def _digest(obj: dict[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def trace_json(header: dict[str, Any], res: RunResult) -> dict[str, Any]:
    out = {**header, "status": res.status, "result": str(res.verdict), "steps": res.steps,
           "violations": [v.as_json() for v in res.violations], "metrics": res.metrics,
           "choices": ".".join(f"{n}:{i}" for n, i in res.choices)}
    out["digest"] = _digest(out)
    return out


def load_trace(path: Path) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """Read and validate a trace: data only, every field typed, the digest intact."""
    where = printable(path)
    data = read_json_object(path, "trace", TRACE_MAX_BYTES, TraceError)
    if not isinstance(data.get("format"), int) or isinstance(data.get("format"), bool):
        raise TraceError(f"{where}: field 'format': missing or not int")
    if data["format"] != TRACE_FORMAT:
        raise TraceError(f"{where}: field 'format': trace format {data['format']}, this septlab reads {TRACE_FORMAT}")
    for k, typ in (("scenario", str), ("variant", str), ("dpamt", bool), ("seed", int), ("choices", str),
                   ("digest", str), ("steps", int)):
        v = data.get(k)
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise TraceError(f"{where}: field {k!r}: missing or not {typ.__name__}")
    if not isinstance(data.get("set", {}), dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.get("set", {}).items()):
        raise TraceError(f"{where}: field 'set': must map scenario keys to strings, like --set KEY=VALUE")
    if not isinstance(data.get("violations", []), list) or not all(
            isinstance(v, dict) and isinstance(v.get("invariant"), str) for v in data.get("violations", [])):
        raise TraceError(f"{where}: field 'violations': must be a list of objects with an 'invariant'")
    if not isinstance(data.get("metrics", {}), dict):
        raise TraceError(f"{where}: field 'metrics': must be an object")
    if not isinstance(data.get("scenario_small", False), bool):
        raise TraceError(f"{where}: field 'scenario_small': must be true or false")
    if data["digest"] != _digest(data):
        raise TraceError(f"{where}: field 'digest': does not match the contents: the trace was edited or truncated")
    try:
        choices = [tuple(int(x) for x in c.split(":")) for c in data["choices"].split(".") if c]
        if any(len(c) != 2 or not 0 <= c[1] < c[0] for c in choices):
            raise ValueError
    except ValueError:
        raise TraceError(f"{where}: field 'choices': expected n:i pairs (0 <= i < n) separated by dots") from None
    return data, choices  # type: ignore[return-value]


def replay_trace(path: Path, variant_file: str | None = None, scenario: str | None = None,
                 observer: Callable[[World], Callable[[Any, bool], None]] | None = None,
                 ) -> tuple[dict[str, Any], RunResult]:
    """Re-run a trace's schedule. Its variant is looked up by name; a user's variant file is loaded only
    if given here (from the command line), and must carry the name the trace recorded."""
    data, choices = load_trace(path)
    where = printable(path)
    if scenario is None and data["scenario"] not in builtin_names() and \
            not data["scenario"].endswith((".yaml", ".yml")):
        raise TraceError(f"{where}: field 'scenario': {printable(data['scenario'])!r} is neither a built-in nor a "
                         ".yaml file; a trace only names scenario files (pass --scenario FILE to choose one)")
    scn = load_scenario(scenario or data["scenario"], dict(data.get("set") or {}),
                        small=bool(data.get("scenario_small", False)))
    if data.get("scenario_digest") and data["scenario_digest"] != scn.digest:
        raise TraceError(f"{where}: field 'scenario_digest': scenario {printable(data['scenario'])} changed since the "
                         "trace was recorded; the replay would not be the same run")
    if variant_file is not None:
        variant = get_variant(variant_file)
        if variant.name != data["variant"]:
            raise TraceError(f"{where}: field 'variant': the trace was recorded with {printable(data['variant'])!r}, "
                             f"{printable(variant_file)} defines {variant.name!r}")
    else:
        try:
            variant = get_variant(data["variant"], allow_files=False)
        except VariantError:
            hint = f" (it was loaded from a file named {printable(data.get('variant_file'))})" if data.get(
                "variant_file") else ""
            raise TraceError(f"{where}: field 'variant': {printable(data['variant'])!r} is not a built-in variant"
                             f"{hint}; a trace never loads code: pass --variant FILE.py") from None
    try:
        res = run_schedule(scn, variant, data["dpamt"], data["seed"], choices=choices, history=True,
                           observer=observer)
    except ReplayDivergence as e:
        raise TraceError(f"{where}: does not replay on this model: {e}") from None
    if len(res.choices) != len(choices):
        raise TraceError(f"{where}: does not replay on this model: the run ended after {len(res.choices)} of the "
                         f"trace's {len(choices)} choices (the model, scenario or septlab version differs)")
    return data, res
