"""Runs one small training run on synthetic data; launched by the trainer tests as a
subprocess (plain, killed mid-way, or under torchrun)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from synthetic import synthetic_data  # noqa: E402

from capscale.train import TrainConfig, train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--ckpt-every", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=8)
    p.add_argument("--w", default="none")
    p.add_argument("--a", default="none")
    p.add_argument("--grad", default="trust")
    p.add_argument("--slow-after", type=int, default=None, help="sleep 0.5 s per step from here")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)

    def delay(step: int) -> None:
        if args.slow_after is not None and step >= args.slow_after:
            time.sleep(0.5)

    cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=32 * 16, steps=args.steps,
                      ckpt_every=args.ckpt_every, eval_every=args.eval_every, val_tokens=2048,
                      out=args.out, progress=False, log_every=4, w_format=args.w, a_format=args.a,
                      grad=args.grad)
    result = train(cfg, data=synthetic_data(delay=delay), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"loss": result["loss"], "status": result["status"]}))


if __name__ == "__main__":
    main()
