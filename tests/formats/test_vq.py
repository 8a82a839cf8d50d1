"""Vector quantization: the shipped code books are Lloyd fixed points for N(0, I) and beat the
best scalar grid at the same bits per value, as vector quantization must."""

import numpy as np
import pytest
import torch

from capscale.capacity import gmse, scalar_bound, shannon_bound
from capscale.formats import parse_format
from capscale.formats.vq import SHIPPED, gaussian_codebook, nearest, shipped_path


@pytest.mark.parametrize("dim,bits", SHIPPED)
def test_shipped_code_books_are_lloyd_fixed_points(dim, bits):
    assert shipped_path(dim, bits).exists()
    book = gaussian_codebook(dim, bits).float()
    assert book.shape == (2**bits, dim)
    gen = torch.Generator().manual_seed(7)
    fit, held_out = torch.randn(400_000, dim, generator=gen), torch.randn(400_000, dim, generator=gen)
    idx = nearest(fit, book)
    counts = torch.bincount(idx, minlength=len(book)).clamp(min=1).unsqueeze(1)
    moved = torch.zeros_like(book).index_add_(0, idx, fit) / counts
    before = float(nearest(held_out, book, with_distance=True)[1].mean())
    after = float(nearest(held_out, moved, with_distance=True)[1].mean())
    # one more Lloyd step gains nothing on data it has not seen (beyond sampling noise)
    assert after > before * (1 - 2e-3)


@pytest.mark.parametrize("spec,bits", [("vq2:b4", 2), ("vq4:b8", 2), ("vq8:b8", 1)])
def test_vq_beats_the_scalar_bound_and_not_shannon(spec, bits):
    r = gmse(spec, shape=(64, 4096), rel_err=3e-3)
    assert shannon_bound(bits) < r.gmse < scalar_bound(bits)


def test_vq_quantize_scales_rows_by_their_rms():
    x = torch.randn(4, 64) * torch.tensor([[0.1], [1.0], [10.0], [100.0]])
    y = parse_format("vq4:b8").quantize(x)
    rel = ((y - x) ** 2).mean(1) / (x**2).mean(1)
    assert torch.all(rel < 0.2)
    assert np.ptp(rel.numpy()) < 0.15  # the same relative error at every scale
