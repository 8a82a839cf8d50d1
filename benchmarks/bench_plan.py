"""Design quality of `capscale plan`: the planned design against the full grid and against
random designs of the same cost, all confirmed the same way (losses drawn from the prior with
noise, each experiment refitted by capscale's decoupled fit).

Printed per design: runs, accelerator-hours, the simulated 95% half-width of each format's ρ,
and half-width × √hours — the precision per unit of cost, which does not change when a design
is repeated with more seeds (lower is better); the ratio of the grid's and the random designs'
figure to the plan's is the saving factor at equal precision.

    python benchmarks/bench_plan.py                       # builtin:quest-unified prior
    python benchmarks/bench_plan.py --random 10 --sims 200
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from capscale.laws.builtin_fits import load_fit, residual_scale
from capscale.laws.design import simulate_design
from capscale.plan import candidates, make_plan


def figure(label: str, runs: pd.DataFrame, hours: float, conf: pd.DataFrame, keys) -> dict:
    hw = conf.set_index("format")["half_width"].reindex(keys).to_numpy()
    worst = float(np.max(hw)) if np.all(np.isfinite(hw)) else math.inf
    return {"design": label, "runs": len(runs), "hours": hours,
            **{f"hw {k}": v for k, v in zip(keys, hw)},
            "hw x sqrt(h)": worst * math.sqrt(hours)}


def random_design(cand: pd.DataFrame, budget: float, rng) -> pd.DataFrame:
    """Runs drawn uniformly from the candidates (repeats are further seeds) until the next
    one would exceed the budget; dense and compressed runs alike."""
    rows, spent, seeds = [], 0.0, {}
    order = rng.permutation(np.repeat(np.arange(len(cand)), 16))
    for i in order:
        h = float(cand.iloc[i]["hours"])
        if spent + h > budget:
            continue
        seeds[i] = seeds.get(i, -1) + 1
        rows.append({**cand.iloc[i].to_dict(), "seed": seeds[i]})
        spent += h
    return pd.DataFrame(rows), spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="builtin:quest-unified")
    ap.add_argument("--format", dest="formats", action="append")
    ap.add_argument("--target", type=float, default=0.02)
    ap.add_argument("--scale", default="paper")
    ap.add_argument("--random", type=int, default=20, help="random designs of the plan's cost")
    ap.add_argument("--sims", type=int, default=400)
    args = ap.parse_args()
    formats = args.formats or ["int4", "nvfp4"]
    prior = load_fit(args.prior)
    noise, src = residual_scale(prior)
    t0 = time.perf_counter()
    plan = make_plan(formats, prior, target=args.target, noise=noise, scale=args.scale,
                     n_sims=args.sims)
    t_plan = time.perf_counter() - t0
    keys = list(plan.target)
    rows = [figure("planned", plan.runs, plan.hours, plan.confirmed, keys)]
    for label, c in plan.comparisons.items():
        rows.append(figure(label, c["runs"], c["hours"], c["confirmed"], keys))
    cand = candidates(formats, scale=args.scale)
    rng = np.random.default_rng(0)
    rand = []
    for r in range(args.random):
        runs, spent = random_design(cand, plan.hours, rng)
        try:
            conf = simulate_design(runs, prior, noise=noise, n_sims=args.sims, seed=r)
            rand.append(figure(f"random #{r}", runs, spent, conf, keys))
        except Exception as e:  # a random design may not even be fittable
            rand.append({"design": f"random #{r}", "runs": len(runs), "hours": spent,
                         "hw x sqrt(h)": math.inf, "error": str(e)[:60]})
    rt = pd.DataFrame(rand)
    finite = np.isfinite(rt["hw x sqrt(h)"])
    summary = {"design": f"random, same cost (median of {len(rt)}; {int(finite.sum())} identify ρ)",
               "runs": float(rt["runs"].median()), "hours": float(rt["hours"].median())}
    for k in keys:
        col = f"hw {k}"
        summary[col] = float(rt[col].median()) if col in rt and rt[col].notna().any() else math.nan
    summary["hw x sqrt(h)"] = float(rt["hw x sqrt(h)"].median())
    rows.append(summary)
    table = pd.DataFrame(rows)
    base = rows[0]["hw x sqrt(h)"]
    table["ratio to plan"] = table["hw x sqrt(h)"] / base
    pd.set_option("display.width", 200)
    print(f"prior {args.prior}; noise {noise:.4g} nats ({src}); target ±{args.target}; "
          f"{args.sims} simulated refits per design; plan made in {t_plan:.1f} s")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("hw x sqrt(h): the worst format's half-width times √(accelerator-hours); "
          "(ratio to plan)² = how many times the plan's hours that design needs for the same precision")


if __name__ == "__main__":
    main()
