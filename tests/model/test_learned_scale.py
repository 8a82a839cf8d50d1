"""LSQ, LSQ+ and PACT: values and gradients worked out by hand, initialisation as the papers
give it, and the layer plumbing (parameters, no weight decay, state dict, composition)."""

import math

import pytest
import torch

from capscale.errors import CapscaleError
from capscale.formats import parse_format
from capscale.model import CompressedLinear, compress_model
from capscale.model.learned_scale import LearnedScale, grad_scale, lsq_quantize, pact_quantize
from capscale.train.optim import parameter_groups

INT2 = parse_format("int2:tensor").parts[0]  # QuEST's 2-bit grid: levels ±1/3, ±1 → ±0.5s, ±1.5s


def _leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_grad_scale_changes_only_the_gradient():
    t = _leaf([2.0])
    y = grad_scale(t, 0.25)
    assert y.item() == 2.0
    (3 * y).sum().backward()
    assert t.grad.item() == 0.75


def test_lsq_values_and_gradients_by_hand():
    # step s = 1 on the grid ±0.5, ±1.5 (Q_P = 1.5); x/s = 0.2, 0.9 inside; 2.0, -3.0 clipped
    x, s = _leaf([0.2, 0.9, 2.0, -3.0]), _leaf(1.0)
    y = lsq_quantize(x, s, 1.5, INT2.round_normalised, g=0.1)
    assert y.tolist() == pytest.approx([0.5, 0.5, 1.5, -1.5])
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    (y * upstream).sum().backward()
    # ∂x̂/∂x: 1 inside the range, 0 beyond it
    assert x.grad.tolist() == [1.0, 2.0, 0.0, 0.0]
    # ∂x̂/∂s: q − x/s inside (0.3, −0.4), ±Q_P beyond (1.5, −1.5); times g
    expected = 0.1 * (1 * 0.3 + 2 * (-0.4) + 3 * 1.5 + 4 * (-1.5))
    assert s.grad.item() == pytest.approx(expected, rel=1e-12)


def test_lsq_with_a_zero_level_is_lsq_of_the_paper():
    # int3:zero has levels k/3, |k| ≤ 3: LSQ's signed 3-bit grid with Q_N = Q_P = 3
    part = parse_format("int3:zero:tensor").parts[0]
    x, s = _leaf([0.74, -1.3, 10.0]), _leaf(0.5)
    y = lsq_quantize(x, s, 3.0, part.round_normalised)
    # x/s = 1.48 → 1, −2.6 → −3, 20 → 3 (clipped)
    assert y.tolist() == pytest.approx([0.5, -1.5, 1.5])
    y.sum().backward()
    assert s.grad.item() == pytest.approx((1 - 1.48) + (-3 + 2.6) + 3)


def test_lsq_plus_offset_gradient_is_one_outside_and_zero_inside():
    x, s, beta = _leaf([1.2, 1.9, 4.0, -2.0]), _leaf(1.0), _leaf(1.0)
    y = lsq_quantize(x, s, 1.5, INT2.round_normalised, offset=beta, g=0.5)
    # (x − β)/s = 0.2, 0.9, 3.0 (clip 1.5), −3.0 (clip −1.5)
    assert y.tolist() == pytest.approx([1.5, 1.5, 2.5, -0.5])
    y.sum().backward()
    assert beta.grad.item() == pytest.approx(0.5 * 2)  # the two clipped entries
    assert s.grad.item() == pytest.approx(0.5 * (0.3 - 0.4 + 1.5 - 1.5))
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_pact_values_and_gradients_by_hand():
    # clip α = 1.5: the same grid, outermost level at ±α
    x, alpha = _leaf([0.2, 0.9, 2.0, -3.0, 1.6]), _leaf(1.5)
    y = pact_quantize(x, alpha, INT2.round_normalised)
    assert y.tolist() == pytest.approx([0.5, 0.5, 1.5, -1.5, 1.5])
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    (y * upstream).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 0.0, 0.0, 0.0]
    # ∂x̂/∂α = sign(x) beyond the clip, 0 inside (no quantization-error term, unlike LSQ)
    assert alpha.grad.item() == 3.0 - 4.0 + 5.0


