"""Plots of fits and comparisons (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from capscale.io import atomic_write
from capscale.laws import representation as rep
from capscale.laws.fit import FitResult
from capscale.plot_labels import log_limits as _log_limits
from capscale.plot_labels import place_labels


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    suffix = Path(path).suffix.lstrip(".") or "png"
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=130,
                                                     bbox_inches="tight"))
    _plt().close(fig)
    return out


def _keys(fit: FitResult, df: pd.DataFrame) -> list[str]:
    try:
        return rep.representation_keys(df, getattr(fit.law, "key_columns", None))
    except Exception:
        return ["all runs"] * len(df)


def _ratio_groups(df: pd.DataFrame) -> np.ndarray:
    """Runs with tokens per parameter within 10% of each other share a group label (the
    median ratio of the group)."""
    r = (df["D"] / df["N"]).to_numpy(dtype=float)
    order = np.argsort(r)
    label = np.empty(len(r))
    start = 0
    for i in range(1, len(r) + 1):
        if i == len(r) or r[order[i]] > 1.1 * r[order[start]]:
            label[order[start:i]] = float(np.median(r[order[start:i]]))
            start = i
    return label


def plot_loss_vs_n(fit: FitResult, df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Measured loss against N, one colour per representation and one line style per
    tokens-per-parameter ratio, with the fitted curve of every (representation, ratio) the runs
    have, over the sizes those runs span: every point lies on the line of its own D/N."""
    plt = _plt()
    keys = np.array(_keys(fit, df))
    uniq = list(dict.fromkeys(keys))
    ratios = _ratio_groups(df)
    runiq = sorted(set(ratios))
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    cmap = plt.get_cmap("tab20" if len(uniq) > 10 else "tab10")
    for i, k in enumerate(uniq):
        color = cmap(i % cmap.N)
        ax.scatter(df["N"][keys == k], df["loss"][keys == k], s=18, color=color, label=k, zorder=3)
        for j, r in enumerate(runiq):
            sub = df[(keys == k) & (ratios == r)]
            if sub.empty:
                continue
            Ns = np.geomspace(sub["N"].min() / 1.15, sub["N"].max() * 1.15, 60)
            curve = pd.concat([sub.iloc[[0]]] * len(Ns), ignore_index=True)
            curve["N"] = Ns
            curve["D"] = r * Ns
            try:
                pred = fit.predict(curve)["loss"]
            except Exception:
                continue
            ax.plot(Ns, pred, color=color, lw=1.1, alpha=0.8, ls=styles[j % len(styles)])
    if len(runiq) > 1:
        for j, r in enumerate(runiq):
            ax.plot([], [], color="0.3", ls=styles[j % len(styles)], label=f"fit at D/N ≈ {r:.3g}")
    ax.set_xscale("log")
    ax.set_xlim(*_log_limits(df["N"], 1.25))
    y = df["loss"].to_numpy(float)
    pad = 0.05 * (y.max() - y.min() or y.max())
    ax.set_ylim(y.min() - pad, y.max() + pad)
    ax.set_xlabel("N (non-embedding parameters)")
    ax.set_ylabel("loss")
    what = "one line per format and D/N" if len(runiq) > 1 else f"at D/N ≈ {runiq[0]:.3g}"
    ax.set_title(f"{fit.law.name} fit: measured (points) and fitted (lines, {what})", fontsize=10)
    if len(uniq) + len(runiq) <= 30:
        ax.legend(fontsize=7, ncol=2 if len(uniq) > 8 else 1, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_predicted_vs_measured(fit: FitResult, df: pd.DataFrame, path: str | os.PathLike) -> Path:
    plt = _plt()
    pred = fit.predict(df)["loss"].to_numpy()
    y = df["loss"].to_numpy()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(y, pred, s=14, alpha=0.8)
    lo, hi = min(y.min(), pred.min()), max(y.max(), pred.max())
    pad = 0.02 * (hi - lo)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8)
    ax.set_xlabel("measured loss")
    ax.set_ylabel("predicted loss")
    info = fit.info
    ax.set_title(f"{fit.law.name}: RMSE {info['rmse_loss']:.3g} (log {info['rmse_log_loss']:.3g})")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_capacity(fit: FitResult, path: str | os.PathLike, measured: FitResult | None = None,
                  bits: tuple[int, ...] = ()) -> Path:
    """ρ against GMSE: the fitted capacity curve of each compression type of a unified fit,
    with, from a decoupled fit of the same runs (``measured``), each format's own multiplier
    per compressed operand (eff, or √eff when both operands carry the same format). ``bits``:
    draw Shannon's bound GMSE ≥ 4^(−b) at each b within the data's range, and the capacity
    the curve allows there (no b-bit format can lie left of its line).

    Only identified numbers are drawn: a curve whose parameters the runs do not pin down is
    left out and named in the title, as are multipliers that are not identified; the axes
    span what is drawn, never a number the fit calls unidentified."""
    from capscale.laws.identify import fit_unidentified

    plt = _plt()
    law = fit.law
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    nat = dict(zip(law.natural_names, fit.natural))
    unid = fit_unidentified(fit)
    curve_names = ("L", "F", "C", "A_rho", "B_rho", "alpha")
    good, bad = [], []
    for group in law.groups:
        names = [law.natural_name(x, group) for x in curve_names[:-1]] + ["alpha"]
        why = next((f"{n}: {unid[n]}" for n in names if n in unid), None)
        (bad if why else good).append((group, why))
    points = []
    m_unid = fit_unidentified(measured) if measured is not None else {}
    m_bad = []
    key_cols = getattr(measured.law, "key_columns", None) if measured is not None else None
    n_parts = len(rep.part_columns(pd.DataFrame(columns=fit.info["data"].get("columns", []))))
    for key, (v, lo, hi) in (measured.info.get("derived_eff", {}) if measured is not None
                             else {}).items():
        parts = key.split(rep.KEY_SEPARATOR)[:n_parts] if key_cols else key.split(rep.KEY_SEPARATOR)
        comp = [p for p in parts if not rep.is_dense(p)]
        if not comp or len(set(comp)) != 1:
            continue
        if f"eff[{key}]" in m_unid:
            m_bad.append(key)
            continue
        try:
            x = rep.spec_gmse(comp[0])
        except Exception:
            continue
        k = len(comp)
        lo = math.nan if lo is None else lo
        hi = math.nan if hi is None else hi
        points.append((x, v ** (1 / k), lo ** (1 / k) if math.isfinite(lo) else math.nan,
                       hi ** (1 / k) if math.isfinite(hi) else math.nan, k, key))
    xs = [p[0] for p in points] + list(fit.info["data"].get("ranges", {}).get("gmse", []))
    xlo, xhi = _log_limits(xs, 2.0) if xs else (1e-4, 0.99)
    xhi = min(xhi, 1.0)
    g = np.geomspace(xlo, xhi, 200)
    ymax = 1.0
    for group, _ in good:
        y = law.rho(nat, g, group)
        ax.plot(g, y, label=f"fitted ρ(GMSE): {group}")
        ymax = max(ymax, float(np.nanmax(y)))
    for i, b in enumerate(b for b in bits if xlo <= 4.0 ** -b <= xhi):
        x = 4.0 ** (-b)
        ax.axvline(x, color="0.6", ls=":", lw=0.9,
                   label="Shannon bound $4^{-b}$ (b bits)" if i == 0 else None)
        ax.annotate(f"{b} bit{'s' if b > 1 else ''}", (x, 0.02), xycoords=("data", "axes fraction"),
                    fontsize=7, color="0.4", rotation=90, xytext=(2, 0), textcoords="offset points")
        if good:
            ax.plot([x], [float(law.rho(nat, np.array([x]), good[0][0])[0])], marker="|",
                    color="0.4", ms=8)
    for j, (x, y, lo, hi, k, _key) in enumerate(points):
        err = None
        if math.isfinite(lo) and math.isfinite(hi):
            err = [[max(y - lo, 0)], [max(hi - y, 0)]]
        ax.errorbar([x], [y], yerr=err, fmt="o" if k == 1 else "s", ms=4, color="k", capsize=2,
                    label="decoupled fit, per operand" if j == 0 else None)
        ymax = max(ymax, y if not math.isfinite(hi) else hi)
    ax.set_xscale("log")
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(0, min(ymax, 1.5) * 1.08)
    ax.set_xlabel("GMSE (MSE on N(0,1) data)")
    ax.set_ylabel("capacity ρ per operand")
    notes = [f"curve {g} not identified ({why})" for g, why in bad]
    if m_bad:
        notes.append(f"{len(m_bad)} multiplier(s) not identified, not drawn")
    if notes:
        ax.set_title("\n".join(notes), fontsize=7, color="#b3261e")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(True, which="both", alpha=0.3)
    place_labels(ax, [p[0] for p in points], [p[1] for p in points], [p[5] for p in points])
    return _save(fig, path)


