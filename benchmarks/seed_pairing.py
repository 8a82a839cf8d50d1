"""Does training a format with the same seed as its dense twin pair their losses?

Seed s fixes the initialisation and the data order, so the run of a format and the dense run
of the same width and seed start alike. If their final losses moved together, the difference
would scatter less than either loss, and a design could measure ρ from paired differences
(common random numbers) with fewer runs. For each format of a study folder's runs table, at
the compressed budget, this prints the seed-to-seed standard deviation of the format's loss
(mean over widths) beside that of its difference from the dense run of the same width and
seed (STUDIES.md, "What limits identification").

    python benchmarks/seed_pairing.py STUDY_DIR
"""

from __future__ import annotations

import sys

import pandas as pd


def pairing(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs[runs["D"] == runs["D"].max()]
    dense_rows = (runs["w_format"] == "none") & (runs["a_format"] == "none")
    dense = runs[dense_rows].set_index(["N", "seed"])["loss"]
    rows = []
    for (w, a), sub in runs[~dense_rows].groupby(["w_format", "a_format"]):
        both = pd.concat([sub.set_index(["N", "seed"])["loss"], dense], axis=1,
                         keys=["fmt", "dense"]).dropna()
        per_n = both.groupby(level="N")
        rows.append({"format": f"{w}/{a}", "pairs": len(both),
                     "sd_format": per_n["fmt"].std().mean(),
                     "sd_paired_difference": (both["fmt"] - both["dense"]).groupby(level="N").std().mean()})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[-1].strip())
    table = pairing(pd.read_csv(f"{sys.argv[1]}/runs.csv"))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
