"""The training FLOPs of the Llama-style model, counted once for everyone who needs it: the
model's own MFU accounting and the sweep's cost estimate (torch-free)."""

from __future__ import annotations


def flops_per_token(non_embedding_params: int, vocab_size: int, n_layer: int, n_embd: int,
                    seq_len: int) -> float:
    """Training FLOPs per token, forward and backward: 6·(N + V·d) for the matmuls (the block
    linears and the LM head; the embedding lookup is no matmul) plus 6·L·T·d for attention
    scores and values of a causal model (PaLM/Chinchilla accounting; Kaplan et al. 2020,
    arXiv 2001.08361)."""
    matmul_params = non_embedding_params + vocab_size * n_embd
    attention = 6 * n_layer * n_embd * seq_len
    return 6.0 * matmul_params + attention
