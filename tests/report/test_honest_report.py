"""Reports that draw only what the runs identify: unidentified parameters greyed with their
reason (checked in the DOM headless Chromium builds), plots whose axes are set by identified
numbers only, one fitted line per format and tokens-per-parameter ratio, labels that do not
overlap, and no RuntimeWarning on the way."""

from __future__ import annotations

import itertools
import re
import warnings
from html import unescape

import numpy as np
import pandas as pd
import pytest
from browser import image_states, page_dom

import capscale.laws.plots as plots
from capscale.laws import fit_law
from capscale.plot_labels import place_labels
from capscale.report import build_report


def tiny_sweep(noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Like the demo's sweep: three tiny sizes at one tokens-per-parameter ratio, dense and
    INT8/INT4/INT2 on both operands; too few and too noisy to identify a decoupled law."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, (f, r) in itertools.product((3e4, 5.4e4, 1e5),
                                       {"none": 1.0, "int8": 0.99, "int4": 0.8, "int2": 0.55}.items()):
        d = 10 * n
        loss = 10 * (n * r) ** -0.2 + 30 * d ** -0.25 + 1.5
        rows.append({"N": n, "D": d, "w_format": f, "a_format": f,
                     "loss": loss * np.exp(noise * rng.standard_normal())})
    return pd.DataFrame(rows)


