import math

import pytest
import torch
import torch.nn.functional as F

from capscale.errors import CapscaleError
from capscale.model.llama import (
    SIZES,
    Llama,
    LlamaConfig,
    RMSNorm,
    apply_rope,
    config_for_size,
    rope_tables,
    size_preset,
)

# Non-embedding parameter counts of the papers' ladder, as published with the QuEST runs
# (IST-DASLab/QuEST, for_plots/runs_for_scaling.json, field non_embedding_parameters), which
# the unified paper reuses: 30M = 30,482,560 etc.
PUBLISHED_N = {
    "30M": 30_482_560,
    "50M": 49_556_736,
    "100M": 102_777_856,
    "200M": 203_188_480,
    "430M": 443_068_288,
    "800M": 822_151_168,
}


@pytest.mark.parametrize("size", list(PUBLISHED_N))
def test_non_embedding_params_match_the_papers(size):
    cfg = config_for_size(size, vocab_size=50304)
    assert cfg.non_embedding_params == PUBLISHED_N[size]
    with torch.device("meta"):  # count the real module without allocating it
        model = Llama(cfg)
    assert model.non_embedding_params() == PUBLISHED_N[size]
    total = sum(p.numel() for p in model.parameters())
    assert total == PUBLISHED_N[size] + 2 * 50304 * cfg.n_embd  # untied embedding and head


def test_paper_shapes():
    # unified paper Table 2 (and DESIGN.md): head dimension 128, SwiGLU hidden 8/3 d rounded up to 256
    cfg = config_for_size("30M", 32000)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.head_dim, cfg.mlp_hidden) == (6, 640, 5, 128, 1792)
    assert config_for_size("50M", 32000).mlp_hidden == 2048
    assert config_for_size("100M", 32000).mlp_hidden == 2816
    assert config_for_size("200M", 32000).mlp_hidden == 3584
    assert {s: SIZES[s].lr for s in ("30M", "50M", "100M", "200M")} == {
        "30M": 1.2e-3, "50M": 1.2e-3, "100M": 6e-4, "200M": 3e-4}
    for s in ("30M", "50M", "100M", "200M", "430M", "800M"):
        assert config_for_size(s, 32000).head_dim == 128


def test_tiny_ladder_spans_30k_to_5M_and_rotates_in_blocks():
    tiny = [s for s in SIZES if (s.endswith("k") and not s.startswith("cpu-"))
            or s in ("1M", "2M", "5M")]
    counts = [config_for_size(s, 4096).non_embedding_params for s in tiny]
    assert counts == sorted(counts)
    assert 25_000 <= counts[0] <= 35_000 and 4_500_000 <= counts[-1] <= 5_500_000
    for s in tiny:
        cfg = config_for_size(s, 4096)
        # a Hadamard block that divides the width also divides the MLP hidden size
        assert cfg.mlp_hidden % (cfg.n_embd & -cfg.n_embd) == 0
        named = float(s[:-1]) * (1e3 if s.endswith("k") else 1e6)
        assert abs(math.log(cfg.non_embedding_params / named)) < 0.15


def test_cpu_ladder_is_one_shape_family_with_a_learning_rate_per_rung():
    rungs = [s for s in SIZES if s.startswith("cpu-") and s[4:-1].isdigit()]
    cfgs = [config_for_size(s, 512) for s in rungs]
    assert {c.n_layer for c in cfgs} == {2} and {c.head_dim for c in cfgs} == {16}
    widths = [c.n_embd for c in cfgs]
    assert widths == sorted(widths) and widths[-1] / widths[0] == 6
    for s, c in zip(rungs, cfgs):
        named = float(s[4:-1]) * 1e3  # N rounded to the nearest thousand
        assert abs(c.non_embedding_params - named) <= 500
        assert c.mlp_hidden % (c.n_embd & -c.n_embd) == 0
    # the best of BENCHMARKS.md's sweep at 1M tokens (benchmarks/cpu_ladder_lr.toml)
    assert [SIZES[s].lr for s in rungs] == [8e-3, 8e-3, 4e-3, 4e-3, 2e-3]


