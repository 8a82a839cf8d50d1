import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from capscale.errors import CapscaleError
from capscale.formats import hadamard_matrix, parse_format
from capscale.formats.vq import gaussian_codebook
from capscale.model import (
    BLOCK_LINEARS,
    CompressedLinear,
    GradRule,
    Llama,
    LlamaConfig,
    compress_model,
)
from capscale.model.gradient_rules import sparse_backward_mask

# QuEST's OPTIMAL_GAUSSIAN_SCALES (IST-DASLab/QuEST, src/models/quantization): the MSE-optimal
# clip of the 2^b-level uniform grid on N(0, 1), in units of sigma.
QUEST_ALPHA = {1: 0.7978845587140913, 2: 1.4935346200015913, 3: 2.051068354131873,
               4: 2.513930578568423}


def quest_trust(x: torch.Tensor, bits: int, alpha: float):
    """QuEST's TrustQuantizer written out: per-row RMS, clip at alpha*std, 2^b levels with no
    zero, mask |x̂ − x| <= std * alpha / (2^b − 1) (half a step)."""
    n = 2**bits
    std = x.pow(2).mean(-1, keepdim=True).sqrt()
    scale = alpha * std
    step = 2 * scale / (n - 1)
    xq = torch.round(torch.clamp(x, -scale, scale) / step + 0.5) * step - step / 2
    return xq, (xq - x).abs() <= std * alpha / (n - 1)


