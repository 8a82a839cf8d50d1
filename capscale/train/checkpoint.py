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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from capscale.errors import CapscaleError
from capscale.io import atomic_write_text
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

    root = Path(run_dir) / "checkpoints"
    final = root / _name(state.step)
    tmp = root / f".tmp-{_name(state.step)}"
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
    barrier(ctx)
    return final


def _prune(root: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


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
    weights = load_file(str(path / "model.safetensors"), device=str(ctx.device))
    model.load_state_dict(weights, strict=True)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=ctx.device,
                                         weights_only=True))
    set_rng_state(torch.load(rng_file, weights_only=True), ctx.device)
    d = json.loads((path / "state.json").read_text())
    return TrainState(step=d["step"], tokens=d["tokens"], elapsed_s=d["elapsed_s"],
                      data=d.get("data"))
