"""`capscale plan --format SPEC ... --target HW`: the cheapest sweep that measures each
format's capacity ρ to a target precision, confirmed by simulated refits."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT1, INTEGER, POSITIVE, number

HELP = ("plan the cheapest sweep that measures each format's capacity rho to a target 95% "
        "half-width (designed at a prior fit, confirmed by simulated refits; writes a sweep TOML)")


def _floats(text: str) -> list[float]:
    from capscale.numbers import parse_number

    return [float(parse_number(v, name="--tokens-per-param", lo=0, lo_open=True))
            for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", dest="formats", action="append", metavar="SPEC", required=True,
                   help="a format to measure (repeat); one spec names weights and activations, "
                        "W/A each (e.g. int4:had/none). Dense runs are always included")
    p.add_argument("--target", type=POSITIVE, required=True, metavar="HW",
                   help="95%% half-width wanted on every format's rho, e.g. 0.02")
    p.add_argument("--prior", default="builtin:quest-unified", metavar="FIT",
                   help="the law the design is planned at: a fit JSON or builtin:NAME "
                        "(default builtin:quest-unified; a unified fit knows any spec's GMSE)")
    p.add_argument("--noise", type=POSITIVE, metavar="NATS",
                   help="standard deviation of the final loss across seeds (default: from the "
                        "prior's residuals)")
    p.add_argument("--scale", choices=["paper", "cpu"], default="paper",
                   help="model ladder: paper (30M-200M, 25-200 tokens/param) or cpu (30k-1M)")
    p.add_argument("--sizes", metavar="S,...", help="model sizes instead of the ladder's (e.g. 30M,100M)")
    p.add_argument("--tokens-per-param", metavar="R,...", help="token budgets instead of the ladder's")
    p.add_argument("--max-seeds", type=COUNT1, default=16, help="most seeds of one run (default 16)")
    p.add_argument("--runs", metavar="TABLE",
                   help="runs already done (a sweep's runs.csv): say whether the target is met "
                        "and which runs to add next")
    c = p.add_argument_group("cost (as in `capscale sweep --dry-run`)")
    c.add_argument("--accelerator", default=None, help="h100 (default), h200, a100, b200")
    c.add_argument("--mfu", type=number(0, 1, lo_open=True), default=None, help="assumed model FLOPs utilisation (default 0.3)")
    s = p.add_argument_group("confirmation")
    s.add_argument("--sims", type=number(200, integer=True), default=400, help="simulated refits (default 400, at least 200)")
    s.add_argument("--seed", type=INTEGER, default=0)
    p.add_argument("-o", "--output", metavar="PLAN.toml", help="write the new runs as a sweep spec")
    p.add_argument("--name", default=None, help="sweep name in the TOML (default: from -o)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import math
    from pathlib import Path

    import numpy as np

    from capscale.errors import CapscaleError
    from capscale.io import atomic_write_text
    from capscale.laws.builtin_fits import load_fit, residual_scale
    from capscale.laws.table import load_runs
    from capscale.plan import LADDERS, hours_to_target, make_plan, plan_toml

    prior = load_fit(args.prior)
    if args.noise is not None:
        noise, noise_src = args.noise, "--noise"
    else:
        noise, noise_src = residual_scale(prior)
    cost = {k: v for k, v in (("accelerator", args.accelerator), ("mfu", args.mfu)) if v is not None}
    done = load_runs(args.runs) if args.runs else None
    try:
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()] if args.sizes else None
        tpp = _floats(args.tokens_per_param) if args.tokens_per_param else None
    except ValueError as e:
        raise CapscaleError(f"--tokens-per-param: {e}") from None
    plan = make_plan(args.formats, prior, target=args.target, noise=noise, scale=args.scale,
                     sizes=sizes, tokens_per_param=tpp, cost=cost, n_sims=args.sims,
                     seed=args.seed, done=done, max_replicas=args.max_seeds)
    accel = (args.accelerator or "h100").upper()
    conf = plan.confirmed.set_index("format")
    pred = plan.predicted.set_index("format")
    keys = list(plan.target)
    comps = []
    for label, c in plan.comparisons.items():
        hw = c["confirmed"].set_index("format")["half_width"].reindex(keys).to_numpy()
        comps.append({"design": label, "runs": len(c["runs"]), "hours": c["hours"],
                      "half_width": dict(zip(keys, [None if not np.isfinite(v) else float(v) for v in hw])),
                      "hours_to_target": hours_to_target(c["hours"], hw, args.target)})
        h2t = comps[-1]["hours_to_target"]
        ok = plan.met and math.isfinite(h2t)
        comps[-1]["saving_hours"] = h2t - plan.hours if ok else None
        comps[-1]["saving_fraction"] = 1 - plan.hours / h2t if ok and h2t > 0 else None
    measured = _measured(done, keys, args.target, args.seed) if done is not None else None
    name = args.name or (Path(args.output).stem if args.output else "plan")
    toml = plan_toml(plan, name=name, scale=args.scale, cost=cost)
    est = None
    if len(plan.runs):
        from capscale.sweep.cost import estimate
        from capscale.sweep.spec import spec_from_text

        est = estimate(spec_from_text(toml, source="plan.toml"))  # the cost `sweep --dry-run` shows
        if args.output:
            atomic_write_text(args.output, toml + "\n")
    rows = [{"format": k, "rho_prior": float(conf.loc[k, "rho_true"]),
             "predicted_half_width": float(pred.loc[k, "half_width"]),
             "confirmed_half_width": _num(conf.loc[k, "half_width"]),
             "identified": bool(conf.loc[k, "identified"]), "target": args.target,
             "met": bool(np.isfinite(conf.loc[k, "half_width"]) and conf.loc[k, "half_width"] <= args.target)}
            for k in keys]
    if args.json:
        out = {"formats": args.formats, "target": args.target, "prior": args.prior,
               "noise": noise, "noise_source": noise_src, "scale": args.scale, "n_sims": args.sims,
               "met": plan.met, "hours": plan.hours, "accelerator": accel,
               "runs": [{"N": int(r.N), "D": int(r.D), "w_format": r.w_format, "a_format": r.a_format,
                         "seed": int(r.seed), "size": r.size, "tokens_per_param": float(r.tokens_per_param),
                         "hours": float(r.hours)} for r in plan.runs.itertuples()],
               "half_width": {r["format"]: r["predicted_half_width"] for r in rows},
               "formats_detail": rows, "comparisons": comps, "notes": plan.notes,
               "measured": measured,
               "output": args.output}
        print(json.dumps(_finite(out), indent=2, default=_jsonable, allow_nan=False))
        return 0
    print(f"plan: rho of {', '.join(keys)} to ±{args.target:g} (95%), designed at {args.prior}")
    print(f"loss noise {noise:.3g} nats ({noise_src}); ladder '{args.scale}' "
          f"({', '.join(sizes or LADDERS[args.scale]['sizes'])}; tokens/param "
          f"{', '.join(f'{t:g}' for t in (tpp or LADDERS[args.scale]['tokens_per_param']))})")
    if done is not None:
        print(f"runs done: {len(done)} (from {args.runs}); they count and cost nothing")
        if measured.get("error"):
            print(f"measured so far: not identified ({measured['error']})")
        else:
            for k, m in measured["formats"].items():
                hw = m["half_width"]
                state = ("not in the runs yet" if hw is None else
                         f"rho {m['rho']:.3f} ±{hw:.4f} (bootstrap of a decoupled fit to the runs "
                         f"done): {'meets' if hw <= args.target else 'misses'} ±{args.target:g}")
                print(f"  measured {k}: {state}")
    if len(plan.runs) == 0:
        print("\nno runs to add: the runs done already meet the target (confirmed below)")
    else:
        g = plan.runs.groupby(["size", "tokens_per_param", "w_format", "a_format"], sort=False)
        table = g.agg(seeds=("seed", "size"), hours=("hours", "sum")).reset_index()
        table["N"] = g["N"].first().to_numpy()
        print(f"\n{'next runs' if done is not None else 'design'}: {len(plan.runs)} runs, "
              f"{plan.hours:,.1f} {accel}-hours"
              + (f" ({est.describe()})" if est is not None else ""))
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nconfirmed by {args.sims} simulated experiments (losses drawn from the prior with "
          f"N(0, {noise:.3g}²) noise, each refitted with the decoupled law by capscale's fitter):")
    for r in rows:
        c = "not identified" if not r["identified"] else f"±{r['confirmed_half_width']:.4f}"
        print(f"  {r['format']:<22} rho {r['rho_prior']:.3f}  predicted ±{r['predicted_half_width']:.4f}"
              f"  simulated {c}  {'meets' if r['met'] else 'MISSES'} ±{args.target:g}")
    if not plan.met:
        print(f"warning: the target is not reached within {args.max_seeds} seeds per run on this "
              "ladder; raise --max-seeds, add sizes or token budgets, or relax --target")
    print("\nagainst the grids it replaces (simulated the same way; hours to target = repeating "
          "the grid with more seeds until every half-width meets it):")
    for c in comps:
        hw = ", ".join(f"{k} " + ("not identified" if v is None else f"±{v:.4f}")
                       for k, v in c["half_width"].items())
        h2t = c["hours_to_target"]
        if not math.isfinite(h2t):
            saving = "the grid never reaches the target"
        elif c["saving_hours"] is None:
            saving = "no saving claimed: the plan misses the target"
        else:
            saving = f"saving {c['saving_hours']:,.1f} h ({c['saving_fraction']:.0%})"
        print(f"  {c['design']}: {c['runs']} runs, {c['hours']:,.1f} h: {hw}; hours to target "
              f"{'inf' if not math.isfinite(h2t) else f'{h2t:,.1f}'}; {saving}")
    for n in plan.notes:
        print(f"note: {n}")
    if args.output:
        print(f"wrote {args.output}" if len(plan.runs) else f"nothing to write to {args.output}")
    return 0


def _num(v) -> float | None:
    import math

    v = float(v)
    return v if math.isfinite(v) else None


def _jsonable(v):
    import math

    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else None


def _finite(obj):
    """JSON has no infinity: a number a design never reaches is null."""
    import math

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _measured(done, keys: list[str], target: float, seed: int) -> dict:
    """ρ of each format measured from the runs done: a decoupled fit with 200 bootstrap
    resamples (half-width of its 95% interval), or why it cannot be fitted yet."""
    from capscale.errors import CapscaleError
    from capscale.laws import fit_law

    try:
        fit = fit_law(done, "decoupled", n_bootstrap=200, heldout=False, seed=seed)
    except CapscaleError as e:
        return {"error": str(e)}
    out = {}
    for k in keys:
        name = f"eff[{k}]"
        if name not in fit.law.natural_names:
            out[k] = {"rho": None, "half_width": None}
            continue
        lo, hi = fit.interval(name)
        out[k] = {"rho": fit.param(name), "half_width": (hi - lo) / 2, "met": (hi - lo) / 2 <= target}
    return {"formats": out, "n_bootstrap": 200, "law": "decoupled"}