def block_hadamard(n: int, block: int = 128) -> torch.Tensor:
    return torch.block_diag(*[hadamard_matrix(block, torch.float32)] * (n // block))


def _grads(lin, x):
    x = x.clone().requires_grad_(True)
    y = lin(x)
    g = torch.randn_like(y, generator=torch.Generator().manual_seed(1))
    (y * g).sum().backward()
    return y, g, x.grad, lin.weight.grad


def _alpha(spec: str) -> float:
    return parse_format(spec).parts[0].alpha


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_alpha_matches_quest(bits):
    assert _alpha(f"int{bits}") == pytest.approx(QUEST_ALPHA[bits], rel=1e-4)


@pytest.mark.parametrize("w,a", [
    ("int4", "none"), ("none", "int8"), ("int3", "int3"), ("sparse0.5+int4", "none"),
    ("2:4", "int4"), ("nf4", "mxfp4"), ("vq2:b4", "none"), ("int2:had", "none"),
    ("none", "int4:had"), ("sparse0.75:row", "e2m1"), ("int4:g64", "int4:tensor"),
])
def test_forward_is_the_formats_quantize(w, a):
    torch.manual_seed(0)
    lin = CompressedLinear(256, 48, weight_format=w, activation_format=a)
    x = torch.randn(3, 5, 256)
    expected = F.linear(parse_format(a).quantize(x), parse_format(w).quantize(lin.weight.detach()))
    # exact, except for the float round-off of a Hadamard rotation (a matmul here, butterflies
    # in the formats library)
    tol = 1e-5 if ":had" in w + a else 0.0
    torch.testing.assert_close(lin(x), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("spec", ["sparse0.5+int4", "int4:had", "nvfp4", "mxfp4", "vq2:b4",
                                  "outliers0.01+int4", "2:4+int4", "int2:had", "int4:g64"])
def test_forward_is_the_formats_quantize_bit_for_bit(spec):
    # the layer runs the format's own pipeline (Format.run_parts): each operand is the
    # format's quantize bit for bit, rotated formats included, and so is the forward with one
    # operand compressed
    from capscale.model.compressed_linear import rotate

    torch.manual_seed(0)
    f = parse_format(spec)
    x = torch.randn(3, 5, 256, requires_grad=True)
    for w, a in ((spec, "none"), ("none", spec)):
        lin = CompressedLinear(256, 48, weight_format=w, activation_format=a)
        w_hat = lin.weight if w == "none" else f.quantize(lin.weight.detach())
        x_hat = x if a == "none" else f.quantize(x.detach())
        assert torch.equal(lin(x), F.linear(x_hat, w_hat)), (w, a)
    for t in (x.detach(), lin.weight.detach()):
        block = lin.a_block
        got = (lin.a_comp.compress(t)[0] if block is None
               else rotate(lin.a_comp.compress(rotate(t, block))[0], block))
        assert torch.equal(got, f.quantize(t))


@pytest.mark.parametrize("spec", ["int4:had", "int2:had", "sparse0.5+int3:had", "int1:had"])
def test_forward_with_both_operands_rotated(spec):
    # computed in the rotated domain: Q(xH)·Q(WH)ᵀ = x̂·ŵᵀ up to float round-off
    torch.manual_seed(0)
    lin = CompressedLinear(256, 32, weight_format=spec, activation_format=spec)
    x = torch.randn(6, 256)
    f = parse_format(spec)
    expected = F.linear(f.quantize(x), f.quantize(lin.weight.detach()))
    torch.testing.assert_close(lin(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_trust_gradient_matches_quest(bits):
    torch.manual_seed(bits)
    lin = CompressedLinear(128, 64, weight_format=f"int{bits}", activation_format="none")
    nn.init.normal_(lin.weight)  # Gaussian, like trained weights (the default init is uniform)
    x = torch.randn(16, 128)
    y, g, _, gw = _grads(lin, x)
    wq, mask = quest_trust(lin.weight.detach(), bits, _alpha(f"int{bits}"))
    torch.testing.assert_close(y, x @ wq.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, (g.T @ x) * mask)
    assert 0.0 < 1 - mask.float().mean() < 0.2  # some, not many, weights fall outside the region


def test_trust_radius_override_and_ste_and_clip():
    torch.manual_seed(0)
    w = torch.randn(32, 128)
    x = torch.randn(4, 128)
    outs = {}
    for name, rule in [("ste", "ste"), ("wide", GradRule(trust_radius=10.0)),
                       ("clip", GradRule(quant="clip", clip_scale=1.0))]:
        lin = CompressedLinear(128, 32, weight_format="int2", grad_rule=rule)
        lin.weight.data = w.clone()
        _, g, _, gw = _grads(lin, x)
        outs[name] = (gw, g.T @ x)
    torch.testing.assert_close(outs["ste"][0], outs["ste"][1])
    torch.testing.assert_close(outs["wide"][0], outs["wide"][1])  # nothing falls outside 10 RMS
    std = w.pow(2).mean(-1, keepdim=True).sqrt()
    clip = w.abs() <= _alpha("int2") * std
    torch.testing.assert_close(outs["clip"][0], outs["clip"][1] * clip)


def test_hadamard_trust_gradient_is_masked_in_the_rotated_domain():
    torch.manual_seed(0)
    lin = CompressedLinear(256, 32, weight_format="int3:had")
    x = torch.randn(8, 256)
    y, g, _, gw = _grads(lin, x)
    H = block_hadamard(256)
    w = lin.weight.detach()
    wq_rot, mask = quest_trust(w @ H, 3, _alpha("int3"))
    torch.testing.assert_close(y, x @ (wq_rot @ H.T).T, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, (((g.T @ x) @ H) * mask) @ H.T, rtol=1e-4, atol=1e-5)


def test_both_rotated_gradients():
    torch.manual_seed(0)
    lin = CompressedLinear(256, 32, weight_format="int2:had", activation_format="int2:had")
    x = torch.randn(8, 256)
    y, g, gx, gw = _grads(lin, x)
    H = block_hadamard(256)
    alpha = _alpha("int2")
    wq, mw = quest_trust(lin.weight.detach() @ H, 2, alpha)
    xq, mx = quest_trust(x @ H, 2, alpha)
    torch.testing.assert_close(y, xq @ wq.T, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx, ((g @ wq) * mx) @ H.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, ((g.T @ xq) * mw) @ H.T, rtol=1e-4, atol=1e-5)


def test_half_hadamard_weight_only_is_a_reparametrisation():
    torch.manual_seed(0)
    lin = CompressedLinear(128, 16, weight_format="int4:had", grad_rule=GradRule(hadamard="half"))
    x = torch.randn(4, 128)
    y, g, _, gw = _grads(lin, x)
    H = block_hadamard(128)
    wq, mask = quest_trust(lin.weight.detach() @ H, 4, _alpha("int4"))
    torch.testing.assert_close(y, x @ wq.T, rtol=1e-4, atol=1e-4)  # x is not rotated
    torch.testing.assert_close(gw, ((g.T @ x) * mask) @ H.T, rtol=1e-4, atol=1e-5)


def test_one_bit_trust_becomes_clip_1_3():
    torch.manual_seed(0)
    lin = CompressedLinear(128, 16, weight_format="int1:had")
    assert lin.w_comp.effective == ["int1:clip1.3"]
    x = torch.randn(4, 128)
    _, g, _, gw = _grads(lin, x)
    H = block_hadamard(128)
    wr = lin.weight.detach() @ H
    std = wr.pow(2).mean(-1, keepdim=True).sqrt()
    mask = wr.abs() <= 1.3 * QUEST_ALPHA[1] * std
    torch.testing.assert_close(gw, (((g.T @ x) @ H) * mask) @ H.T, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rule", ["fw", "ste", "rms", "b-rms", "a-b-rms"])
def test_sparse_backward_masks_in_the_layer(rule):
    torch.manual_seed(0)
    lin = CompressedLinear(64, 32, weight_format="sparse0.5", grad_rule=GradRule(sparse=rule))
    x = torch.randn(8, 64)
    y, g, _, gw = _grads(lin, x)
    w = lin.weight.detach()
    keep = w.abs() >= w.abs().flatten().kthvalue(w.numel() // 2 + 1).values
    assert float(keep.float().mean()) == 0.5
    torch.testing.assert_close(y, x @ (w * keep).T)
    mask = sparse_backward_mask(w, keep, rule, 0.2, 0.5)
    expected = g.T @ x if mask is None else (g.T @ x) * mask
    torch.testing.assert_close(gw, expected)


def test_sparse_then_quantized_masks_multiply():
    torch.manual_seed(0)
    lin = CompressedLinear(64, 32, weight_format="sparse0.5+int2")
    x = torch.randn(8, 64)
    _, g, _, gw = _grads(lin, x)
    w = lin.weight.detach()
    wq = parse_format("sparse0.5+int2").quantize(w)
    keep = wq != 0
    kept_rms = torch.sqrt((w * keep).pow(2).sum(-1, keepdim=True) / keep.sum(-1, keepdim=True))
    trust = (wq - w).abs() <= _alpha("int2") / 3 * kept_rms  # statistics over kept values
    torch.testing.assert_close(gw, (g.T @ x) * keep * trust)


def test_nm_sparsity_allows_only_fw_or_ste():
    CompressedLinear(64, 8, weight_format="2:4", grad_rule=GradRule(sparse="ste"))
    with pytest.raises(CapscaleError, match="N:M"):
        CompressedLinear(64, 8, weight_format="2:4", grad_rule=GradRule(sparse="b-rms"))


def test_vector_quantization_trust_mask():
    torch.manual_seed(0)
    lin = CompressedLinear(64, 16, weight_format="vq2:b4")
    x = torch.randn(4, 64)
    y, g, _, gw = _grads(lin, x)
    w = lin.weight.detach()
    radius = gaussian_codebook(2, 4).norm(dim=1).max().item()
    std = w.pow(2).mean(-1, keepdim=True).sqrt()
    outside = (w.view(16, 32, 2).norm(dim=-1) > radius * std).repeat_interleave(2, dim=1)
    assert outside.any()
    torch.testing.assert_close(gw, (g.T @ x) * ~outside)


def test_noise_injection_is_straight_through():
    torch.manual_seed(0)
    lin = CompressedLinear(32, 8, weight_format="noise0.01")
    x = torch.randn(4, 32)
    torch.manual_seed(5)
    y, g, _, gw = _grads(lin, x)
    torch.manual_seed(5)
    expected = x @ parse_format("noise0.01").quantize(lin.weight.detach()).T
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(gw, g.T @ x)


def test_hadamard_needs_a_power_of_two_factor():
    with pytest.raises(CapscaleError, match="power-of-two"):
        CompressedLinear(99, 8, weight_format="int4:had")
    lin = CompressedLinear(96, 8, weight_format="int4:had")  # rotated in blocks of 32
    assert lin.w_block == 32


def test_converter_compresses_the_block_linears_only():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(2, 64, 2, vocab_size=50, max_seq_len=16))
    keys = list(model.state_dict())
    report = compress_model(model, "int4", "int8", grad_rule="trust")
    assert report["layers"] == [f"layers.{i}.{n}" for i in range(2)
                                for n in ("attn.qkv", "attn.proj", "mlp.gate", "mlp.up", "mlp.down")]
    assert type(model.lm_head) is nn.Linear and isinstance(model.tok_emb, nn.Embedding)
    assert list(model.state_dict()) == keys  # checkpoints stay interchangeable with dense
    assert report["effective_rules"] == {"weight": ["int4:trust"], "activation": ["int8:trust"]}
    loss = model(torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_converter_filters_by_name_or_callable():
    def fresh():
        return Llama(LlamaConfig(2, 64, 2, vocab_size=50, max_seq_len=16))

    m = fresh()
    r = compress_model(m, "int4", include=["layers.*.mlp.*"])
    assert r["layers"] == [f"layers.{i}.mlp.{n}" for i in range(2) for n in ("gate", "up", "down")]
    assert type(m.layers[0].attn.qkv) is nn.Linear
    m = fresh()
    r = compress_model(m, "int4", include=BLOCK_LINEARS, exclude=lambda name, mod: name.startswith("layers.1"))
    assert all(n.startswith("layers.0") for n in r["layers"]) and len(r["layers"]) == 5
    m = fresh()
    assert compress_model(m, "none", "none")["layers"] == []
    assert not any(isinstance(x, CompressedLinear) for x in m.modules())
    with pytest.raises(CapscaleError, match="matched"):
        compress_model(fresh(), "int4", include=["nothing.*"])


def test_converter_works_on_any_module():
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    r = compress_model(net, "int4", "none", exclude=None)
    assert r["layers"] == ["0", "2"]
    out = net(torch.randn(3, 16))
    assert out.shape == (3, 4) and math.isfinite(out.sum().item())


@pytest.mark.parametrize("block", [2, 8, 32, 128, 256])
def test_rotation_is_the_libraries_walsh_hadamard_transform(block):
    from capscale.formats import fwht
    from capscale.model.compressed_linear import rotate

    x = torch.randn(6, 2 * block, generator=torch.Generator().manual_seed(block))
    torch.testing.assert_close(rotate(x, block), fwht(x, block), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rotate(rotate(x, block), block), x, rtol=1e-5, atol=1e-5)
