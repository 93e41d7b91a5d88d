"""The memory answer of one compare row, in the units a reviewer quotes: MiB held and grace periods.

- peak extra memory held: the most reclaimed S-EPT pages (TDH.PHYMEM.PAGE.RECLAIM done) not yet back
  in the allocator at one time -- what deferring the free to an RCU callback costs at its worst;
- for how long: grace periods (and steps) each such page stayed allocated after its RECLAIM, the mean
  over every reclaimed page (metrics.py's retained_page_gps / sept_pages_reclaimed);
- PAMT pages held: the peak number of pages backing Dynamic PAMT's 4 KiB level (owner "pamt").
The curves `septlab report` plots ride along, thinned to at most CURVE_POINTS points each.
"""

from __future__ import annotations

from typing import Any

from .plot import mean_curve

PAGE_BYTES = 4096
MIB = 1 << 20
CURVE_POINTS = 400


def mib(pages: float) -> float:
    return round(pages * PAGE_BYTES / MIB, 3)


def human_size(pages: int) -> str:
    """Pages as the size a reviewer quotes: 0, 16 KiB, 1.5 MiB, 128 MiB, 2.0 GiB."""
    b = pages * PAGE_BYTES
    if b == 0:
        return "0"
    if b < MIB:
        return f"{b >> 10} KiB"
    if b < 1 << 30:
        return f"{b / MIB:.1f} MiB" if b < 100 * MIB else f"{b // MIB} MiB"
    return f"{b / (1 << 30):.1f} GiB"


def thin(series: list[tuple[int, int]] | list[list[int]], points: int = CURVE_POINTS) -> list[list[float]]:
    """At most `points` points of a step series, keeping each bucket's maximum (a peak is never thinned
    away) and the last point."""
    pts = [(x, y) for x, y in series]
    if len(pts) <= points:
        return [[x, y] for x, y in pts]
    per = -(-len(pts) // points)
    out = [list(max(pts[i:i + per], key=lambda p: p[1])) for i in range(0, len(pts), per)]
    if out[-1][0] != pts[-1][0]:
        out.append(list(pts[-1]))
    return out


def memory_answer(metrics: dict[str, Any], schedules: int, retained: list[list[tuple[int, int]]],
                  host_series: list[tuple[int, int]]) -> dict[str, Any]:
    """Peak MiB held after RECLAIM, grace periods held, PAMT pages held, and the curves to plot."""
    peak_retained = max((h for s in retained for _, h in s), default=0)
    reclaimed = metrics.get("sept_pages_reclaimed", 0)
    pamt_pages = metrics.get("peak_pages_by_owner", {}).get("pamt", 0)
    xs, ys = mean_curve(retained)
    return {
        "peak_retained_pages": peak_retained,
        "peak_retained_mib": mib(peak_retained),
        "held_grace_periods_mean": round(metrics.get("retained_page_gps", 0) / reclaimed, 3) if reclaimed else 0.0,
        "held_steps_mean": round(metrics.get("retained_page_steps", 0) / reclaimed, 3) if reclaimed else 0.0,
        "sept_pages_reclaimed_per_schedule": round(reclaimed / schedules, 3) if schedules else 0.0,
        "peak_pamt_pages": pamt_pages,
        "peak_pamt_mib": mib(pamt_pages),
        "peak_host_pages": metrics.get("peak_pages", 0),
        "peak_host_mib": mib(metrics.get("peak_pages", 0)),
        "retained_curve": thin(list(zip(xs, [round(y, 3) for y in ys], strict=True))),
        "host_pages": thin(host_series),
    }
