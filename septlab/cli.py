"""septlab's command line: run, replay, compare, check, variants, scenarios, invariants.

Data goes to stdout, progress and diagnostics to stderr. Every command ends in one result status
(explore/verdict.py): `complete`, `bounded: <why>` or `violated`, with exit status 0, 4 or 1; bad input
(a scenario, trace, flag, variant file or output path) is one line naming the file, line and field
and exit status 2; an internal error is one line and exit status 3; Ctrl-C writes what was computed
and exits 130. Output paths are checked before the work and the report is printed before any file is
written, so a result is never lost to a bad path.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .check.explain import HEAD_ROWS, TAIL_ROWS, explain_schedule, explain_trace
from .check.invariants import INVARIANTS
from .check.report import render
from .explore.driver import (
    Batch,
    ModelCrash,
    TraceError,
    crash_line,
    replay_trace,
    run_batch,
    run_batches,
    run_schedule,
    trace_header,
    trace_json,
)
from .explore.exhaustive import CheckpointError
from .explore.pool import cpu_workers
from .explore.results import ResumeError, comparison, finished_rows, row_json, row_memory, write_results
from .explore.runtime import ReplayDivergence
from .explore.verdict import (
    BOUNDED,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    VIOLATED,
    Verdict,
)
from .host.page_alloc import EXTERNAL_SPT, OWNER_NAMES
from .outputs import (
    OutputError,
    check_output_path,
    check_plot_path,
    printable,
    safe_filename,
    write_atomic,
    write_json_atomic,
)
from .report.html import ReportInputError
from .scenarios import ScenarioError, builtin_descriptions, load_scenario
from .variants import REGISTRY_WARNINGS, VariantError, get_variant, registry, resolve_variants


class _Console(Console):
    """Rich console that never interprets user text: no markup, no emoji codes, control characters escaped."""

    def render_str(self, text: str, **kw: Any) -> Any:  # type: ignore[override]
        return super().render_str(printable(text), **kw)


out = _Console(highlight=False, soft_wrap=True, markup=False, emoji=False,
               width=None if sys.stdout.isatty() else 170)
err = _Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)

SEED = click.IntRange(0, (1 << 63) - 1)
MAX_SCHEDULES = 10_000_000


class BadInput(Exception):
    pass


def _parse_set(items: tuple[str, ...]) -> dict[str, str]:
    res = {}
    for it in items:
        if "=" not in it:
            raise BadInput(f"--set {it}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        res[k.strip()] = v
    return res


def _progress(total: int, label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[note]}"), console=err, transient=True,
                    disable=total < 2 or not err.is_terminal)


def _step_progress() -> Progress:
    """For one long schedule: model steps so far (the bar of a run whose length is not known in advance)."""
    return Progress(SpinnerColumn(), TextColumn("schedule"), TextColumn("{task.completed:>12,.0f} steps"),
                    TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)


def _trace_path(trace_dir: Path, *parts: str) -> Path:
    return trace_dir / safe_filename(*parts, suffix=".json")


def _mode(dpamt: bool) -> str:
    return "on" if dpamt else "off"


HELP = """septlab: an executable model of KVM's TDX secure-EPT page-table lifecycle.

\b
Run a design against a scenario under seeded random schedules and injected SEAMCALL failures,
compare designs on invariants and memory held, explore every schedule of a small configuration,
and replay any violation step for step.

\b
  septlab compare --scenario seed --variants rcu-free,tdx-free,tdx-alloc-hook --dpamt both
  septlab run --scenario seed --variant rcu-free --dpamt --schedules 50
  septlab replay septlab-traces/seed-rcu-free-dpamt-seed0.json
  septlab check --scenario seed --variant tdx-free --exhaustive
  septlab variants; septlab scenarios; septlab invariants

