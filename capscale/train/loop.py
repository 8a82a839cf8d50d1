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
from capscale.durations import format_duration
from capscale.errors import CapscaleError
from capscale.io import atomic_write_json
from capscale.model.compressed_linear import BLOCK_LINEARS, compress_model, grad_rule_from_config
from capscale.model.llama import Llama
from capscale.runrecord import DIVERGED, FINISHED, INTERRUPTED, OPERANDS, operand_key
from capscale.train import records
from capscale.train.checkpoint import (
    TrainState,
    latest_checkpoint,
    remove_partial_writes,
    resume_checkpoint,
    save_checkpoint,
)
from capscale.train.config import RunPlan, TrainConfig, check_budget, plan
from capscale.train.data import RunData, open_run_data
from capscale.train.distributed import Dist, all_reduce_sum, barrier, setup, teardown
from capscale.train.monitor import Monitor
from capscale.train.monitor import check_available as check_loggers
from capscale.train.optim import build_optimizer, group_lr
from capscale.train.records import RUNTIME_FIELDS  # noqa: F401  (re-exported)
from capscale.train.schedule import lr_at


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
    out = Path(cfg.out)
    existing = next((q for q in (out, *out.parents) if q.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == out else f"is under {existing}, a file"
        raise CapscaleError(f"--out {cfg.out} {where}; a run is a folder: choose another --out")
    saved_path = out / records.CONFIG
    if not saved_path.exists():
        return cfg, False
    header = records.read_json(saved_path, "run config")
    if not (isinstance(header, dict) and isinstance(header.get("config"), dict)
            and "plan" in header):
        raise CapscaleError(
            f"{saved_path} is not the config of a capscale run; choose another --out")
    if records.load_result(out) is None and latest_checkpoint(out) is None:
        # nothing was trained and kept here (it failed or was killed before its first
        # checkpoint): not a run yet, so it starts afresh with the settings given now
        return cfg, False
    if not resume:
        raise CapscaleError(
            f"run folder {cfg.out} already holds a run; pass --resume to continue it, "
            "or choose another --out"
        )
    try:
        saved = TrainConfig.from_dict(header["config"])
    except TypeError as e:
        raise CapscaleError(f"{saved_path}: the saved settings are not a run's ({e})") from None
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


def check_model(cfg: TrainConfig, p: RunPlan) -> None:
    """Build the model of the plan without memory (on the meta device) and run its formats
    once on rows of its widths: a format that does not fit the model's shape is refused before
    the run writes anything."""
    from capscale.model.compressed_linear import check_shapes

    with torch.device("meta"):
        model, _ = build_model(cfg, p)
    check_shapes(model)


def trained_rules(compression: dict, requested: str) -> dict:
    """The gradient rule each compressed operand really trains with (from the rule each of its
    format's parts uses: MX and NVFP4 blocks pass their gradient straight through whatever was
    asked), one ``grad_rule`` for the run (the rule, or ``w:RULE,a:RULE`` when they differ),
    and a sentence for the log when that is not the rule asked for."""
    if not compression["layers"]:
        return {"grad_rule": "none", "w": None, "a": None, "note": ""}
    eff = compression["effective_rules"]
    out = {}
    for role, key in (("w", "weight"), ("a", "activation")):
        spec = compression[f"{role}_format"]
        # "int4:trust" -> trust; "int3:lsq+(tensor)" -> lsq+ (the scale's granularity aside)
        parts = [] if spec == "none" else [r.rsplit(":", 1)[-1].split("(")[0]
                                           for r in eff.get(key, [])]
        out[role] = ",".join(dict.fromkeys(parts)) or None
    used = {v for v in (out["w"], out["a"]) if v}
    if len(used) == 1:
        out["grad_rule"] = used.pop()
    else:
        out["grad_rule"] = ",".join(f"{r}:{out[r]}" for r in ("w", "a") if out[r]) or "none"
    off = {r: v for r, v in (("w", out["w"]), ("a", out["a"])) if v and requested not in v.split(",")}
    out["note"] = ("; ".join(f"{'weights' if r == 'w' else 'activations'} "
                             f"{compression[f'{r}_format']} train with {v}, not {requested} "
                             "(what the format's parts support; MX and NVFP4 block scales pass the "
                             "gradient straight through)" for r, v in off.items()) if off else "")
    return out


def _epochs(tokens: int, train_tokens) -> float | None:
    """How many times the training split is read for ``tokens`` tokens."""
    return tokens / train_tokens if train_tokens else None


def format_info(w_format: str, a_format: str) -> dict:
    """Canonical specs, kinds, bits per value and Gaussian MSE of the two formats (the
    capacity probe), for the run record. The dense operand ("none") counts as GMSE 0, 16 bits."""
    from capscale.capacity import gmse
    from capscale.formats import parse_format
    from capscale.formats.registry import plugin_records, plugin_signature

    out = {}
    for role, spec in zip(OPERANDS, (w_format, a_format)):
        g, bits = operand_key("gmse", role), operand_key("bits", role)  # gmse_w, bits_w
        out[f"{role}_format"] = spec
        # the compression type, for the laws
        out[operand_key("kind", role)] = parse_format(spec).kind
        plugins = plugin_records(parse_format(spec))  # user formats: name and source hash
        if plugins:
            out[operand_key("plugin", role)] = plugin_signature(plugins)
            out[operand_key("plugins", role)] = plugins
        if spec == "none":
            out.update({g: 0.0, f"{g}_stderr": 0.0, bits: 16.0})
            continue
        r = gmse(spec)
        out.update({g: float(r.gmse), f"{g}_stderr": float(r.stderr),
                    bits: float(r.bits_per_value)})
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


def _accumulate_gradients(model, x_all, y_all, p: RunPlan, ctx: Dist, autocast) -> torch.Tensor:
    """Forward and backward over this rank's micro-batches; returns the mean micro-batch loss.

    Each micro-batch loss is a mean over its tokens and is scaled by 1/accum_steps; DDP averages
    over ranks; equal micro-batches make the result the mean over the whole global batch.
    """
    loss_sum = torch.zeros((), device=ctx.device)
    for j in range(p.accum_steps):
        rows = slice(j * p.micro_batch, (j + 1) * p.micro_batch)
        xb = x_all[rows].to(ctx.device, non_blocking=True)
        yb = y_all[rows].to(ctx.device, non_blocking=True)
        last = j == p.accum_steps - 1
        sync = contextlib.nullcontext() if last or not ctx.enabled else model.no_sync()
        with sync:
            with autocast():
                loss = model(xb, yb)
            (loss / p.accum_steps).backward()
        loss_sum += loss.detach().float()
    return loss_sum / p.accum_steps


STOP_SIGNALS = ("SIGTERM", "SIGUSR1")  # SLURM's warning before a time limit or preemption


class StopSignals:
    """SIGTERM or SIGUSR1 asks the run to stop: it finishes the step it is in, checkpoints and
    returns with status "interrupted" (no result record), so that a requeued or resubmitted
    job resumes where it stopped. Installed only in the main thread and only where no other
    handler is (submitit requeues its jobs itself); restored on exit."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict = {}

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                # a handler someone else installed (submitit's requeue) is left in charge
                if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, signal.SIG_IGN, None):
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        import signal

        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def estimate_wall_time(raw: nn.Module, p: RunPlan, cfg: TrainConfig, ctx: Dist, autocast,
                       steps_left: int, n_val_windows: int) -> dict:
    """The wall time of the steps left, from a short measurement before the first step: one
    forward and backward of a micro-batch of random tokens through a copy of the model (so
    the run's own weights, learned-scale initialisation and random streams are untouched),
    timed after one warm-up pass. A step is ``accum_steps`` of those; a validation is a
    forward (about a third) per validation window. Optimiser steps, data loading and
    checkpoints come on top, so it is an estimate: the progress line's ETA is measured."""
    import copy

    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe = copy.deepcopy(raw)
        probe.train()
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, p.model.vocab_size, (p.micro_batch, cfg.seq_len + 1), generator=gen)
        xb, yb = x[:, :-1].to(ctx.device), x[:, 1:].to(ctx.device)

        def once() -> float:
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            t0 = time.perf_counter()
            with autocast():
                loss = probe(xb, yb)
            loss.backward()
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            return time.perf_counter() - t0

        once()  # warm-up: allocations, kernel selection, learned-scale initialisation
        micro = once()
    step_s = micro * p.accum_steps
    evals = steps_left // p.eval_every + 1
    val_s = evals * n_val_windows * micro / 3.0
    return {"total_s": steps_left * step_s + val_s, "step_s": step_s, "micro_s": micro,
            "evals": evals}


def _write_run_header(run_dir: Path, cfg: TrainConfig, p: RunPlan, info: dict, compression: dict,
                      data: RunData, ctx: Dist, compute_dtype: str) -> None:
    record = {
        "config": cfg.to_dict(), "plan": p.to_dict(), "formats": info,
        "compression": compression, "data": data.info,
        "environment": {"capscale": capscale.__version__, "torch": torch.__version__,
                        "python": platform.python_version(), "device": str(ctx.device),
                        "world_size": ctx.world_size, "compute_dtype": compute_dtype,
                        "threads": torch.get_num_threads()},
        "command": sys.argv,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / records.METRICS).unlink(missing_ok=True)
    atomic_write_json(run_dir / records.CONFIG, records.json_safe(record))


def _check_same_plugins(run_dir: Path, info: dict) -> None:
    """A run is resumed only with the same version of its user formats (their source hash)."""
    saved = records.read_json(run_dir / records.CONFIG, "run config").get("formats", {})
    for role in OPERANDS:
        key = operand_key("plugin", role)
        if saved.get(key) != info.get(key):
            raise CapscaleError(
                f"run {run_dir} was trained with user format {saved.get(key)} and is "
                f"resumed with {info.get(key)}: the plugin's source changed; restore "
                "it or start the run in a new folder")


def _train(cfg: TrainConfig, data: RunData | None, resume: bool, ctx: Dist) -> dict:
    cfg, resuming = resolve_resume(cfg, resume)
    check_loggers(cfg.tensorboard and cfg.out is not None, cfg.wandb_project)
    run_dir = Path(cfg.out) if cfg.out else None
    if run_dir is not None and resuming:
        done = records.load_result(run_dir)
        if done is not None:
            return done
    data, p = _plan_with_data(cfg, data, ctx)
    autocast, compute_dtype = _autocast(cfg, ctx.device)
    raw, model, compression, optimizer = _prepare_model(cfg, p, ctx)
    info = format_info(compression["w_format"], compression["a_format"]) if ctx.is_main else {}
    state, metrics = _start_or_restore(run_dir, resuming, cfg, p, ctx, raw, optimizer, info,
                                       compression, data, compute_dtype)
    batches = (data.train_batches(p.batch_size, cfg.seq_len, cfg.seed),
               list(data.val_batches(p.micro_batch, cfg.seq_len, cfg.val_tokens)))
    monitor = Monitor(
        p.steps, state.step, enabled=ctx.is_main, progress=cfg.progress,
        tensorboard_dir=str(run_dir / "tensorboard") if (cfg.tensorboard and run_dir) else None,
        wandb_project=cfg.wandb_project, wandb_config={"config": cfg.to_dict(), **info},
        run_name=run_dir.name if run_dir else None)
    rules = trained_rules(compression, cfg.grad)
    _announce(monitor, cfg, p, ctx, compression, rules, data, compute_dtype)
    loop = _Loop(cfg, p, ctx, run_dir, raw, model, optimizer, autocast, batches, state, metrics,
                 monitor)
    loop.announce_estimate()
    try:
        loop.run()
    finally:
        monitor.close()

    result = _result_record(cfg, p, ctx, data, compression, rules, info, state, loop.status,
                            loop.last_val, loop.last_loss, loop.diverged_at, loop.trained_tokens,
                            loop.train_time, loop.elapsed(), compute_dtype)
    if run_dir is not None and ctx.is_main and loop.status != INTERRUPTED:
        records.write_result(run_dir, result)
    barrier(ctx)
    return result


def _plan_with_data(cfg: TrainConfig, data: RunData | None, ctx: Dist) -> tuple[RunData, RunPlan]:
    """The run's data and plan; every check that needs no data runs before data is read."""
    def plan_for(vocab_size: int) -> RunPlan:
        return plan(cfg, vocab_size, ctx.world_size, ctx.device.type)

    check_model(cfg, plan_for(1))
    check_budget(cfg, plan_for(1))
    if data is None:  # the run length does not depend on the vocabulary: plan it first
        data = open_run_data(cfg, plan_for(1).tokens)
    return data, plan_for(data.vocab_size)


def _start_or_restore(run_dir: Path | None, resuming: bool, cfg: TrainConfig, p: RunPlan,
                      ctx: Dist, raw: nn.Module, optimizer, info: dict, compression: dict,
                      data: RunData, compute_dtype: str) -> tuple[TrainState, records.MetricsLog]:
    """A fresh run writes its header; a resumed one restores its checkpoint and drops the
    metrics written after it."""
    state = TrainState()
    metrics = records.MetricsLog(run_dir / records.METRICS if run_dir else Path(os.devnull),
                                 enabled=ctx.is_main and run_dir is not None)
    if run_dir is not None and ctx.is_main:
        remove_partial_writes(run_dir)
    if run_dir is not None and resuming:
        if ctx.is_main and latest_checkpoint(run_dir) is not None:
            _check_same_plugins(run_dir, info)
        state = resume_checkpoint(run_dir, raw, optimizer, ctx)
        metrics.truncate_after(state.step)
    elif run_dir is not None and ctx.is_main:
        _write_run_header(run_dir, cfg, p, info, compression, data, ctx, compute_dtype)
    barrier(ctx)
    return state, metrics


class _Loop:
    """The optimizer steps of one run, from ``state.step`` to the plan's last step (or a
    divergence, or a stop signal), with its logging, validation and checkpoints."""

    def __init__(self, cfg: TrainConfig, p: RunPlan, ctx: Dist, run_dir: Path | None,
                 raw: nn.Module, model: nn.Module, optimizer, autocast, batches: tuple,
                 state: TrainState, metrics: records.MetricsLog, monitor: Monitor):
        """``batches``: the training batch of each step (a function) and the validation
        windows."""
        self.cfg, self.p, self.ctx, self.run_dir = cfg, p, ctx, run_dir
        self.raw, self.model, self.optimizer, self.autocast = raw, model, optimizer, autocast
        self.state, self.metrics, self.monitor = state, metrics, monitor
        self.get_batch, self.val_windows = batches
        per_rank = p.batch_size // ctx.world_size
        self.mine = slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
        self.params = [q for q in raw.parameters() if q.requires_grad]
        self.start_wall, self.start_step = time.perf_counter(), state.step
        self.train_time, self.trained_tokens = 0.0, 0
        self.status, self.diverged_at = FINISHED, None
        self.last_val, self.last_val_step = None, None
        saved = state.data or {}
        # the train-loss window since the last log line, kept in checkpoints so that the
        # metrics of a resumed run are those of an uninterrupted one
        self.window = {"loss": 0.0, "n": 0, "tokens": 0, "time": 0.0}
        if isinstance(saved.get("window"), dict):
            self.window.update(saved["window"])
        # killed after its final checkpoint, before its record: the record still names the
        # last step's training loss
        last = saved.get("last_loss")
        self.last_loss = float(last) if isinstance(last, (int, float)) else float("nan")

    def announce_estimate(self) -> None:
        steps_left = self.p.steps - self.state.step
        if steps_left <= 0:
            return
        # every rank measures: a learned scale's first pass is a collective
        est = estimate_wall_time(self.raw, self.p, self.cfg, self.ctx, self.autocast, steps_left,
                                 len(self.val_windows))
        self.start_wall = time.perf_counter()
        self.monitor.write(
            f"estimate: about {format_duration(est['total_s'])} for {steps_left:,} step(s) "
            f"({est['step_s']:.3g} s per step of {self.p.accum_steps} micro-batch(es) measured "
            f"on {self.ctx.device}, {est['evals']} validation(s) included"
            f"{'; torch.compile adds its compile time' if self.cfg.compile else ''}); the ETA "
            "follows in the progress line")

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.start_wall

    def eta(self) -> str:
        done = self.state.step - self.start_step
        if done <= 0:
            return "?"
        per_step = (time.perf_counter() - self.start_wall) / done
        return format_duration(per_step * (self.p.steps - self.state.step))

    def run(self) -> None:
        self.model.train()
        stop = StopSignals()
        try:
            stop.__enter__()
            for step in range(self.state.step, self.p.steps):
                if not self._step(step, stop):
                    break
            if self.status == FINISHED and self.last_val_step != self.p.steps:
                self.validate()  # resumed from the final checkpoint, before the result was written
        finally:
            stop.__exit__()

    def _step(self, step: int, stop: StopSignals) -> bool:
        """One optimizer step and what follows it; False when the run ends here."""
        cfg, p, state = self.cfg, self.p, self.state
        t0 = time.perf_counter()
        lr = lr_at(step, p.steps, p.lr, cfg.warmup_frac, cfg.initial_lr_frac, cfg.final_lr_frac,
                   cfg.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = group_lr(group, lr)
        x_all, y_all = self.get_batch(step)
        loss = _accumulate_gradients(self.model, torch.as_tensor(x_all[self.mine]),
                                     torch.as_tensor(y_all[self.mine]), p, self.ctx, self.autocast)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        # the stop request rides on the reduction every step makes: all ranks stop together
        asked = torch.tensor(float(stop.received is not None), device=self.ctx.device)
        check = torch.stack([loss, grad_norm.float().to(self.ctx.device), asked])
        step_loss, norm, stop_now = (all_reduce_sum(check, self.ctx) / self.ctx.world_size).tolist()
        if not (math.isfinite(step_loss) and math.isfinite(norm)):
            self.status, self.diverged_at, self.last_loss = DIVERGED, step + 1, step_loss
            self.monitor.write(f"step {step + 1}: loss {step_loss}, gradient norm {norm}: diverged")
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        dt = time.perf_counter() - t0
        self.train_time += dt
        self.trained_tokens += cfg.batch_tokens
        state.step, state.tokens, self.last_loss = step + 1, state.tokens + cfg.batch_tokens, step_loss
        self._log(lr, step_loss, norm, dt)
        if state.step % p.eval_every == 0 or state.step == p.steps:
            if not math.isfinite(self.validate()):
                self.status, self.diverged_at = DIVERGED, state.step
                return False
        stopping = stop_now > 0 and state.step < p.steps
        if self.run_dir is not None and (state.step % p.ckpt_every == 0 or state.step == p.steps
                                         or stopping):
            saved = TrainState(state.step, state.tokens, self.elapsed(),
                               {"step": state.step, "seed": cfg.seed, "window": dict(self.window),
                                "last_loss": self.last_loss})
            save_checkpoint(self.run_dir, self.raw, self.optimizer, saved, self.ctx,
                            cfg.keep_checkpoints)
        if stopping:
            self.status = INTERRUPTED
            self.monitor.write(f"step {state.step}/{p.steps}: {stop.received or 'stop signal'} "
                               "received: checkpointed; resume to continue from this step")
            return False
        return True

    def _log(self, lr: float, step_loss: float, norm: float, dt: float) -> None:
        """The progress line every step; a metrics line every log_every steps (the mean train
        loss of the window since the last one)."""
        state, window = self.state, self.window
        for key, value in (("loss", step_loss), ("n", 1), ("tokens", self.cfg.batch_tokens),
                           ("time", dt)):
            window[key] += value
        tps = window["tokens"] / max(window["time"], 1e-9)
        self.monitor.step(state.step, loss=step_loss, tok_s=round(tps), lr=lr)
        if state.step % self.cfg.log_every == 0 or state.step in (1, self.p.steps):
            rec = {"kind": "train", "step": state.step, "tokens": state.tokens,
                   "loss": window["loss"] / window["n"], "lr": lr, "grad_norm": norm,
                   "tokens_per_s": tps, "elapsed_s": self.elapsed()}
            self.metrics.write(rec)
            self.monitor.log(state.step, {f"train/{k}": v for k, v in rec.items()
                                          if k not in ("kind", "step")})
            self.window = dict.fromkeys(window, 0.0)

    def validate(self) -> float:
        state = self.state
        self.last_val = _evaluate(self.raw, self.val_windows, self.ctx, self.autocast)
        self.last_val_step = state.step
        self.metrics.write({"kind": "val", "step": state.step, "tokens": state.tokens,
                            "val_loss": self.last_val, "elapsed_s": self.elapsed()})
        self.monitor.log(state.step, {"val/loss": self.last_val})
        self.monitor.write(f"step {state.step}/{self.p.steps}: val loss {self.last_val:.4f}, "
                           f"elapsed {format_duration(self.elapsed())}, ETA {self.eta()}")
        return self.last_val


def _prepare_model(cfg: TrainConfig, p: RunPlan, ctx: Dist):
    """The model on its device (``raw``), what the loop calls (DDP- and compile-wrapped), the
    compression it trains over, and its optimizer."""
    raw, compression = build_model(cfg, p)
    if raw.non_embedding_params() != p.n_params:  # the module and the closed form agree
        raise AssertionError("non-embedding parameter count mismatch")
    raw.to(ctx.device)
    optimizer = build_optimizer(raw, cfg, p.lr)
    model: nn.Module = raw
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    return raw, model, compression, optimizer


def _announce(monitor, cfg: TrainConfig, p: RunPlan, ctx: Dist, compression: dict, rules: dict,
              data: RunData, compute_dtype: str) -> None:
    """The run's opening lines: the gradient rule really used, repeated data, and the plan."""
    epochs = _epochs(p.tokens, data.info.get("train_tokens"))
    if rules["note"]:
        monitor.write(f"gradient rule: {rules['note']}")
    if epochs is not None and epochs > 1:
        monitor.write(f"data: D {p.tokens:,} tokens is {epochs:.2f} epochs of the training split "
                      f"({data.info['train_tokens']:,} tokens): tokens are seen more than once")
    monitor.write(
        f"model {cfg.size or 'custom'}: N={p.n_params:,} non-embedding parameters, "
        f"{p.steps} steps x {cfg.batch_tokens:,} tokens = D {p.tokens:,} "
        f"({p.tokens / p.n_params:.1f} tokens/param), lr {p.lr:g}, "
        f"w={compression['w_format']} a={compression['a_format']}, {ctx.world_size} "
        f"process(es) on {ctx.device}, {compute_dtype}")


def _result_record(cfg: TrainConfig, p: RunPlan, ctx: Dist, data: RunData, compression: dict,
                   rules: dict, info: dict, state: TrainState, status: str, last_val, last_loss,
                   diverged_at, trained_tokens: int, train_time: float, wall_time_s: float,
                   compute_dtype: str) -> dict:
    """The run's result record (``capscale.runrecord``): what it measured and how it ran."""
    return {
        "status": status, "N": p.n_params, "D": state.tokens,
        "loss": last_val if status == FINISHED else None,
        **info,
        "w_format": compression["w_format"], "a_format": compression["a_format"],
        # the rule the compressed operands really trained with (block formats: ste), and the
        # one asked for
        "grad_rule": rules["grad_rule"], "grad_rule_requested": cfg.grad,
        # the settings as given (TrainConfig's names), which studies key representations on
        "grad": cfg.grad, "sparse_grad": cfg.sparse_grad,
        "grad_rule_w": rules["w"], "grad_rule_a": rules["a"],
        "epochs": _epochs(state.tokens, data.info.get("train_tokens")),
        # the rule each part of each format really used, e.g. "sparse0.5:b-rms,int4:trust"
        "w_rules": ",".join(compression["effective_rules"].get("weight", [])) or None,
        "a_rules": ",".join(compression["effective_rules"].get("activation", [])) or None,
        "seed": cfg.seed, "size": cfg.size if cfg.n_layer is None else None, "arch": p.model.arch,
        "n_layer": p.model.n_layer, "n_embd": p.model.n_embd, "n_head": p.model.n_head,
        "vocab_size": p.model.vocab_size, "seq_len": cfg.seq_len,
        "batch_tokens": cfg.batch_tokens, "steps": p.steps, "lr": p.lr,
        "scale_lr": cfg.scale_lr, "optimizer": cfg.optimizer, "tokens_per_param": state.tokens / p.n_params,
        "final_train_loss": last_loss, "diverged_at_step": diverged_at,
        "tokens_per_s": trained_tokens / train_time if train_time > 0 else None,
        "wall_time_s": wall_time_s,
        "device": ctx.device.type, "world_size": ctx.world_size, "dtype": compute_dtype,
        "data": data.info.get("data"), "tokenizer": data.info.get("tokenizer"),
        "data_key": data.info.get("data_key"), "capscale_version": capscale.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