def plot_composability(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Heatmaps: fitted multiplier, product of marginals, and their absolute difference."""
    plt = _plt()
    attrs = dict(table.attrs)
    if np.isfinite(table["product"]).any():  # cells without both marginals say nothing here
        table = table[np.isfinite(table["product"])]
    table.attrs.update(attrs)
    xs = list(dict.fromkeys(table["axis_x"]))
    ys = list(dict.fromkeys(table["axis_y"]))
    mats = {c: np.full((len(ys), len(xs)), np.nan) for c in ("eff", "product", "abs_error")}
    for _, r in table.iterrows():
        i, j = ys.index(r["axis_y"]), xs.index(r["axis_x"])
        for c in mats:
            mats[c][i, j] = r[c]
    fig, axes = plt.subplots(1, 3, figsize=(3 + 3 * (1.2 + 0.5 * len(xs)), 2.5 + 0.5 * len(ys)))
    titles = {"eff": "fitted eff", "product": "product of marginals", "abs_error": "|difference|"}
    ax_names = table.attrs.get("axes", ("x", "y"))
    for ax, c in zip(axes, mats):
        im = ax.imshow(mats[c], cmap="viridis", aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                v = mats[c][i, j]
                if math.isfinite(v):
                    ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(xs)), xs, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(ys)), ys, fontsize=7)
        ax.set_xlabel(ax_names[0])
        ax.set_ylabel(ax_names[1])
        ax.set_title(titles[c], fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    mae = table.attrs.get("mean_abs_error", math.nan)
    fig.suptitle(f"composability: mean absolute error {mae:.3g}")
    return _save(fig, path)


def plot_compare(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """ρ against storage bits per value (weights), with the Pareto front; a second panel
    against the linear compute cost when the fit has weights and activations. Formats whose ρ
    the fit does not identify (``identified`` False) are not drawn; the title counts them."""
    plt = _plt()
    hidden = []
    if "identified" in table:
        hidden = table.loc[~table["identified"].astype(bool), "format"].tolist()
        table = table[table["identified"].astype(bool)]
    two = "cost_linear" in table
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 7, 5))
    axes = np.atleast_1d(axes)
    for ax, xcol, xlabel in zip(axes, ("bits_weights", "cost_linear"),
                                ("storage bits per value (weights)",
                                 "compute cost relative to bf16 (linear bit-op counting)")):
        if xcol not in table:
            continue
        trained = table["trained"].astype(bool)
        for mask, marker, label in ((trained, "o", "in the fitted runs"),
                                    (~trained, "^", "never trained (ρ from its GMSE)")):
            sub = table[mask]
            if len(sub):
                yerr = None
                if np.isfinite(sub["rho_lo"]).all():
                    yerr = [np.maximum(sub["rho"] - sub["rho_lo"], 0),
                            np.maximum(sub["rho_hi"] - sub["rho"], 0)]
                ax.errorbar(sub[xcol], sub["rho"], yerr=yerr, fmt=marker, ms=5, label=label,
                            capsize=2)
        if xcol == "bits_weights" and "pareto_bits" in table:
            front = table[table["pareto_bits"].astype(bool)].sort_values(xcol)
            ax.step(front[xcol], front["rho"], where="post", color="k", lw=0.8,
                    label="Pareto front")
        x = table[xcol].to_numpy(float)
        hi = table["rho_hi"].to_numpy(float) if "rho_hi" in table else table["rho"].to_numpy(float)
        top = np.nanmax(np.where(np.isfinite(hi), hi, table["rho"].to_numpy(float))) if len(table) else 1
        if len(table) and np.isfinite(x).any():
            span = np.nanmax(x) - np.nanmin(x) or 1.0
            ax.set_xlim(np.nanmin(x) - 0.06 * span, np.nanmax(x) + 0.12 * span)
        ax.set_ylim(0, max(min(top, 1.5), 0.1) * 1.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("capacity ρ (effective parameters per parameter)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        if hidden:
            ax.set_title(f"not drawn, not identified by the fit: {', '.join(hidden[:6])}"
                         + (" ..." if len(hidden) > 6 else ""), fontsize=7, color="#b3261e")
        place_labels(ax, table[xcol].to_numpy(float), table["rho"].to_numpy(float),
                     table["format"].tolist())
    return _save(fig, path)


def plot_fit(fit: FitResult, df: pd.DataFrame, folder: str | os.PathLike) -> list[Path]:
    """The standard plots of a fit into ``folder``."""
    folder = Path(folder)
    out = [plot_loss_vs_n(fit, df, folder / "loss_vs_n.png"),
           plot_predicted_vs_measured(fit, df, folder / "predicted_vs_measured.png")]
    if fit.law.name == "unified":
        from capscale.laws.fit import fit_law

        try:  # each format's own multiplier, to set beside the curve
            measured = fit_law(df, "decoupled", n_bootstrap=100, heldout=False)
        except Exception:
            measured = None
        out.append(plot_capacity(fit, folder / "capacity_vs_gmse.png", measured))
    return out


def plot_measured_capacity(table: pd.DataFrame, path: str | os.PathLike,
                           title: str = "") -> Path:
    """Measured ρ (decoupled fit, 95% bootstrap interval as error bars) against ρ predicted
    from GMSE with the paper's constants, with the line of agreement. A ρ that is not
    identified gets no point, only its interval as a dotted line (as the CLI prints it).
    ``table`` is :func:`capscale.laws.measure.measured_capacity`'s."""
    plt = _plt()
    many = len(table) > 10  # legend beside the axes, where it hides no point
    fig, ax = plt.subplots(figsize=(9.5 if many else 6.5, 6))
    ax.plot([0, 1.05], [0, 1.05], color="0.6", lw=1, ls="--", label="measured = predicted")
    cmap = plt.get_cmap("tab20" if many else "tab10")
    markers = "os^D"  # with the colours, no two of up to 80 representations look alike
    for i, (_, r) in enumerate(table.iterrows()):
        color = cmap(i % cmap.N)
        marker = markers[(i // cmap.N) % len(markers)]
        x, y = r["rho_gmse"], r["rho"]
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        lo, hi = r["lo"], r["hi"]
        ranged = math.isfinite(lo) and math.isfinite(hi)
        if not r["identified"]:
            label = r["format"] + (" (not identified: 95% interval)" if ranged
                                   else " (not identified, no interval)")
            if ranged:
                ax.vlines(x, max(lo, 0.0), min(hi, 1.2), colors=[color], linestyles=":",
                          lw=2, label=label)
            else:
                ax.plot([], [], ls=":", color=color, label=label)
            continue
        err = [[max(y - lo, 0)], [max(hi - y, 0)]] if ranged else None
        ax.errorbar([x], [min(y, 1.5)], yerr=err, fmt=marker, color=color, capsize=3,
                    label=r["format"])
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("ρ predicted from GMSE (L 1.0, F 0.41, C 1.39)")
    ax.set_ylabel("ρ measured (decoupled fit, 95% interval)")
    if title:
        ax.set_title(title)
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        fig.tight_layout()
    else:
        ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_composition(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """ρ of each combined representation (y) against the product of its parts' ρ (x), both
    with 95% intervals, and the diagonal where capacities compose (the unified paper's
    Fig. 6). A point whose ρ or product is not identified gets no marker, only its intervals
    as dotted lines. ``table`` is :func:`capscale.studies.composition_table`'s."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.plot([0, 3], [0, 3], color="0.6", lw=1, ls="--", label="ρ(whole) = product")
    cmap = plt.get_cmap("tab10")
    for i, (_, r) in enumerate(table.iterrows()):
        color = cmap(i % cmap.N)
        x, y = r["product"], r["rho"]
        if not (math.isfinite(x) and math.isfinite(y)):
            ax.plot([], [], ls=":", color=color, label=f"{r['claim']} (no estimate)")
            continue
        if not r["identified"]:
            ax.vlines(x, r["lo"], r["hi"], colors=[color], linestyles=":", lw=2,
                      label=f"{r['claim']} (not identified: 95% intervals)")
            ax.hlines(y, r["product_lo"], r["product_hi"], colors=[color], linestyles=":", lw=2)
            continue
        ax.errorbar([x], [y], yerr=[[max(y - r["lo"], 0)], [max(r["hi"] - y, 0)]],
                    xerr=[[max(x - r["product_lo"], 0)], [max(r["product_hi"] - x, 0)]],
                    fmt="o", color=color, capsize=3, label=r["claim"])
    ends = table[["hi", "product_hi"]].to_numpy(dtype=float) if len(table) else np.zeros(1)
    top = max(1.05, float(np.nanmax(ends, initial=0.0)) + 0.05)
    top = min(top, 3.0)  # an interval reaching past 3 is cut at the frame
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("product of the parts' measured ρ (95% interval)")
    ax.set_ylabel("measured ρ of the combined representation (95% interval)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)
