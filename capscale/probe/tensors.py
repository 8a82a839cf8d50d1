"""Where real tensors come from: the weights in a safetensors file, a capscale run folder or
checkpoint, a Hugging Face model folder, the inputs of every linear layer while a capscale
model runs on a few batches of a data source (forward hooks), and heavy-tailed synthetic
tensors with known distributions.

Every tensor is returned as a :class:`ProbeTensor` viewed as rows × columns the way a
format sees it: a weight [out, in] keeps its shape (a row is an output channel, groups run
along the input), activations are [tokens, in].
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from capscale import runrecord
from capscale.errors import CapscaleError

SKIPPED = ("emb", "lm_head", "wte", "wpe")  # not compressed by the papers' training


@dataclass(frozen=True)
class ProbeTensor:
    name: str  # "layers.0.attn.qkv.weight", "layers.0.mlp.down:input", "student_t3"
    layer_type: str  # the name with layer indices dropped: "attn.qkv.weight"
    kind: str  # "weight", "activation" or "synthetic"
    tensor: torch.Tensor  # 2-D, float32


def layer_type(name: str) -> str:
    """``model.layers.11.self_attn.q_proj.weight`` -> ``self_attn.q_proj.weight``."""
    parts = [p for p in name.split(".") if not p.isdigit()]
    while parts and parts[0] in ("model", "transformer", "layers", "h", "blocks", "decoder"):
        parts = parts[1:]
    return ".".join(parts) or name


def _as_matrix(t: torch.Tensor) -> torch.Tensor | None:
    if t.dim() < 2 or not t.is_floating_point() or t.shape[-1] < 2:
        return None
    return t.detach().reshape(-1, t.shape[-1]).to(torch.float32)


def weights_from_state(state: dict, include_embeddings: bool = False) -> list[ProbeTensor]:
    out = []
    for name in sorted(state):
        m = _as_matrix(state[name])
        if m is None:
            continue
        if not include_embeddings and any(s in name for s in SKIPPED):
            continue
        out.append(ProbeTensor(name, layer_type(name), "weight", m))
    return out


def _load_safetensors(paths: list[Path]) -> dict:
    from safetensors.torch import load_file

    state = {}
    for p in paths:
        try:
            state.update(load_file(str(p)))
        except Exception as e:  # a corrupt or foreign file: the user's input
            raise CapscaleError(f"{p} is not a readable safetensors file: {e}") from None
    return state


def find_checkpoint(path: Path) -> Path | None:
    """A capscale checkpoint folder: the path itself, or its run's latest checkpoint."""
    if (path / "model.safetensors").exists():
        return path
    from capscale.train.checkpoint import latest_checkpoint

    return latest_checkpoint(path)


def is_run_folder(path: Path) -> bool:
    cfg = path / runrecord.CONFIG
    if not cfg.is_file():
        return False
    try:
        return "plan" in json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return False


