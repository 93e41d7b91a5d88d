"""Plot host pages held over steps, one line per (variant, DPAMT): where deferred freeing shows."""

from __future__ import annotations

from pathlib import Path


def plot_series(path: Path, title: str, series: list[tuple[str, list[tuple[int, int]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for label, pts in series:
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.step(xs, ys, where="post", label=label, linewidth=1.3)
    ax.set_xlabel("step (first schedule)")
    ax.set_ylabel("host pages in use")
    ax.set_title(f"septlab: host pages held over time, scenario {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
