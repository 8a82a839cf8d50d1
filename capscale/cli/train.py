"""capscale train: train a Llama-style model over compressed weights/activations.

    capscale train --size 30M --w int4:had --a int4:had --grad trust --tokens-per-param 100 --data c4
    capscale train --size 1M --w int4 --data builtin:wiki --tokenizer train:spm:4096 --out runs/int4
    torchrun --nproc_per_node 8 -m capscale train --size 200M ...   (DDP)
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from capscale.cli.args import COUNT1, INTEGER, NUMBER

HELP = "train a Llama-style model over a compressed representation and record the run"


def count(text: str) -> int:
    """A token or step count in the number grammar: 3000000000, 3e9, 3B, 250M, 40k, 8Ki."""
    return COUNT1(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from capscale.model.presets import ARCHS, HADAMARD_MODES, QUANT_RULES, SIZES, SPARSE_RULES

    g = p.add_argument_group("model")
    g.add_argument("--size", default=None, help=f"named size: {', '.join(SIZES)} (default 30M)")
    g.add_argument("--n-layer", type=INTEGER, help="number of blocks (overrides the size's)")
    g.add_argument("--n-embd", type=INTEGER, help="width (overrides the size's)")
    g.add_argument("--n-head", type=INTEGER, help="attention heads (overrides the size's)")
    g.add_argument("--arch", default="llama", choices=ARCHS,
                   help="block: llama (the papers', default) or olmo2 (reordered norms, QK-norm, ReLU² MLP)")

    g = p.add_argument_group("compression")
    g.add_argument("--w", default="none", metavar="SPEC", help="weight format (e.g. int4:had, sparse0.5+int4, nf4)")
    g.add_argument("--a", default="none", metavar="SPEC", help="activation format (e.g. int4:had)")
    g.add_argument("--grad", default="trust", choices=QUANT_RULES,
                   help="gradient rule of quantizers: QuEST trust estimation (default), plain STE, clip, "
                        "or a learned scale: lsq, lsq+ (learned offset on activations), pact (learned clip)")
    g.add_argument("--trust-radius", type=NUMBER, help="trust radius in RMS units (default: half a grid step)")
    g.add_argument("--clip-scale", type=NUMBER, default=1.0, help="for --grad clip: multiple of the outer level")
    g.add_argument("--hadamard", default="full", choices=HADAMARD_MODES,
                   help="full: rotate both operands; half: leave an uncompressed partner unrotated")
    g.add_argument("--sparse-grad", default="fw", choices=SPARSE_RULES,
                   help="backward mask of magnitude sparsity (unified paper: fw, rms, b-rms = RBBM, a-b-rms)")
    g.add_argument("--sparse-p", type=NUMBER, default=0.2, help="median deviation p of rms/b-rms (default 0.2)")
    g.add_argument("--sparse-area", type=NUMBER, default=0.5, help="band area a of a-b-rms (default 0.5)")

    g = p.add_argument_group("data")
    g.add_argument("--data", default="builtin:wiki",
                   help="builtin:wiki (embedded, offline), c4, an HF dataset name, or .txt/.jsonl/.parquet files")
    g.add_argument("--tokenizer", default="train:spm:4096",
                   help="train:spm:4096 (local SentencePiece), llama2, gpt2, mistral, or a path")
    g.add_argument("--data-cache", help="token cache folder (default: $CAPSCALE_CACHE or ~/.cache/capscale)")
    g.add_argument("--val-fraction", type=NUMBER, help="held-out fraction of the data for validation")
    g.add_argument("--seq-len", type=INTEGER, default=512, help="sequence length (default 512)")
    g.add_argument("--batch-tokens", type=count, default=262144,
                   help="tokens per optimizer step, all processes together (default 262144 = 256Ki = "
                        "512 x 512; 8k is 8000, 8Ki is 8192)")
    g.add_argument("--micro-batch", type=INTEGER, help="sequences per forward/backward and process (default: fit memory)")

    g = p.add_argument_group("length (steps > tokens > tokens per parameter)")
    g.add_argument("--tokens-per-param", type=NUMBER, default=100.0, help="D / N (default 100)")
    g.add_argument("--tokens", type=count, help="training tokens D (e.g. 3e9, 3B, 250M)")
    g.add_argument("--steps", type=count, help="optimizer steps")

    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=NUMBER, help="peak learning rate (default: the size's, from the ladder)")
    g.add_argument("--optimizer", default="adamw", choices=("adamw", "amsgrad"),
                   help="AdamW (0.9, 0.95), or AdamW with AMSGrad normalisation (the unified paper's Alg. 3)")
    g.add_argument("--weight-decay", type=NUMBER, default=0.1)
    g.add_argument("--grad-clip", type=NUMBER, default=1.0)
    g.add_argument("--warmup-frac", type=NUMBER, default=0.1)
    g.add_argument("--warmup", default="cos", choices=("cos", "linear"))
    g.add_argument("--beta1", type=NUMBER, default=0.9)
    g.add_argument("--beta2", type=NUMBER, default=0.95)
    g.add_argument("--eps", type=NUMBER, default=1e-8)
    g.add_argument("--initial-lr-frac", type=NUMBER, default=0.01, help="warm-up starts at LR x this")
    g.add_argument("--final-lr-frac", type=NUMBER, default=0.1, help="the cosine ends at LR x this")

    g = p.add_argument_group("evaluation and checkpoints")
    g.add_argument("--eval-every", type=INTEGER, help="validate every k steps (default: 10 times per run)")
    g.add_argument("--val-tokens", type=count, default=1 << 20, help="validation tokens (default 1,048,576)")
    g.add_argument("--ckpt-every", type=INTEGER, help="checkpoint every k steps (default: 10 times per run)")
    g.add_argument("--keep-checkpoints", type=INTEGER, default=1)

    g = p.add_argument_group("runtime")
    g.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<size>-<w>-<a>-s<seed>)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its latest checkpoint (starts it if absent)")
    g.add_argument("--seed", type=INTEGER, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast on GPU, fp32 on CPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--log-every", type=INTEGER, default=10)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--tensorboard", action="store_true", help="log to RUN_DIR/tensorboard")
    g.add_argument("--wandb", metavar="PROJECT", help="log to Weights & Biases")
    g.add_argument("--json", action="store_true", help="print the result record as JSON")


def default_out(args) -> str:
    def slug(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9.+_-]+", "_", s)

    size = args.size or f"L{args.n_layer}d{args.n_embd}h{args.n_head}"
    if args.arch != "llama":
        size = f"{args.arch}-{size}"
    return f"runs/{slug(size)}-w{slug(args.w)}-a{slug(args.a)}-s{args.seed}"


def config_from_args(args):
    from capscale.train import TrainConfig

    explicit_shape = None not in (args.n_layer, args.n_embd, args.n_head)
    size = args.size if args.size is not None else (None if explicit_shape else "30M")
    return TrainConfig(
        size=size, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, arch=args.arch,
        w_format=args.w, a_format=args.a, grad=args.grad, trust_radius=args.trust_radius,
        clip_scale=args.clip_scale, hadamard=args.hadamard, sparse_grad=args.sparse_grad,
        sparse_p=args.sparse_p, sparse_area=args.sparse_area,
        data=args.data, tokenizer=args.tokenizer, data_cache=args.data_cache,
        val_fraction=args.val_fraction, seq_len=args.seq_len, batch_tokens=args.batch_tokens,
        micro_batch=args.micro_batch, tokens_per_param=args.tokens_per_param, tokens=args.tokens,
        steps=args.steps, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, warmup_frac=args.warmup_frac, warmup=args.warmup,
        beta1=args.beta1, beta2=args.beta2, eps=args.eps, initial_lr_frac=args.initial_lr_frac,
        final_lr_frac=args.final_lr_frac,
        eval_every=args.eval_every, val_tokens=args.val_tokens, ckpt_every=args.ckpt_every,
        keep_checkpoints=args.keep_checkpoints, seed=args.seed, device=args.device,
        dtype=args.dtype, compile=args.compile, log_every=args.log_every,
        progress=not args.no_progress, tensorboard=args.tensorboard, wandb_project=args.wandb,
        out=args.out or default_out(args),
    )


def to_argv(cfg) -> list[str]:
    """The ``capscale train`` arguments that reproduce ``cfg`` (non-default settings only),
    for launchers that start runs as processes (torchrun, SLURM)."""
    from dataclasses import fields

    from capscale.train import TrainConfig

    default = TrainConfig()
    flags = {"w_format": "--w", "a_format": "--a", "wandb_project": "--wandb"}
    argv: list[str] = []
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name) and f.name != "size":
            continue
        flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
        if f.name == "size":
            if value is not None:
                argv += [flag, value]
        elif f.name == "progress":
            argv.append("--no-progress")
        elif isinstance(value, bool):
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def run(args) -> int:
    import os

    from capscale.runrecord import INTERRUPTED, RESULT
    from capscale.train import train

    cfg = config_from_args(args)
    cfg.validate()
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if result["status"] == INTERRUPTED:
        print(f"interrupted at step {result['D'] // cfg.batch_tokens:,} of {result['steps']:,} "
              f"by a stop signal: checkpointed in {cfg.out}; run the same command with --resume "
              "to continue", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        loss = "—" if result["loss"] is None else f"{result['loss']:.4f}"
        print(f"{result['status']}: val loss {loss}  N={result['N']:,}  D={result['D']:,}  "
              f"w={result['w_format']}  a={result['a_format']}  -> {cfg.out}/{RESULT}",
              file=sys.stdout)
    return 0
