"""Training speed of compressed layers and of the trainer, as ratios measured in one process.

1. Step time (forward + backward + AdamW) of the model with int4:had on weights and
   activations, with sparse0.5+int4 weights, and with int4 weights and activations under
   LSQ's learned scales, each divided by the step time of the dense model (goal on CPU:
   <= 1.3x).
2. Tokens/s of ``capscale.train.train`` on the dense model divided by the tokens/s of a
   minimal plain-PyTorch loop over the same model, batches and optimizer (goal: >= 0.95x).

Measurements alternate between the variants and report medians, so that a busy machine
slows all of them alike. On a GPU it also reports tokens/s and model-FLOPs utilisation.

    python benchmarks/bench_train.py                      # CPU defaults (1M and 5M models)
    python benchmarks/bench_train.py --sizes 30M --seq-len 512 --batch 16 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from capscale.model import Llama, compress_model, config_for_size
from capscale.train import RunData, TrainConfig, train
from capscale.train.optim import build_optimizer

# (name, weight format, activation format, gradient rule)
VARIANTS = (("dense", "none", "none", "trust"), ("int4:had W+A", "int4:had", "int4:had", "trust"),
            ("sparse0.5+int4 W", "sparse0.5+int4", "none", "trust"),
            ("int4 W+A lsq", "int4", "int4", "lsq"))
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s


def random_data(vocab: int, n_tokens: int = 1 << 20, seed: int = 0) -> RunData:
    tokens = np.random.default_rng(seed).integers(0, vocab, n_tokens)

    def train_batches(batch_size, seq_len, data_seed):
        def batch(step):
            rng = np.random.default_rng([data_seed, step])
            starts = rng.integers(0, n_tokens - seq_len - 1, size=batch_size)
            w = tokens[starts[:, None] + np.arange(seq_len + 1)]
            return w[:, :-1], w[:, 1:]
        return batch

    def val_batches(batch_size, seq_len, max_tokens):
        w = tokens[: seq_len + 1][None]
        yield w[:, :-1], w[:, 1:]

    return RunData(vocab, train_batches, val_batches, {"data": "random"})


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(size, vocab, seq_len, batch, device, repeats, dtype):
    cfg = config_for_size(size, vocab, seq_len)
    x = torch.randint(0, vocab, (batch, seq_len), device=device)
    y = torch.randint(0, vocab, (batch, seq_len), device=device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16"
                else torch.autocast(device.type, enabled=False))
    models = {}
    for name, w, a, rule in VARIANTS:
        torch.manual_seed(0)
        m = Llama(cfg)
        compress_model(m, w, a, grad_rule=rule)
        m.to(device)
        models[name] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95)))

    def step(m, opt):
        with autocast:
            loss = m(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for m, opt in models.values():
        for _ in range(2):
            step(m, opt)
    times = {k: [] for k in models}
    for _ in range(repeats):
        for k, (m, opt) in models.items():
            _sync(device)
            t = time.perf_counter()
            step(m, opt)
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return cfg, {k: statistics.median(v) for k, v in times.items()}


def minimal_loop(size, data, seq_len, batch, steps, device):
    """The smallest honest training loop: same model, batches, optimizer, clipping and LR."""
    cfg = TrainConfig(size=size, seq_len=seq_len, batch_tokens=seq_len * batch)
    torch.manual_seed(0)
    model = Llama(config_for_size(size, data.vocab_size, seq_len)).to(device)
    opt = build_optimizer(model, cfg, 1e-3)
    get = data.train_batches(batch, seq_len, 0)
    _sync(device)
    t = time.perf_counter()
    for i in range(steps):
        x, y = get(i)
        x, y = torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return steps * batch * seq_len / (time.perf_counter() - t)


def trainer_tokens_per_s(size, data, seq_len, batch, steps, device):
    cfg = TrainConfig(size=size, seq_len=seq_len, batch_tokens=seq_len * batch, micro_batch=batch,
                      steps=steps, eval_every=steps, val_tokens=seq_len, progress=False,
                      device=device.type, log_every=steps)
    return train(cfg, data=data)["tokens_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["1M", "5M"])
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--loop-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = "bf16" if device.type == "cuda" else "fp32"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU, {torch.get_num_threads()} threads")
    print(f"device: {where}; seq {args.seq_len} x batch {args.batch}; vocab {args.vocab}; {dtype}")
    for size in args.sizes:
        cfg, t = step_times(size, args.vocab, args.seq_len, args.batch, device, args.repeats, dtype)
        tokens = args.seq_len * args.batch
        line = [f"{size:>5} (N={cfg.non_embedding_params:,})"]
        for name, *_ in VARIANTS:
            line.append(f"{name}: {t[name] * 1e3:.1f} ms ({t[name] / t['dense']:.2f}x)")
        print("  step time  " + "; ".join(line))
        if device.type == "cuda":
            peak = next((v for k, v in PEAK_BF16.items() if k in where), None)
            for name, *_ in VARIANTS:
                tps = tokens / t[name]
                mfu = tps * cfg.flops_per_token(args.seq_len) / peak if peak else float("nan")
                print(f"             {name}: {tps:,.0f} tokens/s, MFU {mfu:.1%}")
        data = random_data(args.vocab)
        ours, plain = [], []
        for _ in range(3):
            ours.append(trainer_tokens_per_s(size, data, args.seq_len, args.batch, args.loop_steps, device))
            plain.append(minimal_loop(size, data, args.seq_len, args.batch, args.loop_steps, device))
        o, m = statistics.median(ours), statistics.median(plain)
        print(f"  trainer    {o:,.0f} tokens/s vs minimal loop {m:,.0f} tokens/s: {o / m:.3f}x")


if __name__ == "__main__":
    main()
