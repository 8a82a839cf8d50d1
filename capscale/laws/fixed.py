"""Fixing law parameters: fit the rest with some held at given values (``fix={"E": 1.7}``,
``--fix F=0.41,C=1.39``), and carry a published curve's uncertainty to a user's dense runs.

:class:`FixedLaw` wraps any law: its fitted coordinates are the base law's without the fixed
ones, and every evaluation rebuilds the full vector. Fixing a natural parameter that the base
law stores centred (log A is fitted as log A − α·c_N) makes the full vector an affine function
of the free one, so gradients follow by the chain rule. Reported parameters stay complete:
the fixed ones show with their value (and a zero-width interval).

``L`` names every ``L[group]`` of a unified law; an exact name (``L[scalar]``) one of them.
Fixing L of a unified law uses the law's own ``fix_L`` (the existing ``--fix-L``), so its
identifiability checks apply unchanged.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws import representation as rep
from capscale.laws.forms import Law, _require_spread

FIX_RE = re.compile(r"^\s*([A-Za-z_][\w\[\]:/+.\-]*)\s*=\s*([^±]+?)\s*(?:(?:±|\+-|\+/-)\s*(\S+))?\s*$")


def parse_fix(text: str | list[str] | dict | None) -> dict[str, tuple[float, float]]:
    """``"E=1.7,alpha=0.3"`` or ``"F=0.41±0.02"`` (also ``+-``) -> {name: (value, sd)}."""
    if text is None:
        return {}
    if isinstance(text, dict):
        return {k: (v if isinstance(v, tuple) else (float(v), 0.0)) for k, v in text.items()}
    items = []
    for t in [text] if isinstance(text, str) else list(text):
        items += [s for s in t.split(",") if s.strip()]
    out = {}
    for item in items:
        m = FIX_RE.match(item)
        try:
            value = float(m[2]) if m else math.nan
            sd = float(m[3]) if m and m[3] else 0.0
        except ValueError:
            value = math.nan
        if not m or not math.isfinite(value) or not (math.isfinite(sd) and sd >= 0):
            raise CapscaleError(f"--fix {item!r}: give NAME=VALUE (e.g. E=1.7, alpha=0.3, F=0.41) "
                                "or NAME=VALUE±SD for a published value with its uncertainty")
        out[m[1]] = (value, sd)
    return out


def _resolve(base: Law, fixed: dict[str, float]) -> dict[int, float]:
    names = base.natural_names
    out = {}
    for key, value in fixed.items():
        idx = [j for j, n in enumerate(names) if n == key or n.startswith(f"{key}[")]
        if not idx:
            raise CapscaleError(f"--fix {key}: law {base.name!r} has no parameter {key!r}; it has "
                                f"{', '.join(names)}")
        for j in idx:
            if j in base.log_params and not value > 0:
                raise CapscaleError(f"--fix {key}={value}: {names[j]} must be positive")
            out[j] = float(value)
    if len(out) == len(names):
        raise CapscaleError("--fix fixes every parameter of the law; leave at least one to fit")
    return out


class FixedLaw(Law):
    """``base`` with the natural parameters ``fixed`` ({name: value}) held at their values."""

    def __init__(self, base: Law, fixed: dict[str, float]):
        self.base = base
        self.fixed_values = {k: float(v) for k, v in fixed.items()}
        self.fixed = _resolve(base, self.fixed_values)
        P = len(base.param_names)
        self.free = [j for j in range(P) if j not in self.fixed]
        self.name = base.name
        self.formula = base.formula + "  (fixed: " + ", ".join(
            f"{k} = {v:g}" for k, v in self.fixed_values.items()) + ")"
        self.reference = base.reference
        self.term_labels = base.term_labels
        self.term_params = base.term_params
        self.has_eff = base.has_eff
        self.param_names = [base.param_names[j] for j in self.free]
        self.natural_names = base.natural_names
        self.natural_log_params = set(base.log_params)
        self.log_params = {i for i, j in enumerate(self.free) if j in base.log_params}
        self.couplings = {}
        self.centers = base.centers
        self._affine()

    def __getattr__(self, name):  # what else the fitter or a report asks of the base law
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def _affine(self) -> None:
        """full θ = M · free θ + b (fixed natural values, centred where the base centres)."""
        P = len(self.base.param_names)
        M = np.zeros((P, len(self.free)))
        b = np.zeros(P)
        for i, j in enumerate(self.free):
            M[j, i] = 1.0
        for j, v in self.fixed.items():
            b[j] = math.log(v) if j in self.base.log_params else v
        for j, (k, which) in self.base.couplings.items():
            c = self.base._center(which)
            if j in self.fixed:  # fitted log A = log A − α·c_N
                if k in self.fixed:
                    b[j] -= self.fixed[k] * c
                else:
                    M[j, self.free.index(k)] -= c
        self.M, self.b = M, b

    def full(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        return theta @ self.M.T + self.b

    def set_centers(self, df: pd.DataFrame) -> None:
        self.base.set_centers(df)
        self.centers = self.base.centers
        self._affine()

    def design(self, df):
        return self.base.design(df)

    def terms(self, theta, X):
        return self.base.terms(self.full(theta), X)

    def terms_vjp(self, theta, X, W):
        return self.base.terms_vjp(self.full(theta), X, W) @ self.M

    def log_eff(self, extra, X):  # the base's, on full vectors: used through eff()
        raise NotImplementedError

    def eff(self, theta, X):
        return self.base.eff(self.full(np.atleast_2d(theta)), X)

    def to_natural(self, theta):
        out = self.base.to_natural(self.full(theta))
        for j, v in self.fixed.items():  # exactly the given value, not its round trip
            out[..., j] = v
        return out

    def from_natural(self, natural):
        return np.asarray(self.base.from_natural(natural), dtype=np.float64)[..., self.free]

    def from_log_natural(self, grid):
        return self.base.from_log_natural(grid)[..., self.free]

    def start_grid(self, max_starts=None):
        g = self.base.start_grid(max_starts)[:, self.free]
        return np.unique(g, axis=0)

    def spec(self):
        return {**self.base.spec(), "fixed": self.fixed_values}

    def rho(self, natural, gmse, group):
        return self.base.rho(natural, gmse, group)

    def check_identifiable(self, df: pd.DataFrame) -> None:
        """The base law's checks, with each parameter group needing data only for what is
        free: sizes unless A and α are fixed, token counts unless B and β are, and for a
        unified law as many GMSE levels per compression type as its curve has free
        parameters."""
        names = self.base.natural_names
        free = {names[j] for j in self.free}
        if {"A", "alpha"} & free:
            _require_spread(df, "N", "model sizes", self.name)
        if {"B", "beta"} & free:
            _require_spread(df, "D", "token counts", self.name)
        if len(df) <= len(self.free):
            raise CapscaleError(f"law {self.name!r} has {len(self.free)} free parameters but the "
                                f"table has only {len(df)} runs; it needs more runs than that")
        base = self.base
        if base.name != "unified":
            return
        if base.fix_L is None and not rep.dense_rows(df).any() and any(n.startswith("L") for n in free):
            raise CapscaleError("law 'unified' measures capacity against uncompressed runs and the "
                                "table has none; add dense runs or fix L (--fix L=1)")
        levels = base.gmse_levels(df)
        for g in base.groups:
            need = sum(1 for letter in "LFC" if base.fix_L is None or letter != "L"
                       if base.natural_name(letter, g) in free)
            if len(levels[g]) < need:
                raise CapscaleError(f"law 'unified': the curve of {g!r} has {need} free "
                                    f"parameters but runs at only {len(levels[g])} GMSE values")


def wrap(base: Law, fixed: dict[str, float], df: pd.DataFrame | None = None) -> Law:
    law = FixedLaw(base, fixed)
    if df is not None:
        law.check_identifiable(df)
    return law
