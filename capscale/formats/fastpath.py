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
FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_CHUNK = 30_000  # below ATen's grain (32768): each op runs inline, no thread hand-off
# |y32 − y64| ≤ 2^-22.99·|y| + 2^-150 (see above); the margins below keep a factor 2 to spare
REL_TOL = 2.0**-21
ABS_TOL = 2.0**-140


def enabled() -> bool:
    return _ENABLED[0]


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
        """The decision margin, in the units the kernel compares in."""
        if self.kind == "fp":  # z = y / step is at most 2^(man+1)
            return REL_TOL * 2.0 ** (self.fp.man + 1) + 2.0**-100
        return REL_TOL * (self.top + 2) + ABS_TOL

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
            buckets = max(1 << 14, 64 * len(mids))  # over [-1, 1]
            half = buckets / 2
            lo = np.arange(buckets) / half - 1.0
            hi = lo + 1.0 / half
            delta = 2.0**-20  # > |y32 − y64| + the rounding of (y + 1)·half
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
        self.thr = 0.5 - dec.tol
        f32 = torch.float32
        self.y = torch.empty(size, dtype=f32, device=dev)
        self.k = torch.empty(size, dtype=f32, device=dev)
        self.d = torch.empty(size, dtype=f32, device=dev)
        self.idx = torch.empty(size, dtype=torch.int32, device=dev)
        if dec.kind == "fp":
            self.st = torch.empty(size, dtype=f32, device=dev)
            self.exp_mask = torch.tensor(0x7F800000, dtype=torch.int32, device=dev)
        self.flagged: list[torch.Tensor] = []
        self.bad: list[torch.Tensor] = []

    def prepare(self, g0: int, g1: int):
        """Per group of [g0, g1): the float32 multiplier, the output table, the bad groups."""
        dec = self.dec
        sg = self.s[g0:g1]
        c32 = (dec.mult / torch.where(sg > 0, sg, torch.ones_like(sg))).to(torch.float32)
        ok = (sg > 0) & (c32 >= 2.0**-126) & (c32 <= 2.0**126)
        t64 = self.values(self.keys, sg)  # groups × L, float64
        if dec.kind == "fp":  # step·T must equal T at step·unit: all outputs normal and finite
            a = t64.abs()
            lo = a[:, 1:].amin(dim=1, keepdim=True) * min(1.0, dec.min_step)
            hi = a.amax(dim=1, keepdim=True) * max(1.0, dec.max_step)
            ok &= (lo >= self.tiny) & (hi * 2 <= self.fmax)
        if not bool(ok.all()):
            self.bad.append((~ok).nonzero()[:, 0] + g0)
            c32 = torch.where(ok, c32, torch.zeros_like(c32))
        self.c32 = c32
        self.table = _cast(t64, self.x.dtype).reshape(-1)
        self.g0 = g0
        self.base = torch.arange(g1 - g0, dtype=torch.int32, device=sg.device).mul_(self.L).unsqueeze(1)

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
        m = r * c
        y, k, d = self.y[:m].view(r, c), self.k[:m].view(r, c), self.d[:m].view(r, c)
        iv = self.idx[:m]
        lr = slice(rows.start - self.g0, rows.stop - self.g0)
        torch.mul(xs, self.c32[lr], out=y)
        flag = True
        if dec.kind == "floor":  # ⌊y⌋ decides; flag y within tol of an integer
            torch.floor(y, out=k)
            torch.sub(y, k, out=d)
            d.sub_(0.5).abs_()
            k.clamp_(-dec.offset, dec.top - dec.offset)
            iv.copy_(k.view(-1))
            iv.add_(dec.offset)
        elif dec.kind == "round":  # |round(y)| decides, the sign of y; flag y near k + 1/2
            torch.abs(y, out=d)
            torch.round(d, out=k)
            d.sub_(k).abs_()
            k.clamp_(max=dec.top)
            iv.copy_(k.view(-1))
        elif dec.kind == "fp":  # z = |y|/step rounded; flag z near k + 1/2
            st = self.st[:m].view(r, c)
            torch.abs(y, out=d)
            d.clamp_(max=float(dec.fp.max_value))
            sb = st.view(torch.int32)
            torch.bitwise_and(d.view(torch.int32), self.exp_mask, out=sb)
            sb.sub_(dec.fp.man << 23)
            st.clamp_min_(dec.min_step)
            d.div_(st)
            torch.round(d, out=k)
            d.sub_(k).abs_()
            iv.copy_(k.view(-1))
        else:  # lut: the level of y's fine bucket; -1 where a cell boundary is near
            torch.add(y, 1.0, out=k)
            k.mul_(self.half).floor_().clamp_(0, self.lut.numel() - 1)
            iv.copy_(k.view(-1))
            lv = self.lut.index_select(0, iv)
            flag = bool(lv.min() < 0)
            if flag:
                d.view(-1).copy_(lv).neg_()  # 1 where flagged, below 0.5 elsewhere
                lv.clamp_(min=0)
            iv.copy_(lv)
        if flag is True:
            flag = bool(d.max() >= self.thr)
        if r > 1 or lr.start:
            iv.view(r, c).add_(self.base[lr])
        oc = self.out[rows, cols]  # contiguous: whole rows, or a stretch of one row
        torch.index_select(self.table, 0, iv, out=oc.view(-1))
        if dec.kind == "fp":
            oc.mul_(st).copysign_(y)
        elif dec.kind == "round":
            oc.copysign_(y)
        if flag:
            pos = (d.view(-1) >= self.thr).nonzero()[:, 0]
            rr = pos // c
            self.flagged.append(pos + rr * (self.x.shape[1] - c) + offset)


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