def test_data_rich_cpu_ladder_is_one_shape_family_at_one_learning_rate():
    """cpu-w16 ... cpu-w48: 2 blocks, head dimension 8, widths in steps of 8, N = 26·w² + 5·w
    (SwiGLU hidden 3w), all at 4e-3 (BENCHMARKS.md, "The data-rich CPU ladder")."""
    rungs = [s for s in SIZES if s.startswith("cpu-w")]
    assert rungs == ["cpu-w16", "cpu-w24", "cpu-w32", "cpu-w40", "cpu-w48"]
    for s in rungs:
        c = config_for_size(s, 512)
        w = int(s[5:])
        assert (c.n_layer, c.n_embd, c.head_dim) == (2, w, 8)
        assert c.non_embedding_params == 26 * w * w + 5 * w
        assert SIZES[s].lr == 4e-3


def test_size_lookup_errors():
    with pytest.raises(CapscaleError, match="unknown model size"):
        size_preset("31M")
    with pytest.raises(CapscaleError, match="not divisible"):
        LlamaConfig(2, 100, 3)
    assert size_preset("30m") is SIZES["30M"]


def test_rmsnorm_matches_formula():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    norm = RMSNorm(16, eps=1e-5)
    norm.weight.data = torch.rand(16)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    hd = 16
    cos, sin = rope_tables(hd, 64, 10000.0)
    q, k = torch.randn(hd), torch.randn(hd)

    def score(i, j):
        qi = apply_rope(q.view(1, 1, 1, hd).expand(1, 1, 64, hd), cos, sin)[0, 0, i]
        kj = apply_rope(k.view(1, 1, 1, hd).expand(1, 1, 64, hd), cos, sin)[0, 0, j]
        return float(qi @ kj)

    assert score(10, 7) == pytest.approx(score(40, 37), rel=1e-5)
    assert score(5, 5) == pytest.approx(float(q @ k), rel=1e-5)  # no rotation at distance 0
    # theta = 10000: the first channel pair turns by 1 rad per position
    assert float(cos[1, 0]) == pytest.approx(math.cos(1.0))


def test_attention_is_causal_and_matches_naive_softmax():
    torch.manual_seed(0)
    cfg = LlamaConfig(2, 32, 2, vocab_size=50, max_seq_len=16)
    model = Llama(cfg)
    idx = torch.randint(0, 50, (2, 16))
    logits = model(idx)
    idx2 = idx.clone()
    idx2[:, 10:] = (idx2[:, 10:] + 1) % 50
    torch.testing.assert_close(model(idx2)[:, :10], logits[:, :10])
    assert not torch.allclose(model(idx2)[:, 10:], logits[:, 10:])

    attn = model.layers[0].attn
    x = torch.randn(2, 16, 32)
    cos, sin = model.rope_cos[:16], model.rope_sin[:16]
    q, k, v = attn.qkv(x).view(2, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(16)
    scores = scores.masked_fill(torch.ones(16, 16).triu(1).bool(), float("-inf"))
    naive = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 16, 32)
    torch.testing.assert_close(attn(x, cos, sin), attn.proj(naive), rtol=1e-4, atol=1e-5)


