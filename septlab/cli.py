"""septlab's command line: run, replay, compare, variants, scenarios, invariants.

Data goes to stdout, progress and diagnostics to stderr. Exit status: 0 nothing violated, 1 an
invariant was violated, 2 bad input (one line naming the file, line and field), 3 internal error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .check.invariants import INVARIANTS
from .check.report import render
from .explore.driver import (
    RunResult,
    TraceError,
    replay_trace,
    run_schedule,
    trace_header,
    trace_json,
    write_json_atomic,
)
from .explore.exhaustive import CheckpointError
from .metrics.metrics import merge
from .scenarios import ScenarioError, builtin_descriptions, load_scenario
from .variants import VariantError, get_variant, registry

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 170)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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


def _trace_path(trace_dir: Path, scn: Any, variant: Any, dpamt: bool, seed: int) -> Path:
    name = f"{Path(scn.name).stem}-{variant.name}{'-dpamt' if dpamt else ''}-seed{seed}.json"
    return trace_dir / name.replace("/", "_")


HELP = """septlab: an executable model of KVM's TDX secure-EPT page-table lifecycle.

\b
Run a design against a scenario under seeded random schedules and injected SEAMCALL failures,
compare designs on invariants and memory held, and replay any violation step for step.

\b
  septlab compare --scenario seed --variants rcu-free,tdx-free,tdx-alloc-hook --dpamt both
  septlab run --scenario seed --variant rcu-free --dpamt --schedules 50
  septlab replay septlab-traces/seed-rcu-free-dpamt-seed0.json
  septlab check --scenario seed --variant tdx-free --exhaustive
  septlab variants; septlab scenarios; septlab invariants
