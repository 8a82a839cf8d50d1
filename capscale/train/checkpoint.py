"""Checkpoints that let a run continue exactly where it stopped.

A checkpoint is a folder ``checkpoints/step_NNNNNNN/`` holding

* ``model.safetensors`` — the weights (the uncompressed master weights; compressed layers
  recompute their compressed view from them every step),
* ``optimizer.pt`` — the optimizer state (moments, step counts),
* ``rng_rank{r}.pt`` — every process's torch random-number-generator states (CPU and
  CUDA; the training draws random numbers only from torch, e.g. for noise injection —
  batches are a function of (seed, step)),
* ``state.json`` — step, tokens seen, elapsed time and the data position.

It is written into a temporary folder and renamed into place, and ``checkpoints/latest``
names the newest complete one, so a process killed at any moment leaves either the old or
the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from capscale.errors import CapscaleError
from capscale.io import atomic_write_text, describe_write_error
from capscale.runrecord import CHECKPOINTS
from capscale.train.distributed import Dist, barrier

LATEST = "latest"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps completed
    tokens: int = 0
    elapsed_s: float = 0.0  # training wall time before this process started
    data: dict | None = None

    def to_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "elapsed_s": self.elapsed_s,
                "data": self.data}


def _name(step: int) -> str:
    return f"step_{step:07d}"


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    ctx: Dist,
    keep: int = 1,
) -> Path:
    """Write the checkpoint of ``state.step`` (collective: every rank must call it)."""
    from safetensors.torch import save_file

    root = Path(run_dir) / CHECKPOINTS
    final = root / _name(state.step)
    tmp = root / f".tmp-{_name(state.step)}"
    try:
        if ctx.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        barrier(ctx)
        torch.save(rng_state(ctx.device), tmp / f"rng_rank{ctx.rank}.pt")
        if ctx.is_main:
            weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(weights, str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(state.to_dict(), indent=2) + "\n")
        barrier(ctx)
        if ctx.is_main:
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_text(root / LATEST, final.name + "\n")
            _prune(root, keep, final.name)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)  # never leave half a checkpoint filling the disk
        raise CapscaleError(f"cannot write checkpoint {final}: {describe_write_error(e, root)}; "
                            "the run can resume from its previous checkpoint") from None
    barrier(ctx)
    return final


def _prune(root: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)


FILES = ("model.safetensors", "optimizer.pt", "rng_rank0.pt", "state.json")


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders that hold every file, newest first; the one
    ``checkpoints/latest`` names comes first when it is complete (a kill between the rename
    and the pointer's update leaves a newer complete one, which comes next)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = sorted((p for p in root.glob("step_*") if p.is_dir()
                   and all((p / f).is_file() for f in FILES)), key=lambda p: p.name, reverse=True)
    pointer = root / LATEST
    try:
        named = root / pointer.read_text().strip() if pointer.is_file() else None
    except (OSError, UnicodeDecodeError):
        named = None
    if named is not None and named in done and named != done[0]:
        done.remove(named)
        done.insert(0, named)
    return done


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (even when ``latest`` names a missing one)."""
    done = complete_checkpoints(run_dir)
    return done[0] if done else None


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete what a killed process left half-written: ``.NAME.*.tmp`` files of atomic
    writes and ``checkpoints/.tmp-step_*`` folders. Called by the process that owns the run,
    when it starts."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.startswith(".tmp-")):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def resume_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      ctx: Dist) -> TrainState:
    """Load the newest checkpoint that loads; a damaged one (truncated, empty, bad JSON) is
    reported and the next older one tried. No checkpoint: a fresh state (step 0)."""
    failures = []
    for path in complete_checkpoints(run_dir):
        try:
            state = load_checkpoint(path, model, optimizer, ctx)
        except CapscaleError as e:
            if "fewer processes" in str(e):
                raise
            failures.append(str(e))
            if ctx.is_main:
                print(f"capscale: skipping damaged checkpoint: {e}", file=sys.stderr)
            continue
        return state
    if failures:
        raise CapscaleError(
            f"no checkpoint of {run_dir} can be loaded ({'; '.join(failures)}); delete the "
            "run's checkpoints folder to start it over")
    return TrainState()


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: Dist
) -> TrainState:
    """Restore weights, optimizer, this rank's RNG streams; return the saved TrainState."""
    from safetensors.torch import load_file

    path = Path(path)
    rng_file = path / f"rng_rank{ctx.rank}.pt"
    if not rng_file.exists():
        raise CapscaleError(
            f"checkpoint {path} was written by fewer processes than this run has "
            f"({ctx.world_size}); resume with the same number of processes"
        )
    part = "state.json"
    try:  # read everything first: a damaged file changes nothing
        d = json.loads((path / part).read_text())
        state = TrainState(step=int(d["step"]), tokens=int(d["tokens"]),
                           elapsed_s=float(d["elapsed_s"]), data=d.get("data"))
        part = "model.safetensors"
        weights = load_file(str(path / part), device=str(ctx.device))
        part = "optimizer.pt"
        opt_state = torch.load(path / part, map_location=ctx.device, weights_only=True)
        part = rng_file.name
        rng = torch.load(rng_file, weights_only=True)
        torch.Generator().set_state(rng["torch"])  # a state torch accepts
        part = "model.safetensors"
        model.load_state_dict(weights, strict=True)
        part = "optimizer.pt"
        optimizer.load_state_dict(opt_state)
    except Exception as e:  # noqa: BLE001 - safetensors, torch and json raise many types
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CapscaleError(f"checkpoint file {path / part} is damaged ({msg})") from None
    set_rng_state(rng, ctx.device)
    return state
