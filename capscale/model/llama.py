"""The Llama-style decoder of the papers, and an OLMo2-style variant, in one file.

Both papers (and the QuEST runs they build on) train the same architecture: pre-norm
decoder blocks with RMSNorm (eps 1e-5), rotary position embeddings (theta 10000),
causal self-attention, a SwiGLU MLP whose hidden size is 8/3 of the width rounded up to
a multiple of 256, no biases anywhere, and untied input embedding / LM head. The
non-embedding parameter count N (everything except the token embedding and the LM
head, RMSNorm gains included) is what the scaling laws use; it reproduces the papers'
figures exactly (30M = 30,482,560; see ``tests/model/test_llama.py``).

Module names are chosen so that a name filter can pick the compressible linears:
``layers.{i}.attn.qkv``, ``layers.{i}.attn.proj``, ``layers.{i}.mlp.gate``,
``layers.{i}.mlp.up``, ``layers.{i}.mlp.down``; ``tok_emb`` and ``lm_head`` stay dense.

``arch="olmo2"`` builds the OLMo2-style block (OLMo 2, arXiv 2501.00656) on which the unified
paper's NeurIPS version refits its law: the norms move inside the residual branch, after
attention and after the MLP (x + norm(attn(x)), x + norm(mlp(x))); queries and keys are
RMS-normalised over the full width before RoPE (QK-norm); the MLP is ReLU² with a hidden size
of 4× the width (rounded like SwiGLU's), so a layer holds the same 8d² MLP weights; no biases,
RoPE. Same ladder by width and depth; N is counted the same way (all gains included), and
the MLP linears keep the names ``mlp.up`` / ``mlp.down``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from capscale.errors import CapscaleError
from capscale.model.flops import flops_per_token
from capscale.model.presets import ARCHS, SIZES, SizePreset, size_preset  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class LlamaConfig:
    """Shape of a model. ``mlp_hidden`` and ``head_dim`` are derived, never free."""

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 32000
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    arch: str = "llama"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise CapscaleError(f"unknown model architecture {self.arch!r}: use one of {', '.join(ARCHS)}")
        for name in ("n_layer", "n_embd", "n_head", "vocab_size", "max_seq_len"):
            if int(getattr(self, name)) < 1:
                raise CapscaleError(f"model {name}={getattr(self, name)}: must be a positive integer")
        if self.n_embd % self.n_head:
            raise CapscaleError(
                f"model n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "the head dimension is n_embd / n_head"
            )
        if self.head_dim % 2:
            raise CapscaleError(
                f"model head dimension n_embd/n_head = {self.head_dim} is odd: rotary "
                "embeddings rotate pairs of channels, choose an even head dimension"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def multiple_of(self) -> int:
        """Rounding multiple of the MLP hidden size: 256 as in the papers, or the width itself
        below 256, so that a Hadamard block that divides the width also divides the hidden size."""
        return min(256, self.n_embd)

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden size, rounded up to ``multiple_of``: 8/3 of the width for SwiGLU (three
        matrices), 4× for the OLMo2-style ReLU² MLP (two)."""
        m = self.multiple_of
        hidden = 4 * self.n_embd if self.arch == "olmo2" else int(2 * (4 * self.n_embd) / 3)
        return m * ((hidden + m - 1) // m)

    @property
    def reduction_widths(self) -> dict[str, int]:
        """The input width of each kind of block linear, the dimension a format groups and
        rotates over: what every compressed layer's format must be able to split."""
        return {"attention and MLP inputs": self.n_embd, "MLP down projection": self.mlp_hidden}

    @property
    def non_embedding_params(self) -> int:
        """N as the papers count it: every parameter except token embedding and LM head."""
        d, h = self.n_embd, self.mlp_hidden
        if self.arch == "olmo2":  # qkv + proj, up/down, two post-norms and the q/k norms
            per_layer = 4 * d * d + 2 * d * h + 4 * d
        else:  # qkv + proj, gate/up/down, two RMSNorm gains
            per_layer = 4 * d * d + 3 * d * h + 2 * d
        return self.n_layer * per_layer + d  # + final RMSNorm

    @property
    def embedding_params(self) -> int:
        return 2 * self.vocab_size * self.n_embd  # untied input embedding and LM head

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), the usual 6N plus attention scores.

        Counts the LM head (it is a matmul) but not the embedding lookup, as in the
        PaLM/Chinchilla accounting used for model-FLOPs utilisation.
        """
        t = self.max_seq_len if seq_len is None else seq_len
        return flops_per_token(self.non_embedding_params, self.vocab_size, self.n_layer,
                               self.n_embd, t)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(head_dim=self.head_dim, mlp_hidden=self.mlp_hidden,
                   non_embedding_params=self.non_embedding_params)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> LlamaConfig:
        fields = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in fields})


def config_for_size(name: str, vocab_size: int, max_seq_len: int = 512, arch: str = "llama") -> LlamaConfig:
    p = size_preset(name)
    return LlamaConfig(p.n_layer, p.n_embd, p.n_head, vocab_size=vocab_size,
                       max_seq_len=max_seq_len, arch=arch)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [seq_len, head_dim] for the half-split ("rotate half") RoPE layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + head_dim/2) of x [B, H, T, hd] by position-dependent angles.

    Pairing channel i with i + hd/2 instead of (2i, 2i+1) is a fixed permutation of the head
    channels, so the model class is the same as Meta's interleaved layout.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, qk_norm: bool = False):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        # OLMo2's QK-norm: RMSNorm of the full-width queries and keys, before RoPE
        self.q_norm = RMSNorm(cfg.n_embd, cfg.norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(cfg.n_embd, cfg.norm_eps) if qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.up = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class ReLU2MLP(nn.Module):
    """The OLMo2-style block's MLP: squared ReLU, down(relu(up(x))²), two matrices."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.up = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.up(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Olmo2Block(nn.Module):
    """Reordered norms: each branch is normalised at its output, inside the residual."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attn = Attention(cfg, qk_norm=True)
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = ReLU2MLP(cfg)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_norm(self.attn(x, cos, sin))
        return x + self.mlp_norm(self.mlp(x))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        block = Olmo2Block if cfg.arch == "olmo2" else Block
        self.layers = nn.ModuleList(block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 / QuEST initialisation: N(0, 0.02) everywhere, residual output projections
        (attention ``proj`` and MLP ``down``) scaled by 1/sqrt(2 * n_layer), RMSNorm gains 1."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                p.normal_(0.0, std)

    def non_embedding_params(self) -> int:
        """Counted from the module (for a check against ``cfg.non_embedding_params``). The
        learned scales of LSQ/PACT quantizers are the format's metadata, not model parameters."""
        skip = {id(self.tok_emb.weight), id(self.lm_head.weight)}
        for m in self.modules():
            if not getattr(m, "counts_as_model_parameters", True):
                skip.update(id(p) for p in m.parameters())
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] or, with ``targets``, the mean token cross-entropy."""
        T = idx.shape[1]
        if T > self.cfg.max_seq_len:
            raise CapscaleError(
                f"sequence length {T} exceeds the model's max_seq_len {self.cfg.max_seq_len}"
            )
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.tok_emb(idx)
        for block in self.layers:
            x = block(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
