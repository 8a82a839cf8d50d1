"""Float32 kernels for the scale-then-grid formats, bit for bit equal to the float64 reference.

The reference (``ScalarQuantizer.dequantize_scaled``, NVFP4's element step) computes each
quotient x·m/s in float64, so that it is rounded once before the grid's decision, and the
value level·s in float64, rounded once more to the output dtype. That is 3-8x slower than
float32 on a CPU. Here the same outputs come from float32 work:

* The decision. y = x·fl32(m/s) in float32 is within 2^-22·|y| + 2^-149 of the float64
  quotient (two roundings of 2^-24 each, the reciprocal's float64 rounding, an absolute
  2^-150 when y is subnormal). A grid's decision is piecewise constant in y, with jumps at
  known points (integers for ⌊·⌋, half-integers for round-half-even, the midpoints of an FP
  binade, the midpoints of a sorted grid); where y is farther than that bound from every
  jump, the float32 decision is the float64 one. Elements closer than the bound (about
  one in 10^5 for int4, one in 10^3 for NF4) are recomputed by the reference itself.
* The value. Given the decision, the reference's output depends only on the level and the
  group's scale, so each group's few outputs are computed once by the reference's own
  float64 formula and looked up (FP grids look up the value at unit step and scale it by a
  power of two, exact while the group's outputs stay normal and finite: groups where they
  might not go to the reference whole).
* The memory. On a CPU the tensor is processed in chunks of 64K values, so every
  temporary stays in cache and is reused (a fresh 64 MB temporary costs more than the
  arithmetic on it); on an accelerator the tensor is one chunk.

``reference_arithmetic()`` turns the fast path off (the tests compare the two on random and
adversarial tensors, float32, bf16 and fp16; the benchmark times both).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from capscale.formats.grids import FPSpec

_ENABLED = [True]
DIRECT: bool | None = None  # force the output mode (tests, benchmarks); None: by table size
FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Below this many values the float64 reference is as fast or faster on a CPU (a handful of
# whole-tensor ops against the fast path's per-block bookkeeping): weights and activations of
# the tiny models a CPU trains take it. Both give the same bits; tests set 0 to exercise the
# fast path on small tensors.
MIN_FAST_NUMEL = 1 << 16
CPU_CHUNK = 30_000  # below ATen's grain (32768): each op runs inline, no thread hand-off
# |y32 − y64| ≤ 2^-22.99·|y| + 2^-150 (see above); the margins below keep a factor 2 to spare
REL_TOL = 2.0**-22
ABS_TOL = 2.0**-140


def enabled() -> bool:
    return _ENABLED[0]


def takes(x: torch.Tensor) -> bool:
    """Whether x goes through the fast path: enabled, a float dtype it handles, and large
    enough for it to pay (``MIN_FAST_NUMEL``)."""
    return _ENABLED[0] and x.dtype in FAST_DTYPES and x.numel() >= MIN_FAST_NUMEL


@contextlib.contextmanager
def reference_arithmetic():
    """Compute every scale-then-grid format by the float64 reference (no float32 fast path)."""
    old = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = old


@dataclass(frozen=True, eq=False)
class Decision:
    """How a grid decides, in units of y = x·mult/s.

    kind "floor": level index ⌊y⌋ + offset, clamped to [0, top] (QuEST's INT grid);
    "round": |k| = |round-half-even(y)| clamped to top, the sign of y (signed grids with a
    zero level); "fp": the ExMy value of y (|y| clamped to the format's largest value), as
    z·step with z = y/step an integer up to 2^(man+1); "lut": the index of the nearest level
    of a sorted grid (cells split at `mids`, ties down), read from a table over fine
    buckets of y (a bucket within the margin of a midpoint reads -1: the reference decides).
    """

    kind: str
    mult: float
    top: int = 0
    offset: int = 0
    fp: FPSpec | None = None
    mids: np.ndarray | None = None
    levels: np.ndarray | None = None  # "lut": the sorted grid's levels (normalised)

    @property
    def n_levels(self) -> int:
        if self.kind == "fp":
            return 2 ** (self.fp.man + 1) + 1
        if self.kind == "lut":
            return len(self.mids) + 1
        return self.top + 1

    @property
    def tol(self) -> float:
        """The decision margin, in the units the kernel compares in: REL_TOL times the largest
        |y| at which a boundary lies (beyond it every y decides alike), plus ABS_TOL."""
        if self.kind == "fp":  # z = y / step is at most 2^(man+1)
            return REL_TOL * 2.0 ** (self.fp.man + 1) + 2.0**-100
        if self.kind == "floor":  # boundaries at the integers up to (top − 1)/2
            return REL_TOL * ((self.top + 1) / 2 + 1) + ABS_TOL
        return REL_TOL * (self.top + 1) + ABS_TOL  # round: at k + 1/2 up to top − 1/2

    @property
    def max_step(self) -> float:
        return 2.0 ** (math.floor(math.log2(self.fp.max_value)) - self.fp.man)

    @property
    def min_step(self) -> float:
        return 2.0 ** (self.fp.min_normal_exp - self.fp.man)

    # --- the fine-bucket table of a sorted grid ---------------------------------------------
    def lut(self, device) -> tuple[torch.Tensor, float]:
        key = (str(device),)
        cache = self.__dict__.setdefault("_lut", {})
        if key not in cache:
            mids = np.asarray(self.mids, dtype=np.float64)
            buckets = max(1 << 16, 64 * len(mids))  # over [-1, 1]
            half = buckets / 2
            lo = np.arange(buckets) / half - 1.0
            hi = lo + 1.0 / half
            delta = 2.0**-21  # > |y32 − y64| + the rounding of (y + 1)·half (2^-22.4)
            left = np.searchsorted(mids, lo - delta, side="left")
            right = np.searchsorted(mids, hi + delta, side="right")
            level = np.where(left == right, left, -1).astype(np.int32)
            cache[key] = (torch.as_tensor(level, device=device), half)
        return cache[key]


def chunks(n_groups: int, n: int, device) -> list[tuple[slice, slice]]:
    """(group rows, columns) blocks of about CPU_CHUNK values (one block on an accelerator)."""
    if device.type != "cpu":
        return [(slice(0, n_groups), slice(0, n))]
    if n >= CPU_CHUNK:
        return [(slice(g, g + 1), slice(c, min(n, c + CPU_CHUNK)))
                for g in range(n_groups) for c in range(0, n, CPU_CHUNK)]
    rows = max(1, CPU_CHUNK // n)
    return [(slice(g, min(n_groups, g + rows)), slice(0, n)) for g in range(0, n_groups, rows)]


def _workers(device, n_blocks: int) -> int:
    """Threads to share the blocks among (each op on a block runs inline in its thread)."""
    if device.type != "cpu" or n_blocks < 8:
        return 1
    return max(1, min(torch.get_num_threads(), n_blocks // 4))


_POOL: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    key = (os.getpid(), workers)  # a forked child does not inherit the parent's threads
    if key not in _POOL:
        _POOL[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capscale-quantize")
    return _POOL[key]


def _finite_out(dtype) -> tuple[float, float]:
    fi = torch.finfo(dtype)
    return float(fi.tiny), float(fi.max)


class _Kernel:
    """The per-block work of `grid_quantize`, with its own reused temporaries."""

    def __init__(self, x, s, out, dec: Decision, values, size: int):
        self.x, self.s, self.out, self.dec, self.values = x, s, out, dec, values
        dev = x.device
        self.L = dec.n_levels
        if dec.kind == "lut":  # the table of a sorted grid holds its levels' values
            self.keys = torch.as_tensor(dec.levels, dtype=torch.float64, device=dev).unsqueeze(0)
            self.lut, self.half = dec.lut(dev)
        else:  # level indices, or the ExMy values 0, 1, ..., 2^(man+1) at unit step
            self.keys = torch.arange(self.L, dtype=torch.float64, device=dev).unsqueeze(0)
        self.tiny, self.fmax = _finite_out(x.dtype)
        # d (see `block`) flags an element when d <= lo or d >= hi
        tol = dec.tol
        self.lo, self.hi = (tol, 1.0 - tol) if dec.kind == "floor" else (-0.5 + tol, 0.5 - tol)
        self.offset = dec.offset if dec.kind == "floor" else 0
        self.size = size
        self.buffers: dict[tuple[int, int], tuple] = {}
        if dec.kind == "fp":
            self.exp_mask = torch.tensor(0x7F800000, dtype=torch.int32, device=dev)
        self.flagged: list[torch.Tensor] = []
        self.bad: list[torch.Tensor] = []
        # outputs: looked up in per-group tables, or (`direct`) the value formula in float64
        # on each decided level, cheaper for tiny groups (NVFP4's 16) and for grids with as many
        # levels as a group has values (INT8's 256 against rows of 48)
        self.direct = dec.kind != "lut" and (
            DIRECT if DIRECT is not None else x.shape[1] <= max(32, self.L))

    def views(self, r: int, c: int):
        """Temporaries shaped (r, c), carved from buffers allocated once."""
        if not self.buffers:
            f32, dev = torch.float32, self.x.device
            self.flat = [torch.empty(self.size, dtype=f32, device=dev) for _ in range(4)]
            self.flat_idx = torch.empty(self.size, dtype=torch.int32, device=dev)
        key = (r, c)
        if key not in self.buffers:
            m = r * c
            y, k, d, st = (b[:m].view(r, c) for b in self.flat)
            iv = self.flat_idx[:m]
            self.buffers[key] = (y, k, d, st, st.view(torch.int32), iv, iv.view(r, c))
        return self.buffers[key]

    def prepare(self, g0: int, g1: int):
        """Per group of [g0, g1): the float32 multiplier, the output table, the bad groups."""
        dec = self.dec
        sg = self.s[g0:g1]
        c32 = (dec.mult / torch.where(sg > 0, sg, torch.ones_like(sg))).to(torch.float32)
        ok = (sg > 0) & (c32 >= 2.0**-126) & (c32 <= 2.0**126)
        self.s_rows = sg
        t64 = None if self.direct else self.values(self.keys, sg)  # groups × L, float64
        if t64 is not None and dec.kind == "fp":  # step·T equals T at step·unit: outputs normal, finite
            a = t64.abs()
            lo = a[:, 1:].amin(dim=1, keepdim=True) * min(1.0, dec.min_step)
            hi = a.amax(dim=1, keepdim=True) * max(1.0, dec.max_step)
            ok &= (lo >= self.tiny) & (hi * 2 <= self.fmax)
        if not bool(ok.all()):
            self.bad.append((~ok).nonzero()[:, 0] + g0)
            c32 = torch.where(ok, c32, torch.zeros_like(c32))
        self.c32 = c32
        self.table = None if t64 is None else _cast(t64, self.x.dtype).reshape(-1)
        self.g0 = g0
        self.base = (torch.arange(g1 - g0, dtype=torch.int32, device=sg.device).mul_(self.L)
                     .add_(self.offset).unsqueeze(1))

    def run(self, blocks):
        n = self.x.shape[1]
        max_groups = max(1, (1 << 16) // self.L)
        g1 = -1
        for rows, cols in blocks:
            if rows.stop > g1:
                g1 = min(self.x.shape[0], max(rows.stop, rows.start + max_groups))
                self.prepare(rows.start, g1)
            self.block(rows, cols, rows.start * n + cols.start)
        return self

    def block(self, rows, cols, offset: int):
        dec = self.dec
        xs = self.x[rows, cols]
        r, c = xs.shape
        y, k, d, st, sb, iv, iv2 = self.views(r, c)
        lr = slice(rows.start - self.g0, rows.stop - self.g0)
        torch.mul(xs, self.c32[lr], out=y)
        kind = dec.kind
        if kind == "floor":  # ⌊y⌋ decides; d = y − ⌊y⌋ near 0 or 1 is near a boundary
            torch.floor(y, out=k)
            torch.sub(y, k, out=d)
            k.clamp_(-dec.offset, dec.top - dec.offset)
        elif kind == "round":  # |round(y)| decides, the sign of y; d = |y| − k near ±1/2
            torch.abs(y, out=d)
            torch.round(d, out=k)
            d.sub_(k)
            k.clamp_(max=dec.top)
        elif kind == "fp":  # z = |y|/step rounded; d = z − k near ±1/2
            torch.abs(y, out=d)
            d.clamp_(max=float(dec.fp.max_value))
            torch.bitwise_and(d.view(torch.int32), self.exp_mask, out=sb)
            sb.sub_(dec.fp.man << 23)
            st.clamp_min_(dec.min_step)
            d.div_(st)
            torch.round(d, out=k)
            d.sub_(k)
        else:  # lut: the level of y's fine bucket; -1 where a cell boundary is near
            torch.add(y, 1.0, out=k)
            k.mul_(self.half).floor_().clamp_(0, self.lut.numel() - 1)
            iv.copy_(k.view(-1))
            lv = self.lut.index_select(0, iv)
            if bool(lv.min() < 0):
                d.view(-1).copy_(lv)  # -1 where flagged, >= 0 elsewhere
                lv.clamp_(min=0)
                flagged = (d < 0).view(-1)
            else:
                flagged = None
            iv.copy_(lv)
        if kind != "lut":
            lo, hi = torch.aminmax(d)
            near = lo.item() <= self.lo or hi.item() >= self.hi
            flagged = ((d <= self.lo) | (d >= self.hi)).view(-1) if near else None
        oc = self.out[rows, cols]  # contiguous: whole rows, or a stretch of one row
        if self.direct:  # the reference's own value formula on the decided levels, in float64
            if kind == "floor":
                k.add_(dec.offset)
            elif kind == "round":
                k.copysign_(y)
            else:
                k.mul_(st).copysign_(y)
            v = self.values(k.double(), self.s_rows[lr]).clamp_(-self.fmax, self.fmax)
            oc.copy_(v)
        else:
            if kind != "lut":
                iv.copy_(k.view(-1))
            if r > 1 or lr.start or self.offset:
                iv2.add_(self.base[lr])
            torch.index_select(self.table, 0, iv, out=oc.view(-1))
            if kind == "fp":
                oc.mul_(st).copysign_(y)
            elif kind == "round":
                oc.copysign_(y)
        if flagged is not None:
            pos = flagged.nonzero()[:, 0]
            self.flagged.append(pos + (pos // c) * (self.x.shape[1] - c) + offset)


def grid_quantize(
    x: torch.Tensor,
    s: torch.Tensor,
    dec: Decision,
    values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """x̂ of finite x (groups × n, float32/bf16/fp16) with float64 scales s (groups × 1).

    values(levels, s): the reference's float64 outputs for the level indices (or unit-step
    values) `levels` (1 × L) in groups of scale s (g × 1), before the cast to the output
    dtype; reference(x64, s64): the reference's x̂ (cast to the output dtype) of single
    elements with their scales, for the elements and groups the fast path leaves to it."""
    x = x.contiguous()
    G, n = x.shape
    out = torch.empty_like(x)
    blocks = chunks(G, n, x.device)
    size = max((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in blocks)
    workers = _workers(x.device, len(blocks))
    if workers == 1:
        kernels = [_Kernel(x, s, out, dec, values, size).run(blocks)]
    else:  # contiguous runs of blocks, one per thread (the GIL is released inside each op)
        cut = [len(blocks) * i // workers for i in range(workers + 1)]
        futures = [_pool(workers).submit(_Kernel(x, s, out, dec, values, size).run, blocks[a:b])
                   for a, b in zip(cut[:-1], cut[1:])]
        kernels = [f.result() for f in futures]
    flagged = [p for kern in kernels for p in kern.flagged]
    if flagged:  # elements near a decision boundary: the reference decides
        pos = torch.cat(flagged)
        flat = out.view(-1)
        flat[pos] = reference(x.view(-1)[pos].double(), s.view(-1)[pos // n])
    bad = [b for kern in kernels for b in kern.bad]
    if bad:  # groups whose multiplier or outputs leave float32's normal range
        for g in torch.cat(bad).unique().tolist():
            out[g] = reference(x[g].double(), s[g].expand(n))
    return out


def _cast(t64: torch.Tensor, dtype) -> torch.Tensor:
    from capscale.formats.base import saturating_cast

    return saturating_cast(t64, dtype)


def rms64(xv: torch.Tensor, av: torch.Tensor | None) -> torch.Tensor:
    """RMS over the last dimension (active entries only) in float64, for float32/bf16/fp16
    entries: their squares are exact in float64 and neither overflow nor underflow. Summed in
    cache-sized chunks (the whole tensor is never converted at once)."""
    shape = xv.shape
    n = shape[-1]
    X = xv.reshape(-1, n)
    A = None if av is None else av.reshape(-1, n)
    G = X.shape[0]
    ss = torch.zeros(G, 1, dtype=torch.float64, device=xv.device)
    for rows, cols in chunks(G, n, xv.device):
        c = X[rows, cols].double()
        if A is not None:
            c = torch.where(A[rows, cols], c, torch.zeros((), dtype=c.dtype, device=c.device))
        ss[rows] += c.square_().sum(dim=-1, keepdim=True)
    count = float(n) if A is None else A.sum(dim=-1, keepdim=True).clamp_(min=1).double()
    return ss.div_(count).sqrt_().reshape(*shape[:-1], 1)


def absmax(xv: torch.Tensor) -> torch.Tensor:
    """max |x| over the last dimension without an |x| temporary (NaN propagates; +0 for a
    group of zeros of either sign)."""
    return torch.maximum(xv.amax(dim=-1, keepdim=True), xv.amin(dim=-1, keepdim=True).neg_()).abs_()
