"""`septlab report RESULTS.json --out DIR`: the comparison as one HTML page to attach or link in a review.

The page is self-contained (styles inline, plots embedded as data: URIs, no script, nothing fetched), so
it survives being mailed or archived; the plots are also written beside it as PNGs to paste elsewhere.
It holds: the verdict per design, the comparison table with the memory answer (peak MiB held after
RECLAIM, grace periods held, PAMT pages), two plots (S-EPT pages held after RECLAIM; host memory over
time), and for each violating design its first counterexample explained (check/explain.py: the race in
CPU columns, the kernel-style report, the page histories) with the command that replays it. Traces are
re-run to explain them; one that no longer replays is named with the reason instead.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from ..outputs import OutputError, printable, read_json_object, write_atomic

MAX_RESULTS_BYTES = 256 << 20


class ReportInputError(Exception):
    """A RESULTS.json `septlab report` cannot use (exit status 2)."""


def load_results(path: Path) -> dict[str, Any]:
    """Read a `septlab compare --json` result and check the fields the report uses."""
    where = printable(path)
    data = read_json_object(path, "result", MAX_RESULTS_BYTES, ReportInputError)
    rows = data.get("results")
    if not isinstance(rows, list) or not rows:
        raise ReportInputError(f"{where}: field 'results': missing or empty: `septlab report` reads the JSON of "
                               "`septlab compare --json`")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ReportInputError(f"{where}: field 'results[{i}]': not an object")
        for k, typ in (("variant", str), ("dpamt", bool), ("metrics", dict), ("kind", str), ("status", str)):
            if not isinstance(r.get(k), typ):
                raise ReportInputError(f"{where}: field 'results[{i}].{k}': missing or not {typ.__name__}")
        if not isinstance(r.get("memory"), dict):
            raise ReportInputError(f"{where}: field 'results[{i}].memory': missing (written by an older septlab? "
                                   "re-run `septlab compare --json`)")
        if r.get("trace") is not None and not isinstance(r["trace"], str):
            raise ReportInputError(f"{where}: field 'results[{i}].trace': not a path")
    return data


def _label(r: dict[str, Any]) -> str:
    return f"{r['variant']}{' +DPAMT' if r['dpamt'] else ''}"


def _png(fig: Any, fmt: str = "png") -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    plt.close(fig)
    return buf.getvalue()


def answer_png(data: dict[str, Any], fmt: str = "png") -> bytes:
    """compare --plot's picture, drawn from the JSON rows (so `compare --plot`, `compare --resume --plot`
    and `septlab report` draw the same bytes): S-EPT pages held after RECLAIM, cost and verdict."""
    from ..metrics.plot import PlotRow, compare_figure

    rows = [PlotRow(_label(r), [[(x, y) for x, y in r["memory"].get("retained_curve", [])]],
                    r["metrics"].get("retained_page_steps", 0) / max(r.get("schedules", 1), 1),
                    ", ".join(f"{k} {100 * n // max(r.get('schedules', 1), 1)}%"
                              for k, n in r.get("violations", {}).items() if n),
                    r.get("kind") == "violated") for r in data["results"]]
    return compare_figure(fmt, str(data.get("scenario", "?")), int(data.get("schedules", 0) or 0), rows)


def memory_png(data: dict[str, Any]) -> bytes:
    return memory_figure(data, "png")


def memory_figure(data: dict[str, Any], fmt: str) -> bytes:
    """Host memory over time (the first schedule of each design) and the memory answer as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    styles = ["-", "--", "-.", ":"]
    for i, r in enumerate(rows):
        pts = r["memory"].get("host_pages", [])
        if pts:
            ax.step([p[0] for p in pts], [p[1] * 4096 / (1 << 20) for p in pts], where="post", label=_label(r),
                    linewidth=1.4, linestyle=styles[i % len(styles)])
    ax.set_xlabel("step (first schedule of each design)")
    ax.set_ylabel("host pages in use (MiB)")
    ax.set_title("host memory over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    labels = [_label(r) for r in rows][::-1]
    held = [r["memory"].get("peak_retained_mib", 0) for r in rows][::-1]
    pamt = [r["memory"].get("peak_pamt_mib", 0) for r in rows][::-1]
    ys = range(len(rows))
    bx.barh([y + 0.2 for y in ys], held, height=0.38, color="#c0392b", label="peak S-EPT held after RECLAIM")
    bx.barh([y - 0.2 for y in ys], pamt, height=0.38, color="#2980b9", label="peak DPAMT backing pages")
    bx.set_yticks(list(ys), labels, fontsize=8)
    bx.set_xlabel("MiB")
    bx.set_title("extra memory held (peak)")
    bx.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    bx.grid(alpha=0.3, axis="x")
    fig.suptitle(f"septlab compare: scenario {data.get('scenario', '?')}: memory")
    fig.tight_layout()
    return _png(fig, fmt)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1280px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666}table{border-collapse:collapse;font-size:.92em}th,td{padding:.3em .6em;border-bottom:1px solid #e4e4e4}
th{background:#f6f6f6;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.violated td.v{color:#b03a2e;font-weight:600}tr.complete td.v{color:#1e8449}tr.bounded td.v{color:#b9770e}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
pre{background:#fafafa;border:1px solid #e4e4e4;padding:.8em;overflow-x:auto;font-size:12px;line-height:1.3}
code{background:#f3f3f3;padding:0 .25em}
"""

COLUMNS = [
    ("peak S-EPT held after RECLAIM (MiB)", lambda r: r["memory"].get("peak_retained_mib", 0)),
    ("…pages", lambda r: r["memory"].get("peak_retained_pages", 0)),
    ("grace periods held (mean per page)", lambda r: r["memory"].get("held_grace_periods_mean", 0)),
    ("steps held (mean per page)", lambda r: r["memory"].get("held_steps_mean", 0)),
    ("peak DPAMT pages (MiB)", lambda r: r["memory"].get("peak_pamt_mib", 0)),
    ("peak host memory (MiB)", lambda r: r["memory"].get("peak_host_mib", 0)),
    ("RCU callbacks", lambda r: r["metrics"].get("rcu_callbacks", 0)),
    ("SEAMCALLs", lambda r: sum(r["metrics"].get("seamcalls", {}).values())),
]


def _verdict_text(r: dict[str, Any]) -> str:
    viol = {k: n for k, n in r.get("violations", {}).items() if n}
    if viol:
        return "violates " + ", ".join(f"{k} ({n}/{r.get('schedules', '?')} schedules)" for k, n in viol.items())
    return str(r.get("status", ""))


def _seeds(seed: Any, n: Any) -> str:
    return f"{seed}..{seed + n - 1}" if isinstance(seed, int) and isinstance(n, int) else str(seed)


def _num(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:,.3f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def counterexample(r: dict[str, Any]) -> tuple[str, str]:
    """(replay command, explanation) of a row's first violating schedule, or why there is none."""
    from ..check.explain import explain_trace

    trace = r.get("trace")
    if not trace:
        return "", "(no trace was written for this row)"
    cmd = f"septlab explain {trace}" + (f" --variant {r['variant_file']}" if r.get("variant_file") else "")
    try:
        _d, _res, text = explain_trace(Path(trace), r.get("variant_file"), None)
    except Exception as e:  # noqa: BLE001 -- a stale or moved trace is reported on the page, not fatal
        return cmd, f"(this trace could not be explained: {e})"
    return cmd, text or "(the trace violates nothing)"


def render_html(data: dict[str, Any], source: str, pngs: dict[str, bytes], explanations: list[tuple[int, str, str]]) -> str:
    """The page: header, verdicts, table, embedded plots, counterexamples."""
    e = html.escape
    rows = data["results"]
    n = data.get("schedules", rows[0].get("schedules", "?"))
    seed = data.get("seed", 0)
    sets = data.get("set") or {}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>septlab report: scenario {e(str(data.get('scenario', '?')))}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>septlab compare: scenario <code>{e(str(data.get('scenario', '?')))}</code></h1>",
           f'<p class="meta">{e(str(n))} schedules per design, seeds {e(_seeds(seed, n))} · '
           + (f"overrides {e(', '.join(f'{k}={v}' for k, v in sets.items()))} · " if sets else "")
           + f"septlab {e(str(data.get('septlab', '?')))} · from <code>{e(source)}</code></p>",
           "<h2>What the model says</h2>", "<ul>"]
    for r in rows:
        out.append(f"<li><b>{e(_label(r))}</b>: {e(_verdict_text(r))}</li>")
    out += ["</ul>", "<h2>Comparison</h2>", '<table id="comparison"><thead><tr><th>variant</th><th>DPAMT</th>'
            "<th>verdict</th>" + "".join(f"<th>{e(h)}</th>" for h, _ in COLUMNS) + "</tr></thead><tbody>"]
    for r in rows:
        kind = str(r.get("kind", ""))
        out.append(f'<tr class="{e(kind)}"><td>{e(r["variant"])}</td><td>{"on" if r["dpamt"] else "off"}</td>'
                   f'<td class="v">{e(_verdict_text(r))}</td>'
                   + "".join(f'<td class="n">{e(_num(f(r)))}</td>' for _, f in COLUMNS) + "</tr>")
    out += ["</tbody></table>", "<h2>Plots</h2>"]
    captions = {"answer.png": "Reclaimed S-EPT pages not yet freed after TDH.PHYMEM.PAGE.RECLAIM (mean over "
                              "schedules), and each design's cost with its verdict.",
                "memory.png": "Host memory in use over the first schedule of each design, and the peak extra "
                              "memory each holds: S-EPT pages after RECLAIM, DPAMT backing pages."}
    for name, png in pngs.items():
        b64 = base64.b64encode(png).decode()
        out.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{e(name)}" data-file="{e(name)}">'
                   f'<figcaption>{e(captions.get(name, name))} (also <a href="{e(name)}">{e(name)}</a>)'
                   "</figcaption></figure>")
    out.append("<h2>Counterexamples</h2>")
    if not explanations:
        out.append("<p>No design violated an invariant: there is nothing to explain.</p>")
    for i, cmd, text in explanations:
        r = rows[i]
        out.append(f'<h3 id="cex-{i}">{e(_label(r))}: {e(_verdict_text(r))}</h3>')
        if cmd:
            out.append(f"<p>Reproduce: <code>{e(cmd)}</code></p>")
        out.append(f'<pre class="explain">{e(text)}</pre>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def build_report(results: Path, out_dir: Path, explain: bool = True) -> Path:
    """Write DIR/index.html and the PNGs it embeds; return the page's path."""
    data = load_results(results)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--out {printable(out_dir)}: cannot create the directory: {e.strerror or e}") from None
    pngs = {"answer.png": answer_png(data), "memory.png": memory_png(data)}
    for name, png in pngs.items():
        write_atomic(out_dir / name, png, "--out")
    explanations = []
    if explain:
        for i, r in enumerate(data["results"]):
            if r.get("kind") == "violated":
                cmd, text = counterexample(r)
                explanations.append((i, cmd, text))
    page = out_dir / "index.html"
    write_atomic(page, render_html(data, str(results), pngs, explanations).encode(), "--out")
    return page