def test_initialisation_follows_the_papers():
    torch.manual_seed(0)
    w = torch.randn(8, 64, dtype=torch.float64) * 0.02 + 0.001
    part = parse_format("int4").parts[0]  # per row: one scale per output channel
    q_p = 7.5  # 16 levels
    lsq = LearnedScale("lsq", part, "weight", (8, 64)).double()
    lsq(w, None)
    expected = 2 * w.abs().mean(1) / math.sqrt(q_p)
    assert torch.allclose(lsq.step.flatten(), expected)
    assert lsq.step.shape == (8, 1, 1) and lsq.g == pytest.approx(1 / math.sqrt(64 * q_p))

    plus = LearnedScale("lsq+", part, "weight", (8, 64)).double()
    plus(w, None)
    mu, sigma = w.mean(1), w.std(1, unbiased=False)
    expected = torch.maximum((mu - 3 * sigma).abs(), (mu + 3 * sigma).abs()) / 8  # 2^(b−1)
    assert torch.allclose(plus.step.flatten(), expected) and plus.offset is None

    a = torch.rand(32, 64, dtype=torch.float64) * 3 - 1  # activations in [−1, 2)
    act = LearnedScale("lsq+", part, "activation", (1, 64)).double()
    act(a, None)
    assert act.step.item() == pytest.approx((a.max() - a.min()).item() / 15)
    assert act.offset.item() == pytest.approx((a.max() + a.min()).item() / 2)
    assert act.label == "int4:lsq+(tensor)"

    pact = LearnedScale("pact", part, "activation", (1, 64)).double()
    pact(a, None)
    assert pact.step.item() == pytest.approx(part.alpha * a.pow(2).mean().sqrt().item())


def test_scales_are_initialised_once_and_survive_a_state_dict():
    torch.manual_seed(0)
    layer = CompressedLinear(64, 16, weight_format="int4", activation_format="int4", grad_rule="lsq")
    x = torch.randn(4, 64)
    layer(x)
    first = layer.w_scale.step.detach().clone()
    with torch.no_grad():
        layer.weight.mul_(3.0)
    layer(x)  # no re-initialisation on later calls
    assert torch.equal(layer.w_scale.step, first)
    state = layer.state_dict()
    assert {"w_scale.step", "w_scale.initialized", "a_scale.step"} <= set(state)
    fresh = CompressedLinear(64, 16, weight_format="int4", activation_format="int4", grad_rule="lsq")
    fresh.load_state_dict(state)
    assert bool(fresh.w_scale.initialized) and torch.equal(fresh(x), layer(x))


def test_layer_gradient_of_the_step_matches_a_slow_loop():
    torch.manual_seed(1)
    layer = CompressedLinear(32, 4, weight_format="int3:tensor", grad_rule="lsq").double()
    x = torch.randn(5, 32, dtype=torch.float64)
    layer(x)  # initialise
    layer.zero_grad()
    y = layer(x)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    # by hand: ∂L/∂ŵ = upstreamᵀ·x; each weight adds ∂L/∂ŵ_ij · (q − w/s or ±Q_P) · g
    s = layer.w_scale.step.item()
    q_p, g = 3.5, 1 / math.sqrt(32 * 4 * 3.5)
    levels = (torch.arange(8, dtype=torch.float64) - 3.5)
    dw_hat = upstream.T @ x
    total = 0.0
    for i in range(4):
        for j in range(32):
            v = layer.weight[i, j].item() / s
            if v > q_p:
                d = q_p
            elif v < -q_p:
                d = -q_p
            else:
                d = levels[(levels - v).abs().argmin()].item() - v
            total += dw_hat[i, j].item() * d
    assert layer.w_scale.step.grad.item() == pytest.approx(total * g, rel=1e-9)


def test_learned_scales_are_not_decayed_and_compose_with_sparsity():
    from torch import nn

    model = nn.Sequential(nn.Linear(64, 32, bias=False))
    report = compress_model(model, "sparse0.5+int4", "int4:had", "pact", exclude=None)
    assert report["effective_rules"]["weight"] == ["sparse0.5:fw", "int4:pact"]
    layer = model[0]
    decay, no_decay = parameter_groups(model, 0.1)
    assert [p is layer.weight for p in decay["params"]] == [True]
    assert any(p is layer.w_scale.step for p in no_decay["params"])
    x = torch.randn(8, 64)
    layer(x).sum().backward()
    # half the weights are pruned: they stay zero in the forward, and get no gradient (fw mask)
    w_hat = layer.w_comp(layer.weight.detach(), layer.w_scale)
    assert (w_hat == 0).float().mean().item() == pytest.approx(0.5)
    assert (layer.weight.grad[w_hat == 0] == 0).all()
    assert layer.w_scale.step.grad is not None and layer.a_scale.step.grad is not None


def test_learned_rules_need_a_scalar_grid():
    for spec in ("mxfp4", "vq4:b8"):
        with pytest.raises(CapscaleError, match="learns the scale of a scalar grid"):
            CompressedLinear(64, 16, weight_format=spec, grad_rule="lsq")
    with pytest.raises(CapscaleError, match="last part"):
        CompressedLinear(64, 16, weight_format="int4+noise0.01", grad_rule="lsq")
    # formats with nothing to learn (dense, pure sparsity) are fine
    layer = CompressedLinear(64, 16, weight_format="sparse0.5", grad_rule="lsq")
    assert layer.w_scale is None and layer.a_scale is None
