"""GMSE against bits per value, with Shannon's bound and the best scalar quantizer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from capscale.capacity.bounds import scalar_bound, shannon_bound
from capscale.formats import parse_format
from capscale.plot_labels import log_limits, place_labels

FAMILY_COLOURS = {
    "scalar": "tab:blue", "sparse": "tab:orange", "sparse+scalar": "tab:red",
    "vector": "tab:green", "outliers+scalar": "tab:purple", "dense": "black",
}


def plot_gmse(table: pd.DataFrame, path: str, title: str = "GMSE of formats on N(0, 1) data") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from capscale.io import atomic_write

    df = table[np.isfinite(table["bits_per_value"]) & (table["gmse"] > 0)]
    fig, ax = plt.subplots(figsize=(9, 6))
    hi = max(9.0, float(df["bits_per_value"].max()) + 0.5) if len(df) else 9.0
    b = np.linspace(0.5, hi, 400)
    ax.plot(b, [shannon_bound(x) for x in b], "k--", lw=1, label="Shannon bound $4^{-b}$")
    bi = np.arange(1, int(np.floor(hi)) + 1)
    ax.step(bi, [scalar_bound(x) for x in bi], "k:", where="post", lw=1,
            label="best scalar grid (Lloyd–Max, $2^b$ levels)")
    seen = set()
    for _, row in df.iterrows():
        kind = parse_format(row["spec"]).kind
        colour = FAMILY_COLOURS.get(kind, "tab:gray")
        ax.errorbar(row["bits_per_value"], row["gmse"], yerr=row.get("gmse_se", 0) or None, fmt="o",
                    color=colour, ms=5, label=kind if kind not in seen else None)
        seen.add(kind)
    ax.set_yscale("log")
    if len(df):
        ax.set_xlim(0.5, float(df["bits_per_value"].max()) + 0.6)
        ax.set_ylim(*log_limits(list(df["gmse"]) + [shannon_bound(float(df["bits_per_value"].max()))], 1.5))
    ax.set_xlabel("bits per value (codes, scales, masks and indices)")
    ax.set_ylabel("GMSE  (E‖x̂−x‖² / E‖x‖², x ~ N(0, I))")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    place_labels(ax, df["bits_per_value"].to_numpy(float), df["gmse"].to_numpy(float),
                 df["spec"].tolist(), fontsize=7)
    suffix = str(path).rsplit(".", 1)[-1] if "." in str(path) else "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format=suffix, bbox_inches="tight"))
    plt.close(fig)
    return str(path)
