"""Scaling-law forms as small objects the fitter can evaluate for many parameter vectors at once.

Every law here predicts the log loss as a log-sum-exp of a few terms, each linear or nearly
linear in the parameters (Chinchilla's Approach-3 parametrisation): positive scales are
fitted as logs, so ``A·N^(−α)`` is the term ``log A − α·log N``. A law gives

- ``terms(theta, X)``: the K terms, arrays broadcastable to (S, n), for S parameter
  vectors (rows of ``theta``) and the n runs of a design ``X``;
- ``terms_vjp(theta, X, W)``: Σ_i Σ_k W_k[s, i] · ∂t_k[s, i]/∂theta[s] — the analytic
  gradient of anything that depends on the terms, without materialising a Jacobian;
- ``to_natural`` / ``from_natural`` between fitted and reported parameters, a grid of
  starting points, a readable formula, and ``spec()`` / :func:`law_from_spec` to rebuild
  the law (with what it learnt from the table: formats, groups) from a saved fit.

The fitted coordinates are centred: a term ``A·N^(−α)`` is evaluated as
``a − α·(log N − c_N)`` with c_N the mean log N of the fitted table, so ``a = log A − α·c_N``
is the log of the term at a typical size. Uncentred, log A and α are almost collinear (log N
is around 20), and L-BFGS crawls along that valley; centred, they are nearly independent.
Reported parameters are always the natural ones (A, α, ...).

A law is bound to a runs table by :func:`make_law`, which reads from the table what the law
needs (which formats exist, which compression types, which columns hold bits) and checks
that the table can identify the law's parameters.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from capscale.capacity.law import LOG4, log_quarter, tanh_capacity
from capscale.errors import CapscaleError, option
from capscale.laws import representation as rep
from capscale.laws.table import representation_columns, size_groups


@dataclass
class Design:
    """The arrays a law reads from a runs table (float64)."""

    n: int
    xN: np.ndarray  # log N − c_N
    xD: np.ndarray  # log D − c_D
    extra: dict


def _chinchilla_grid() -> np.ndarray:
    """The 4,500 starting points of Hoffmann et al. (2022, Appendix D.2), in the order
    [log A, α, log B, β, log E]: a, b ∈ {0, 5, …, 25}; α, β ∈ {0, 0.5, …, 2}; e ∈ {−1, −0.5, …, 1}."""
    a = np.arange(0, 30, 5.0)
    ab = np.arange(0, 2.5, 0.5)
    e = np.arange(-1, 1.5, 0.5)
    return np.array(list(itertools.product(a, ab, a, ab, e)), dtype=np.float64)


def _product_grid(base: np.ndarray, extra: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """All pairs of base and extra starting points, deterministically thinned to ``cap``."""
    grid = np.concatenate(
        [np.repeat(base, len(extra), axis=0), np.tile(extra, (len(base), 1))], axis=1
    )
    if len(grid) > cap:
        keep = np.sort(np.random.default_rng(seed).choice(len(grid), cap, replace=False))
        grid = grid[keep]
    return grid


class Law:
    """Base class. Subclasses set ``name``, ``param_names``, ``natural_names``."""

    name = "law"
    formula = ""
    reference = ""
    term_labels: list[str] = []
    term_params: list[list[int]] = []  # natural parameters each term carries
    has_eff = False  # whether the law has an effective-parameter multiplier per run
    param_names: list[str]
    natural_names: list[str]
    log_params: set[int]  # indices fitted as logs of positive natural parameters
    # log-coefficient index -> (exponent index, "N" or "D"): natural log coefficient is
    # theta[j] + theta[k]·c (the centring, see the module docstring)
    couplings: dict[int, tuple[int, str]] = {}
    centers: tuple[float, float] = (0.0, 0.0)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def set_centers(self, df: pd.DataFrame) -> None:
        """Centre log N and log D on the table the law is fitted to."""
        self.centers = (float(np.mean(np.log(df["N"].to_numpy(dtype=np.float64)))),
                        float(np.mean(np.log(df["D"].to_numpy(dtype=np.float64)))))

    def design(self, df: pd.DataFrame) -> Design:
        N = df["N"].to_numpy(dtype=np.float64)
        D = df["D"].to_numpy(dtype=np.float64)
        cN, cD = self.centers
        return Design(n=len(df), xN=np.log(N) - cN, xD=np.log(D) - cD, extra={})

    def _center(self, which: str) -> float:
        return self.centers[0] if which == "N" else self.centers[1]

    def terms(self, theta: np.ndarray, X: Design) -> list[np.ndarray]:
        raise NotImplementedError

    def terms_vjp(self, theta: np.ndarray, X: Design, W: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def to_natural(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        out = theta.copy()
        for j, (k, which) in self.couplings.items():
            out[..., j] = theta[..., j] + theta[..., k] * self._center(which)
        idx = sorted(self.log_params)
        with np.errstate(over="ignore"):
            out[..., idx] = np.exp(out[..., idx])
        return out

    def from_natural(self, natural: np.ndarray) -> np.ndarray:
        natural = np.asarray(natural, dtype=np.float64)
        out = natural.copy()
        idx = sorted(self.log_params)
        with np.errstate(divide="ignore"):
            out[..., idx] = np.log(natural[..., idx])
        for j, (k, which) in self.couplings.items():
            out[..., j] = out[..., j] - natural[..., k] * self._center(which)
        return out

    def from_log_natural(self, grid: np.ndarray) -> np.ndarray:
        """Starting points given as natural parameters with logs of the positive ones (the
        Chinchilla grid's coordinates) -> fitted coordinates."""
        out = np.array(grid, dtype=np.float64)
        for j, (k, which) in self.couplings.items():
            out[..., j] = grid[..., j] - grid[..., k] * self._center(which)
        return out

    def start_grid(self, max_starts: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def check_identifiable(self, df: pd.DataFrame) -> None:
        """Raise a CapscaleError when the table cannot pin down the parameters."""
        _require_spread(df, "N", "model sizes", self.name)
        _require_spread(df, "D", "token counts", self.name)
        if len(df) <= self.n_params:
            raise CapscaleError(
                f"law {self.name!r} has {self.n_params} parameters but the table has only "
                f"{len(df)} runs; it needs more runs than parameters"
            )

    def log_predict(self, theta: np.ndarray, X: Design) -> np.ndarray:
        """log loss, shape (S, n)."""
        T = [np.broadcast_to(t, (theta.shape[0], X.n)) for t in self.terms(theta, X)]
        return np.logaddexp.reduce(np.stack(T), axis=0)

    def spec(self) -> dict:
        return {"name": self.name, "centers": list(self.centers)}

    def describe_params(self, natural: np.ndarray) -> dict:
        """Natural parameters as a nested dict for JSON (``eff[k]`` -> ``{"eff": {k: v}}``)."""
        return nest_params(self.natural_names, natural)


def nest_params(names: list[str], values) -> dict:
    """Flat names ``A``, ``eff[int4]``, ``L[scalar]`` -> {"A": .., "eff": {"int4": ..}, ...}."""
    out: dict = {}
    for name, v in zip(names, values):
        if "[" in name and name.endswith("]"):
            head, key = name[:-1].split("[", 1)
            out.setdefault(head, {})[key] = v
        else:
            out[name] = v
    return out


def _require_spread(df: pd.DataFrame, col: str, what: str, law: str) -> None:
    groups = size_groups(df[col].to_numpy())
    if groups.max() < 1:
        raise CapscaleError(
            f"law {law!r} cannot be identified from runs at one value of {col} only "
            f"({col}≈{df[col].iloc[0]:.4g} everywhere); it needs runs at two or more {what}"
        )


def _one_format_query(df: pd.DataFrame, key: str) -> str:
    """A --where query that keeps the runs of one representation key."""
    cols = rep.part_columns(df)
    return " and ".join(f"{c} == '{v}'" for c, v in zip(cols, key.split(rep.KEY_SEPARATOR)))


def default_law(df: pd.DataFrame) -> str:
    """The law a table's columns call for when none is named: Chinchilla for dense runs, the
    decoupled law (a multiplier per format, measured against the dense runs) when any run is
    compressed. ``capscale fit`` and ``capscale report`` both start from it."""
    if representation_columns(df) and not rep.dense_rows(df).all():
        return "decoupled"
    return "chinchilla"


# ---------------------------------------------------------------- the Chinchilla family


class ChinchillaLaw(Law):
    """L = A·(N·eff)^(−α) + B·D^(−β) + E; here eff = 1 (Hoffmann et al. 2022)."""

    name = "chinchilla"
    formula = "L = A·N^(−α) + B·D^(−β) + E"
    reference = "Hoffmann et al. 2022 (arXiv 2203.15556), Approach 3"
    term_labels = ["A·(N·eff)^(−α)", "B·D^(−β)", "E"]
    term_params = [[0, 1], [2, 3], [4]]
    base_names = ["log_A", "alpha", "log_B", "beta", "log_E"]
    base_natural = ["A", "alpha", "B", "beta", "E"]

    @classmethod
    def from_table(cls, df, pool_formats=False):
        """The plain law has no term for the representation: on a table of several formats it
        would draw one curve through all of them. That happens only when asked for."""
        if representation_columns(df) and not pool_formats:
            dense = rep.dense_rows(df)
            keys = sorted({"none" if d else k for k, d in zip(rep.representation_keys(df), dense)})
            if len(keys) > 1:
                shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
                raise CapscaleError(
                    f"law 'chinchilla' has no term for the format, and this table has "
                    f"{len(keys)} representations ({shown}); fit "
                    f"{option('law', 'decoupled')} or {option('law', 'unified')}, keep one "
                    f"format ({option('where', _one_format_query(df, keys[0]))}), or pool them "
                    f"on purpose ({option('pool_formats', True)})"
                )
        return cls()

    def __init__(self) -> None:
        self.param_names = self.base_names + self.extra_names()
        self.natural_names = self.base_natural + self.extra_natural()
        self.log_params = {0, 2, 4} | {5 + i for i in self.extra_log_indices()}
        self.couplings = {0: (1, "N"), 2: (3, "D")}

    # subclasses describe their multiplier eff through these
    def extra_names(self) -> list[str]:
        return []

    def extra_natural(self) -> list[str]:
        return []

    def extra_log_indices(self) -> list[int]:
        return []

    def extra_grid(self) -> np.ndarray:
        return np.zeros((1, 0))

    def log_eff(self, extra: np.ndarray, X: Design):
        """log of the effective-parameter multiplier, (S, n), or 0.0."""
        return 0.0

    def log_eff_vjp(self, extra: np.ndarray, X: Design, w: np.ndarray) -> np.ndarray:
        return np.zeros((extra.shape[0], 0))

    def terms(self, theta, X):
        le = self.log_eff(theta[:, 5:], X)
        if np.ndim(le) == 0 and le == 0.0:  # no multiplier: the same numbers, a sixth faster
            t1 = np.multiply.outer(theta[:, 1], X.xN)
            np.subtract(theta[:, 0:1], t1, out=t1)
        else:
            t1 = theta[:, 0:1] - theta[:, 1:2] * (X.xN[None, :] + le)
        t2 = np.multiply.outer(theta[:, 3], X.xD)
        np.subtract(theta[:, 2:3], t2, out=t2)
        t3 = theta[:, 4:5]
        return [t1, t2, t3]

    def terms_vjp(self, theta, X, W):
        W1, W2, W3 = W
        g = np.empty_like(theta)
        g[:, 0] = W1.sum(1)
        g[:, 1] = -(W1 @ X.xN)
        g[:, 2] = W2.sum(1)
        g[:, 3] = -(W2 @ X.xD)
        g[:, 4] = W3.sum(1)
        if theta.shape[1] > 5:
            le = self.log_eff(theta[:, 5:], X)
            g[:, 1] -= np.einsum("sn,sn->s", W1, np.broadcast_to(le, W1.shape))
            g[:, 5:] = self.log_eff_vjp(theta[:, 5:], X, -theta[:, 1:2] * W1)
        return g

    def start_grid(self, max_starts=None):
        base = _chinchilla_grid()
        extra = self.extra_grid()
        if extra.shape[1]:
            base = _product_grid(base, extra, max_starts or 2 * len(base))
        return self.from_log_natural(base)

    def eff(self, theta: np.ndarray, X: Design) -> np.ndarray:
        """Effective-parameter multiplier per run, (S, n)."""
        le = self.log_eff(np.atleast_2d(theta)[:, 5:], X)
        with np.errstate(over="ignore"):
            return np.exp(np.broadcast_to(le, (np.atleast_2d(theta).shape[0], X.n)))


class DecoupledLaw(ChinchillaLaw):
    """L = A·(N·eff_f)^(−α) + B·D^(−β) + E with one free multiplier eff_f per representation
    and eff = 1 for the uncompressed one (Frantar et al. 2025, arXiv 2502.16440; QuEST,
    arXiv 2502.05003)."""

    has_eff = True
    name = "decoupled"
    formula = "L = A·(N·eff_f)^(−α) + B·D^(−β) + E,  eff_dense = 1"
    reference = "Frantar et al. 2025 (arXiv 2502.16440)"

    def __init__(self, keys: list[str], reference_keys: list[str],
                 key_columns: list[str] | None = None) -> None:
        self.keys = list(keys)
        self.reference_keys = list(reference_keys)
        self.key_columns = list(key_columns) if key_columns else None
        super().__init__()

    @classmethod
    def from_table(cls, df, key_columns=None):
        keys = rep.representation_keys(df, key_columns)
        dense = rep.dense_rows(df)
        ref = sorted({k for k, d in zip(keys, dense) if d})
        if not ref:
            raise CapscaleError(
                "law 'decoupled' measures each multiplier against uncompressed runs, and the "
                "table has none (format 'none', or w_format and a_format 'none'); add dense runs"
            )
        mixed = sorted({k for k, d in zip(keys, dense) if not d} & set(ref))
        if mixed:
            raise CapscaleError(f"eff keys {mixed} mix dense and compressed runs; key on other columns")
        free = sorted(set(keys) - set(ref), key=keys.index)
        return cls(free, ref, key_columns)

    def extra_names(self):
        return [f"log_eff[{k}]" for k in self.keys]

    def extra_natural(self):
        return [f"eff[{k}]" for k in self.keys]

    def extra_log_indices(self):
        return list(range(len(self.keys)))

    def extra_grid(self):
        K = len(self.keys)
        return np.log(np.array([[1.0] * K, [0.3] * K]))

    def design(self, df):
        X = super().design(df)
        keys = pd.Index(rep.representation_keys(df, self.key_columns), dtype=object)
        col = pd.Index(self.keys, dtype=object).get_indexer(keys)
        unknown = (col < 0) & ~keys.isin(self.reference_keys)
        if unknown.any():
            known = ", ".join(self.reference_keys + self.keys)
            raise CapscaleError(
                f"representation {keys[int(np.flatnonzero(unknown)[0])]!r} has no fitted "
                f"multiplier in this decoupled fit (fitted: {known}); a unified fit predicts new "
                "formats from their GMSE"
            )
        onehot = np.zeros((len(df), len(self.keys)))
        rows = np.flatnonzero(col >= 0)
        onehot[rows, col[rows]] = 1.0
        X.extra["onehot"] = onehot
        return X

    def log_eff(self, extra, X):
        return extra @ X.extra["onehot"].T

    def log_eff_vjp(self, extra, X, w):
        return w @ X.extra["onehot"]

    def spec(self):
        return {**super().spec(), "keys": self.keys, "reference_keys": self.reference_keys,
                "key_columns": self.key_columns}




def _levels(onehot: np.ndarray, lg: np.ndarray) -> dict:
    """One part slot of the unified law's design, by distinct level: a table has many runs
    but few (capacity curve, GMSE) pairs, so ρ is computed once per pair. ``onehot`` (U, G),
    ``lg`` and ``valid`` (U,) describe the levels, ``level`` (n,) names each run's level and
    ``runs`` (n, U) is its one-hot (to sum a run-wise weight by level)."""
    pairs = np.concatenate([onehot, lg[:, None]], axis=1)
    uniq, first, level = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
    level = np.asarray(level).reshape(-1)
    runs = np.zeros((len(lg), len(uniq)))
    runs[np.arange(len(lg)), level] = 1.0
    return {"onehot": onehot[first], "lg": lg[first], "valid": onehot[first].sum(1),
            "level": level, "runs": runs}


class UnifiedLaw(ChinchillaLaw):
    """L = A·(N·ρ)^(−α) + B·D^(−β) + E with the capacity ρ predicted from the GMSE:

        ρ = Π_parts  L_g · tanh(F_g · log_{1/4} GMSE_part)^(C_g)

    What we follow from "Unified Scaling Laws for Compressed Representations" (Panferov et
    al., arXiv 2506.01863): the capacity of a representation is a function of its Gaussian
    MSE alone, of the tanh form above with (L, F, C) fitted per compression type and training
    method, and the capacities of independently compressed parts multiply (weights ×
    activations; with ``split_composed``, also sparsity × quantization inside one spec). An
    uncompressed part contributes exactly 1, so L_g is the capacity a type approaches as its
    GMSE goes to 0, measured against the dense runs (it may saturate below 1, as for
    learned-scale quantizers).

    GMSE cannot see a rotation or a gradient estimator, so runs trained differently do not
    share a curve: when the table says how each part was trained (a ``method`` column, or
    ``w_method``/``a_method``), the default groups are compression type × method
    (``"kind+method"``), else compression type (``"kind"``). ``"kind+part"`` fits weights and
    activations separately, ``"single"`` uses one curve for everything, ``"method"`` one per
    method, and ``"KIND=GROUP,..."`` (after an optional mode: ``"kind+method,sparse+scalar=scalar"``)
    merges types.

    ``curve`` picks the form of ρ (the paper's Table 4 compares them): ``"tanh"`` (above),
    ``"logistic"`` ρ = (1 + B_ρ·GMSE^A_ρ)^(−1), and ``"logistic10"`` (logistic(1, 0))
    ρ = (1 − GMSE^A_ρ)/(1 + B_ρ·GMSE^A_ρ).
    """

    has_eff = True
    name = "unified"
    reference = "Panferov et al. 2025 (arXiv 2506.01863)"
    MODES = ("kind", "single", "part", "kind+part", "method", "kind+method")
    CURVES = {
        "tanh": "ρ = Π_parts L_g·tanh(F_g·log_{1/4} GMSE)^C_g",
        "logistic": "ρ = Π_parts (1 + B_ρ·GMSE^A_ρ)^(−1)",
        "logistic10": "ρ = Π_parts (1 − GMSE^A_ρ)/(1 + B_ρ·GMSE^A_ρ)",
    }

    def __init__(self, groups: list[str], capacity_groups: str = "kind",
                 split_composed: bool = False, fix_L: float | None = None,
                 curve: str = "tanh") -> None:
        if curve not in self.CURVES:
            raise CapscaleError(f"capacity curve {curve!r}: choose one of {', '.join(self.CURVES)}")
        if fix_L is not None and curve != "tanh":
            raise CapscaleError(f"{option('fix_L', fix_L)} fixes the ceiling of the tanh curve; "
                                f"the {curve} curve has none (it tends to 1 as GMSE goes to 0)")
        self.groups = list(groups)
        self.capacity_groups = capacity_groups
        self.split_composed = split_composed
        self.fix_L = fix_L
        self.curve = curve
        self.formula = "L = A·(N·ρ)^(−α) + B·D^(−β) + E,  " + self.CURVES[curve]
        super().__init__()

    @classmethod
    def from_table(cls, df, capacity_groups=None, split_composed=False, fix_L=None, curve="tanh"):
        slots = rep.part_table(df, split_composed=split_composed)
        if capacity_groups is None:
            has_method = any(m is not None for slot in slots for m in (slot["method"] if slot["method"] is not None else []))
            capacity_groups = "kind+method" if has_method else "kind"
        probe = cls([], capacity_groups, split_composed, fix_L, curve)
        groups = []
        for slot in slots:
            for g in probe._group_names(slot):
                if g is not None and g not in groups:
                    groups.append(g)
        if not groups:
            raise CapscaleError("law 'unified': every run is uncompressed; nothing to fit a capacity to")
        return cls(groups, capacity_groups, split_composed, fix_L, curve)

    def _mode(self) -> tuple[str, dict]:
        """(mode, kind merges) of ``capacity_groups``."""
        mode, mapping = None, {}
        for item in str(self.capacity_groups).split(","):
            item = item.strip()
            if "=" in item:
                k, v = (x.strip() for x in item.split("=", 1))
                mapping[k] = v
            elif item:
                if mode is not None or item not in self.MODES:
                    mode = "?"
                    break
                mode = item
        if mode == "?" or (mode is None and not mapping):
            raise CapscaleError(
                f"capacity groups {self.capacity_groups!r}: use {', '.join(self.MODES)}, or "
                "KIND=GROUP,... (e.g. sparse+scalar=scalar), optionally after a mode "
                "(kind+method,sparse+scalar=scalar)"
            )
        return mode or "kind", mapping

    def _group_names(self, slot) -> list[str | None]:
        mode, mapping = self._mode()
        part = slot["name"].split("[")[0].replace("_format", "").replace("format", "model")
        methods = slot.get("method")
        out = []
        for i, kind in enumerate(slot["kind"]):
            if kind == "dense":
                out.append(None)
                continue
            kind = mapping.get(kind, kind)
            method = methods[i] if methods is not None else None
            if "method" in mode and method is None:
                raise CapscaleError(
                    f"capacity groups {self.capacity_groups!r} need the training method of each "
                    f"compressed run (row {i} has none): a 'method' column (or w_method and "
                    "a_method)"
                )
            if mode == "kind":
                out.append(kind)
            elif mode == "single":
                out.append("all")
            elif mode == "part":
                out.append(part)
            elif mode == "kind+part":
                out.append(f"{kind}@{part}")
            elif mode == "method":
                out.append(str(method))
            else:
                out.append(f"{kind}@{method}")
        return out

    @property
    def _nL(self) -> int:
        return len(self.groups) if self.curve == "tanh" and self.fix_L is None else 0

    @property
    def _letters(self) -> tuple[str, str]:
        return ("F", "C") if self.curve == "tanh" else ("A_rho", "B_rho")

    def extra_names(self):
        G = self.groups
        a, b = self._letters
        return [f"log_L[{g}]" for g in G][:self._nL] + \
            [f"log_{a}[{g}]" for g in G] + [f"log_{b}[{g}]" for g in G]

    def natural_name(self, letter: str, group: str) -> str:
        """``L`` / ``F`` / ``C`` with one capacity curve, ``L[scalar]`` etc. with several."""
        return letter if len(self.groups) == 1 else f"{letter}[{group}]"

    def extra_natural(self):
        G = self.groups
        a, b = self._letters
        return [self.natural_name("L", g) for g in G][:self._nL] + \
            [self.natural_name(a, g) for g in G] + [self.natural_name(b, g) for g in G]

    def extra_log_indices(self):
        return list(range(len(self.extra_names())))

    def extra_grid(self):
        G = len(self.groups)
        rows = []
        pairs = (itertools.product((0.2, 0.6), (0.5, 2.0)) if self.curve == "tanh"
                 else itertools.product((0.5, 1.0, 2.0), (1.0, 10.0, 100.0)))
        for a, b in pairs:
            rows.append([0.0] * self._nL + [math.log(a)] * G + [math.log(b)] * G)
        return np.array(rows)

    def design(self, df):
        X = super().design(df)
        slots = rep.part_table(df, split_composed=self.split_composed)
        index = {g: i for i, g in enumerate(self.groups)}
        parts = []
        for slot in slots:
            names = self._group_names(slot)
            onehot = np.zeros((len(df), len(self.groups)))
            lg = np.ones(len(df))
            col = np.array([-2 if g is None else index.get(g, -1) for g in names], dtype=np.int64)
            if (col == -1).any():
                i = int(np.flatnonzero(col == -1)[0])
                raise CapscaleError(
                    f"compression type {names[i]!r} (row {i}) has no fitted capacity curve in "
                    f"this unified fit (fitted: {self.groups})"
                )
            rows = np.flatnonzero(col >= 0)
            onehot[rows, col[rows]] = 1.0
            lg[rows] = log_quarter(slot["gmse"][rows])
            parts.append(_levels(onehot, lg))
        X.extra["parts"] = parts
        return X

    def _split(self, extra):
        G = len(self.groups)
        if self._nL:
            logL = extra[:, :G]
        else:
            logL = np.full((extra.shape[0], G), math.log(self.fix_L or 1.0))
        logF = extra[:, self._nL:self._nL + G]
        logC = extra[:, self._nL + G:]
        return logL, logF, logC

    def _part_log_rho(self, logL, logP, logQ, p):
        """log ρ of one part slot for every parameter vector, (S, n), and its derivatives
        with respect to the two log shape parameters."""
        M, valid = p["onehot"], p["valid"] > 0
        P, Q = np.exp(logP) @ M.T, np.exp(logQ) @ M.T
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            if self.curve == "tanh":  # P = F, Q = C
                u = P * p["lg"]
                lt = np.log(np.tanh(u))
                # d log tanh(u) / d log F = u · 2/sinh(2u)
                dP = Q * 2.0 * u / np.sinh(2.0 * u)
                dQ = Q * lt
                out = logL @ M.T + Q * lt
            else:  # P = A_ρ, Q = B_ρ; ln GMSE = −lg·ln 4
                t = -P * p["lg"] * LOG4  # A·ln GMSE (< 0)
                u = logQ @ M.T + t
                sig = 0.5 * (1.0 + np.tanh(0.5 * u))
                out = -np.logaddexp(0.0, u)
                dP = -sig * t
                dQ = -sig
                if self.curve == "logistic10":
                    out = out + np.log(-np.expm1(t))
                    dP = dP + t * np.exp(t) / np.expm1(t)
            out = np.where(valid, out, 0.0)
            dP = np.where(valid, dP, 0.0)
            dQ = np.where(valid, dQ, 0.0)
        return out, dP, dQ

    def log_eff(self, extra, X):
        logL, logP, logQ = self._split(extra)
        total = 0.0
        for p in X.extra["parts"]:  # ρ at each distinct level, spread over the runs
            total = total + self._part_log_rho(logL, logP, logQ, p)[0][:, p["level"]]
        return total

    def log_eff_vjp(self, extra, X, w):
        logL, logP, logQ = self._split(extra)
        G = len(self.groups)
        gL = np.zeros((extra.shape[0], G))
        gP = np.zeros_like(gL)
        gQ = np.zeros_like(gL)
        for p in X.extra["parts"]:
            M = p["onehot"]
            _, dP, dQ = self._part_log_rho(logL, logP, logQ, p)
            wl = w @ p["runs"]  # the weight of each level: the sum over its runs
            gL += wl @ M
            gP += (wl * dP) @ M
            gQ += (wl * dQ) @ M
        parts = ([gL] if self._nL else []) + [gP, gQ]
        return np.concatenate(parts, axis=1)

    def spec(self):
        return {**super().spec(), "groups": self.groups,
                "capacity_groups": self.capacity_groups, "split_composed": self.split_composed,
                "fix_L": self.fix_L, "curve": self.curve}

    def gmse_levels(self, df) -> dict[str, set]:
        """The distinct GMSE values each capacity curve sees in the table: a curve needs as
        many as it has free parameters."""
        levels: dict[str, set] = {g: set() for g in self.groups}
        for slot in rep.part_table(df, split_composed=self.split_composed):
            for g, v in zip(self._group_names(slot), slot["gmse"]):
                if g is not None:
                    levels[g].add(round(float(v), 12))
        return levels

    def check_identifiable(self, df):
        super().check_identifiable(df)
        if self.curve == "tanh" and self.fix_L is None and not rep.dense_rows(df).any():
            raise CapscaleError(
                "law 'unified' measures capacity against uncompressed runs and the table has "
                f"none; add dense runs, or fix the capacity ceiling with {option('fix_L', 1)}"
            )
        levels = self.gmse_levels(df)
        need = 3 if self._nL else 2
        thin = {g: len(v) for g, v in levels.items() if len(v) < need}
        if thin:
            fixes = [f"merge curves ({option('capacity_groups', 'single')} or e.g. "
                     f"{option('capacity_groups', 'sparse+scalar=scalar')})"]
            if self._nL:
                fixes.append(f"fix the ceiling ({option('fix_L', 1)})")
            fixes.append(f"leave those runs out ({option('where', '...')})")
            raise CapscaleError(
                f"law 'unified': the {self.curve} capacity curve of each group "
                f"({self.capacity_groups}) has {need} free parameters, so it needs runs at {need} "
                f"or more distinct GMSE values; {', '.join(f'{g!r} has {n}' for g, n in thin.items())}. "
                f"To fit: {', '.join(fixes[:-1])}, or {fixes[-1]}"
            )

    def rho(self, natural: dict, gmse, group: str) -> np.ndarray:
        """ρ of one part of type ``group`` at the given GMSE, from natural parameters."""
        g = np.asarray(gmse, dtype=np.float64)
        if self.curve == "tanh":
            L = natural[self.natural_name("L", group)] if self._nL else (self.fix_L or 1.0)
            F, C = natural[self.natural_name("F", group)], natural[self.natural_name("C", group)]
            return tanh_capacity(g, L, F, C)
        A, B = natural[self.natural_name("A_rho", group)], natural[self.natural_name("B_rho", group)]
        with np.errstate(divide="ignore", over="ignore"):
            ga = g ** A
            out = 1.0 / (1.0 + B * ga)
            return out * (1.0 - ga) if self.curve == "logistic10" else out


class PrecisionLaw(ChinchillaLaw):
    """Kumar et al. 2024 ("Scaling Laws for Precision", arXiv 2411.04330):
    L = A·N_eff^(−α) + B·D^(−β) + E with N_eff = N·Π_i (1 − e^(−P_i/γ_i)) over the
    compressed operands i (weights, activations), P_i their bits."""

    has_eff = True
    name = "precision"
    formula = "L = A·N_eff^(−α) + B·D^(−β) + E,  N_eff = N·Π_i (1 − exp(−P_i/γ_i))"
    reference = "Kumar et al. 2024 (arXiv 2411.04330)"

    def __init__(self, parts: list[str]) -> None:
        self.parts = list(parts)
        super().__init__()

    @classmethod
    def from_table(cls, df):
        return cls(list(rep.part_bits(df)))

    def _label(self, part):
        return part.replace("_format", "").replace("format", "model")

    def extra_names(self):
        return [f"log_gamma[{self._label(p)}]" for p in self.parts]

    def extra_natural(self):
        return [f"gamma[{self._label(p)}]" for p in self.parts]

    def extra_log_indices(self):
        return list(range(len(self.parts)))

    def extra_grid(self):
        P = len(self.parts)
        return np.log(np.array([[1.0] * P, [3.0] * P]))

    def design(self, df):
        X = super().design(df)
        bits = rep.part_bits(df)
        X.extra["bits"] = np.stack([bits[p] for p in self.parts])  # (parts, n)
        return X

    def log_eff(self, extra, X):
        z = X.extra["bits"][None, :, :] / np.exp(extra)[:, :, None]
        return np.log(-np.expm1(-z)).sum(1)

    def log_eff_vjp(self, extra, X, w):
        z = X.extra["bits"][None, :, :] / np.exp(extra)[:, :, None]
        with np.errstate(over="ignore"):
            d = -z / np.expm1(z)  # d log(1 − e^(−z)) / d log γ
        return (w[:, None, :] * d).sum(2)

    def spec(self):
        return {**super().spec(), "parts": self.parts}

    def check_identifiable(self, df):
        super().check_identifiable(df)
        bits = rep.part_bits(df)
        for p in self.parts:
            if len(np.unique(bits[p])) < 2:
                raise CapscaleError(
                    f"law 'precision': every run has the same {p} bits ({bits[p][0]:g}), so "
                    f"gamma[{self._label(p)}] cannot be identified; it needs two or more bit widths"
                )


class SparsityLaw(Law):
    """Frantar et al. 2023 ("Scaling Laws for Sparsely-Connected Foundation Models",
    arXiv 2309.08520): L = (a·(1−S)^b + c)·N^(−d) + e·D^(−f) + g, with N the number of
    non-zero parameters and S the sparsity. (The paper writes the data term (e'/D)^f, so
    e = e'^f.)"""

    name = "sparsity"
    formula = "L = (a·(1−S)^b + c)·N^(−d) + e·D^(−f) + g"
    reference = "Frantar et al. 2023 (arXiv 2309.08520)"
    term_labels = ["a·(1−S)^b·N^(−d)", "c·N^(−d)", "e·D^(−f)", "g"]
    term_params = [[0, 1], [2], [4, 5], [6]]
    has_eff = True

    def __init__(self) -> None:
        self.param_names = ["log_a", "b", "log_c", "d", "log_e", "f", "log_g"]
        self.natural_names = ["a", "b", "c", "d", "e", "f", "g"]
        self.log_params = {0, 2, 4, 6}
        self.couplings = {0: (3, "N"), 2: (3, "N"), 4: (5, "D")}

    @staticmethod
    def _sparsity(df) -> np.ndarray:
        if "sparsity" not in df.columns:
            raise CapscaleError(
                f"law 'sparsity' needs a 'sparsity' column (S in [0, 1)); the table has {list(df.columns)}"
            )
        S = pd.to_numeric(df["sparsity"], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all((S >= 0) & (S < 1)):
            i = int(np.flatnonzero(~((S >= 0) & (S < 1)))[0])
            raise CapscaleError(f"sparsity must lie in [0, 1); row {i} has {S[i]!r}")
        return S

    def design(self, df):
        S = self._sparsity(df)
        X = super().design(df)
        X.extra["log1mS"] = np.log1p(-S)
        return X

    def terms(self, theta, X):
        ls = X.extra["log1mS"][None, :]
        lN = X.xN[None, :]
        d = theta[:, 3:4]
        return [theta[:, 0:1] + theta[:, 1:2] * ls - d * lN,
                theta[:, 2:3] - d * lN,
                theta[:, 4:5] - theta[:, 5:6] * X.xD[None, :],
                theta[:, 6:7]]

    def terms_vjp(self, theta, X, W):
        W1, W2, W3, W4 = W
        g = np.empty_like(theta)
        g[:, 0] = W1.sum(1)
        g[:, 1] = W1 @ X.extra["log1mS"]
        g[:, 2] = W2.sum(1)
        g[:, 3] = -((W1 + W2) @ X.xN)
        g[:, 4] = W3.sum(1)
        g[:, 5] = -(W3 @ X.xD)
        g[:, 6] = W4.sum(1)
        return g

    def start_grid(self, max_starts=None):
        la = lc = le = (0.0, 5.0, 10.0)
        return self.from_log_natural(np.array(list(itertools.product(
            la, (0.0, 0.5, 1.0), lc, (0.25, 0.5, 1.0), le, (0.25, 0.5, 1.0), (-1.0, 0.0, 1.0)))))

    def check_identifiable(self, df):
        super().check_identifiable(df)
        levels = np.unique(np.round(self._sparsity(df), 9))
        if len(levels) < 3:
            raise CapscaleError(
                f"law 'sparsity': a, b and c need runs at three or more sparsities; the table has "
                f"{levels.tolist()}"
            )

    def eff(self, theta, X):
        """Sparse-to-dense multiplier at equal non-zero N: (coef(0)/coef(S))^(1/d)."""
        theta = np.atleast_2d(theta)
        a, b, c, d = (np.exp(theta[:, 0:1]), theta[:, 1:2], np.exp(theta[:, 2:3]), theta[:, 3:4])
        coef = a * np.exp(b * X.extra["log1mS"][None, :]) + c
        return ((a + c) / coef) ** (1.0 / d)


LAWS = {
    "chinchilla": ChinchillaLaw,
    "decoupled": DecoupledLaw,
    "unified": UnifiedLaw,
    "precision": PrecisionLaw,
    "sparsity": SparsityLaw,
}


def make_law(name: str, df: pd.DataFrame, **options) -> Law:
    """Build law ``name`` for the runs in ``df`` (reading which formats, types and operands
    exist) and check that the table can identify it."""
    if name not in LAWS:
        raise CapscaleError(f"unknown law {name!r}; choose one of {', '.join(LAWS)}")
    allowed = {
        "chinchilla": {"pool_formats"},
        "decoupled": {"key_columns"},
        "unified": {"capacity_groups", "split_composed", "fix_L", "curve"},
        "precision": set(),
        "sparsity": set(),
    }[name]
    options = {k: v for k, v in options.items() if v is not None}
    fixed = _fixed_values(name, options.pop("fix", None), options)
    unknown = set(options) - allowed
    if unknown:
        raise CapscaleError(
            f"law {name!r} takes no option(s) {sorted(unknown)}"
            + (f"; it takes {sorted(allowed)}" if allowed else "")
        )
    cls = LAWS[name]
    law = cls.from_table(df, **options) if hasattr(cls, "from_table") else cls()
    law.set_centers(df)
    if fixed:
        from capscale.laws.fixed import FixedLaw

        law = FixedLaw(law, fixed)
    law.check_identifiable(df)
    return law


def _fixed_values(name: str, fix, options: dict) -> dict[str, float]:
    """``fix`` ({name: value} or "E=1.7,alpha=0.3") as values; a unified law's L goes to its
    own ``fix_L`` (the ``--fix-L`` option)."""
    if not fix:
        return {}
    from capscale.laws.fixed import parse_fix

    parsed = parse_fix(fix)
    uncertain = [k for k, (_, sd) in parsed.items() if sd > 0]
    if uncertain:
        raise CapscaleError(f"--fix {', '.join(uncertain)} with ±: a fit holds fixed values "
                            "exactly; an uncertainty is carried only when a published curve is "
                            "transferred to dense runs (capscale fit DENSE --law unified --fix ...)")
    fixed = {k: v for k, (v, _) in parsed.items()}
    if name == "unified" and "L" in fixed:
        L = fixed.pop("L")
        if options.get("fix_L") is not None and options["fix_L"] != L:
            raise CapscaleError(f"--fix L={L} and --fix-L {options['fix_L']} disagree")
        options["fix_L"] = L
    return fixed


def law_from_spec(spec: dict) -> Law:
    """Rebuild a law saved with ``law.spec()``."""
    spec = dict(spec)
    name = spec.pop("name")
    if name == "decoupled":
        law = DecoupledLaw(spec["keys"], spec["reference_keys"], spec.get("key_columns"))
    elif name == "unified":
        law = UnifiedLaw(spec["groups"], spec.get("capacity_groups", "kind"),
                         spec.get("split_composed", False), spec.get("fix_L"),
                         spec.get("curve", "tanh"))
    elif name == "precision":
        law = PrecisionLaw(spec["parts"])
    elif name in LAWS:
        law = LAWS[name]()
    else:
        raise CapscaleError(f"saved fit names unknown law {name!r}")
    law.centers = tuple(spec.get("centers", (0.0, 0.0)))
    if spec.get("fixed"):
        from capscale.laws.fixed import FixedLaw

        law = FixedLaw(law, spec["fixed"])
    return law
