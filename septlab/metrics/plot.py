"""`compare --plot`: the answer to the design question in one picture.

Left: reclaimed S-EPT pages still allocated (TDH.PHYMEM.PAGE.RECLAIM done, page not yet freed), averaged
over schedules and aligned at each schedule's first RECLAIM -- the memory a deferred free holds, which
in a whole-run "pages in use" plot hides in the last few dozen steps. Right: the cost per schedule
(page-steps held) with each design's verdict written on its bar, so safety and cost read together.
"""

from __future__ import annotations

from dataclasses import dataclass

GRID = 400


@dataclass
class PlotRow:
    label: str
    retained: list[list[tuple[int, int]]]  # per schedule: (step, reclaimed S-EPT pages not yet freed)
    retained_per_schedule: float
    verdict: str  # "none", or the invariants violated and in how many schedules
    violated: bool


def _held_at(series: list[tuple[int, int]], xs: list[int]) -> list[int]:
    """A step function sampled at offsets xs from the series' first point (0 before/after the data)."""
    out, j, cur = [], 0, 0
    t0 = series[0][0]
    for x in xs:
        while j < len(series) and series[j][0] - t0 <= x:
            cur = series[j][1]
            j += 1
        out.append(cur)
    return out


def mean_curve(runs: list[list[tuple[int, int]]]) -> tuple[list[int], list[float]]:
    """Mean of the step functions over schedules, on a common grid of offsets since the first RECLAIM."""
    runs = [r for r in runs if r]
    if not runs:
        return [0], [0.0]
    span = max(r[-1][0] - r[0][0] for r in runs) + 1
    stride = max(1, span // GRID)
    xs = list(range(0, span + stride, stride))
    total = [0.0] * len(xs)
    for r in runs:
        for i, v in enumerate(_held_at(r, xs)):
            total[i] += v
    return xs, [t / len(runs) for t in total]


def compare_figure(fmt: str, scenario: str, schedules: int, rows: list[PlotRow]) -> bytes:
    """The picture, as bytes of the given format (png, svg, pdf)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    styles = ["-", "--", "-.", ":"]
    for i, r in enumerate(rows):
        xs, ys = mean_curve(r.retained)
        ax.step(xs, ys, where="post", label=r.label, linewidth=1.6, linestyle=styles[i % len(styles)])
    ax.set_xlabel("steps since the first TDH.PHYMEM.PAGE.RECLAIM (teardown)")
    ax.set_ylabel("reclaimed S-EPT pages not yet freed (mean)")
    ax.set_title("memory held by deferring the free")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    labels = [r.label for r in rows][::-1]
    vals = [r.retained_per_schedule for r in rows][::-1]
    colors = ["#c0392b" if r.violated else "#27ae60" for r in rows][::-1]
    bars = bx.barh(labels, vals, color=colors)
    top = max(vals, default=0) or 1.0
    for b, r in zip(bars, rows[::-1], strict=True):
        bx.text(b.get_width() + top * 0.02, b.get_y() + b.get_height() / 2,
                ("violates " + r.verdict) if r.violated else "no violation", va="center", fontsize=7.5,
                color=colors[labels.index(r.label)])
    bx.set_xlim(0, top * 2.1)
    bx.set_xlabel("S-EPT page-steps held per schedule")
    bx.set_title("cost and verdict (red: an invariant is violated)")
    bx.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"septlab compare: scenario {scenario}, {schedules} schedules per design")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    plt.close(fig)
    return buf.getvalue()