\b
Every result is one of: complete (exit 0), violated (exit 1), bounded: <why> (exit 4: a step,
preemption, depth or time bound, or Ctrl-C, cut the run short -- never a pass). Bad input exits 2
with one line naming the file, line and field; an internal error exits 3; Ctrl-C exits 130 after
writing what was computed.
"""


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="septlab")
def cli() -> None:
    pass


def _run_common(scenario: str, sets: tuple[str, ...]) -> tuple[Any, dict[str, str]]:
    ov = _parse_set(sets)
    return load_scenario(scenario, ov), ov


def _report_violation(scn: Any, var: Any, dpamt: bool, bad: Any, rate: float, ov: dict[str, str],
                      trace_dir: Path, minimize: bool, explain: bool = False) -> tuple[Path, dict[str, Any], str]:
    """Replay the first violating schedule with page histories (proving it replays), print its report.

    Returns the trace path and contents; the caller writes it after everything else is printed."""
    trace_file = _trace_path(trace_dir, Path(scn.name).stem, var.name, "dpamt" if dpamt else "", f"seed{bad.seed}")
    if minimize:
        from .explore.minimize import minimize as ddmin

        try:
            mz = ddmin(scn.alternative(bad.seed), var, dpamt, bad.choices, bad.violations[0].invariant)
            err.print(f"minimized: {bad.steps} -> {mz.steps} steps, {mz.deviations} preemption(s)/injected "
                      f"failure(s) left, {mz.tries} runs")
            bad = run_schedule(scn, var, dpamt, bad.seed, choices=mz.choices, history=False)
            trace_file = trace_file.with_name(trace_file.stem + "-min.json")
        except KeyboardInterrupt:
            err.print("minimization interrupted: reporting the schedule as found")
    cmd = f"septlab replay {trace_file}" + (f" --variant {var.source}" if var.source else "")
    header = (f"scenario {scn.name}  variant {var.name}  DPAMT {_mode(dpamt)}  seed {bad.seed}  "
              f"explorer random  steps {bad.steps}")
    if explain:
        full, text = explain_schedule(scn, var, dpamt, bad.seed, bad.choices, cmd, header)
    else:
        full, text = run_schedule(scn, var, dpamt, bad.seed, choices=bad.choices, history=True), None
    if text is None:
        v = full.violations[0] if full.violations else bad.violations[0]
        text = render(v, full.world.host, full.log, cmd, header)  # type: ignore[union-attr]
    out.print(text)
    return trace_file, trace_json(trace_header(scn, var, dpamt, bad.seed, rate, ov), bad), cmd


def _schedule_workers(f: Any) -> Any:
    """--workers and --ray of the commands that run seeded schedules (run, compare)."""
    f = click.option("--ray", "ray_address", metavar="ADDRESS", help="Run the schedules as tasks on a Ray cluster "
                     "instead of local processes: auto (the cluster this machine belongs to), ray://HOST:PORT, or "
                     "local (a private Ray on this machine). Needs pip install 'septlab[ray]'.")(f)
    return click.option("--workers", "-j", default=1, show_default=True, type=click.IntRange(0, 1024),
                        help="Processes to run schedules on (0: one per CPU). Results are the same for any number: "
                        "schedules are summarised in seed order.")(f)


def _ray(address: str | None) -> bool:
    """Connect to the Ray cluster --ray names (exit 2 if Ray is missing or unreachable); False without it."""
    if not address:
        return False
    from .explore.cluster import RayUnavailable, connect

    try:
        connect(address)
    except RayUnavailable as e:
        raise BadInput(str(e)) from None
    return True


def _print_result(verdict: Verdict, detail: str, steps: int) -> None:
    if verdict.kind == VIOLATED:
        out.print(f"result: {verdict}")
    elif verdict.kind == BOUNDED:
        out.print(f"result: {verdict}\n  NOT a pass: nothing fired in the {steps:,} steps that ran, but what was "
                  "cut short was never checked to its end")
    else:
        out.print(f"result: complete: {detail}")


@cli.command()
@click.option("--scenario", "-s", required=True, help="Built-in name (see `septlab scenarios`) or a YAML file.")
@click.option("--variant", "-v", required=True, help="Variant name (see `septlab variants`) or a .py file.")
@click.option("--dpamt", is_flag=True, help="Enable Dynamic PAMT (E4, DPAMT v6).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="First seed; schedule i uses seed+i.")
@click.option("--schedules", "-n", default=1, show_default=True, type=click.IntRange(1, MAX_SCHEDULES),
              help="Schedules to run.")
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="Probability that an injectable SEAMCALL fails "
              "(default: the scenario's).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a top-level scenario key, "
              "e.g. --set max_steps=50000.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.option("--trace-dir", default="septlab-traces", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the trace of the first violating schedule is written.")
@_schedule_workers
@click.option("--explain", "explain", is_flag=True, help="Draw the first violation as a race in CPU columns (the "
              "steps touching its pages, entries and locks), then its report: see `septlab explain`.")
@click.option("--minimize", is_flag=True, help="Shrink the first violating schedule (ddmin over its preemptions and "
              "injected failures) before reporting it.")
def run(scenario: str, variant: str, dpamt: bool, seed: int, schedules: int, fault_rate: float | None,
        sets: tuple[str, ...], json_out: Path | None, trace_dir: Path, workers: int, ray_address: str | None,
        explain: bool, minimize: bool) -> None:
    """Run N seeded schedules; report the first violation KASAN/lockdep/WARN-style, with its replay command.

    Exit 0: every schedule ran to its end and nothing was violated; 1: an invariant was violated;
    4 (bounded): some schedule hit max_steps, so its end-of-run invariants were never checked;
    130: interrupted (what finished is reported and written)."""
    if json_out:
        check_output_path(json_out, "--json")
    check_output_path(trace_dir, "--trace-dir", directory=True)
    scn, ov = _run_common(scenario, sets)
    var = get_variant(variant)
    # without --fault-rate each swarm configuration keeps its own rate (run_schedule takes it from the
    # configuration the seed selects); the trace records the rate its schedule ran with
    rate_note = (f"{fault_rate}" if fault_rate is not None
                 else f"{scn.fault_rate}" + (" (each swarm configuration its own)" if scn.swarm else ""))
    err.print(f"septlab run: scenario {scn.name}, variant {var.name}, DPAMT {_mode(dpamt)}, "
              f"seeds {seed}..{seed + schedules - 1}, fault rate {rate_note}")
    history = False if schedules > 1 or not scn.history else None
    if schedules == 1:
        with _step_progress() as prog:
            tid = prog.add_task("steps", total=None)
            batch = run_batch(scn, var, dpamt, seed, 1, fault_rate=fault_rate, history=history,
                              tick=lambda n: prog.update(tid, completed=n))
    else:
        with _progress(schedules, "schedules") as prog:
            tid = prog.add_task("run", total=schedules, note="")
            batch = run_batch(scn, var, dpamt, seed, schedules, fault_rate=fault_rate, history=history,
                              workers=cpu_workers(workers), ray=_ray(ray_address), on_schedule=lambda b: prog.update(tid, completed=b.done,
                                                                note=f"{sum(b.counts.values())} violating"))
    trace = None
    if batch.first_bad is not None:
        try:
            bad_rate = fault_rate if fault_rate is not None else scn.alternative(batch.first_bad.seed).fault_rate
            trace = _report_violation(scn, var, dpamt, batch.first_bad, bad_rate, ov, trace_dir, minimize, explain)
        except KeyboardInterrupt:
            batch.interrupted = True
            trace = None
    verdict = batch.verdict
    metrics = batch.metrics
    if batch.counts:
        t = Table(title=f"{scn.name} / {var.name} / DPAMT {_mode(dpamt)}: {batch.done} schedule(s)")
        t.add_column("invariant")
        t.add_column("schedules violating", justify="right")
        for name in INVARIANTS:
            if batch.counts.get(name):
                t.add_row(name, str(batch.counts[name]))
        out.print(t)
    _print_result(verdict, f"no invariant violated in {batch.done} schedule(s), {metrics.get('steps', 0)} steps "
                           f"(peak {metrics.get('peak_pages', 0)} pages, {metrics.get('leaked_pages', 0)} "
                           "deliberately leaked)", metrics.get("steps", 0))
    if trace is not None:
        out.print(f"trace: {trace[0]}\nreplay: {trace[2]}")
    if json_out:
        write_json_atomic(json_out, {"scenario": scn.name, "variant": var.name, "dpamt": dpamt, "seed": seed,
                                     "schedules": schedules, "schedules_run": batch.done,
                                     "schedules_bounded": batch.bounded, **verdict.as_json(),
                                     "violations": batch.counts, "metrics": metrics,
                                     "trace": str(trace[0]) if trace else None}, "--json")
    if trace is not None:
        write_json_atomic(trace[0], trace[1], "trace")
    sys.exit(verdict.exit_code)


_TRACE_VARIANT_HELP = ("The variant .py file the trace was recorded with (a trace names its variant but never "
                       "loads code by itself).")
_TRACE_SCENARIO_HELP = ("Scenario file to use instead of the path recorded in the trace (it must be the same "
                        "scenario: its digest is checked).")


def _check_replayed(trace: Path, data: dict[str, Any], res: Any) -> None:
    """A replay must reproduce what the trace recorded (else the trace is not this model's: exit 2)."""
    if res.status == "crash":
        raise ModelCrash(f"model crashed while replaying {trace}: {crash_line(res.crash)}", res.crash)
    got = [v.invariant for v in res.violations]
    want = [v["invariant"] for v in data.get("violations", [])]
    if got != want or res.steps != data["steps"] or res.metrics != data.get("metrics", res.metrics):
        raise TraceError(f"{printable(trace)}: does not replay on this model: recorded {want} in {data['steps']} "
                         f"steps, got {got} in {res.steps}")


@cli.command()
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("--variant", "-v", "variant_file", help=_TRACE_VARIANT_HELP)
@click.option("--scenario", "-s", help=_TRACE_SCENARIO_HELP)
@click.option("--explain", "explain", is_flag=True, help="Print the violation as `septlab explain` does: the race in "
              "CPU columns, then the report.")
def replay(trace: Path, variant_file: str | None, scenario: str | None, explain: bool) -> None:
    """Re-run one recorded schedule step for step; print its report.

    Exit 1 if it violates an invariant (as recorded), 0 if it completes cleanly, 4 if it was a bounded
    run, 2 if the trace is unusable or does not replay on this model (edited, truncated, other
    variant, scenario or septlab version)."""
    if explain:
        data, res, text = explain_trace(trace, variant_file, scenario)
    else:
        data, res = replay_trace(trace, variant_file, scenario)
        text = None
    cmd = f"septlab replay {trace}" + (f" --variant {variant_file}" if variant_file else "")
    _check_replayed(trace, data, res)
    for v in res.violations[:1]:
        out.print(text or render(v, res.world.host, res.log, cmd,  # type: ignore[union-attr]
                                 f"scenario {data['scenario']}  variant {data['variant']}  DPAMT "
                                 f"{_mode(data['dpamt'])}  seed {data['seed']}  explorer replay  steps {res.steps}"))
    out.print(f"replayed {res.steps} steps of {trace}: same violations, same metrics")
    _print_result(res.verdict, f"{res.steps} steps, no invariant violated", res.steps)
    sys.exit(res.verdict.exit_code)


@cli.command()
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("--variant", "-v", "variant_file", help=_TRACE_VARIANT_HELP)
@click.option("--scenario", "-s", help=_TRACE_SCENARIO_HELP)
@click.option("--all", "show_all", is_flag=True, help="Draw every step touching the objects (default: the first "
              f"{HEAD_ROWS} and the last {TAIL_ROWS}).")
def explain(trace: Path, variant_file: str | None, scenario: str | None, show_all: bool) -> None:
    """Explain a counterexample as a kernel developer draws a race, ready to paste into a reply.

    Replays TRACE (as `septlab replay` does, with the same checks) while recording what every step read
    and wrote, then prints the violation as CPU columns -- one per task, one row per step that touched
    an object the violation is about (its pages, the SPTEs of its guest frame, its locks), each step by
    the kernel function that ran it -- followed by the kernel-style report (KASAN, lockdep, WARN) and
    the command that replays it.

    \b
    Example:
      septlab run -s seed -v bug-busy-no-retry --dpamt --seed 1
      septlab explain septlab-traces/seed-bug-busy-no-retry-dpamt-seed1.json

    Exit 0 when it explained a violation; 2 if the trace is unusable, does not replay on this model, or
    records no violation (nothing to explain)."""
    data, res, text = explain_trace(trace, variant_file, scenario, show_all)
    _check_replayed(trace, data, res)
    if text is None:
        raise TraceError(f"{printable(trace)}: field 'violations': the trace violates no invariant: nothing to explain "
                         "(`septlab replay` re-runs it)")
    out.print(text)


def _compare_rows(scn: Any, specs: list[tuple[Any, bool]], schedules: int, seed: int, fault_rate: float | None,
                  workers: int, ray: bool, prior: dict[int, Batch], on_row: Callable[[int, Batch], None]
                  ) -> tuple[list[Batch], bool]:
    """One batch per (variant, DPAMT) not in `prior` (rows resumed from an earlier run), all on one pool,
    `on_row(spec index, batch)` as each finishes; the rows in spec order. Ctrl-C keeps the finished rows
    and the partial ones."""
    todo = [i for i in range(len(specs)) if i not in prior]
    index = {(id(specs[i][0]), specs[i][1]): i for i in todo}
    total = len(todo) * schedules
    with _progress(total, "compare") as prog:
        task = prog.add_task("compare", total=total, note="")
        started: dict[int, Batch] = {}

        def tick(b: Batch) -> None:
            started[id(b)] = b
            prog.update(task, completed=sum(x.done for x in started.values()),
                        note=f"{b.variant.name}{' +dpamt' if b.dpamt else ''}")
            if b.done == b.total:
                on_row(index[id(b.variant), b.dpamt], b)

        ran = run_batches(scn, [specs[i] for i in todo], seed, schedules, fault_rate=fault_rate, workers=workers,
                          ray=ray, on_schedule=tick) if todo else []
    by_index = {**prior, **dict(zip(todo, ran, strict=True))}
    rows = [by_index[i] for i in range(len(specs))]
    interrupted = any(b.interrupted for b in ran)
    if interrupted:
        rows = [b for b in rows if b.done]
    return rows, interrupted


def compare_table(scenario: str, schedules: int, seed: int, rows: list[Batch], width: int | None) -> Table:
    """The comparison, readable at 80 columns: the secondary counters only when the terminal is wide."""
    from .metrics.memory import human_size

    wide = width is None or width >= 130
    t = Table(title=f"septlab compare: scenario {scenario}, {schedules} schedules each, seeds {seed}.."
                    f"{seed + schedules - 1}", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    t.add_column("variant", no_wrap=True)
    t.add_column("DPAMT", justify="center", no_wrap=True)
    t.add_column("violations\n(schedules)", min_width=16)
    # the memory answer first (metrics/memory.py): the most reclaimed S-EPT memory not yet freed, how many
    # grace periods a reclaimed page waited, DPAMT backing pages; then the counters
    cols = [("held after\nRECLAIM", "held_peak"), ("…grace\nperiods", "held_gps"),
            ("S-EPT held\npage-steps", "retained_page_steps"), ("DPAMT\npages", "pamt_mem")]
    if wide:
        cols += [("peak\npages", "peak_pages"), ("peak\nPAMT refs", "peak_pamt_refs")]
    if wide and any(b.metrics.get("splits") for b in rows):  # huge pages: what splitting costs
        cols += [("2M\nsplits", "splits"), ("split PAMT\npages", "split_pamt_pages"),
                 ("peak S-EPT\npages", "peak_sept")]
    if wide:
        cols += [("RCU\ncbs", "rcu_callbacks"), ("PAMT\nadd/rm", "pamt"), ("SEAMCALLs", "seamcalls")]
    for head, _ in cols:
        t.add_column(head, justify="right", no_wrap=True)
    for b in rows:
        m = b.metrics
        v = b.verdict
        if v.kind == VIOLATED:
            res = ", ".join(f"{k} {n}" for k, n in b.counts.items())
            style = "red"
        elif v.kind == BOUNDED:
            res = f"bounded ({b.bounded} cut short)" if b.bounded else f"bounded ({b.done}/{b.total} run)"
            style = "yellow"
        else:
            res, style = "none", "green"
        vals = []
        for _, key in cols:
            if key == "pamt":
                vals.append(f"{m.get('pamt_add', 0)}/{m.get('pamt_remove', 0)}")
            elif key == "seamcalls":
                vals.append(str(sum(m.get("seamcalls", {}).values())))
            elif key in ("held_peak", "held_gps", "pamt_mem"):
                ans = row_memory(b)
                vals.append(human_size(ans["peak_retained_pages"]) if key == "held_peak" else
                            f"{ans['held_grace_periods_mean']:g}" if key == "held_gps" else
                            human_size(ans["peak_pamt_pages"]))
            elif key == "peak_sept":
                vals.append(str(m.get("peak_pages_by_owner", {}).get(OWNER_NAMES[EXTERNAL_SPT], 0)))
            else:
                vals.append(str(m.get(key, 0)))
        t.add_row(b.variant.name, _mode(b.dpamt), res, *vals, style=style if v.kind != "complete" else None)
    return t


@cli.command()
@click.option("--scenario", "-s", required=True, help="Built-in name or YAML file.")
@click.option("--variants", required=True, help="Comma-separated variant names or .py files.")
@click.option("--dpamt", type=click.Choice(["off", "on", "both"]), default="both", show_default=True)
@click.option("--schedules", "-n", default=100, show_default=True, type=click.IntRange(1, MAX_SCHEDULES))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="Default: the scenario's.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a top-level scenario key.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Picture of the answer (.png, .svg or .pdf): S-EPT pages held after RECLAIM, and each design's "
              "cost and verdict; beside it NAME-memory.png: host memory over time and the peak extra memory held.")
@click.option("--trace-dir", default="septlab-traces", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where each violating row's first violating schedule is saved as a trace (`septlab replay`, "
              "`septlab explain`, `septlab report` read it).")
@_schedule_workers
@click.option("--fail-on-violation", is_flag=True, help="Exit 1 if any row violates an invariant (4 if none does "
              "but some row is bounded): for CI. Without it compare exits 0 once its table is printed.")
@click.option("--resume", is_flag=True, help="Keep the rows of --json FILE that an earlier run of this same comparison "
              "finished (same scenario and content, --set, -n, --seed, --fault-rate) and run only the others. --json is "
              "rewritten as each row finishes, so a killed compare loses only the rows it was running.")
def compare(scenario: str, variants: str, dpamt: str, schedules: int, seed: int, fault_rate: float | None,
            sets: tuple[str, ...], json_out: Path | None, plot: Path | None, trace_dir: Path | None, workers: int,
            ray_address: str | None, fail_on_violation: bool, resume: bool) -> None:
    """Compare designs: one row per (variant, DPAMT) with its result and memory metrics.

    At real sizes a row is long (a 64 GiB TD: about an hour of CPU per design): give --json, and a run that
    is stopped keeps every finished row; --resume then runs only the missing ones.

    Exit status: 0 once the table is printed (violations are the answer, not an error), unless
    --fail-on-violation; 130 if interrupted (the finished rows are printed and written)."""
    if resume and json_out is None:
        raise BadInput("--resume: give --json FILE, the results file of the run to continue")
    if json_out:
        check_output_path(json_out, "--json")
    fmt = check_plot_path(plot) if plot else ""
    if trace_dir is not None:
        check_output_path(trace_dir, "--trace-dir", directory=True)
    scn, ov = _run_common(scenario, sets)
    names = [n.strip() for n in variants.split(",") if n.strip()]
    if not names:
        raise BadInput("--variants: give at least one variant name")
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise BadInput(f"--variants: {printable(dup[0])} given twice")
    vars_ = resolve_variants(names)
    modes = {"off": [False], "on": [True], "both": [False, True]}[dpamt]
    specs = [(var, dp) for var in vars_ for dp in modes]
    header = comparison(scn, ov, schedules, seed, fault_rate)
    prior: dict[int, Batch] = {}
    if resume and json_out is not None and json_out.exists():
        try:
            prior = finished_rows(json_out, header, scn, specs)
        except ResumeError as e:
            raise BadInput(f"--resume: {e}") from None
        err.print(f"resuming {printable(json_out)}: {len(prior)} of {len(specs)} rows finished earlier, "
                  f"{len(specs) - len(prior)} to run")
    traces: dict[int, Path] = {}  # id(batch) -> its first violating schedule's trace

    def save_trace(b: Batch) -> None:
        if b.loaded is not None and b.loaded.get("trace"):
            traces[id(b)] = Path(b.loaded["trace"])
        if b.first_bad is None or trace_dir is None or id(b) in traces:
            return
        bad = b.first_bad
        rate = fault_rate if fault_rate is not None else scn.alternative(bad.seed).fault_rate
        traces[id(b)] = _trace_path(trace_dir, Path(scn.name).stem, b.variant.name, "dpamt" if b.dpamt else "",
                                    f"seed{bad.seed}")
        write_json_atomic(traces[id(b)], trace_json(trace_header(scn, b.variant, b.dpamt, bad.seed, rate, ov), bad),
                          "trace")

    finished = dict(prior)
    for b in prior.values():
        save_trace(b)

    def row_done(i: int, b: Batch) -> None:  # keep it now: a row at real sizes is an hour of CPU
        finished[i] = b
        save_trace(b)
        if json_out:
            write_results(json_out, header, [finished[k] for k in sorted(finished)], traces, False, len(specs))

    rows, interrupted = _compare_rows(scn, specs, schedules, seed, fault_rate, cpu_workers(workers),
                                      _ray(ray_address), prior, row_done)
    out.print(compare_table(scn.name, schedules, seed, rows, out.width if sys.stdout.isatty() else None))
    out.print(_verdict(rows))
    if interrupted:
        out.print(f"interrupted: {len(rows)} of {len(specs)} rows started; unfinished ones are partial")
    for b in rows:  # each violating row's first violating schedule, to replay or explain
        save_trace(b)
    if traces:
        err.print("traces of the first violating schedules: "
                  + ", ".join(str(traces[id(b)]) for b in rows if id(b) in traces))
    if json_out:
        write_results(json_out, header, rows, traces, interrupted, len(specs))
    if plot:
        from .report.html import answer_png, memory_figure

        data = {"scenario": scn.name, "schedules": schedules, "results": [row_json(b) for b in rows]}
        write_atomic(plot, answer_png(data, fmt), "--plot")
        mem_plot = plot.with_name(plot.stem + "-memory" + plot.suffix)
        write_atomic(mem_plot, memory_figure(data, fmt), "--plot")
        err.print(f"plot: {plot}, host memory over time: {mem_plot}")
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if fail_on_violation:
        kinds = {b.verdict.kind for b in rows}
        sys.exit(1 if VIOLATED in kinds else 4 if BOUNDED in kinds else 0)
    sys.exit(0)


def _verdict(rows: list[Batch]) -> str:
    from .metrics.memory import human_size

    lines = ["", "What the model says:"]
    for b in rows:
        m = b.metrics
        tag = f"  {b.variant.name:<16} DPAMT {_mode(b.dpamt):<3}: "
        v = b.verdict
        if v.kind == VIOLATED:
            lines.append(tag + "violates " + ", ".join(f"{k} ({n}/{b.done} schedules)" for k, n in b.counts.items()))
        elif v.kind == BOUNDED:
            lines.append(tag + f"NOT shown safe: {v.why}")
        else:
            ans = row_memory(b)
            lines.append(tag + f"safe in {b.done} schedules; reclaimed S-EPT pages held "
                         f"{round(m.get('retained_page_steps', 0) / b.done, 3)} page-steps per schedule before "
                         f"being freed (at most {human_size(ans['peak_retained_pages'])} at once, "
                         f"{ans['held_grace_periods_mean']:g} grace periods each on average)")
    return "\n".join(lines)


@cli.command()
@click.option("--scenario", "-s", required=True, help="Built-in name or YAML file; its small `check:` configuration "
              "is used unless --full.")
@click.option("--variant", "-v", required=True, help="Variant name or .py file.")
@click.option("--dpamt", is_flag=True, help="Enable Dynamic PAMT.")
@click.option("--exhaustive", is_flag=True, help="No preemption bound: explore every schedule (a proof when it completes).")
@click.option("--strategy", type=click.Choice(["bfs", "dfs"]), help="bfs: the first counterexample is a shortest one; "
              "dfs: faster, less memory.  [default: bfs; dfs with --workers > 1]")
@click.option("--max-steps", type=click.IntRange(1, 10**9), help="Depth bound in steps (bounded: not a proof).")
@click.option("--preemptions", type=click.IntRange(0, 10**4), help="CHESS preemption bound (default 2 without "
              "--exhaustive).")
@click.option("--liveness", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Also look for fair non-progress cycles -- livelocks, tasks that wait forever, grace periods that "
                   "never end -- under weak fairness, and report one as a lasso (prefix + loop) that replays. Needs "
                   "--por off.")
@click.option("--por", type=click.Choice(["on", "off", "dpor"]), default="off", show_default=True,
              help="Partial-order reduction. on: sleep sets over every step's traced read/write footprint (fewer "
              "transitions and re-executed steps, every state still visited; no checkpoint); dpor: dynamic POR over every step's traced read/write footprint, with state caching "
              "made sound by subtree summaries (DFS, --exhaustive, --liveness off, no checkpoint).")
@click.option("--full", is_flag=True, help="Explore the scenario as written, not its small check configuration.")
@click.option("--full-states", is_flag=True, help="Store canonical states instead of 64-bit fingerprints.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a top-level scenario key.")
@click.option("--time-limit", type=click.FloatRange(0, 10**8, min_open=True),
              help="Stop after this many seconds of this invocation (bounded).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Write a checkpoint here periodically.")
@click.option("--checkpoint-every", default=30.0, show_default=True, type=click.FloatRange(0.01, 10**8),
              help="Seconds between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint.")
@click.option("--overwrite-checkpoint", is_flag=True, help="Start a new search even if --checkpoint exists.")
@click.option("--explain", "explain", is_flag=True, help="Print the counterexample as `septlab explain` does: the race "
              "in CPU columns (only the steps touching the violation's pages, entries and locks), then the report.")
@click.option("--coverage", "show_coverage", is_flag=True, help="Print what the search reached (SEAMCALL x entry state, steps, events).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.option("--trace-dir", default="septlab-traces", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", "-j", default=1, show_default=True, type=click.IntRange(0, 1024),
              help="Processes sharing one depth-first search (0: one per CPU): one state table in shared memory, "
              "work stealing; a complete check counts the same states with any number. Needs DFS, POR off, no "
              "checkpoint, fingerprints.")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run the --workers on a Ray cluster (auto, "
              "ray://HOST:PORT or local; --workers 0: one per CPU of the cluster). Needs pip install 'septlab[ray]'.")
def check(scenario: str, variant: str, dpamt: bool, exhaustive: bool, strategy: str, max_steps: int | None,
          preemptions: int | None, liveness: str, por: str, full: bool, full_states: bool, sets: tuple[str, ...],
          time_limit: float | None, checkpoint: Path | None, checkpoint_every: float, resume: bool,
          overwrite_checkpoint: bool, explain: bool, show_coverage: bool, json_out: Path | None, trace_dir: Path,
          workers: int, ray_address: str | None) -> None:
    """Explore every schedule of a small configuration: thread order, injected SEAMCALL failures and
    grace-period ends; with --liveness on (the default), also every fair cycle on which a task starves.

    Exit 0 (complete) if every reachable state was explored, no invariant is violated and no task can
    starve on a weakly fair schedule -- a proof for that configuration; 1 with a (shortest)
    counterexample, or a lasso (prefix + loop) for a livelock, a stuck wait or a stalled grace period; 4 (bounded) if a preemption, depth or
    time bound cut the search short -- say --exhaustive for a proof; 2 on bad input; 130 on Ctrl-C
    (the checkpoint, if any, is written: --resume continues)."""
    from .check.timeline import render_timeline, task_names
    from .explore.exhaustive import CheckOptions, run_check

    if resume and not checkpoint:
        raise BadInput("--resume needs --checkpoint FILE")
    ray = _ray(ray_address)
    if ray and not workers:
        import ray as ray_mod

        workers = max(1, int(ray_mod.cluster_resources().get("CPU", 1)))
    workers = cpu_workers(workers)
    if strategy is None:
        strategy = "dfs" if workers > 1 or ray or por == "dpor" else "bfs"
    if por != "off" and liveness == "on":
        raise BadInput(f"--por {por}: a reduced search may prune the transition that closes a non-progress cycle; "
                       "add --liveness off to use it")

    for path, what in ((json_out, "--json"), (checkpoint, "--checkpoint")):
        if path:
            check_output_path(path, what)
    check_output_path(trace_dir, "--trace-dir", directory=True)
    if checkpoint and checkpoint.exists() and not resume and not overwrite_checkpoint:
        raise BadInput(f"--checkpoint {checkpoint}: exists; --resume to continue it or --overwrite-checkpoint to "
                       "start over")
    ov = _parse_set(sets)
    scn = load_scenario(scenario, ov, small=not full)
    var = get_variant(variant)
    if preemptions is None and not exhaustive:
        preemptions = 2
    opts = CheckOptions(strategy=strategy, por=por == "on", max_depth=max_steps, preemptions=preemptions,
                        full_states=full_states, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                        resume=resume, time_limit=time_limit, overwrite_checkpoint=overwrite_checkpoint,
                        liveness=liveness == "on", dpor=por == "dpor")
    from .explore.exhaustive import dpor_unsupported, por_unsupported

    for why in (dpor_unsupported(opts) if opts.dpor else por_unsupported(opts))[:1]:
        raise BadInput(f"--por {por}: cannot be combined with {why}")
    if workers > 1 or ray:
        from .explore.parallel import unsupported

        for why in unsupported(opts)[:1]:
            raise BadInput(f"--workers {workers}: cannot be combined with {why}; use --workers 1")
    cfg = "as written" if full else "small configuration"
    err.print(f"septlab check: scenario {scn.name} ({cfg}), variant {var.name}, DPAMT {_mode(dpamt)}; "
              f"{strategy.upper()}{f' on {workers} workers' if workers > 1 or ray else ''}{' (Ray)' if ray else ''}, POR {por}, liveness {liveness}, preemptions {'unbounded' if preemptions is None else preemptions}, "
              f"depth {'unbounded' if max_steps is None else max_steps}, "
              f"{'full states' if full_states else '64-bit fingerprints'}")
    prog = Progress(TextColumn(f"exploring{f' on {workers} workers' if workers > 1 else ''}"),
                    TextColumn("{task.fields[states]:>9,} states"),
                    TextColumn("{task.fields[rate]:>7,.0f} states/s"), TextColumn("frontier {task.fields[frontier]:,}"),
                    TextColumn("depth {task.fields[depth]}"), TimeElapsedColumn(), console=err, transient=True,
                    disable=not err.is_terminal)
    with prog:
        tid = prog.add_task("x", total=None, states=0, rate=0.0, frontier=0, depth=0)
        opts.progress = lambda st: prog.update(tid, states=st.states, rate=st.states_per_s, frontier=st.frontier,
                                               depth=st.max_depth)
        if ray:
            from .explore.ray_check import run_ray_check

            res = run_ray_check(scn, var, dpamt, opts, workers)
        elif workers > 1:
            from .explore.parallel import run_parallel_check

            res = run_parallel_check(scn, var, dpamt, opts, workers)
        else:
            res = run_check(scn, var, dpamt, opts)
    st = res.stats
    interrupted = bool(getattr(res, "interrupted", False))
    t = Table(title=f"septlab check: {scn.name} / {var.name} / DPAMT {_mode(dpamt)}", show_header=False)
    t.add_column("k")
    t.add_column("v", justify="right")
    rows = [("distinct states", f"{st.states:,}"), ("transitions", f"{st.transitions:,}"),
            ("revisits (state caching)", f"{st.revisits:,}"),
            ("pruned by reduction", f"{st.sleep_pruned:,} transitions (POR {por})" + (
                f", {st.preemption_pruned:,} (preemption bound)" if st.preemption_pruned else "")),
            ("max depth", f"{st.max_depth:,} transitions"), ("terminal states", f"{st.terminal:,}"),
            ("states/s", f"{st.states_per_s:,.0f}"), ("bytes/state", f"{res.bytes_per_state:.1f}"),
            ("model steps executed", f"{st.steps_executed:,} (re-execution)"), ("elapsed", f"{st.elapsed:.1f} s")]
    if st.resumed_from:
        rows.append(("resumed from checkpoint at", f"{st.resumed_from:,} states"))
    if getattr(res, "por", None):
        p = res.por
        rows.append(("DPOR", f"{p['races']:,} races, {p['summary_races']:,} with cached subtrees, "
                             f"{p['cycles']:,} cycles expanded"))
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    if res.violation is not None:
        verdict = Verdict(VIOLATED, res.violation.invariant, interrupted)
    elif res.complete:
        verdict = Verdict("complete")
    else:
        verdict = Verdict(BOUNDED, ", ".join(res.bounded_by) or "interrupted", interrupted)
    trace_file = None
    trace_data: dict[str, Any] = {}
    if res.violation is not None:
        v = res.violation
        head = (f"scenario {scn.name}  variant {var.name}  DPAMT {_mode(dpamt)}  explorer "
                f"check/{strategy}  states {st.states:,}")
        trace_file = _trace_path(trace_dir, "check", scn.name, var.name, "dpamt" if dpamt else "")
        cmd = f"septlab replay {trace_file}" + (f" --variant {var.source}" if var.source else "")
        if explain:  # one re-run, with histories and footprints: the trace and the diagram come from it
            full_run, text = explain_schedule(scn, var, dpamt, 0, res.choices, cmd, head)
        else:
            full_run, text = run_schedule(scn, var, dpamt, 0, choices=res.choices, history=True), None
        header = trace_header(scn, var, dpamt, 0, scn.fault_rate, ov)
        header["scenario_small"] = not full
        lasso = v.details.get("lasso") if isinstance(v.details, dict) else None
        if lasso:
            header["lasso"] = {k: lasso[k] for k in ("prefix", "loop", "task")}
        trace_data = trace_json(header, full_run)
        kind = "shortest (BFS)" if strategy == "bfs" else "first found (DFS)"
        w = full_run.world
        vv = full_run.violations[0] if full_run.violations else v
        if lasso:
            n = lasso["loop"]
            out.print(f"\nliveness counterexample (lasso): {lasso['prefix']} transitions to the loop, then "
                      f"{n} transition{'s' if n != 1 else ''} forever (in a {lasso['component_states']:,}-state "
                      "strongly connected part of the state graph); the trace runs the loop until the lockup "
                      "detector fires:")
            out.print("\n".join(v.details["lines"]))
            out.print(f"replayed {full_run.steps:,} steps: the detector reports {vv.invariant}:")
        else:
            out.print(f"\ncounterexample: {len(res.path)} transitions, {full_run.steps} steps, {kind}")
            if text is None:
                out.print(render_timeline(full_run.log or [], task_names(w), vv.step))  # type: ignore[arg-type]
        out.print(text or render(vv, w.host, None, cmd, head))  # type: ignore[union-attr]
        out.print(f"result: violated: invariant '{v.invariant}'; replay: {cmd}")
    elif res.complete:
        out.print(f"result: complete: every invariant holds in all {st.states:,} reachable states")
    else:
        out.print(f"result: {verdict}: not a proof; no violation in {st.states:,} states")
    if show_coverage:
        _print_coverage(res.coverage)
    if json_out:
        write_json_atomic(json_out, {
            "scenario": scn.name, "small_configuration": not full, "variant": var.name, "dpamt": dpamt,
            "strategy": strategy, "por": por != "off", "por_mode": por,
            "dpor": getattr(res, "por", None) or None, "preemptions": preemptions, "max_steps": max_steps,
            **verdict.as_json(), "complete": res.complete, "bounded_by": res.bounded_by,
            "stats": {"states": st.states, "transitions": st.transitions, "revisits": st.revisits,
                      "pruned_by_por": st.sleep_pruned, "pruned_by_preemption_bound": st.preemption_pruned,
                      "max_depth": st.max_depth, "terminal": st.terminal, "states_per_s": round(st.states_per_s, 1),
                      "bytes_per_state": round(res.bytes_per_state, 1), "elapsed_s": round(st.elapsed, 3),
                      "steps_executed": st.steps_executed},
            "violation": res.violation.as_json() if res.violation else None,
            "counterexample_transitions": len(res.path) if res.violation else None,
            "trace": str(trace_file) if trace_file else None, "coverage": res.coverage}, "--json")
    if trace_file is not None:
        write_json_atomic(trace_file, trace_data, "trace")
    sys.exit(verdict.exit_code)


def _print_coverage(cov: dict[str, Any]) -> None:
    t = Table(title="coverage: SEAMCALL x S-EPT entry state x outcome")
    for c in ("leaf", "entry state", "outcome", "count"):
        t.add_column(c, justify="right" if c == "count" else "left")
    for r in cov["seamcall_entry_state"]:
        t.add_row(r["leaf"], r["entry_state"], r["outcome"], f"{r['count']:,}")
    out.print(t)
    from .tdx_module import errno as E

    seen = {r["leaf"] for r in cov["seamcall_entry_state"]}
    never = [n for n in E.LEAF_NAMES.values() if n not in seen and n not in ("TDH.MEM.PAGE.DEMOTE", "TDH.MR.EXTEND",
                                                                             "TDH.MNG.INIT")]
    out.print("SEAMCALLs never reached: " + (", ".join(never) or "none"))
    out.print("events reached: " + ", ".join(f"{k} ({v:,})" for k, v in cov["events"].items()))


@cli.command()
def variants() -> None:
    """List designs and bug-* mutants with one-line descriptions."""
    t = Table(title="variants (add your own: --variant path/to/file.py, or the septlab.variants entry point)")
    t.add_column("name", no_wrap=True)
    t.add_column("kind")
    t.add_column("description")
    for v in registry().values():
        t.add_row(v.name, v.kind, v.description)
    out.print(t)
    for w in REGISTRY_WARNINGS:
        err.print(f"septlab: warning: {w}")


@cli.command()
@click.option("--grep", "pattern", help="Only names or files containing this text.")
@click.option("--markdown", is_flag=True, help="Print the model-to-kernel map as the Markdown table docs/fidelity.md "
              "carries.")
def hooks(pattern: str | None, markdown: bool) -> None:
    """List what a variant may replace, by kernel name: the kvm_x86_ops hooks and every kernel function.

    A variant's overrides map these names to functions of the same shape (a generator function where
    the model's is one, taking the same parameters); see README "Adding a variant"."""
    from .kernel import kernel_functions, markdown_table
    from .kvm.x86_ops import HOOKS, default_ops

    if markdown:
        sys.stdout.write(markdown_table())
        return
    t = Table(title="replaceable by name (--variant FILE.py: VARIANT = Variant(name, description, {name: function}))")
    t.add_column("name", no_wrap=True)
    t.add_column("kind")
    t.add_column("kernel file")
    t.add_column("what it models")
    table = kernel_functions()
    ops = vars(default_ops())
    rows = [(h, "hook (kvm.ops)", table[getattr(ops[h], "__name__", "")].kernel_file
             if getattr(ops[h], "__name__", "") in table else "arch/x86/kvm/mmu/tdp_mmu.c",
             (table[ops[h].__name__].summary if getattr(ops[h], "__name__", "") in table else f"value {ops[h]!r}"))
            for h in HOOKS]
    rows += [(k.name, "generator" if k.is_generator else "function", k.kernel_file, k.summary)
             for k in table.values() if k.name not in HOOKS]
    for r in rows:
        if not pattern or pattern in r[0] or pattern in r[2]:
            t.add_row(*r)
    out.print(t)


@cli.command()
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every row, the sources and the summary as JSON.")
@click.option("--mismatches-only", is_flag=True, help="Print only the rows where septlab and the module differ.")
def conformance(json_out: Path | None, mismatches_only: bool) -> None:
    """Check septlab's TDX-module model against the module's own tables: for every SEAMCALL leaf septlab
    models, every S-EPT entry state and level the module's seamcall_sept_state_lookup defines, every TD
    op-state and lifecycle state, the model (septlab/tdx_module, no kernel layer) is driven into that
    state and its answer is set beside the module's, transcribed from intel/tdx-module TDX_1.5.01 into
    septlab/conformance/data/: accept, or the status and operand id the handler returns. Leaf numbers
    and statuses are checked against the kernel's headers. Mismatches come first; each one is either
    listed in data/simplifications.yaml with why and its effect on results (exit 0) or unlisted (exit 1)."""
    from .conformance import run_conformance

    if json_out:
        check_output_path(json_out, "--json")
    report = run_conformance()
    for line in report.table_lines(mismatches_only):
        out.print(line)
    for s, n in report.listed_counts():
        out.print(f"  {s.id} ({s.kind}, {n} row{'s' * (n != 1)}): {s.title}")
    for sid in report.stale:
        err.print(f"septlab: warning: simplification {sid!r} fits no mismatch any more: remove it from the list")
    out.print(report.summary())
    if json_out:
        write_json_atomic(json_out, report.as_json(), "--json")
    sys.exit(report.exit_code)


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for index.html and the PNGs it embeds (created if missing).")
@click.option("--no-explain", is_flag=True, help="Leave out the counterexamples (no trace is re-run).")
def report(results: Path, out_dir: Path, no_explain: bool) -> None:
    """Write an HTML report of a comparison: one self-contained page to attach to a review.

    RESULTS is the JSON of `septlab compare --json`. The page (DIR/index.html) holds the verdict of each
    design, the comparison table with the memory answer (peak MiB of S-EPT pages held after RECLAIM,
    grace periods held, DPAMT pages), the plots embedded (also written as DIR/answer.png and
    DIR/memory.png), and each violating design's first counterexample explained as `septlab explain`
    prints it (race diagram, kernel-style report, page histories). Styles are inline and nothing is
    fetched: the page can be mailed or archived as it is.

    \b
    Example:
      septlab compare -s seed --variants rcu-free,tdx-free --json results.json
      septlab report results.json --out report/

    Exit 0 when written; 2 if RESULTS is not a compare result or DIR cannot be written."""
    from .report.html import build_report

    page = build_report(results, out_dir, explain=not no_explain)
    out.print(f"report: {page} (plots: {out_dir / 'answer.png'}, {out_dir / 'memory.png'})")


@cli.command()
def scenarios() -> None:
    """List built-in scenarios (or pass your own YAML file to --scenario)."""
    t = Table(title="built-in scenarios")
    t.add_column("name", no_wrap=True)
    t.add_column("description")
    for n, d in builtin_descriptions():
        t.add_row(n, d)
    out.print(t)


@cli.command()
def invariants() -> None:
    """List the invariants by their stable names."""
    t = Table(title="invariants", caption="labels like (f.5) are sections of docs/facts.md, the kernel and TDX-module "
              "facts septlab models")
    t.add_column("name", no_wrap=True)
    t.add_column("rule")
    t.add_column("kernel")
    for i in INVARIANTS.values():
        t.add_row(i.name, i.rule, i.kernel)
    out.print(t)


USER_ERRORS = (ScenarioError, VariantError, TraceError, BadInput, CheckpointError, OutputError, ReportInputError)


def _fail(code: int, msg: str) -> None:
    err.print(f"septlab: {'error' if code == EXIT_BAD_INPUT else 'internal error'}: {msg}")
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """The error boundary: every failure is one line and a status that says whose it is (see verdict.py)."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("septlab: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        err.print("septlab: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        _fail(EXIT_BAD_INPUT, e.format_message())
    except USER_ERRORS as e:
        _fail(EXIT_BAD_INPUT, str(e))
    except ReplayDivergence as e:
        _fail(EXIT_BAD_INPUT, f"the recorded schedule does not replay: {e}")
    except MemoryError:
        _fail(EXIT_BAD_INPUT, "out of memory: the scenario is too large for this machine (lower memory, "
                              "--schedules, or the check bounds)")
    except OSError as e:
        _fail(EXIT_BAD_INPUT, f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 -- the boundary: a septlab bug is still one line, exit 3
        if os.environ.get("SEPTLAB_DEBUG"):
            traceback.print_exc()
            if getattr(e, "detail", ""):  # a ModelCrash: the model's traceback, from inside the schedule
                print(f"the model's traceback (the end of it):\n{e.detail}", file=sys.stderr)
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        loc = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
        _fail(EXIT_INTERNAL, f"{type(e).__name__}: {e}{loc}; SEPTLAB_DEBUG=1 shows the traceback")