def load_weights(source: str | Path, include_embeddings: bool = False) -> list[ProbeTensor]:
    """The 2-D weights of a safetensors file, a capscale run folder or checkpoint, or a Hugging
    Face model folder (``*.safetensors`` beside a ``config.json``)."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CapscaleError(f"{path}: give a .safetensors file, a capscale run folder or "
                                "checkpoint, or a Hugging Face model folder")
        files = [path]
    elif path.is_dir():
        ckpt = find_checkpoint(path)
        if ckpt is not None:
            files = [ckpt / "model.safetensors"]
        else:
            files = sorted(path.glob("*.safetensors"))
            if not files:
                raise CapscaleError(f"{path} holds no checkpoint and no *.safetensors file (a run "
                                    "that has not saved a checkpoint yet, or a .bin-only model)")
    else:
        raise CapscaleError(f"tensor source {source} does not exist")
    tensors = weights_from_state(_load_safetensors(files), include_embeddings)
    if not tensors:
        raise CapscaleError(f"{source} holds no 2-D floating-point weight to probe")
    return tensors


def capture_activations(run_dir: str | Path, data: str | None = None, batches: int = 4,
                        batch_size: int = 8, max_rows: int = 8192) -> list[ProbeTensor]:
    """The input of every linear layer of a capscale run's model (its latest checkpoint, with
    its compression) on the first ``batches`` validation batches of ``data`` (default: the
    run's own data), captured with forward pre-hooks: what its activation format sees."""
    from safetensors.torch import load_file
    from torch import nn

    from capscale.train.config import TrainConfig, plan
    from capscale.train.data import open_run_data
    from capscale.train.loop import build_model

    run = Path(run_dir).expanduser()
    if not is_run_folder(run):
        raise CapscaleError(f"activations need a capscale run folder ({runrecord.CONFIG} with a "
                            f"plan); {run_dir} is not one")
    ckpt = find_checkpoint(run)
    if ckpt is None:
        raise CapscaleError(f"run {run_dir} has no checkpoint yet")
    saved = runrecord.read_json(run / runrecord.CONFIG, "run config")
    cfg = TrainConfig.from_dict(saved["config"])
    cfg.progress = False
    if data:
        cfg.data = data
    rd = open_run_data(cfg, planned_tokens=batches * batch_size * cfg.seq_len)
    vocab = int(saved["plan"]["model"]["vocab_size"])
    if rd.vocab_size != vocab:
        raise CapscaleError(f"--data {cfg.data} tokenized with {cfg.tokenizer} has {rd.vocab_size} "
                            f"tokens; the run's model has {vocab}")
    model, _ = build_model(cfg, plan(cfg, vocab))
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
    model.eval()
    captured: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def pre(_module, args):
            x = args[0].detach()
            captured.setdefault(name, []).append(x.reshape(-1, x.shape[-1]).float())
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not any(s in n for s in SKIPPED)]
    try:
        with torch.no_grad():
            for i, (x, y) in enumerate(rd.val_batches(batch_size, cfg.seq_len, None)):
                if i >= batches:
                    break
                model(torch.as_tensor(x), torch.as_tensor(y))
    finally:
        for h in handles:
            h.remove()
    if not captured:
        raise CapscaleError(f"no batch of {cfg.data} reached the model (validation split empty?)")
    out = []
    for name, chunks in captured.items():
        m = torch.cat(chunks)[:max_rows]
        out.append(ProbeTensor(f"{name}:input", layer_type(name) + ":input", "activation", m))
    return out


# --------------------------------------------------------------------------- synthetic

SYNTHETIC = ("gaussian", "student_t3", "student_t5", "laplace", "gaussian_outliers")
OUTLIER_FRACTION, OUTLIER_SCALE = 1e-3, 20.0


def synthetic_tensor(name: str, shape=(512, 4096), seed: int = 0) -> torch.Tensor:
    """A heavy-tailed test tensor, float32: ``gaussian``; ``student_tNU`` (Student-t with NU
    degrees of freedom); ``laplace``; ``gaussian_outliers`` (N(0, 1) with a fraction 1e-3 of
    entries replaced by ±20). Unit scale, not unit variance: each is its textbook form."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows, cols = shape
    m = re.fullmatch(r"student_t(\d+(?:\.\d+)?)", name)
    if name == "gaussian":
        x = rng.standard_normal((rows, cols))
    elif m:
        x = rng.standard_t(float(m[1]), (rows, cols))
    elif name == "laplace":
        x = rng.laplace(0.0, 1.0, (rows, cols))
    elif name == "gaussian_outliers":
        x = rng.standard_normal(rows * cols)
        n_out = max(1, round(OUTLIER_FRACTION * rows * cols))
        idx = rng.choice(rows * cols, n_out, replace=False)
        x[idx] = rng.choice([-1.0, 1.0], n_out) * OUTLIER_SCALE
        x = x.reshape(rows, cols)
    else:
        raise CapscaleError(f"unknown synthetic tensor {name!r}: use one of {', '.join(SYNTHETIC)} "
                            "(student_tNU for any NU)")
    x = torch.from_numpy(x)
    return x.float()


def synthetic_tensors(names=SYNTHETIC, shape=(512, 4096), seed: int = 0) -> list[ProbeTensor]:
    return [ProbeTensor(n, n, "synthetic", synthetic_tensor(n, shape, seed)) for n in names]
