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


def plot_loss_vs_n(fit: FitResult, df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Measured loss against N, one colour per representation, with the fitted curve of each
    at its runs' median tokens per parameter."""
    plt = _plt()
    keys = np.array(_keys(fit, df))
    uniq = list(dict.fromkeys(keys))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    cmap = plt.get_cmap("tab20" if len(uniq) > 10 else "tab10")
    for i, k in enumerate(uniq):
        sub = df[keys == k]
        color = cmap(i % cmap.N)
        ax.scatter(sub["N"], sub["loss"], s=18, color=color, label=k, zorder=3)
        ratio = float(np.median(sub["D"] / sub["N"]))
        Ns = np.geomspace(df["N"].min() / 1.3, df["N"].max() * 1.3, 80)
        curve = pd.concat([sub.iloc[[0]]] * len(Ns), ignore_index=True)
        curve["N"] = Ns
        curve["D"] = ratio * Ns
        try:
            pred = fit.predict(curve)["loss"]
        except Exception:
            continue
        ax.plot(Ns, pred, color=color, lw=1.2, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("N (non-embedding parameters)")
    ax.set_ylabel("loss")
    ax.set_title(f"{fit.law.name} fit: measured (points) and fitted (lines, at each format's D/N)")
    if len(uniq) <= 24:
        ax.legend(fontsize=7, ncol=2 if len(uniq) > 8 else 1, loc="upper right")
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
    draw Shannon's bound GMSE ≥ 4^(−b) at each b, and the capacity the curve allows there
    (no b-bit format can lie left of its line)."""
    plt = _plt()
    law = fit.law
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    g = np.geomspace(1e-4, 0.99, 200)
    nat = dict(zip(law.natural_names, fit.natural))
    for group in law.groups:
        ax.plot(g, law.rho(nat, g, group), label=f"fitted ρ(GMSE): {group}")
    for i, b in enumerate(bits):
        x = 4.0 ** (-b)
        ax.axvline(x, color="0.6", ls=":", lw=0.9,
                   label="Shannon bound $4^{-b}$ (b bits)" if i == 0 else None)
        ax.annotate(f"{b} bit{'s' if b > 1 else ''}", (x, 0.02), xycoords=("data", "axes fraction"),
                    fontsize=7, color="0.4", rotation=90, xytext=(2, 0), textcoords="offset points")
        ax.plot([x], [float(law.rho(nat, np.array([x]), law.groups[0])[0])], marker="|",
                color="0.4", ms=8)
    points = measured.info.get("derived_eff", {}) if measured is not None else {}
    labelled = False
    for key, (v, lo, hi) in points.items():
        comp = [p for p in key.split(rep.KEY_SEPARATOR) if not rep.is_dense(p)]
        if not comp or len(set(comp)) != 1:
            continue
        try:
            x = rep.spec_gmse(comp[0])
        except Exception:
            continue
        k = len(comp)
        y = v ** (1 / k)
        err = None
        if math.isfinite(lo):
            err = [[max(y - lo ** (1 / k), 0)], [max(hi ** (1 / k) - y, 0)]]
        ax.errorbar([x], [y], yerr=err, fmt="o" if k == 1 else "s", ms=4, color="k",
                    capsize=2, label=None if labelled else "decoupled fit, per operand")
        labelled = True
        ax.annotate(key, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("GMSE (MSE on N(0,1) data)")
    ax.set_ylabel("capacity ρ per operand")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
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
    against the linear compute cost when the fit has weights and activations."""
    plt = _plt()
    two = "cost_linear" in table
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(12 if two else 6.5, 4.8))
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
        for _, r in table.iterrows():
            ax.annotate(r["format"], (r[xcol], r["rho"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        if xcol == "bits_weights":
            front = table[table["pareto_bits"]].sort_values(xcol)
            ax.step(front[xcol], front["rho"], where="post", color="k", lw=0.8,
                    label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("capacity ρ (effective parameters per parameter)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
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
    """Measured ρ (decoupled fit, 95% bootstrap interval as error bars; hollow where not
    identified) against ρ predicted from GMSE with the paper's constants, with the line of
    agreement. ``table`` is :func:`capscale.laws.measure.measured_capacity`'s."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.plot([0, 1.05], [0, 1.05], color="0.6", lw=1, ls="--", label="measured = predicted")
    cmap = plt.get_cmap("tab20" if len(table) > 10 else "tab10")
    for i, (_, r) in enumerate(table.iterrows()):
        color = cmap(i % cmap.N)
        x, y = r["rho_gmse"], r["rho"]
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        lo, hi = r["lo"], r["hi"]
        err = ([[max(y - lo, 0)], [max(hi - y, 0)]] if math.isfinite(lo) and math.isfinite(hi)
               else None)
        ok = bool(r["identified"])
        ax.errorbar([x], [min(y, 1.5)], yerr=err if ok else None, fmt="o", color=color,
                    mfc=color if ok else "none", capsize=3,
                    label=r["format"] + ("" if ok else " (not identified)"))
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("ρ predicted from GMSE (L 1.0, F 0.41, C 1.39)")
    ax.set_ylabel("ρ measured (decoupled fit, 95% interval)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)
