"""Labels on crowded scatter plots, and axes that span the data (matplotlib only)."""

from __future__ import annotations

import numpy as np


def place_labels(ax, xs, ys, texts, fontsize: float = 6.5) -> list:
    """Label points without letting labels overlap each other or leave the axes: each label
    tries offsets around its point and keeps the first whose box is free; a label with no free
    place becomes a number beside the point, listed in a key under the plot. Returns the
    annotations drawn."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axbox = ax.get_window_extent(renderer)
    near = [(4, 4), (4, -10), (-4, 4), (-4, -10), (8, 12), (8, -18), (-8, 12), (-8, -18),
            (14, 0), (-14, 0), (0, 16), (0, -22), (18, 20), (18, -26), (-18, 20), (-18, -26)]
    # farther rings, joined to their point by a thin leader line
    rings = [(round(r * np.cos(t)), round(r * np.sin(t))) for r in (30, 45, 65, 90, 120)
             for t in np.linspace(0, 2 * np.pi, 16, endpoint=False)]
    offsets = near + rings
    placed, drawn, overflow = [], [], []
    legend = ax.get_legend()
    if legend is not None:  # labels keep clear of a legend drawn inside the axes
        placed.append(legend.get_window_extent(renderer))

    def free(bb):
        inside = (bb.x0 >= axbox.x0 and bb.x1 <= axbox.x1 and bb.y0 >= axbox.y0
                  and bb.y1 <= axbox.y1)
        return inside and not any(bb.overlaps(o) for o in placed)

    for x, y, t in zip(xs, ys, texts):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        for dx, dy in offsets:
            ha = "left" if dx >= 0 else "right"
            a = ax.annotate(t, (x, y), xytext=(dx, dy), textcoords="offset points",
                            fontsize=fontsize, ha=ha)
            bb = a.get_window_extent(renderer).expanded(1.05, 1.1)
            if free(bb):
                placed.append(bb)
                drawn.append(a)
                _leader(ax, x, y, dx, dy)
                break
            a.remove()
        else:
            overflow.append((x, y, t))
    key = []
    for x, y, t in overflow:
        n = str(len(key) + 1)
        for dx, dy in offsets:
            a = ax.annotate(n, (x, y), xytext=(dx, dy), textcoords="offset points",
                            fontsize=fontsize, ha="left" if dx >= 0 else "right", color="0.25")
            bb = a.get_window_extent(renderer).expanded(1.05, 1.1)
            if free(bb):
                placed.append(bb)
                drawn.append(a)
                _leader(ax, x, y, dx, dy)
                key.append(f"{n}: {t}")
                break
            a.remove()
    if key:  # the numbered labels, spelled out under the axes
        lines = ["   ".join(key[i:i + 6]) for i in range(0, len(key), 6)]
        ax.text(0.0, -0.14, "\n".join(lines), transform=ax.transAxes, fontsize=fontsize,
                color="0.25", va="top")
    return drawn


def _leader(ax, x, y, dx: float, dy: float) -> None:
    """A thin line from a point to a label placed far from it (an annotation without text)."""
    if dx * dx + dy * dy >= 25 * 25:
        ax.annotate("", (x, y), xytext=(dx, dy), textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5", "shrinkA": 0,
                                "shrinkB": 2})


def log_limits(values, pad: float = 1.3) -> tuple[float, float]:
    """Log-axis limits that span the positive finite ``values``, padded by a factor."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    return float(v.min() / pad), float(v.max() * pad)
