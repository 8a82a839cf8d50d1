"""The Monte Carlo's further control variates (fixed clips for an MSE-searched clip, the norms'
fourth moment for vector quantization): each has expectation exactly 0, and with them the
standard error still covers."""

import math

import numpy as np
import pytest
import torch

from capscale.capacity import gmse, probe
from capscale.formats import parse_format


@pytest.mark.parametrize("spec,n_controls", [("int4:mse:g128", 7), ("e2m1:mse:g32:had", 7), ("int3:mse", 7),
                                             ("vq2:b4", 1), ("vq4:b8:had", 1), ("int4", 0), ("sparse0.5", 0)])
def test_each_control_has_expectation_zero(spec, n_controls):
    controls = probe._controls(parse_format(spec), (512, 1024))
    gen = torch.Generator().manual_seed(11)
    z = torch.cat([torch.stack(controls(torch.randn(256, 1024, generator=gen)), dim=1) if n_controls
                   else torch.zeros(256, 0) for _ in range(8)]).numpy()
    assert z.shape[1] == n_controls
    for column in z.T:
        se = column.std(ddof=1) / math.sqrt(len(column))
        assert abs(column.mean()) < 4 * se, (spec, column.mean(), se)


@pytest.mark.parametrize("spec,rel_err", [("int4:mse:g128", 1e-2), ("vq2:b4", 1.2e-3)])
def test_standard_error_covers_with_the_controls(spec, rel_err, monkeypatch):
    """Drawn as the standard panel draws them (batches of 64 rows, at least 128: the regression
    on int4:mse:g128's 8 controls stops there; vq2:b4 goes on to about 550 rows, in steps sized
    by its standard error), over many seeds about 95% of the ±2 s.e. intervals hold a far more
    precise estimate, and the standardized errors have unit spread."""
    shape = (8, 1024)
    monkeypatch.setattr(probe, "ROW_BATCH", 64 * shape[1])
    ref = gmse(spec, shape=shape, rel_err=2e-4, seed=1000)
    z, se = [], []
    for seed in range(150):
        r = gmse(spec, shape=shape, rel_err=rel_err, seed=seed)
        assert r.n_samples >= 128 * shape[1]
        z.append((r.gmse - ref.gmse) / r.stderr)
        se.append(r.stderr)
    z = np.array(z)
    off = ref.stderr / float(np.median(se))  # the reference's own error, in units of the runs'
    assert off < 0.2
    cover = float(np.mean(np.abs(z) < 2))
    assert 0.91 <= cover <= 0.985, cover
    assert 0.85 < float(np.std(z)) < 1.2
    assert abs(float(np.mean(z))) < 0.2 + 3 * off
