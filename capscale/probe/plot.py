"""One panel per format: the relative MSE of each real tensor against the MSE of a Gaussian
tensor of the same shape, with the format's GMSE marked; above the diagonal the real tensor
is harder to represent than Gaussian data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

KIND_COLOURS = {"weight": "tab:blue", "activation": "tab:orange", "synthetic": "tab:green"}


def plot_probe(tensors: pd.DataFrame, path: str, title: str = "formats on real tensors") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from capscale.io import atomic_write

    specs = list(dict.fromkeys(tensors["format"]))
    cols = min(3, len(specs))
    rows = math.ceil(len(specs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, spec in zip(axes.flat, specs):
        d = tensors[(tensors["format"] == spec) & (tensors["rel_mse"] > 0)
                    & (tensors["gauss_same_shape"] > 0)]
        for kind, grp in d.groupby("kind"):
            ax.scatter(grp["gauss_same_shape"], grp["rel_mse"], s=14, alpha=0.75,
                       color=KIND_COLOURS.get(kind, "tab:gray"), label=kind)
            if kind == "synthetic":
                for _, r in grp.iterrows():
                    ax.annotate(r["tensor"], (r["gauss_same_shape"], r["rel_mse"]), fontsize=6,
                                xytext=(3, 2), textcoords="offset points")
        gm = float(tensors.loc[tensors["format"] == spec, "gmse"].iloc[0])
        vals = np.concatenate([d["gauss_same_shape"], d["rel_mse"], [gm]])
        lo, hi = float(vals.min()) / 1.5, float(vals.max()) * 1.5
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="real = Gaussian")
        ax.axvline(gm, color="gray", lw=0.8, ls=":", label=f"GMSE {gm:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(spec, fontsize=10)
        ax.set_xlabel("MSE on Gaussian, same shape", fontsize=8)
        ax.set_ylabel("relative MSE on the real tensor", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(specs):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    suffix = str(path).rsplit(".", 1)[-1] if "." in str(path) else "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=suffix))
    plt.close(fig)
    return str(path)
