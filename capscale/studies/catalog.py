"""The unified paper's experiments (arXiv 2506.01863) as studies: which runs each trains beside
its dense ladder, and which of the paper's claims its analysis checks.

A check compares two measured capacities through the ratio of their joint bootstrap draws
(``capscale.laws.measure.ratio_interval``): ``=`` is supported when the interval of the ratio
holds 1, ``>`` when it lies above 1; the opposite finding contradicts the claim, and an
interval that straddles (for ``>``) or a ratio of unidentified capacities settles nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from capscale.errors import CapscaleError


@dataclass(frozen=True)
class Check:
    """ρ[num] / ∏ρ[den] against 1: ``relation`` is "=" or ">"."""

    claim: str
    num: str
    den: tuple[str, ...]
    relation: str


@dataclass(frozen=True)
class Study:
    name: str
    figure: str
    title: str
    claim: str
    points: tuple[dict, ...]  # compressed runs: w_format, a_format and per-run settings
    key_columns: tuple[str, ...] = ("w_format", "a_format")
    train: dict = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    curve_groups: str = "kind"  # capacity_groups of the unified fit: one curve per type
    # seeds of every run at the compressed budget at CPU scale (dense and compressed)
    cpu_seeds: int = 2
    # scale -> {"points": ..., "checks": ...}: where a scale's models cannot hold the study's
    # points (groups of 128 over the CPU ladder's widths of 24-40), that scale's own
    at_scale: dict = field(default_factory=dict)

    def at(self, scale: str) -> Study:
        """The study as it runs at ``scale``: its own points and checks where it has them."""
        from capscale.studies.ladder import SCALES

        if scale not in SCALES:
            raise CapscaleError(f"scale {scale!r}: use one of {', '.join(SCALES)}")
        return replace(self, **self.at_scale.get(scale, {}), at_scale={})

    def scale_of(self, keys) -> str:
        """The scale whose points these representation keys (a runs table's) are: the one
        sharing most of them (CPU on a tie, and for a study that runs the same everywhere)."""
        from capscale.studies.ladder import SCALES

        have = set(keys)

        def shared(scale: str) -> int:
            at = self.at(scale)
            return len(have & {at.key(p) for p in at.points})

        return max(SCALES, key=lambda sc: (shared(sc), sc == "cpu"))

    def key(self, point: dict) -> str:
        """The representation key of a point, as the runs table will spell it."""
        from capscale.sweep.spec import canonical_format

        parts = []
        for c in self.key_columns:
            v = point.get(c, self.train.get(c, _DEFAULTS.get(c)))
            parts.append(canonical_format(v, self.name) if c.endswith("_format") else str(v))
        return "/".join(parts)


_DEFAULTS = {"grad": "trust", "sparse_grad": "fw", "w_format": "none", "a_format": "none"}


def _wa(w: str, a: str, **extra) -> dict:
    return {"w_format": w, "a_format": a, **extra}


def _k(*parts: str) -> str:
    return "/".join(parts)


# ------------------------------------------------------------------ int

_INT_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
_int_points = tuple(p for b in _INT_BITS for p in (
    _wa(f"int{b}:had", "none"), _wa("none", f"int{b}:had"), _wa(f"int{b}:had", f"int{b}:had")))
_int_checks = tuple(
    Check(f"INT{b}: ρ(W,A) = ρ(W)·ρ(A)", _k(f"int{b}:had", f"int{b}:had"),
          (_k(f"int{b}:had", "none"), _k("none", f"int{b}:had")), "=") for b in _INT_BITS)

# ------------------------------------------------------------------ groups


def _groups(sizes: tuple[int, ...]) -> dict:
    """Absmax INT2-4 in groups of ``sizes``, and INT2 in the coarsest of them with 1% and 5%
    outliers kept exact; the checks compare the finest group with the coarsest, and 5%
    outliers with none."""
    fine, coarse = sizes[0], sizes[-1]
    base = f"int2:absmax:g{coarse}"
    return {"points": tuple([_wa(f"int{b}:absmax:g{g}", "none") for b in (2, 3, 4)
                             for g in sizes]
                            + [_wa(f"outliers{p}+{base}", "none") for p in (0.01, 0.05)]),
            "checks": (Check(f"INT2: ρ(g{fine}) > ρ(g{coarse})", _k(f"int2:absmax:g{fine}", "none"),
                             (_k(base, "none"),), ">"),
                       Check(f"INT2 g{coarse}: ρ(5% outliers) > ρ(none kept)",
                             _k(f"outliers0.05+{base}", "none"), (_k(base, "none"),), ">"))}


# The paper's group sizes (8-128) at paper scale. The CPU ladder's compressed models are 24-40
# wide (MLP down projections 72-120), and a group must divide a layer's input width: groups of
# 2, 4 and 8 divide them all, and span a range of GMSE as wide (INT2: 0.031 to 0.113, a factor
# 3.7; the paper's 8-128: 0.113 to 0.304, a factor 2.7; `capscale gmse`).
_GROUPS = {"paper": _groups((8, 32, 128)), "cpu": _groups((2, 4, 8))}

# ------------------------------------------------------------------ noise

_NOISE_BITS = (2, 3, 4)


def _noise_spec(bits: int) -> str:
    """Noise injection at the GMSE of the INT grid of ``bits`` bits."""
    from capscale.laws.representation import spec_gmse

    return f"noise{spec_gmse(f'int{bits}'):.4g}"


# ------------------------------------------------------------------ catalog


# Seeds per study at CPU scale: the fewest at which the design check (capscale.studies.design,
# with the CPU ladder's measured scatter of 0.028 nats) gives every ρ of the study a simulated
# 95% range of at most about 0.18, under the identification width of 0.2 with room for the
# heavier tails of real seeds. Simulated widest ranges at these seeds (`simulate(spec,
# n_sims=400)`; 200 simulations move them by about ±0.01): int 0.176, noise 0.142, fp 0.167,
# groups 0.156, sparse 0.163, vq 0.176, lsq 0.187 (one seed fewer: int 0.191, noise 0.181, fp
# 0.198, groups 0.192, sparse 0.182, vq 0.193, lsq 0.223). The noise study takes 3: at 2 its
# runs gave INT4 and
# noise at INT4's GMSE intervals 0.209 wide (STUDIES.md).
_CPU_SEEDS = {"int": 5, "noise": 3, "fp": 5, "groups": 5, "sparse": 4, "vq": 4, "lsq": 4}


def _build() -> dict[str, Study]:
    noise = {b: _noise_spec(b) for b in _NOISE_BITS}
    studies = [
        Study("int", "Fig. 6",
              "INT1-8 (Hadamard, trust estimation) on weights, activations and both",
              "ρ follows GMSE on one curve, and capacities compose: ρ(W,A) = ρ(W)·ρ(A)",
              _int_points, checks=_int_checks),
        Study("noise", "Fig. 1b, c",
              "Gaussian noise injected at the GMSE of INT2/3/4 against QAT at those bits",
              "ρ depends on GMSE alone: noise and quantization of equal GMSE have equal ρ",
              tuple(p for b in _NOISE_BITS for p in (_wa(f"int{b}", f"int{b}"),
                                                     _wa(noise[b], noise[b]))),
              checks=tuple(Check(f"{b} bits: ρ(noise) = ρ(INT{b})", _k(noise[b], noise[b]),
                                 (_k(f"int{b}", f"int{b}"),), "=") for b in _NOISE_BITS)),
        Study("fp", "Fig. 3",
              "E2M1 against INT4; E2M3 and E3M2 against INT6; E4M3 and E5M2 against INT8",
              "FP and INT grids lie on one ρ(GMSE) curve: at equal bits, the lower GMSE wins",
              tuple(_wa(f, f) for f in ("e2m1", "int4", "e2m3", "e3m2", "int6", "e4m3", "e5m2",
                                         "int8")),
              checks=(Check("4 bits: ρ(INT4) > ρ(E2M1) (lower GMSE)", _k("int4", "int4"),
                            (_k("e2m1", "e2m1"),), ">"),
                      Check("6 bits: ρ(E2M3) > ρ(E3M2) (lower GMSE)", _k("e2m3", "e2m3"),
                            (_k("e3m2", "e3m2"),), ">"),
                      Check("8 bits: ρ(E4M3) > ρ(E5M2) (lower GMSE)", _k("e4m3", "e4m3"),
                            (_k("e5m2", "e5m2"),), ">"))),
        Study("groups", "Fig. 4",
              "absmax INT at group sizes 8-128 (2-8 at CPU scale) and 2-4 bits; 0-5% outliers "
              "kept exact",
              "smaller groups and kept outliers raise ρ as far as they lower GMSE",
              _GROUPS["paper"]["points"], checks=_GROUPS["paper"]["checks"],
              # one curve: kept outliers are judged by where their GMSE puts them on it
              curve_groups="outliers+scalar=scalar", at_scale={"cpu": _GROUPS["cpu"]}),
        Study("sparse", "Figs. 5, 7, 9",
              "magnitude sparsity 0-75% × INT bits on weights, RBBM backward against plain",
              "RBBM beats the plain (fw) backward, and ρ(sparse+INT) = ρ(sparse)·ρ(INT)",
              tuple([_wa(f"sparse{s}", "none", sparse_grad=g) for s in (0.25, 0.5, 0.75)
                     for g in ("fw", "b-rms")]
                    + [_wa(f"int{b}", "none", sparse_grad="b-rms") for b in (2, 4)]
                    + [_wa(f"sparse{s}+int{b}", "none", sparse_grad="b-rms") for s in (0.5,)
                       for b in (2, 4)]),
              key_columns=("w_format", "a_format", "sparse_grad"),
              checks=(*(Check(f"{int(s * 100)}%: ρ(RBBM) > ρ(fw)",
                              _k(f"sparse{s}", "none", "b-rms"),
                              (_k(f"sparse{s}", "none", "fw"),), ">") for s in (0.25, 0.5, 0.75)),
                      *(Check(f"ρ(50% + INT{b}) = ρ(50%)·ρ(INT{b})",
                              _k(f"sparse0.5+int{b}", "none", "b-rms"),
                              (_k("sparse0.5", "none", "b-rms"), _k(f"int{b}", "none", "b-rms")),
                              "=") for b in (2, 4)))),
        Study("vq", "Fig. 2a",
              "VQ in 2 and 4 dimensions against scalar grids at matched bits",
              "VQ's lower GMSE at equal bits buys capacity: ρ(VQ) > ρ(scalar) at 2 bits",
              tuple(_wa(f, "none") for f in ("vq2:b4", "vq4:b8", "int2", "lloydmax2", "vq2:b8",
                                              "int4")),
              checks=(Check("2 bits: ρ(VQ4) > ρ(INT2)", _k("vq4:b8", "none"),
                            (_k("int2", "none"),), ">"),
                      Check("2 bits: ρ(VQ2) > ρ(INT2)", _k("vq2:b4", "none"),
                            (_k("int2", "none"),), ">"))),
        Study("lsq", "Fig. 1a",
              "LSQ against trust estimation at 2-8 bits (weights and activations)",
              "LSQ's capacity saturates below 1 (its curve needs L < 1); trust estimation's "
              "does not",
              tuple(_wa(f"int{b}", f"int{b}", grad=g) for b in (2, 3, 4, 6, 8)
                    for g in ("trust", "lsq")),
              key_columns=("w_format", "a_format", "grad"),
              checks=(Check("8 bits: ρ(trust) > ρ(LSQ)", _k("int8", "int8", "trust"),
                            (_k("int8", "int8", "lsq"),), ">"),
                      Check("4 bits: ρ(trust) > ρ(LSQ)", _k("int4", "int4", "trust"),
                            (_k("int4", "int4", "lsq"),), ">"))),
    ]
    return {s.name: replace(s, cpu_seeds=_CPU_SEEDS[s.name]) for s in studies}


_CACHE: dict[str, Study] = {}


def studies() -> dict[str, Study]:
    if not _CACHE:
        _CACHE.update(_build())
    return _CACHE


def study(name: str) -> Study:
    found = studies()
    if name not in found:
        raise CapscaleError(f"unknown study {name!r}: use one of {', '.join(found)}")
    return found[name]
