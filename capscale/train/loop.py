"""The training loop: one function, ``train(cfg)``, from a config to a result record.

Runs on one CPU, one GPU or many processes under ``torchrun`` with the same code: the
global batch of step i is a function of (seed, i), every rank takes its slice, gradients
are averaged by DDP, so N processes reproduce one process up to float summation order.
A run stops early, with status "diverged", when the training loss or the gradient norm
becomes NaN or infinite.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

import capscale
from capscale.errors import CapscaleError
from capscale.io import atomic_write_json
from capscale.model.compressed_linear import BLOCK_LINEARS, compress_model, grad_rule_from_config
from capscale.model.llama import Llama
from capscale.train import records
from capscale.train.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from capscale.train.config import RunPlan, TrainConfig, plan
from capscale.train.data import RunData, open_run_data
from capscale.train.distributed import Dist, all_reduce_sum, barrier, setup, teardown
from capscale.train.monitor import Monitor
from capscale.train.optim import build_optimizer
from capscale.train.schedule import lr_at

# Settings that may differ between a run and its resumption: they change how the run is
# watched or executed, not what it computes.
RUNTIME_FIELDS = ("device", "compile", "progress", "tensorboard", "wandb_project", "out")


def train(cfg: TrainConfig, data: RunData | None = None, resume: bool = False) -> dict:
    """Train a model as ``cfg`` says and return the result record.

    With ``cfg.out`` the run is a folder (config, metrics, checkpoints, result). ``resume``
    continues the run in ``cfg.out`` from its latest checkpoint using the saved config (only
    the runtime settings device/compile/progress/tensorboard/wandb of ``cfg`` apply); a
    finished run returns its existing result; a missing folder starts a fresh run.
    """
    ctx = setup(cfg.device)
    try:
        return _train(cfg, data, resume, ctx)
    finally:
        teardown()


def resolve_resume(cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, bool]:
    """The config to run with, and whether a checkpoint should be loaded."""
    if cfg.out is None:
        if resume:
            raise CapscaleError("--resume needs --out RUN_DIR (the run folder to continue)")
        return cfg, False
    saved_path = Path(cfg.out) / records.CONFIG
    if not saved_path.exists():
        return cfg, False
    if not resume:
        raise CapscaleError(
            f"run folder {cfg.out} already holds a run; pass --resume to continue it, "
            "or choose another --out"
        )
    saved = TrainConfig.from_dict(records.read_json(saved_path)["config"])
    for name in RUNTIME_FIELDS:
        setattr(saved, name, getattr(cfg, name))
    return saved, True


def _autocast(cfg: TrainConfig, device: torch.device):
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    if dtype == "fp32":
        return contextlib.nullcontext, "fp32"
    return (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)), "bf16"


def build_model(cfg: TrainConfig, p: RunPlan) -> tuple[nn.Module, dict]:
    """The Llama of the plan with its block linears compressed as the config says, and the
    compression report (canonical formats, gradient rule, the rule each format part uses)."""
    torch.manual_seed(cfg.seed)
    model = Llama(p.model)
    report = compress_model(model, cfg.w_format, cfg.a_format, grad_rule_from_config(cfg),
                            include=BLOCK_LINEARS)
    return model, report


def format_info(w_format: str, a_format: str) -> dict:
    """Canonical specs, bits per value and Gaussian MSE of the two formats (the capacity
    probe), for the run record."""
    out = {}
    for role, spec in (("w", w_format), ("a", a_format)):
        out[f"{role}_format"] = spec
        out[f"gmse_{role}"] = 0.0 if spec == "none" else None
        out[f"gmse_{role}_stderr"] = 0.0 if spec == "none" else None
        out[f"bits_{role}"] = 16.0 if spec == "none" else None
        if spec == "none":
            continue
        try:
            from capscale.capacity import gmse
        except ImportError:  # pragma: no cover - only without the capacity layer
            continue
        r = gmse(spec)
        out[f"gmse_{role}"] = float(r.gmse)
        out[f"gmse_{role}_stderr"] = float(r.stderr)
        out[f"bits_{role}"] = float(r.bits_per_value)
    return out


def _evaluate(model: nn.Module, batches, ctx: Dist, autocast) -> float:
    """Mean token cross-entropy over the validation windows, split over ranks."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for i, (x, y) in enumerate(batches):
            if i % ctx.world_size != ctx.rank:
                continue
            x = torch.as_tensor(x, device=ctx.device)
            y = torch.as_tensor(y, device=ctx.device)
            with autocast():
                loss = model(x, y)
            total[0] += loss.double() * y.numel()
            total[1] += y.numel()
    all_reduce_sum(total, ctx)
    model.train(was_training)
    if total[1] == 0:
        raise CapscaleError("the validation split is empty: use more data or a larger val fraction")
    return float(total[0] / total[1])


