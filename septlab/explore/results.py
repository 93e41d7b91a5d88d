"""`compare`'s results file: written as each row finishes, and read back by `compare --resume`.

One compare row at real sizes is an hour of CPU (a 64 GiB TD torn down). So the result is not kept in
memory until the end: the JSON is rewritten, atomically, every time a row finishes, and a run that is
killed -- Ctrl-C, an OOM kill, a machine shut down -- loses only the rows it was running. `--resume`
reads that file back and runs only the rows it lacks. A row is taken back only when it belongs to the
same comparison: the scenario (its name and the digest of its resolved content, so an edited YAML
file is a different comparison), the --set overrides, the number of schedules, the first seed and the
fault rate; and only when it finished every schedule (a row cut short would bias its counts).

A resumed row is rebuilt from its JSON as the Batch it was summarised from, so the table, the verdict
and the plots treat it like a row just run; its memory answer is the JSON's, exact (the curves in the
file are thinned, the peaks and means are not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..metrics.memory import memory_answer
from ..outputs import printable, write_json_atomic
from ..scenarios import Scenario
from ..variants import Variant
from .driver import Batch

# compare's parameters that make two runs one comparison (a file's rows are reusable only if all match)
SAME_COMPARISON = ("scenario", "scenario_digest", "set", "schedules", "seed", "fault_rate")


class ResumeError(Exception):
    """A --json file --resume cannot continue (exit status 2, one line)."""


def row_memory(b: Batch) -> dict[str, Any]:
    """The row's memory answer (metrics/memory.py): the resumed JSON's, or computed from the batch."""
    if b.loaded is not None:
        return b.loaded["memory"]
    return memory_answer(b.metrics, b.done, b.retained_series, b.first_series or [])


def row_json(b: Batch, trace: Path | None = None) -> dict[str, Any]:
    """One compare row as JSON: verdict, metrics, the memory answer with the curves `septlab report`
    plots, and the first violating schedule's trace."""
    if b.loaded is not None:
        return dict(b.loaded)
    m = dict(b.metrics)
    if b.done:
        m["retained_page_steps_mean"] = round(m.get("retained_page_steps", 0) / b.done, 3)
    return {"variant": b.variant.name, "variant_file": b.variant.source or None, "dpamt": b.dpamt,
            "schedules": b.done, "schedules_requested": b.total, "schedules_bounded": b.bounded,
            **b.verdict.as_json(), "violations": b.violation_counts(), "metrics": m,
            "memory": row_memory(b), "trace": str(trace) if trace else None}


def comparison(scn: Scenario, overrides: dict[str, str], schedules: int, seed: int,
               fault_rate: float | None) -> dict[str, Any]:
    """The header that identifies a comparison (SAME_COMPARISON) in its results file."""
    return {"septlab": __version__, "command": "compare", "scenario": scn.name, "scenario_digest": scn.digest,
            "schedules": schedules, "seed": seed, "set": overrides, "fault_rate": fault_rate}


def write_results(path: Path, header: dict[str, Any], rows: list[Batch], traces: dict[int, Path],
                  interrupted: bool, rows_requested: int) -> None:
    """The results file, atomically: the rows given (finished ones while the run goes on, all at its end);
    `traces` by id(batch)."""
    write_json_atomic(path, {**header, "rows_requested": rows_requested, "rows_written": len(rows),
                             "interrupted": interrupted,
                             "results": [row_json(b, traces.get(id(b))) for b in rows]}, "--json")


def finished_rows(path: Path, header: dict[str, Any], scn: Scenario, specs: list[tuple[Variant, bool]]
                  ) -> dict[int, Batch]:
    """The rows of an earlier run of this comparison that finished, by their index in `specs`."""
    from ..report.html import ReportInputError, load_results

    try:
        data = load_results(path)
    except ReportInputError as e:
        raise ResumeError(str(e)) from None
    where = printable(path)
    if data.get("command") != "compare":
        raise ResumeError(f"{where}: field 'command': not the JSON of `septlab compare --json`")
    for k in SAME_COMPARISON:
        theirs, ours = data.get(k), header[k]
        if k == "scenario_digest" and theirs is None:
            continue  # written before the digest was recorded: the name and the rest still have to match
        if theirs != ours:
            raise ResumeError(f"{where}: field {k!r}: {printable(repr(theirs))}, but this compare has "
                              f"{printable(repr(ours))}: --resume continues the same comparison (drop it to start over)")
    by_key = {(v.name, v.source or None, d): i for i, (v, d) in enumerate(specs)}
    out: dict[int, Batch] = {}
    for n, r in enumerate(data["results"]):
        i = by_key.get((r["variant"], r.get("variant_file"), r["dpamt"]))
        if i is None:
            continue  # a row of a variant not asked for this time
        ints = [r.get(k) for k in ("schedules", "schedules_requested", "schedules_bounded")]
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ints):
            raise ResumeError(f"{where}: field 'results[{n}].schedules': missing or not a count")
        if not isinstance(r.get("violations"), dict) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in r["violations"].values()):
            raise ResumeError(f"{where}: field 'results[{n}].violations': missing or not counts by invariant")
        mem = r["memory"]
        for key in ("retained_curve", "host_pages"):
            if not isinstance(mem.get(key), list) or not all(isinstance(p, list) and len(p) == 2 for p in mem[key]):
                raise ResumeError(f"{where}: field 'results[{n}].memory.{key}': missing or not [step, pages] points")
        done, requested, bounded = ints
        if done != requested or requested != header["schedules"]:
            continue  # cut short: run again
        var, dpamt = specs[i]
        metrics = {k: v for k, v in r["metrics"].items() if k != "retained_page_steps_mean"}
        out[i] = Batch(scn, var, dpamt, header["seed"], requested, done=done, bounded=bounded,
                       counts={k: c for k, c in r["violations"].items() if c}, metrics=metrics,
                       first_series=[(x, y) for x, y in mem["host_pages"]],
                       retained_series=[[(x, y) for x, y in mem["retained_curve"]]], loaded=r)
    return out
