import math

import pytest
import torch
from scipy.stats import norm

from capscale.errors import CapscaleError
from capscale.model.gradient_rules import (
    GradRule,
    clip_mask,
    rms,
    sparse_backward_mask,
    straight_through,
    topk_threshold,
    trust_mask,
    vector_trust_mask,
)

# A small tensor whose masks are worked out by hand below (unified paper, App. F.3).
X = torch.tensor([0.1, -0.2, 0.4, -0.8, 1.6, -3.2, 0.05, 2.0], dtype=torch.float64)
KEEP = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1], dtype=torch.bool)  # top-4 magnitudes: T_k = 0.8
RMS = math.sqrt(sum(v * v for v in X.tolist()) / 8)  # 1.48545...


def _mask(values: str) -> torch.Tensor:
    return torch.tensor([c == "1" for c in values])


def test_topk_threshold_and_rms():
    assert float(topk_threshold(X, KEEP)) == 0.8
    assert float(rms(X, None)) == pytest.approx(RMS)
    rows = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    torch.testing.assert_close(rms(rows), torch.tensor([[math.sqrt(12.5)], [math.sqrt(0.5)]]))


def test_fw_and_ste_masks():
    assert torch.equal(sparse_backward_mask(X, KEEP, "fw"), KEEP)
    assert sparse_backward_mask(X, KEEP, "ste") is None


def test_rms_mask():
    # T_p = RMS * ppf(0.5 + p); p = 0.1 gives 0.3763: gradient for |x| > 0.3763
    assert RMS * norm.ppf(0.6) == pytest.approx(0.37634, abs=1e-4)
    assert torch.equal(sparse_backward_mask(X, KEEP, "rms", p=0.1), _mask("00111101"))


def test_banded_rms_mask_both_orders():
    # p = 0.1: T_p = 0.376 < T_k = 0.8, band [0.376, 0.8): only 0.4 gets no gradient
    assert torch.equal(sparse_backward_mask(X, KEEP, "b-rms", p=0.1), _mask("11011111"))
    # p = 0.4: T_p = 1.904 > T_k, band [0.8, 1.904): 0.8 and 1.6 get none (the min/max rule)
    assert RMS * norm.ppf(0.9) == pytest.approx(1.9037, abs=1e-3)
    assert torch.equal(sparse_backward_mask(X, KEEP, "b-rms", p=0.4), _mask("11100111"))


def test_area_banded_rms_mask():
    # the paper's example: cdf(T_k) = 0.8 and a = 0.5 put T_a at the 0.65 quantile
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t_k_quantile = 0.8
    keep = x.abs() >= float(x.abs().quantile(2 * t_k_quantile - 1))  # |x| >= T_k
    t_k = float(topk_threshold(x, keep))
    m = sparse_backward_mask(x, keep, "a-b-rms", area=0.5)
    s = float(rms(x, None))
    t_a = s * norm.ppf(0.5 + 0.5 * (norm.cdf(t_k / s) - 0.5))
    assert norm.cdf(t_k / s) == pytest.approx(0.8, abs=0.01)
    assert t_a / s == pytest.approx(norm.ppf(0.65), abs=0.01)
    expected = (x.abs() < t_a) | (x.abs() >= t_k)
    assert torch.equal(m, expected)
    # hand example: cdf(0.8 / RMS) = 0.7049, q = 0.5 + 0.5 * 0.2049, T_a = 0.386: 0.4 is in the band
    t_a_small = RMS * norm.ppf(0.5 + 0.5 * (norm.cdf(0.8 / RMS) - 0.5))
    assert t_a_small == pytest.approx(0.3863, abs=1e-3)
    assert torch.equal(sparse_backward_mask(X, KEEP, "a-b-rms", area=0.5), _mask("11011111"))
    # a = 1: the band reaches zero and the mask is the forward mask; a = 0: no band at all
    assert torch.equal(sparse_backward_mask(X, KEEP, "a-b-rms", area=1.0), KEEP)
    assert bool(sparse_backward_mask(X, KEEP, "a-b-rms", area=0.0).all())


def test_per_row_sparse_thresholds():
    x = torch.stack([X, 10 * X])
    keep = torch.stack([KEEP, KEEP])
    m = sparse_backward_mask(x, keep, "b-rms", p=0.1, dim=-1)
    # scaling a row scales both of its thresholds: the masks agree
    assert torch.equal(m[0], m[1])
    assert torch.equal(m[0], _mask("11011111"))


def test_trust_and_clip_masks_by_hand():
    x = torch.tensor([[0.0, 0.3, 1.0, 2.0]])
    xq = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    # errors 0.25, 0.05, 0.25, 1.25 against a radius of 0.5 * 0.6
    assert torch.equal(trust_mask(x, xq, 0.5, torch.tensor([[0.6]])), _mask("1110").view(1, 4))
    assert torch.equal(clip_mask(x, 1.4 * 0.75), _mask("1110").view(1, 4))  # limit 1.05
    assert torch.equal(clip_mask(x, 1.3 * 0.75), _mask("1100").view(1, 4))  # limit 0.975


def test_vector_trust_mask():
    x = torch.tensor([[3.0, 4.0, 0.1, 0.2, 1.0, 1.0]])  # points of norm 5, 0.22, 1.41
    m = vector_trust_mask(x, 2, torch.tensor([[2.0]]))
    assert torch.equal(m, _mask("001111").view(1, 6))


def test_straight_through_passes_masked_gradient():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    xq = torch.tensor([1.5, 2.5, 2.5])
    y = straight_through(x, xq, torch.tensor([True, False, True]))
    assert torch.equal(y, xq)
    (y * torch.tensor([1.0, 10.0, 100.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0, 100.0]))
    x.grad = None
    straight_through(x, xq, None).sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_grad_rule_validation():
    assert GradRule.parse("STE").quant == "ste"
    assert GradRule.parse(None).quant == "trust"
    assert GradRule.parse(GradRule(), sparse="b-rms").sparse == "b-rms"
    for bad in ({"quant": "dorefa"}, {"sparse": "topk"}, {"sparse_p": 0.7}, {"sparse_area": 2.0},
                {"hadamard": "quarter"}, {"trust_radius": -1.0}):
        with pytest.raises(CapscaleError):
            GradRule(**bad)