def _train(cfg: TrainConfig, data: RunData | None, resume: bool, ctx: Dist) -> dict:
    cfg, resuming = resolve_resume(cfg, resume)
    run_dir = Path(cfg.out) if cfg.out else None
    if run_dir is not None and resuming:
        done = records.load_result(run_dir)
        if done is not None:
            return done
    if data is None:  # the run length does not depend on the vocabulary: plan it first
        data = open_run_data(cfg, plan(cfg, 1, ctx.world_size, ctx.device.type).tokens)
    p = plan(cfg, data.vocab_size, ctx.world_size, ctx.device.type)
    autocast, compute_dtype = _autocast(cfg, ctx.device)

    raw, formats = build_model(cfg, p)
    if raw.non_embedding_params() != p.n_params:  # the model and its closed-form count agree
        raise AssertionError("non-embedding parameter count mismatch")
    raw.to(ctx.device)
    optimizer = build_optimizer(raw, cfg, p.lr)
    model: nn.Module = raw
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if cfg.compile:
        model = torch.compile(model)

    state = TrainState()
    metrics = records.MetricsLog(run_dir / records.METRICS if run_dir else Path(os.devnull),
                                 enabled=ctx.is_main and run_dir is not None)
    ckpt = latest_checkpoint(run_dir) if (run_dir is not None and resuming) else None
    info = format_info(formats["w_format"], formats["a_format"]) if ctx.is_main else {}
    if ckpt is not None:
        state = load_checkpoint(ckpt, raw, optimizer, ctx)
        metrics.truncate_after(state.step)
    elif resuming:  # killed before its first checkpoint: start over in the same folder
        metrics.truncate_after(0)
    elif run_dir is not None and ctx.is_main:
        record = {
            "config": cfg.to_dict(), "plan": p.to_dict(), "formats": info,
            "compression": formats, "data": data.info,
            "environment": {"capscale": capscale.__version__, "torch": torch.__version__,
                            "python": platform.python_version(), "device": str(ctx.device),
                            "world_size": ctx.world_size, "compute_dtype": compute_dtype,
                            "threads": torch.get_num_threads()},
            "command": sys.argv,
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / records.METRICS).exists():
            (run_dir / records.METRICS).unlink()
        atomic_write_json(run_dir / records.CONFIG, records.json_safe(record))
    barrier(ctx)

    get_batch = data.train_batches(p.batch_size, cfg.seq_len, cfg.seed)
    val_windows = list(data.val_batches(p.micro_batch, cfg.seq_len, cfg.val_tokens))
    per_rank = p.batch_size // ctx.world_size
    lo = ctx.rank * per_rank
    params = [q for q in raw.parameters() if q.requires_grad]

    monitor = Monitor(
        p.steps, state.step, enabled=ctx.is_main, progress=cfg.progress,
        tensorboard_dir=str(run_dir / "tensorboard") if (cfg.tensorboard and run_dir) else None,
        wandb_project=cfg.wandb_project, wandb_config={"config": cfg.to_dict(), **info},
        run_name=run_dir.name if run_dir else None,
    )
    if ctx.is_main:
        monitor.write(
            f"model {cfg.size or 'custom'}: N={p.n_params:,} non-embedding parameters, "
            f"{p.steps} steps x {cfg.batch_tokens:,} tokens = D {p.tokens:,} "
            f"({p.tokens / p.n_params:.1f} tokens/param), lr {p.lr:g}, "
            f"w={formats['w_format']} a={formats['a_format']}, {ctx.world_size} process(es) on "
            f"{ctx.device}, {compute_dtype}"
        )

    start_wall = time.perf_counter()
    train_time = 0.0
    trained_tokens = 0
    window = {"loss": 0.0, "n": 0, "tokens": 0, "time": 0.0}
    last_val = None
    status = "finished"
    diverged_at = None
    last_loss = float("nan")
    model.train()
    try:
        for step in range(state.step, p.steps):
            t0 = time.perf_counter()
            lr = lr_at(step, p.steps, p.lr, cfg.warmup_frac, cfg.initial_lr_frac,
                       cfg.final_lr_frac, cfg.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x_all, y_all = get_batch(step)
            x_all = torch.as_tensor(x_all[lo:lo + per_rank])
            y_all = torch.as_tensor(y_all[lo:lo + per_rank])
            loss_sum = torch.zeros((), device=ctx.device)
            for j in range(p.accum_steps):
                sl = slice(j * p.micro_batch, (j + 1) * p.micro_batch)
                xb = x_all[sl].to(ctx.device, non_blocking=True)
                yb = y_all[sl].to(ctx.device, non_blocking=True)
                sync = (model.no_sync() if ctx.enabled and j < p.accum_steps - 1
                        and hasattr(model, "no_sync") else contextlib.nullcontext())
                with sync:
                    with autocast():
                        loss = model(xb, yb)
                    (loss / p.accum_steps).backward()
                loss_sum += loss.detach().float()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            check = torch.stack([loss_sum / p.accum_steps, grad_norm.float().to(ctx.device)])
            all_reduce_sum(check, ctx)
            step_loss, norm = (check / ctx.world_size).tolist()
            if not (math.isfinite(step_loss) and math.isfinite(norm)):
                status, diverged_at, last_loss = "diverged", step + 1, step_loss
                monitor.write(f"step {step + 1}: loss {step_loss}, gradient norm {norm}: diverged")
                break
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            train_time += dt
            trained_tokens += cfg.batch_tokens
            state.step = step + 1
            state.tokens += cfg.batch_tokens
            last_loss = step_loss
            window["loss"] += step_loss
            window["n"] += 1
            window["tokens"] += cfg.batch_tokens
            window["time"] += dt
            tps = window["tokens"] / max(window["time"], 1e-9)
            monitor.step(state.step, loss=step_loss, tok_s=round(tps), lr=lr)
            if state.step % cfg.log_every == 0 or state.step == p.steps or state.step == 1:
                rec = {"kind": "train", "step": state.step, "tokens": state.tokens,
                       "loss": window["loss"] / window["n"], "lr": lr, "grad_norm": norm,
                       "tokens_per_s": tps,
                       "elapsed_s": state.elapsed_s + time.perf_counter() - start_wall}
                metrics.write(rec)
                monitor.log(state.step, {f"train/{k}": v for k, v in rec.items()
                                         if k not in ("kind", "step")})
                window = {"loss": 0.0, "n": 0, "tokens": 0, "time": 0.0}
            if state.step % p.eval_every == 0 or state.step == p.steps:
                last_val = _evaluate(raw, val_windows, ctx, autocast)
                if not math.isfinite(last_val):
                    status, diverged_at = "diverged", state.step
                    monitor.write(f"step {state.step}: validation loss {last_val}: diverged")
                    break
                rec = {"kind": "val", "step": state.step, "tokens": state.tokens,
                       "val_loss": last_val,
                       "elapsed_s": state.elapsed_s + time.perf_counter() - start_wall}
                metrics.write(rec)
                monitor.log(state.step, {"val/loss": last_val})
                monitor.write(f"step {state.step}/{p.steps}: val loss {last_val:.4f}")
            if run_dir is not None and (state.step % p.ckpt_every == 0 or state.step == p.steps):
                state_now = TrainState(state.step, state.tokens,
                                       state.elapsed_s + time.perf_counter() - start_wall,
                                       {"step": state.step, "seed": cfg.seed})
                save_checkpoint(run_dir, raw, optimizer, state_now, ctx, cfg.keep_checkpoints)
    finally:
        monitor.close()

    wall = state.elapsed_s + time.perf_counter() - start_wall
    result = {
        "status": status,
        "N": p.n_params,
        "D": state.tokens,
        "loss": last_val if status == "finished" else None,
        **{k: v for k, v in info.items()},
        "w_format": formats["w_format"],
        "a_format": formats["a_format"],
        "grad_rule": cfg.grad if formats["w_format"] != "none" or formats["a_format"] != "none" else "none",
        # the rule each part of each format really used, e.g. "sparse0.5:b-rms,int4:trust"
        "w_rules": ",".join(formats.get("effective_rules", {}).get("weight", [])) or None,
        "a_rules": ",".join(formats.get("effective_rules", {}).get("activation", [])) or None,
        "seed": cfg.seed,
        "size": cfg.size if cfg.n_layer is None else None,
        "n_layer": p.model.n_layer, "n_embd": p.model.n_embd, "n_head": p.model.n_head,
        "vocab_size": p.model.vocab_size, "seq_len": cfg.seq_len,
        "batch_tokens": cfg.batch_tokens, "steps": p.steps, "lr": p.lr,
        "optimizer": cfg.optimizer,
        "tokens_per_param": state.tokens / p.n_params,
        "final_train_loss": last_loss,
        "diverged_at_step": diverged_at,
        "tokens_per_s": trained_tokens / train_time if train_time > 0 else None,
        "wall_time_s": wall,
        "device": ctx.device.type, "world_size": ctx.world_size, "dtype": compute_dtype,
        "data": data.info.get("data"), "tokenizer": data.info.get("tokenizer"),
        "data_key": data.info.get("data_key"),
        "capscale_version": capscale.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if run_dir is not None and ctx.is_main:
        records.write_result(run_dir, result)
    barrier(ctx)
    return result