def _rows(dom: str) -> list[tuple[str, list[str]]]:
    """(class, cell texts) of every table row of the page."""
    out = []
    for m in re.finditer(r'<tr( class="([^"]*)")?[^>]*>(.*?)</tr>', dom, re.S):
        cells = [unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", m.group(3), re.S)]
        out.append((m.group(2) or "", cells))
    return out


def test_report_never_draws_an_unidentified_number_as_a_result(tmp_path):
    runs = tmp_path / "runs.csv"
    tiny_sweep().to_csv(runs, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing leaks to the terminal
        index = build_report(runs, tmp_path / "report", n_bootstrap=40, quiet=True,
                             panel=["int3", "nf4"])
    fits = {law: fit_law(pd.read_csv(runs), law, n_bootstrap=40, heldout=False)
            for law in ("decoupled", "unified")}
    unid = fits["decoupled"].info["unidentified"]
    assert "eff[int2/int2]" in unid  # the premise: this sweep does not identify its multipliers
    dom = page_dom(index)
    rows = _rows(dom)
    greyed = {cells[0]: cells for cls, cells in rows if cls == "unid" and cells}
    for law in ("decoupled",):
        table = pd.read_csv(tmp_path / "report" / "tables" / f"fit_{law}.csv")
        for _, r in table.iterrows():
            if isinstance(r["not_identified"], str) and r["not_identified"]:
                cells = greyed[r["parameter"]]
                assert cells[1:4] == ["not identified"] * 3, cells
                # the number itself appears nowhere in the row
                assert f"{r['value']:.4g}" not in " ".join(cells)
    # the eff table rows of the composability section and the Pareto table: greyed too
    assert sum(1 for cls, cells in rows if cls == "unid" and "not identified" in cells) >= 6
    # plots that would be made of unidentified numbers are replaced by the reason
    states = image_states(index)
    assert all(complete and width > 0 for _, complete, width, _ in states)
    srcs = {s[0] for s in states}
    if not any(k.startswith(("L", "F", "C")) for k in fits["unified"].info["unidentified"]):
        pytest.skip("the unified curve came out identified on this platform")
    assert "plots/capacity_vs_gmse.png" not in srcs
    assert "No capacity is identified by these runs" in unescape(dom)


def _capture(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    return figs


def test_capacity_axes_are_set_by_identified_numbers_only(monkeypatch):
    df = tiny_sweep()
    uni = fit_law(df, "unified", n_bootstrap=40, heldout=False)
    dec = fit_law(df, "decoupled", n_bootstrap=40, heldout=False)
    assert max(v for v, _, _ in dec.info["derived_eff"].values()) > 2 or dec.info["unidentified"]
    figs = _capture(monkeypatch)
    plots.plot_capacity(uni, "x.png", dec, bits=(1, 2, 4, 8))
    ax = figs[0].axes[0]
    assert ax.get_ylim()[1] <= 1.65
    drawn = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    if any(k.startswith(("L", "F", "C")) for k in uni.info["unidentified"]):
        assert not drawn and "not identified" in ax.get_title()


def test_loss_against_n_draws_one_line_per_format_and_ratio(monkeypatch):
    rows = []
    for n, r, (f, rho) in itertools.product((3e7, 1e8, 3e8), (20, 80), (("none", 1.0), ("q4", 0.7))):
        rows.append({"N": n, "D": r * n, "format": f, "gmse": 0.0115 if f == "q4" else np.nan,
                     "kind": "scalar" if f == "q4" else "dense",
                     "loss": 400 * (n * rho) ** -0.34 + 2000 * (r * n) ** -0.36 + 1.8})
    df = pd.DataFrame(rows)
    fit = fit_law(df, "decoupled", n_bootstrap=0, heldout=False)
    figs = _capture(monkeypatch)
    plots.plot_loss_vs_n(fit, df, "x.png")
    ax = figs[0].axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert len(lines) == 4  # (none, q4) x (20, 80)
    # every run lies on one of the lines (exact data: within the line's interpolation error)
    for _, r in df.iterrows():
        gaps = []
        for line in lines:
            x, y = line.get_xdata(), line.get_ydata()
            if x.min() <= r["N"] <= x.max():
                gaps.append(abs(np.interp(np.log(r["N"]), np.log(x), y) - r["loss"]))
        assert min(gaps) < 2e-3, r.to_dict()


def _overlaps(ax) -> list[tuple[str, str]]:
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text() and t.get_visible()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def test_crowded_labels_never_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = 4 + 0.05 * rng.standard_normal(30)
    y = 0.6 + 0.02 * rng.standard_normal(30)
    ax.scatter(x, y)
    ax.set_xlim(2, 8)
    ax.set_ylim(0, 1)
    drawn = place_labels(ax, x, y, [f"format-{i}" for i in range(30)])
    assert len(drawn) == 30 and _overlaps(ax) == []
    plt.close(fig)


def test_gmse_and_pareto_plots_have_no_overlapping_labels(monkeypatch, tmp_path):
    import capscale.capacity.plot as cplot
    from capscale.capacity.table import STANDARD_PANEL
    from capscale.formats import parse_format

    axes = []
    real = cplot.place_labels

    def spy(ax, *a, **k):
        out = real(ax, *a, **k)
        axes.append(_overlaps(ax))  # before the plot closes its figure
        return out

    monkeypatch.setattr(cplot, "place_labels", spy)
    specs = [s for s in STANDARD_PANEL if np.isfinite(parse_format(s).bits_per_value)]
    bits = np.array([parse_format(s).bits_per_value for s in specs])
    table = pd.DataFrame({"spec": specs, "bits_per_value": bits,
                          "gmse": 4.0 ** -bits * np.linspace(1.5, 3, len(specs)), "gmse_se": 0.0})
    cplot.plot_gmse(table, str(tmp_path / "gmse.png"))
    assert axes == [[]]

    figs = _capture(monkeypatch)
    n = 16
    cmp = pd.DataFrame({"format": [f"fmt{i}:g{i}" for i in range(n)],
                        "rho": 0.6 + 0.01 * np.arange(n), "rho_lo": 0.55, "rho_hi": 0.7,
                        "trained": [i % 2 == 0 for i in range(n)],
                        "bits_weights": 4 + 0.02 * np.arange(n), "pareto_bits": False,
                        "identified": True})
    plots.plot_compare(cmp, "x.png")
    ax = figs[0].axes[0]
    assert _overlaps(ax) == []
    assert ax.get_xlim()[1] < 5  # zoomed to the data, not to 16 bits
