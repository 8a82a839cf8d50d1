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
from pathlib import Path

import numpy as np
import torch

from capscale.cache import cache_dir
from capscale.errors import CapscaleError
from capscale.formats.base import SCALE_BITS, Part, finite_view, robust_rms, saturating_cast

MAX_VQ_BITS = 12  # 4096 code words: k-means on CPU stays within a minute
CODEBOOK_VERSION = 2


def nearest(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 4096, with_distance: bool = False):
    """Index of the nearest code word (squared Euclidean) for each row of x (and, if asked, the
    squared distance to it). Chunks of 4096 rows keep the distance matrix in cache (4x faster
    than 64k-row chunks on CPU)."""
    c2 = codebook.square().sum(dim=1)
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device) if with_distance else None
    for i in range(0, x.shape[0], chunk):
        xs = x[i : i + chunk]
        d = torch.addmm(c2, xs, codebook.T, alpha=-2.0)  # ‖c‖² − 2 x·c
        if with_distance:
            best = d.min(dim=1)
            idx[i : i + chunk] = best.indices
            dist[i : i + chunk] = best.values + xs.square().sum(dim=1)
        else:
            idx[i : i + chunk] = d.argmin(dim=1)
    return (idx, dist) if with_distance else idx


def train_codebook(
    dim: int, bits: int, seed: int = 0, max_iter: int = 200, tol: float = 1e-6, n_samples: int | None = None
) -> torch.Tensor:
    """k-means++ then Lloyd iterations on Gaussian samples; returns (2^bits, dim) float64.

    Stops when an iteration improves the MSE by less than `tol` of itself (the code book's GMSE
    is then settled to far below the probe's Monte Carlo error)."""
    k = 2**bits
    gen = torch.Generator().manual_seed(seed)
    n = n_samples or min(max(256 * k, 1 << 17), 1 << 20)
    data = torch.randn(n, dim, generator=gen)
    sub = data[: min(n, 32 * k)]  # k-means++ start on a subsample
    centers = torch.empty(k, dim)
    centers[0] = sub[torch.randint(len(sub), (1,), generator=gen)]
    d2 = (sub - centers[0]).square().sum(1)
    for j in range(1, k):
        centers[j] = sub[torch.multinomial(d2 / d2.sum(), 1, generator=gen)]
        d2 = torch.minimum(d2, (sub - centers[j]).square().sum(1))
    prev = float("inf")
    for _ in range(max_iter):
        idx, dist = nearest(data, centers, with_distance=True)
        mse = float(dist.double().mean())
        counts = torch.bincount(idx, minlength=k).to(torch.float64)
        sums = torch.zeros(k, dim, dtype=torch.float64).index_add_(0, idx, data.double())
        empty = counts == 0
        centers = torch.where(empty[:, None], centers.double(), sums / counts.clamp(min=1)[:, None]).float()
        if bool(empty.any()):  # restart empty cells on random samples
            centers[empty] = data[torch.randint(n, (int(empty.sum()),), generator=gen)]
        if prev - mse < tol * mse:
            break
        prev = mse
    return centers.double()


SHIPPED_DIR = Path(__file__).with_name("codebooks")
# code books shipped with the package (built by `python -m capscale.formats.vq`): the ones the
# standard panel and the examples use; any other (d, b) is trained on first use and cached
SHIPPED = ((2, 4), (2, 6), (2, 8), (4, 4), (4, 8), (8, 8))


def shipped_path(dim: int, bits: int) -> Path:
    return SHIPPED_DIR / f"gauss_d{dim}_b{bits}.npy"


@lru_cache(maxsize=16)
def gaussian_codebook(dim: int, bits: int) -> torch.Tensor:
    """The code book for N(0, I_dim) at `bits` bits per vector (float64): shipped, cached, or
    trained now and cached."""
    shipped = shipped_path(dim, bits)
    if shipped.exists():
        return torch.from_numpy(np.load(shipped)).double()
    path = cache_dir("vq") / f"gauss_d{dim}_b{bits}_v{CODEBOOK_VERSION}.pt"
    if path.exists():
        return torch.load(path)
    print(f"capscale: computing the {2**bits}-word Gaussian code book in {dim} dimensions "
          f"(once; cached in {path.parent})", file=sys.stderr)
    book = train_codebook(dim, bits)
    from capscale.io import atomic_write

    atomic_write(path, lambda tmp: torch.save(book, tmp))
    return book


def build_shipped(tol: float = 1e-7) -> None:
    """Train the shipped code books on 2^19 samples, up to 600 Lloyd iterations."""
    from capscale.io import atomic_write

    SHIPPED_DIR.mkdir(exist_ok=True)
    for dim, bits in SHIPPED:
        book = train_codebook(dim, bits, max_iter=600, tol=tol, n_samples=1 << 19)

        def write(tmp: str, book=book) -> None:
            with open(tmp, "wb") as f:
                np.save(f, book.float().numpy())

        atomic_write(shipped_path(dim, bits), write)
        print(f"built {shipped_path(dim, bits).name}", file=sys.stderr)


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
        clean, stat, nonfinite = finite_view(x2d.reshape(rows, 1, cols), None)
        rms = robust_rms(clean, stat).reshape(rows, 1)  # over the finite entries
        safe = torch.where(rms > 0, rms, torch.ones_like(rms))
        vectors = (clean.reshape(rows, cols) / safe).reshape(-1, self.dim)
        q = saturating_cast(book.double()[nearest(vectors, book)].reshape(rows, cols) * safe.double(), x2d.dtype)
        if nonfinite is not None:  # a vector holding a NaN or ±inf has no code word: NaN
            bad = nonfinite.reshape(-1, self.dim).any(-1, keepdim=True).expand(-1, self.dim)
            q = torch.where(bad.reshape(rows, cols), torch.full((), float("nan"), dtype=q.dtype), q)
        return q, None

    def bits(self, rows, cols, active_fraction):
        return self.n_bits / self.dim + SCALE_BITS / cols, 0.0


if __name__ == "__main__":
    build_shipped()
