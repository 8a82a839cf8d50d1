"""Vector quantization: code books in d dimensions at b bits per vector, optimal for N(0, I).

A code book is found once by Lloyd's algorithm (k-means) on Gaussian samples, from a k-means++
start, with a fixed seed, and cached on disk; rows are scaled by their RMS before the nearest
code word is looked up, so the same code book serves any scale. Bits per value: b/d plus the
per-row scale.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache

import torch

from capscale.cache import cache_dir
from capscale.errors import CapscaleError
from capscale.formats.base import SCALE_BITS, Part, masked_rms

MAX_VQ_BITS = 12  # 4096 code words: k-means on CPU stays within a minute
CODEBOOK_VERSION = 1


def nearest(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Index of the nearest code word (squared Euclidean) for each row of x. Chunks of 4096 rows
    keep the distance matrix in cache (4x faster than 64k-row chunks on CPU)."""
    c2 = codebook.square().sum(dim=1)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for i in range(0, x.shape[0], chunk):
        xs = x[i : i + chunk]
        out[i : i + chunk] = (c2 - 2 * xs @ codebook.T).argmin(dim=1)
    return out


def train_codebook(dim: int, bits: int, seed: int = 0, iters: int = 300, tol: float = 1e-7) -> torch.Tensor:
    """k-means++ then Lloyd iterations on Gaussian samples; returns (2^bits, dim) float64."""
    k = 2**bits
    gen = torch.Generator().manual_seed(seed)
    n = min(max(512 * k, 1 << 17), 1 << 21)
    data = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    # k-means++ start on a subsample
    sub = data[: min(n, 64 * k)]
    centers = torch.empty(k, dim, dtype=torch.float64)
    centers[0] = sub[torch.randint(len(sub), (1,), generator=gen)]
    d2 = (sub - centers[0]).square().sum(1)
    for j in range(1, k):
        i = torch.multinomial(d2 / d2.sum(), 1, generator=gen)
        centers[j] = sub[i]
        d2 = torch.minimum(d2, (sub - centers[j]).square().sum(1))
    prev = float("inf")
    for _ in range(iters):
        idx = nearest(data, centers)
        counts = torch.bincount(idx, minlength=k).to(torch.float64)
        sums = torch.zeros_like(centers).index_add_(0, idx, data)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp(min=1)[:, None])
        if bool(empty.any()):  # restart empty cells on random samples
            centers[empty] = data[torch.randint(n, (int(empty.sum()),), generator=gen)]
        mse = float((data - centers[nearest(data, centers)]).square().mean())
        if prev - mse < tol * mse:
            break
        prev = mse
    return centers


@lru_cache(maxsize=16)
def gaussian_codebook(dim: int, bits: int) -> torch.Tensor:
    """The cached code book for N(0, I_dim) at `bits` bits per vector (float64)."""
    path = cache_dir("vq") / f"gauss_d{dim}_b{bits}_v{CODEBOOK_VERSION}.pt"
    if path.exists():
        return torch.load(path)
    if bits >= 8:
        print(f"capscale: computing the {2**bits}-word Gaussian code book in {dim} dimensions "
              f"(once; cached in {path.parent})", file=sys.stderr)
    book = train_codebook(dim, bits)
    from capscale.io import atomic_write

    atomic_write(path, lambda tmp: torch.save(book, tmp))
    return book


@dataclass(frozen=True)
class VectorQuantizer(Part):
    dim: int = 4
    n_bits: int = 8
    kind = "vector"
    accepted_modifiers = ("bB", "had")

    def __post_init__(self):
        if self.dim not in (1, 2, 4, 8):
            raise CapscaleError(f"vq{self.dim}: vector dimensions are 1, 2, 4 or 8")
        if not 1 <= self.n_bits <= MAX_VQ_BITS:
            raise CapscaleError(f"vq{self.dim}:b{self.n_bits}: bits per vector go from 1 to {MAX_VQ_BITS}")

    @property
    def spec(self):
        return f"vq{self.dim}:b{self.n_bits}"

    def apply(self, x2d, active):
        if active is not None:
            raise CapscaleError(f"{self.spec}: vector quantization cannot follow sparsity or outliers")
        rows, cols = x2d.shape
        if cols % self.dim:
            raise CapscaleError(f"{self.spec}: needs the last dimension ({cols}) to be a multiple of {self.dim}")
        book = gaussian_codebook(self.dim, self.n_bits).to(dtype=x2d.dtype, device=x2d.device)
        rms = masked_rms(x2d.reshape(rows, 1, cols), None).reshape(rows, 1)
        safe = torch.where(rms > 0, rms, torch.ones_like(rms))
        vectors = (x2d / safe).reshape(-1, self.dim)
        q = book[nearest(vectors, book)].reshape(rows, cols) * safe
        return q, None

    def bits(self, rows, cols, active_fraction):
        return self.n_bits / self.dim + SCALE_BITS / cols, 0.0
