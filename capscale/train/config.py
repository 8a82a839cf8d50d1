"""Everything that defines a training run, and the quantities derived from it.

A :class:`TrainConfig` is what a user (or a sweep) writes; :func:`plan` turns it into a
:class:`RunPlan` with the model shape, the number of steps, the learning rate and the
batch split, once the vocabulary size is known. Both are stored in the run folder's
``config.json``, so a run can be resumed, audited or repeated from its folder alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from capscale.errors import CapscaleError
from capscale.model.llama import LlamaConfig, size_preset

# Tokens per micro-batch and rank when --micro-batch is not given: a CPU core gets small
# matmuls to keep memory low; a GPU gets the papers' 64 x 512 sequences.
DEFAULT_MICRO_TOKENS = {"cpu": 8192, "cuda": 32768}
# Bounds of a run's length: far beyond any run trained (10^13 tokens), small enough that a
# typo (1e30) is refused instead of planned.
MAX_TOKENS = 10**15
MAX_STEPS = 10**9
MAX_TOKENS_PER_PARAM = 1e6
# the fewest optimizer steps a token budget may come to: warm-up, decay and evaluation need room
MIN_STEPS = 10


@dataclass
class TrainConfig:
    """A training run. Defaults are the papers' setup (DESIGN.md, "Training setup")."""

    # model: a named size, or an explicit shape
    size: str | None = "30M"
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    arch: str = "llama"
    # compression: format specs and the gradient rule
    w_format: str = "none"
    a_format: str = "none"
    grad: str = "trust"
    trust_radius: float | None = None
    clip_scale: float = 1.0
    hadamard: str = "full"
    sparse_grad: str = "fw"
    sparse_p: float = 0.2
    sparse_area: float = 0.5
    # data
    data: str = "builtin:wiki"
    tokenizer: str = "train:spm:4096"
    data_cache: str | None = None
    val_fraction: float | None = None
    seq_len: int = 512
    batch_tokens: int = 262144
    micro_batch: int | None = None
    # length: explicit steps > explicit tokens > tokens per parameter
    tokens_per_param: float = 100.0
    tokens: int | None = None
    steps: int | None = None
    # optimisation
    lr: float | None = None
    optimizer: str = "adamw"
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_frac: float = 0.1
    warmup: str = "cos"
    initial_lr_frac: float = 0.01
    final_lr_frac: float = 0.1
    # evaluation and checkpoints (None: about ten times per run)
    eval_every: int | None = None
    val_tokens: int = 1 << 20
    ckpt_every: int | None = None
    keep_checkpoints: int = 1
    # runtime
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = False
    wandb_project: str | None = None
    out: str | None = None

    def validate(self) -> None:
        if self.size is None and None in (self.n_layer, self.n_embd, self.n_head):
            raise CapscaleError("give a model --size or all of --n-layer, --n-embd and --n-head")
        if self.size is not None:
            size_preset(self.size)
        from capscale.model.presets import ARCHS

        if self.arch not in ARCHS:
            raise CapscaleError(f"arch {self.arch!r}: use one of {', '.join(ARCHS)}")
        positive = ("seq_len", "batch_tokens", "val_tokens", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise CapscaleError(f"{name.replace('_', '-')}={getattr(self, name)}: must be >= 1")
        for name in ("micro_batch", "steps", "tokens", "eval_every", "ckpt_every"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise CapscaleError(f"{name.replace('_', '-')}={v}: must be >= 1")
        if self.batch_tokens % self.seq_len:
            from capscale.numbers import binary_alternative

            below = self.batch_tokens // self.seq_len * self.seq_len
            near = [v for v in (below, below + self.seq_len) if v >= 1]
            twin = binary_alternative(self.batch_tokens, self.seq_len)
            hint = (f"; suffixes k, M are decimal (1k = 1000): did you mean {twin}? Ki, Mi are "
                    "binary (1Ki = 1024)" if twin else "")
            raise CapscaleError(
                f"batch-tokens={self.batch_tokens:,} is not a multiple of seq-len={self.seq_len}: "
                f"give a multiple such as {' or '.join(f'{v:,}' for v in near)}{hint}"
            )
        if not self.tokens_per_param > 0:
            raise CapscaleError(f"tokens-per-param={self.tokens_per_param}: must be > 0")
        if self.lr is not None and not self.lr > 0:
            raise CapscaleError(f"lr={self.lr}: must be > 0")
        if self.optimizer not in ("adamw", "amsgrad"):
            raise CapscaleError(f"optimizer {self.optimizer!r}: use adamw or amsgrad")
        if self.warmup not in ("cos", "linear"):
            raise CapscaleError(f"warmup {self.warmup!r}: use cos or linear")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise CapscaleError(f"dtype {self.dtype!r}: use auto, fp32 or bf16")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise CapscaleError(f"warmup-frac={self.warmup_frac}: must lie in [0, 1)")
        self._check_ranges()
        # bad format specs and gradient-rule settings fail here, before any data is read
        from capscale.formats import parse_format
        from capscale.model.compressed_linear import OperandCompressor, grad_rule_from_config

        rule = grad_rule_from_config(self)
        for spec in (self.w_format, self.a_format):  # and the rule fits each format
            OperandCompressor(parse_format(spec), rule)

    def _check_ranges(self) -> None:
        """Every number in its valid range (NaN and inf refused): a negative gradient clip
        would reverse the gradients, eps 0 divides by zero, a final LR above the peak is no
        decay."""
        def check(name: str, ok: bool, valid: str) -> None:
            if not ok:
                raise CapscaleError(f"{name.replace('_', '-')}={getattr(self, name)}: must be {valid}")

        def real(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("lr", "trust_radius"):
            v = getattr(self, name)
            check(name, v is None or (real(v) and v > 0), "a number > 0")
        check("grad_clip", real(self.grad_clip) and self.grad_clip > 0,
              "> 0 (the largest gradient norm; use a large value for no clipping)")
        check("eps", real(self.eps) and 0 < self.eps < 1, "in (0, 1)")
        check("weight_decay", real(self.weight_decay) and 0 <= self.weight_decay < 10, "in [0, 10)")
        for name in ("beta1", "beta2"):
            check(name, real(getattr(self, name)) and 0 <= getattr(self, name) < 1, "in [0, 1)")
        for name in ("initial_lr_frac", "final_lr_frac"):
            check(name, real(getattr(self, name)) and 0 <= getattr(self, name) <= 1,
                  "in [0, 1] (a fraction of the peak learning rate)")
        check("clip_scale", real(self.clip_scale) and self.clip_scale > 0, "a number > 0")
        check("sparse_p", real(self.sparse_p) and 0 < self.sparse_p < 1, "in (0, 1)")
        check("sparse_area", real(self.sparse_area) and 0 < self.sparse_area < 1, "in (0, 1)")
        check("val_fraction", self.val_fraction is None
              or (real(self.val_fraction) and 0 < self.val_fraction < 1), "in (0, 1)")
        check("tokens_per_param", real(self.tokens_per_param)
              and 0 < self.tokens_per_param <= MAX_TOKENS_PER_PARAM,
              f"in (0, {MAX_TOKENS_PER_PARAM:g}]")
        check("tokens", self.tokens is None or self.tokens <= MAX_TOKENS,
              f"at most {MAX_TOKENS:.0e} (a quadrillion tokens)")
        check("steps", self.steps is None or self.steps <= MAX_STEPS, f"at most {MAX_STEPS:.0e}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CapscaleError(f"unknown training settings {sorted(unknown)} in config")
        return cls(**d)


@dataclass(frozen=True)
class RunPlan:
    """The derived numbers of a run: shape, N, length, learning rate and batch split."""

    model: LlamaConfig
    n_params: int  # N, non-embedding
    steps: int
    tokens: int  # D = steps * batch_tokens
    lr: float
    batch_size: int  # sequences per optimizer step, all ranks together
    micro_batch: int  # sequences per forward/backward and rank
    accum_steps: int
    world_size: int
    eval_every: int
    ckpt_every: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


def model_config(cfg: TrainConfig, vocab_size: int) -> LlamaConfig:
    if cfg.size is not None and cfg.n_layer is None and cfg.n_embd is None and cfg.n_head is None:
        p = size_preset(cfg.size)
        shape = (p.n_layer, p.n_embd, p.n_head)
    else:
        base = size_preset(cfg.size) if cfg.size is not None else None
        shape = tuple(
            v if v is not None else (getattr(base, k) if base else None)
            for k, v in (("n_layer", cfg.n_layer), ("n_embd", cfg.n_embd), ("n_head", cfg.n_head))
        )
        if None in shape:
            raise CapscaleError("give all of --n-layer, --n-embd and --n-head, or a --size")
    return LlamaConfig(*shape, vocab_size=vocab_size, max_seq_len=cfg.seq_len, arch=cfg.arch)


def default_lr(cfg: TrainConfig, model: LlamaConfig) -> float:
    """The ladder's learning rate for a named size; for a custom shape, the rung whose
    non-embedding count is nearest in log scale."""
    if cfg.lr is not None:
        return cfg.lr
    if cfg.size is not None and None in (cfg.n_layer, cfg.n_embd, cfg.n_head):
        return size_preset(cfg.size).lr
    from capscale.model.llama import SIZES

    n = model.non_embedding_params

    def distance(p) -> float:
        rung = LlamaConfig(p.n_layer, p.n_embd, p.n_head, vocab_size=1).non_embedding_params
        return abs(math.log(rung / n))

    return min(SIZES.values(), key=distance).lr


def check_budget(cfg: TrainConfig, p: RunPlan) -> None:
    """A token budget (not explicit steps) that comes to fewer than MIN_STEPS optimizer steps
    is an error naming the smallest budget that works: training it would end at warm-up."""
    if cfg.steps is not None or p.steps >= MIN_STEPS:
        return
    target = cfg.tokens if cfg.tokens is not None else cfg.tokens_per_param * p.n_params
    budget = (f"tokens={cfg.tokens:,}" if cfg.tokens is not None else
              f"tokens-per-param={cfg.tokens_per_param:g} x N={p.n_params:,}")
    raise CapscaleError(
        f"{budget} is {target / cfg.batch_tokens:.3g} optimizer step(s) of "
        f"batch-tokens={cfg.batch_tokens:,}; a run needs at least {MIN_STEPS} steps "
        f"(warm-up, decay, evaluation): give tokens >= {MIN_STEPS * cfg.batch_tokens:,}, "
        f"a smaller batch-tokens (>= seq-len={cfg.seq_len}), or steps explicitly"
    )


def plan(cfg: TrainConfig, vocab_size: int, world_size: int = 1, device_type: str = "cpu") -> RunPlan:
    cfg.validate()
    model = model_config(cfg, vocab_size)
    n = model.non_embedding_params
    if cfg.steps is not None:
        steps = cfg.steps
    else:
        target = cfg.tokens if cfg.tokens is not None else cfg.tokens_per_param * n
        steps = max(1, round(target / cfg.batch_tokens))
        if steps > MAX_STEPS:
            raise CapscaleError(
                f"{target:.3g} tokens in steps of {cfg.batch_tokens:,} tokens are {steps:.3g} "
                f"steps; at most {MAX_STEPS:.0e}: fewer tokens or larger --batch-tokens")
    batch = cfg.batch_tokens // cfg.seq_len
    if batch % world_size:
        raise CapscaleError(
            f"{batch} sequences per step (batch-tokens / seq-len) do not split evenly over "
            f"{world_size} processes"
        )
    per_rank = batch // world_size
    micro = cfg.micro_batch
    if micro is None:
        budget = DEFAULT_MICRO_TOKENS.get(device_type, DEFAULT_MICRO_TOKENS["cuda"])
        micro = max(1, min(per_rank, budget // cfg.seq_len))
        while per_rank % micro:
            micro -= 1
    if per_rank % micro:
        raise CapscaleError(
            f"micro-batch={micro} does not divide the {per_rank} sequences per step and process"
        )
    every = max(1, steps // 10)
    return RunPlan(
        model=model,
        n_params=n,
        steps=steps,
        tokens=steps * cfg.batch_tokens,
        lr=default_lr(cfg, model),
        batch_size=batch,
        micro_batch=micro,
        accum_steps=per_rank // micro,
        world_size=world_size,
        eval_every=cfg.eval_every or every,
        ckpt_every=cfg.ckpt_every or every,
    )
