"""Multi-start Chinchilla fit: all 4,500 starts at once (capscale) vs one scipy call per start.

Both sides minimise the same Huber objective (δ = 1e-3 on log loss, the same analytic
gradient) from Hoffmann et al.'s 4,500 starting points on Epoch AI's 240 Chinchilla runs,
with BLAS on one thread. The baseline is what the replication code does: for every start,
``scipy.optimize.minimize(method="L-BFGS-B")``, keep the best. Printed: wall times, the ratio,
and the best objective and parameters of each side (they must agree).

    python benchmarks/bench_fit.py            # full comparison (the loop takes ~30 s)
    python benchmarks/bench_fit.py --quick    # 500 starts on each side
    python benchmarks/bench_fit.py --whole-command [--repeats 3]
        # the whole `capscale fit builtin:chinchilla --bootstrap 1000` command (interpreter
        # start, imports, 4,500 starts, 1,000 bootstrap refits, held-out fit, output) against
        # the per-start scipy loop over the same starts, alternately, medians
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from capscale.laws import fit as fit_module
from capscale.laws import fit_law, load_builtin
from capscale.laws.forms import make_law
from capscale.laws.optim import HuberObjective, multistart, single_threaded_blas


def per_start_loop(obj: HuberObjective, starts: np.ndarray):
    def fg(x):
        f, g = obj(x[None, :])
        return float(f[0]), g[0]

    best_f, best_x = np.inf, None
    for x0 in starts:
        r = minimize(fg, x0, jac=True, method="L-BFGS-B")
        if r.fun < best_f:
            best_f, best_x = r.fun, r.x
    return best_x, best_f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 starts instead of 4,500")
    ap.add_argument("--repeats", type=int, default=3,
                    help="repeats of the batched fit (best kept); with --whole-command, of the "
                         "command and the loop, alternately (medians kept)")
    ap.add_argument("--whole-command", action="store_true",
                    help="time the whole `capscale fit` command against the per-start loop")
    args = ap.parse_args()
    if args.whole_command:
        whole_command(args.repeats)
        return

    df = load_builtin("chinchilla")
    law = make_law("chinchilla", df)
    obj = HuberObjective(law, law.design(df), df["loss"].to_numpy())
    starts = law.start_grid()
    if args.quick:
        starts = starts[np.random.default_rng(0).choice(len(starts), 500, replace=False)]
    names = law.natural_names

    timings = {}
    results = {}
    for label, prune in (("batched, successive halving (default)", True),
                         ("batched, every start to convergence", False)):
        best = np.inf
        for _ in range(args.repeats):
            t = time.perf_counter()
            ms = multistart(obj, starts, prune=prune)
            best = min(best, time.perf_counter() - t)
        timings[label], results[label] = best, (ms.theta, ms.value)

    with single_threaded_blas():
        t = time.perf_counter()
        x_loop, f_loop = per_start_loop(obj, starts)
        timings["scipy L-BFGS-B, one call per start"] = time.perf_counter() - t
    results["scipy L-BFGS-B, one call per start"] = (x_loop, f_loop)

    print(f"Chinchilla (Epoch AI, 240 runs), {len(starts)} starts, Huber 1e-3 on log loss")
    base = timings["scipy L-BFGS-B, one call per start"]
    for label, sec in timings.items():
        x, f = results[label]
        nat = law.to_natural(x)
        params = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, nat))
        print(f"  {label:<42} {sec:8.3f} s   ratio to loop {sec / base:7.4f}   "
              f"objective {f:.12g}   {params}")
    for label in timings:
        if label != "scipy L-BFGS-B, one call per start":
            print(f"speed-up over the per-start loop ({label}): {base / timings[label]:.1f}x")

    t = time.perf_counter()
    fit = fit_law(df, "chinchilla", n_bootstrap=1000, heldout=True)
    print(f"full `fit_law` (4,500 starts + 1,000 bootstrap refits + held-out fit): "
          f"{time.perf_counter() - t:.2f} s; alpha 95% interval "
          f"[{fit.interval('alpha')[0]:.4f}, {fit.interval('alpha')[1]:.4f}]")


def whole_command(repeats: int) -> None:
    """The user's command, start to finish, in a fresh interpreter, alternated with the scipy
    loop in this process; medians of wall and CPU time (the command's CPU time includes any
    worker processes it forks). One untimed run first, as a user's first run: it warms the
    file cache and, unless PYTHONDONTWRITEBYTECODE is set, writes the bytecode cache of the
    capscale modules. The output says whether they start from that cache (without it every
    start compiles them again, about 0.07 s)."""
    df = load_builtin("chinchilla")
    law = make_law("chinchilla", df)
    obj = HuberObjective(law, law.design(df), df["loss"].to_numpy())
    starts = law.start_grid()
    walls: dict[str, list[float]] = {"command": [], "loop": []}
    cpus: dict[str, list[float]] = {"command": [], "loop": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fit.json"
        argv = [sys.executable, "-m", "capscale", "fit", "builtin:chinchilla",
                "--bootstrap", "1000", "-o", str(out)]
        subprocess.run(argv, check=True, capture_output=True)
        for _ in range(repeats):
            r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            walls["command"].append(time.perf_counter() - t)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus["command"].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            with single_threaded_blas():
                c, t = time.process_time(), time.perf_counter()
                x_loop, f_loop = per_start_loop(obj, starts)
                walls["loop"].append(time.perf_counter() - t)
                cpus["loop"].append(time.process_time() - c)
        fit = json.loads(out.read_text())
    wall = {k: statistics.median(v) for k, v in walls.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    cached = Path(importlib.util.cache_from_source(fit_module.__file__)).exists()
    print(f"Chinchilla (Epoch AI, 240 runs), {len(starts)} starts; median of {repeats}, "
          f"alternating; capscale's modules {'' if cached else 'not '}from a bytecode cache")
    print(f"`capscale fit builtin:chinchilla --bootstrap 1000` (whole command): "
          f"wall {wall['command']:.2f} s, CPU {cpu['command']:.2f} s   "
          f"objective {fit['objective']['huber_mean_abs']:.12g}")
    print(f"scipy L-BFGS-B, one call per start (fit only): wall {wall['loop']:.2f} s, "
          f"CPU {cpu['loop']:.2f} s   objective {f_loop:.12g}")
    print(f"speed-up of the whole command over the per-start loop: "
          f"{wall['loop'] / wall['command']:.1f}x wall, {cpu['loop'] / cpu['command']:.1f}x CPU")


if __name__ == "__main__":
    main()
