"""Runs tables shipped with capscale (``builtin:NAME``), in canonical columns.

The files under ``capscale/laws/runs/`` are byte-for-byte copies of public data; their
provenance and licences are in the README there. This module only renames and derives
columns; it never edits a number.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError

# QuEST's quantizer classes -> our spec of the forward representation. Half-Hadamard rotates
# both operands of a linear layer in the same basis, so its forward pass is the rotated format;
# it differs from full Hadamard only in the backward pass (kept in the `method` column).
_QUEST_HAD = {"HadamardTrustQuantizer", "HalfHadamardTrustQuantizer",
              "HadamardClipQuantizer", "HalfHadamardClipQuantizer"}
_QUEST_PLAIN = {"TrustQuantizer", "ClipQuantizer"}
_QUEST_48 = {"HadamardFourEightTrustQuantizer", "HalfHadamardFourEightTrustQuantizer"}


def quest_spec(quantizer: str, bits: int) -> str:
    """The format spec of a QuEST quantizer at ``bits`` (its forward representation)."""
    if quantizer == "NoQuantizer":
        return "none"
    if quantizer in _QUEST_PLAIN:
        return f"int{int(bits)}"
    if quantizer in _QUEST_HAD:
        return f"int{int(bits)}:had"
    if quantizer == "HalfHadamardFP4TrustQuantizer":
        return "e2m1:had"
    if quantizer in _QUEST_48:
        if int(bits) != 4:
            raise CapscaleError(f"QuEST quantizer {quantizer} at {bits} bits has no spec (only 4)")
        return "2:4:pairs+int4:had"
    raise CapscaleError(f"unknown QuEST quantizer {quantizer!r}")


def _bits_of(quantizer: str, bits: int) -> float:
    if quantizer == "HalfHadamardFP4TrustQuantizer":
        return 4.0  # the record says 16: QuEST's FP4 quantizer ignores its bits argument
    return float(bits)


def _method(quantizer: str) -> str:
    return quantizer.removesuffix("Quantizer")


def _training_method(quantizer: str) -> str:
    """The training method of a QuEST quantizer (rotation and gradient estimator), without
    the format its class name also carries: ``HalfHadamardFP4Trust`` trains like
    ``HalfHadamardTrust``; ``NoQuantizer`` is ``none``."""
    m = _method(quantizer).replace("FP4", "").replace("FourEight", "")
    return "none" if m == "No" else m


def _read(name: str):
    return resources.files("capscale") / "laws" / "runs" / name


def quest_runs() -> pd.DataFrame:
    """The 104 QAT pretraining runs of QuEST (Panferov et al. 2025, arXiv 2502.05003)."""
    with _read("quest_runs.csv").open("r", encoding="utf-8") as f:
        raw = pd.read_csv(f)
    df = pd.DataFrame({
        "N": raw["non_embedding_params"].astype(np.float64),
        "D": raw["tokens"].astype(np.float64),
        "loss": raw["loss"].astype(np.float64),
        "w_format": [quest_spec(q, b) for q, b in zip(raw["w_quant"], raw["w_bits"])],
        "a_format": [quest_spec(q, b) for q, b in zip(raw["a_quant"], raw["a_bits"])],
        "method": [f"{_method(w)}/{_method(a)}" for w, a in zip(raw["w_quant"], raw["a_quant"])],
        "w_method": [_training_method(q) for q in raw["w_quant"]],
        "a_method": [_training_method(q) for q in raw["a_quant"]],
        "w_bits": [_bits_of(q, b) for q, b in zip(raw["w_quant"], raw["w_bits"])],
        "a_bits": [_bits_of(q, b) for q, b in zip(raw["a_quant"], raw["a_bits"])],
        "tokens_per_param": raw["tokens_per_param"].astype(np.float64),
        "model_size": raw["model_size_m"].map(lambda m: f"{m}M"),
        "clip_scale": raw["clip_scale"],
    })
    return df


def chinchilla_runs(epoch_filter: bool = True) -> pd.DataFrame:
    """Epoch AI's digitisation of Hoffmann et al. (2022) Figure 4, with D = C/(6N).

    With ``epoch_filter`` (the default), the five runs with the highest loss are dropped as
    in Besiroglu et al. 2024 (arXiv 2404.10102), leaving 240.
    """
    with _read("chinchilla_epoch_ai.csv").open("r", encoding="utf-8") as f:
        raw = pd.read_csv(f)
    df = pd.DataFrame({
        "N": raw["Model Size"].astype(np.float64),
        "C": raw["Training FLOP"].astype(np.float64),
        "loss": raw["loss"].astype(np.float64),
    })
    df["D"] = df["C"] / (6.0 * df["N"])
    if epoch_filter:
        df = df[df["loss"] < np.sort(df["loss"].to_numpy())[-5]].reset_index(drop=True)
    return df[["N", "D", "C", "loss"]]


# the dense model sizes behind the Frantar et al. 2023 scales (their notebook's P)
_FRANTAR_P = {"t5": 24 * 12 * 768**2, "vit": 12 * 12 * 768**2}


def frantar_runs(model: str) -> pd.DataFrame:
    """Sparsity-law runs of Frantar et al. 2023 (arXiv 2309.08520): T5 or ViT.

    N is the number of non-zero parameters, P·scale·(1 − S); D is training steps (T5) or
    examples seen (ViT), as in the authors' notebook.
    """
    if model == "t5":
        with _read("frantar2023_t5_sparsity.csv").open("r", encoding="utf-8") as f:
            raw = pd.read_csv(f, index_col=0)
        D = raw["steps"]
    elif model == "vit":
        with _read("frantar2023_vit_sparsity.json").open("r", encoding="utf-8") as f:
            raw = pd.read_json(f)
        D = raw["total_examples"]
    else:
        raise CapscaleError(f"Frantar et al. 2023 data exist for 't5' and 'vit', not {model!r}")
    S = raw["sparsity"].astype(np.float64)
    df = pd.DataFrame({
        "N": _FRANTAR_P[model] * raw["scale"].astype(np.float64) * (1.0 - S),
        "D": D.astype(np.float64),
        "loss": raw["val-loss"].astype(np.float64),
        "sparsity": S,
        "scale": raw["scale"].astype(np.float64),
    })
    return df.sort_values(["scale", "sparsity", "D"]).reset_index(drop=True)


BUILTIN = {
    "chinchilla": ("Chinchilla (Hoffmann et al. 2022) as digitised by Epoch AI; Epoch's filter, 240 runs",
                   lambda: chinchilla_runs(True)),
    "chinchilla-all": ("the same, all 245 digitised runs", lambda: chinchilla_runs(False)),
    "quest": ("QuEST's 104 QAT runs, 30M-800M, with format specs (arXiv 2502.05003)", quest_runs),
    "frantar-t5": ("Frantar et al. 2023 sparse T5 runs (48)", lambda: frantar_runs("t5")),
    "frantar-vit": ("Frantar et al. 2023 sparse ViT runs (112)", lambda: frantar_runs("vit")),
}


def load_builtin(name: str) -> pd.DataFrame:
    """A shipped runs table by name (see :data:`BUILTIN`)."""
    if name not in BUILTIN:
        raise CapscaleError(
            f"no builtin runs table {name!r}; choose one of "
            + ", ".join(f"builtin:{k}" for k in BUILTIN)
        )
    return BUILTIN[name][1]()
