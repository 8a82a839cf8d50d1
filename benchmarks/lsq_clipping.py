"""How much of each activation a trained LSQ run's learned grids clip.

Loads a finished run's last checkpoint, feeds it sequences of its own validation split, and
prints per compressed layer the activations' RMS and largest magnitude, where the learned grid
puts its outermost level, and the share of values beyond it. STUDIES.md (study `lsq`) uses it
to show that LSQ's activation steps, initialised on the first batch of a model trained from
scratch, end inside the blocks' outputs.

    python benchmarks/lsq_clipping.py RUN_DIR [RUN_DIR ...] [--sequences 16]
"""

from __future__ import annotations

import argparse
import glob
import json

import numpy as np
import torch
from safetensors.torch import load_file

from capscale.data.tokens import prepare_tokens
from capscale.train.config import TrainConfig, plan
from capscale.train.loop import build_model


def clipping(run_dir: str, sequences: int) -> list[tuple[str, float, float, float, float]]:
    saved = json.load(open(f"{run_dir}/config.json"))
    cfg = TrainConfig.from_dict(saved["config"])
    if cfg.grad != "lsq" or ":had" in cfg.a_format or "+" in cfg.a_format:
        raise SystemExit(f"{run_dir}: --grad {cfg.grad}, --a {cfg.a_format}: this reads LSQ's "
                         "grid (step × Q_P) on untransformed activations only (a plain int, fp "
                         "or nf4 spec with --grad lsq)")
    data = prepare_tokens(cfg.data, cfg.tokenizer, cache_dir=cfg.data_cache,
                          val_tokens=cfg.val_tokens, progress=False)
    model, _ = build_model(cfg, plan(cfg, data.vocab_size))
    final = sorted(glob.glob(f"{run_dir}/checkpoints/step_*"))[-1]
    model.load_state_dict(load_file(f"{final}/model.safetensors"))  # every scale, or fail
    model.eval()
    val = np.asarray(data.val[: sequences * cfg.seq_len], dtype=np.int64)
    tokens = torch.from_numpy(val.reshape(sequences, cfg.seq_len))
    inputs = {}
    layers = {n: m for n, m in model.named_modules() if getattr(m, "a_scale", None) is not None}
    for name, m in layers.items():
        m.register_forward_pre_hook(lambda mod, inp, name=name: inputs.__setitem__(name, inp[0]))
    with torch.no_grad():
        model(tokens)
    rows = []
    for name, m in layers.items():
        x = inputs[name].float()
        outer = float((m.a_scale.step.detach().abs() * m.a_scale.q_p).max())
        rows.append((name, x.pow(2).mean().sqrt().item(), x.abs().max().item(), outer,
                     (x.abs() > outer).float().mean().item()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="finished run folders with a learned-scale rule")
    ap.add_argument("--sequences", type=int, default=16, help="validation sequences fed")
    args = ap.parse_args()
    for run in args.runs:
        print(run)
        print(f"  {'layer':<22} {'act rms':>8} {'act max':>8} {'outer level':>12} {'clipped':>8}")
        for name, rms, mx, outer, clipped in clipping(run, args.sequences):
            print(f"  {name:<22} {rms:8.4f} {mx:8.3f} {outer:12.4f} {clipped:8.1%}")


if __name__ == "__main__":
    main()