def test_loss_is_token_cross_entropy_and_init_is_gpt2_style():
    torch.manual_seed(0)
    cfg = LlamaConfig(4, 64, 2, vocab_size=100, max_seq_len=8)
    model = Llama(cfg)
    idx, tgt = torch.randint(0, 100, (3, 8)), torch.randint(0, 100, (3, 8))
    expected = F.cross_entropy(model(idx).reshape(-1, 100), tgt.reshape(-1))
    torch.testing.assert_close(model(idx, tgt), expected)
    # at init the loss is close to log(vocab): small logits
    assert abs(model(idx, tgt).item() - math.log(100)) < 0.1
    std = model.layers[0].mlp.down.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(model.norm.weight == 1)
    with pytest.raises(CapscaleError, match="exceeds"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_flops_per_token_is_six_n_plus_attention():
    cfg = config_for_size("30M", 32000, max_seq_len=512)
    expected = 6 * (30_482_560 + 32000 * 640) + 6 * 6 * 640 * 512
    assert cfg.flops_per_token() == expected


# --------------------------------------------------------------------------- OLMo2-style block


@pytest.mark.parametrize("size", ["30k", "1M", "30M", "200M"])
def test_olmo2_counts_its_parameters_like_llama(size):
    cfg = config_for_size(size, vocab_size=512, arch="olmo2")
    d = cfg.n_embd
    assert cfg.mlp_hidden == cfg.multiple_of * math.ceil(4 * d / cfg.multiple_of)
    # qkv + proj, up + down, two post-norms and the full-width q/k norms; final norm
    assert cfg.non_embedding_params == cfg.n_layer * (4 * d * d + 2 * d * cfg.mlp_hidden + 4 * d) + d
    with torch.device("meta"):
        model = Llama(cfg)
    assert model.non_embedding_params() == cfg.non_embedding_params
    # about the same MLP weights as SwiGLU (8d² before rounding; below width 256 SwiGLU rounds
    # 8/3·d up to 3d, 9d²), so N stays within 10% of the Llama rung
    llama = config_for_size(size, vocab_size=512)
    assert abs(cfg.non_embedding_params / llama.non_embedding_params - 1) < 0.1
    with pytest.raises(CapscaleError, match="architecture"):
        LlamaConfig(2, 64, 2, arch="gpt2")


def test_olmo2_block_normalises_each_branch_inside_the_residual():
    torch.manual_seed(0)
    cfg = LlamaConfig(1, 64, 2, vocab_size=50, max_seq_len=16, arch="olmo2")
    model = Llama(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # gains away from 1, so a wrong order shows
    block = model.layers[0]
    seen = {}
    for name in ("attn", "mlp", "attn.q_norm", "attn.k_norm", "mlp.up"):
        block.get_submodule(name).register_forward_hook(
            lambda m, inp, out, name=name: seen.update({name: (inp[0], out)}))
    x = torch.randn(2, 16, 64)
    cos, sin = model.rope_cos[:16], model.rope_sin[:16]
    out = block(x, cos, sin)
    attn_in, attn_out = seen["attn"]
    mlp_in, mlp_out = seen["mlp"]
    # the branches see the raw residual stream; their outputs are normalised, then added
    assert torch.equal(attn_in, x)
    torch.testing.assert_close(mlp_in, x + block.attn_norm(attn_out))
    torch.testing.assert_close(out, mlp_in + block.mlp_norm(mlp_out))
    # ReLU² MLP
    up_in, up_out = seen["mlp.up"]
    torch.testing.assert_close(mlp_out, block.mlp.down(F.relu(up_out) ** 2))
    # QK-norm acts on the full-width queries and keys the qkv projection makes
    q, k, _ = block.attn.qkv(x).split(64, dim=-1)
    torch.testing.assert_close(seen["attn.q_norm"][0], q)
    torch.testing.assert_close(seen["attn.k_norm"][0], k)
    assert not any(isinstance(m, torch.nn.Linear) and m.bias is not None for m in model.modules())


def test_olmo2_trains_over_compressed_linears_with_the_same_names():
    from capscale.model import BLOCK_LINEARS, compress_model

    torch.manual_seed(0)
    model = Llama(LlamaConfig(2, 64, 2, vocab_size=50, max_seq_len=16, arch="olmo2"))
    report = compress_model(model, "int4:had", "int4:had", include=BLOCK_LINEARS)
    assert sorted({name.split(".", 2)[2] for name in report["layers"]}) == [
        "attn.proj", "attn.qkv", "mlp.down", "mlp.up"]
    idx = torch.randint(0, 50, (2, 16))
    loss = model(idx, idx)
    loss.backward()
    assert math.isfinite(loss.item()) and model.layers[0].mlp.up.weight.grad.abs().sum() > 0