"""


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="septlab")
def cli() -> None:
    pass


def _run_common(scenario: str, sets: tuple[str, ...]) -> tuple[Any, dict[str, str]]:
    ov = _parse_set(sets)
    return load_scenario(scenario, ov), ov


@cli.command()
@click.option("--scenario", "-s", required=True, help="Built-in name (see `septlab scenarios`) or a YAML file.")
@click.option("--variant", "-v", required=True, help="Variant name (see `septlab variants`) or a .py file.")
@click.option("--dpamt", is_flag=True, help="Enable Dynamic PAMT (E4, DPAMT v6).")
@click.option("--seed", default=0, show_default=True, help="First seed; schedule i uses seed+i.")
@click.option("--schedules", "-n", default=1, show_default=True, type=click.IntRange(1), help="Schedules to run.")
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="Probability that an injectable SEAMCALL fails "
              "(default: the scenario's).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a top-level scenario key, "
              "e.g. --set memory=4GiB.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.option("--trace-dir", default="septlab-traces", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the trace of the first violating schedule is written.")
@click.option("--minimize", is_flag=True, help="Shrink the first violating schedule (ddmin over its preemptions and "
              "injected failures) before reporting it.")
def run(scenario: str, variant: str, dpamt: bool, seed: int, schedules: int, fault_rate: float | None,
        sets: tuple[str, ...], json_out: Path | None, trace_dir: Path, minimize: bool) -> None:
    """Run N seeded schedules; report the first violation KASAN/lockdep/WARN-style, with its replay command."""
    scn, ov = _run_common(scenario, sets)
    var = get_variant(variant)
    rate = scn.fault_rate if fault_rate is None else fault_rate
    err.print(f"septlab run: scenario {scn.name}, variant {var.name}, DPAMT {'on' if dpamt else 'off'}, "
              f"seeds {seed}..{seed + schedules - 1}, fault rate {rate}")
    results: list[RunResult] = []
    first_bad: RunResult | None = None
    with _progress(schedules, "schedules") as prog:
        task = prog.add_task("run", total=schedules, note="")
        for i in range(schedules):
            r = run_schedule(scn, var, dpamt, seed + i, fault_rate=rate, history=False if schedules > 1 or not scn.history else None)
            if r.status == "crash":
                raise RuntimeError(f"model crashed in schedule seed={seed + i}:\n{r.crash}")
            r.world = r.checker = None
            results.append(r)
            if r.violations and first_bad is None:
                first_bad = r
            prog.update(task, advance=1, note=f"{sum(bool(x.violations) for x in results)} violating")
    counts: dict[str, int] = {}
    for r in results:
        for name in sorted({v.invariant for v in r.violations}):
            counts[name] = counts.get(name, 0) + 1
    metrics = merge([r.metrics for r in results])
    trace_file = None
    if first_bad is not None:
        header = trace_header(scn, var, dpamt, first_bad.seed, rate, ov)
        trace_file = _trace_path(trace_dir, scn, var, dpamt, first_bad.seed)
        if minimize:
            from .explore.minimize import minimize as ddmin

            inv = first_bad.violations[0].invariant
            mz = ddmin(scn, var, dpamt, first_bad.choices, inv)
            err.print(f"minimized: {first_bad.steps} -> {mz.steps} steps, {mz.deviations} preemption(s)/injected "
                      f"failure(s) left, {mz.tries} runs", markup=False)
            first_bad = run_schedule(scn, var, dpamt, first_bad.seed, choices=mz.choices, history=False)
            trace_file = trace_file.with_name(trace_file.stem + "-min.json")
        # Replay the failing schedule with page histories on, for the report (and to prove it replays).
        full = run_schedule(scn, var, dpamt, first_bad.seed, choices=first_bad.choices, history=True)
        write_json_atomic(trace_file, trace_json(header, first_bad))
        cmd = f"septlab replay {trace_file}"
        v = full.violations[0] if full.violations else first_bad.violations[0]
        out.print(render(v, full.world.host, full.log, cmd,  # type: ignore[union-attr]
                         f"scenario {scn.name}  variant {var.name}  DPAMT {'on' if dpamt else 'off'}  seed {first_bad.seed}  "
                         f"explorer random  steps {first_bad.steps}"), markup=False)
    t = Table(title=f"{scn.name} / {var.name} / DPAMT {'on' if dpamt else 'off'}: {schedules} schedule(s)")
    t.add_column("invariant")
    t.add_column("schedules violating", justify="right")
    for name in INVARIANTS:
        if counts.get(name):
            t.add_row(name, str(counts[name]))
    if counts:
        out.print(t)
    else:
        out.print(f"no invariant violated in {schedules} schedule(s), {metrics.get('steps', 0)} steps "
                  f"(peak {metrics.get('peak_pages', 0)} pages, {metrics.get('leaked_pages', 0)} deliberately leaked)")
    if trace_file is not None:
        out.print(f"trace: {trace_file}\nreplay: septlab replay {trace_file}", markup=False)
    if json_out:
        write_json_atomic(json_out, {"scenario": scn.name, "variant": var.name, "dpamt": dpamt, "seed": seed,
                                     "schedules": schedules, "violations": counts, "metrics": metrics,
                                     "trace": str(trace_file) if trace_file else None})
    sys.exit(1 if counts else 0)


@cli.command()
@click.argument("trace", type=click.Path(path_type=Path))
def replay(trace: Path) -> None:
    """Re-run one recorded schedule step for step; print its report; exit 1 if it violates anything."""
    data, res = replay_trace(trace)
    cmd = f"septlab replay {trace}"
    for v in res.violations[:1]:
        out.print(render(v, res.world.host, res.log, cmd,  # type: ignore[union-attr]
                         f"scenario {data['scenario']}  variant {data['variant']}  DPAMT {'on' if data['dpamt'] else 'off'}"
                         f"  seed {data['seed']}  explorer replay  steps {res.steps}"), markup=False)
    got = [v.invariant for v in res.violations]
    want = [v["invariant"] for v in data.get("violations", [])]
    same = got == want and res.steps == data.get("steps", res.steps) and res.metrics == data.get("metrics", res.metrics)
    out.print(f"replayed {res.steps} steps of {trace}: " + (
        "same violations, same metrics" if same else f"DIVERGED: recorded {want} in {data.get('steps')} steps, got {got}"))
    if not same:
        sys.exit(3)
    sys.exit(1 if res.violations else 0)


def _compare_rows(scn: Any, names: list[str], modes: list[bool], schedules: int, seed: int,
                  fault_rate: float | None) -> list[dict[str, Any]]:
    rows = []
    total = len(names) * len(modes) * schedules
    with _progress(total, "compare") as prog:
        task = prog.add_task("compare", total=total, note="")
        for name in names:
            var = get_variant(name)
            for dp in modes:
                counts = {k: 0 for k in INVARIANTS}
                ms = []
                series = None
                for i in range(schedules):
                    r = run_schedule(scn, var, dp, seed + i, fault_rate=fault_rate, history=False)
                    if r.status == "crash":
                        raise RuntimeError(f"model crashed: {var.name} dpamt={dp} seed={seed + i}:\n{r.crash}")
                    for inv in {v.invariant for v in r.violations}:
                        counts[inv] += 1
                    ms.append(r.metrics)
                    if series is None:
                        series = r.series
                    prog.update(task, advance=1, note=f"{var.name}{' +dpamt' if dp else ''}")
                m = merge(ms)
                m["retained_page_steps_mean"] = round(m["retained_page_steps"] / schedules, 3)
                rows.append({"variant": var.name, "dpamt": dp, "schedules": schedules,
                             "violations": counts, "metrics": m, "_series": series or []})
    return rows


@cli.command()
@click.option("--scenario", "-s", required=True, help="Built-in name or YAML file.")
@click.option("--variants", required=True, help="Comma-separated variant names or .py files.")
@click.option("--dpamt", type=click.Choice(["off", "on", "both"]), default="both", show_default=True)
@click.option("--schedules", "-n", default=100, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="Default: the scenario's.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a top-level scenario key.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="PNG: host pages held over steps.")
def compare(scenario: str, variants: str, dpamt: str, schedules: int, seed: int, fault_rate: float | None,
            sets: tuple[str, ...], json_out: Path | None, plot: Path | None) -> None:
    """Compare designs: one row per (variant, DPAMT) with violations and memory metrics."""
    scn, _ = _run_common(scenario, sets)
    names = [n.strip() for n in variants.split(",") if n.strip()]
    if not names:
        raise BadInput("--variants: give at least one variant name")
    for n in names:
        get_variant(n)
    modes = {"off": [False], "on": [True], "both": [False, True]}[dpamt]
    rows = _compare_rows(scn, names, modes, schedules, seed, fault_rate)
    t = Table(title=f"septlab compare: scenario {scn.name}, {schedules} schedules each, seeds {seed}..{seed + schedules - 1}")
    for col, just in (("variant", "left"), ("DPAMT", "center"), ("violations (schedules)", "left"),
                      ("peak pages", "right"), ("S-EPT page-steps retained", "right"), ("…in grace periods", "right"),
                      ("RCU cbs", "right"), ("PAMT add/rm", "right"), ("peak PAMT refs", "right"),
                      ("SEAMCALLs", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        m = r["metrics"]
        viol = ", ".join(f"{k} {v}" for k, v in r["violations"].items() if v) or "[green]none[/green]"
        t.add_row(r["variant"], "on" if r["dpamt"] else "off", viol if "none" in viol else f"[red]{viol}[/red]",
                  str(m["peak_pages"]), str(m["retained_page_steps"]), str(m["retained_page_gps"]),
                  str(m["rcu_callbacks"]), f"{m['pamt_add']}/{m['pamt_remove']}", str(m["peak_pamt_refs"]),
                  str(sum(m["seamcalls"].values())))
    out.print(t)
    out.print(_verdict(rows))
    if json_out:
        write_json_atomic(json_out, {"scenario": scn.name, "results": [{k: v for k, v in r.items() if k != "_series"} for r in rows]})
    if plot:
        from .metrics.plot import plot_series

        plot_series(plot, scn.name, [(f"{r['variant']}{' +DPAMT' if r['dpamt'] else ''}", r["_series"]) for r in rows])
        err.print(f"plot: {plot}")


def _verdict(rows: list[dict[str, Any]]) -> str:
    lines = ["", "What the model says:"]
    for r in rows:
        bad = {k: v for k, v in r["violations"].items() if v}
        m = r["metrics"]
        tag = f"  {r['variant']:<16} DPAMT {'on ' if r['dpamt'] else 'off'}: "
        if bad:
            lines.append(tag + "violates " + ", ".join(f"{k} ({v}/{r['schedules']} schedules)" for k, v in bad.items()))
        else:
            lines.append(tag + f"safe in {r['schedules']} schedules; reclaimed S-EPT pages held "
                         f"{m['retained_page_steps_mean']} page-steps per schedule before being freed")
    return "\n".join(lines)


@cli.command()
@click.option("--scenario", "-s", required=True, help="Built-in name or YAML file; its small `check:` configuration "
              "is used unless --full.")
@click.option("--variant", "-v", required=True, help="Variant name or .py file.")
@click.option("--dpamt", is_flag=True, help="Enable Dynamic PAMT.")
@click.option("--exhaustive", is_flag=True, help="No preemption bound: explore every schedule (a proof when it completes).")
@click.option("--strategy", type=click.Choice(["bfs", "dfs"]), default="bfs", show_default=True,
              help="bfs: the first counterexample is a shortest one; dfs: faster, less memory.")
@click.option("--max-steps", type=click.IntRange(1), help="Depth bound in steps (bounded: not a proof).")
@click.option("--preemptions", type=click.IntRange(0), help="CHESS preemption bound (default 2 without --exhaustive).")
@click.option("--por", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Partial-order reduction (sleep sets over certified-independent steps).")
@click.option("--full", is_flag=True, help="Explore the scenario as written, not its small check configuration.")
@click.option("--full-states", is_flag=True, help="Store canonical states instead of 64-bit fingerprints.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a top-level scenario key.")
@click.option("--time-limit", type=click.FloatRange(0, min_open=True), help="Stop after this many seconds (bounded).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Write a checkpoint here periodically.")
@click.option("--checkpoint-every", default=30.0, show_default=True, type=click.FloatRange(0.01), help="Seconds between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint.")
@click.option("--coverage", "show_coverage", is_flag=True, help="Print what the search reached (SEAMCALL x entry state, steps, events).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.option("--trace-dir", default="septlab-traces", show_default=True, type=click.Path(file_okay=False, path_type=Path))
def check(scenario: str, variant: str, dpamt: bool, exhaustive: bool, strategy: str, max_steps: int | None,
          preemptions: int | None, por: str, full: bool, full_states: bool, sets: tuple[str, ...],
          time_limit: float | None, checkpoint: Path | None, checkpoint_every: float, resume: bool,
          show_coverage: bool, json_out: Path | None, trace_dir: Path) -> None:
    """Explore every schedule of a small configuration: thread order, injected SEAMCALL failures and
    grace-period ends. Exit 0 if nothing is violated in the explored space, 1 with a (shortest)
    counterexample, 2 on bad input. Say --exhaustive for a proof; otherwise preemptions are bounded."""
    from .check.timeline import render_timeline, task_names
    from .explore.exhaustive import CheckOptions, run_check

    ov = _parse_set(sets)
    scn = load_scenario(scenario, ov, small=not full)
    var = get_variant(variant)
    if resume and not checkpoint:
        raise BadInput("--resume needs --checkpoint FILE")
    if preemptions is None and not exhaustive:
        preemptions = 2
    opts = CheckOptions(strategy=strategy, por=por == "on", max_depth=max_steps, preemptions=preemptions,
                        full_states=full_states, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                        resume=resume, time_limit=time_limit)
    cfg = "as written" if full else ("small configuration" if "check" in scn.data or not full else "")
    err.print(f"septlab check: scenario {scn.name} ({cfg}), variant {var.name}, DPAMT {'on' if dpamt else 'off'}; "
              f"{strategy.upper()}, POR {por}, preemptions {'unbounded' if preemptions is None else preemptions}, "
              f"depth {'unbounded' if max_steps is None else max_steps}, "
              f"{'full states' if full_states else '64-bit fingerprints'}")
    prog = Progress(TextColumn("[bold]exploring"), TextColumn("{task.fields[states]:>9,} states"),
                    TextColumn("{task.fields[rate]:>7,.0f} states/s"), TextColumn("frontier {task.fields[frontier]:,}"),
                    TextColumn("depth {task.fields[depth]}"), TimeElapsedColumn(), console=err, transient=True,
                    disable=not err.is_terminal)
    with prog:
        tid = prog.add_task("x", total=None, states=0, rate=0.0, frontier=0, depth=0)
        opts.progress = lambda st: prog.update(tid, states=st.states, rate=st.states_per_s, frontier=st.frontier,
                                               depth=st.max_depth)
        res = run_check(scn, var, dpamt, opts)
    st = res.stats
    t = Table(title=f"septlab check: {scn.name} / {var.name} / DPAMT {'on' if dpamt else 'off'}", show_header=False)
    t.add_column("k")
    t.add_column("v", justify="right")
    rows = [("distinct states", f"{st.states:,}"), ("transitions", f"{st.transitions:,}"),
            ("revisits (state caching)", f"{st.revisits:,}"),
            ("pruned by reduction", f"{st.sleep_pruned:,} transitions (POR)" + (
                f", {st.preemption_pruned:,} (preemption bound)" if st.preemption_pruned else "")),
            ("max depth", f"{st.max_depth:,} transitions"), ("terminal states", f"{st.terminal:,}"),
            ("states/s", f"{st.states_per_s:,.0f}"), ("bytes/state", f"{res.bytes_per_state:.1f}"),
            ("model steps executed", f"{st.steps_executed:,} (re-execution)"), ("elapsed", f"{st.elapsed:.1f} s")]
    if st.resumed_from:
        rows.append(("resumed from checkpoint at", f"{st.resumed_from:,} states"))
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    trace_file = None
    if res.violation is not None:
        v = res.violation
        full_run = run_schedule(scn, var, dpamt, 0, choices=res.choices, history=True)
        header = trace_header(scn, var, dpamt, 0, scn.fault_rate, ov)
        header["scenario_small"] = not full
        trace_file = trace_dir / f"check-{scn.name}-{var.name}{'-dpamt' if dpamt else ''}.json"
        write_json_atomic(trace_file, trace_json(header, full_run))
        cmd = f"septlab replay {trace_file}"
        kind = "shortest (BFS)" if strategy == "bfs" else "first found (DFS)"
        out.print(f"\ncounterexample: {len(res.path)} transitions, {full_run.steps} steps, {kind}", markup=False)
        w = full_run.world
        vv = full_run.violations[0] if full_run.violations else v
        out.print(render_timeline(full_run.log or [], task_names(w), vv.step), markup=False)  # type: ignore[arg-type]
        out.print(render(vv, w.host, None, cmd,  # type: ignore[union-attr]
                         f"scenario {scn.name}  variant {var.name}  DPAMT {'on' if dpamt else 'off'}  explorer "
                         f"check/{strategy}  states {st.states:,}"), markup=False)
        out.print(f"result: invariant '{v.invariant}' violated; replay: {cmd}", markup=False)
    elif res.complete:
        out.print(f"result: complete: every invariant holds in all {st.states:,} reachable states")
    else:
        out.print(f"result: bounded ({', '.join(res.bounded_by)}): not a proof; no violation in {st.states:,} states")
    if show_coverage:
        _print_coverage(res.coverage)
    if json_out:
        write_json_atomic(json_out, {
            "scenario": scn.name, "small_configuration": not full, "variant": var.name, "dpamt": dpamt,
            "strategy": strategy, "por": por == "on", "preemptions": preemptions, "max_steps": max_steps,
            "complete": res.complete, "bounded_by": res.bounded_by,
            "stats": {"states": st.states, "transitions": st.transitions, "revisits": st.revisits,
                      "pruned_by_por": st.sleep_pruned, "pruned_by_preemption_bound": st.preemption_pruned,
                      "max_depth": st.max_depth, "terminal": st.terminal, "states_per_s": round(st.states_per_s, 1),
                      "bytes_per_state": round(res.bytes_per_state, 1), "elapsed_s": round(st.elapsed, 3),
                      "steps_executed": st.steps_executed},
            "violation": res.violation.as_json() if res.violation else None,
            "counterexample_transitions": len(res.path) if res.violation else None,
            "trace": str(trace_file) if trace_file else None, "coverage": res.coverage})
    sys.exit(1 if res.violation is not None else 0)


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
    out.print("SEAMCALLs never reached: " + (", ".join(never) or "none"), markup=False)
    out.print("events reached: " + ", ".join(f"{k} ({v:,})" for k, v in cov["events"].items()), markup=False)


@cli.command()
def variants() -> None:
    """List designs and bug-* mutants with one-line descriptions."""
    t = Table(title="variants (add your own: --variant path/to/file.py, or the septlab.variants entry point)")
    t.add_column("name")
    t.add_column("kind")
    t.add_column("description")
    for v in registry().values():
        t.add_row(v.name, v.kind, v.description)
    out.print(t)


@cli.command()
def scenarios() -> None:
    """List built-in scenarios (or pass your own YAML file to --scenario)."""
    t = Table(title="built-in scenarios")
    t.add_column("name")
    t.add_column("description")
    for n, d in builtin_descriptions():
        t.add_row(n, d)
    out.print(t)


@cli.command()
def invariants() -> None:
    """List the invariants by their stable names."""
    t = Table(title="invariants")
    t.add_column("name")
    t.add_column("rule")
    t.add_column("kernel")
    for i in INVARIANTS.values():
        t.add_row(i.name, i.rule, i.kernel)
    out.print(t)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("septlab: aborted")
        sys.exit(130)
    except click.ClickException as e:
        err.print(f"septlab: error: {e.format_message()}", markup=False)
        sys.exit(2)
    except (ScenarioError, VariantError, TraceError, BadInput, CheckpointError) as e:
        err.print(f"septlab: error: {e}", markup=False)
        sys.exit(2)
    except SystemExit:
        raise
    except RuntimeError as e:
        err.print(f"septlab: internal error: {e}", markup=False)
        sys.exit(3)

