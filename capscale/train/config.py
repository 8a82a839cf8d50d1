"""Everything that defines a training run, and the quantities derived from it.

A :class:`TrainConfig` is what a user (or a sweep) writes; :func:`plan` turns it into a
:class:`RunPlan` with the model shape, the number of steps, the learning rate and the
batch split, once the vocabulary size is known. Both are stored in the run folder's
``config.json``, so a run can be resumed, audited or repeated from its folder alone.

Each field carries a :class:`Setting` (its group, documentation, kind, choices and valid
range): the one source from which ``capscale train`` builds its flags and help, sweep specs
check their keys and values, and :meth:`TrainConfig.validate` checks a config.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from capscale.errors import CapscaleError
from capscale.model.presets import (
    ARCHS,
    HADAMARD_MODES,
    LEARNED_RULES,
    QUANT_RULES,
    SIZES,
    SPARSE_RULES,
    size_preset,
)

if TYPE_CHECKING:  # torch-free at import: ``capscale train --help`` reads the settings
    from capscale.model.llama import LlamaConfig

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

# The groups of settings, in the order ``capscale train --help`` shows them, with their titles.
GROUPS = {
    "model": "model",
    "compression": "compression",
    "data": "data",
    "length": "length (steps > tokens > tokens per parameter)",
    "optimizer": "optimisation",
    "evaluation": "evaluation and checkpoints",
    "runtime": "runtime",
}
# What a setting's value is: text, a whole number, any real number, a token or step count in
# the number grammar (3e9, 3B, 8Ki), or an on/off switch.
KINDS = ("text", "int", "number", "count", "switch")


@dataclass(frozen=True)
class Setting:
    """How one field of :class:`TrainConfig` is documented, entered and checked."""

    group: str
    doc: str
    kind: str = "text"
    choices: tuple[str, ...] = ()
    lo: float | None = None  # the valid range; None: unbounded on that side
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    valid: str | None = None  # how the range reads in an error, when not "in [lo, hi]"
    flag: str | None = None  # the command-line flag, when not --field-name
    metavar: str | None = None
    optional: bool = False  # None is a valid value (set from a default of None)

    def range_text(self) -> str:
        if self.valid:
            return self.valid
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"at most {self.hi:g}"
        return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")

    def in_range(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)


def setting(default, group: str, doc: str, **kw):
    """A dataclass field described by a :class:`Setting`."""
    assert group in GROUPS and kw.get("kind", "text") in KINDS
    kw.setdefault("optional", default is None)
    return field(default=default, metadata={"setting": Setting(group, doc, **kw)})


POSITIVE = {"lo": 0, "lo_open": True}
AT_LEAST_1 = {"lo": 1}
FRACTION = {"lo": 0, "hi": 1, "lo_open": True, "hi_open": True}


@dataclass
class TrainConfig:
    """A training run. Defaults are the papers' setup (DESIGN.md, "Training setup")."""

    # model: a named size, or an explicit shape
    size: str | None = setting(
        "30M", "model", f"named size: {', '.join(SIZES)}", optional=True)
    n_layer: int | None = setting(None, "model", "number of blocks (overrides the size's)",
                                  kind="int", **AT_LEAST_1)
    n_embd: int | None = setting(None, "model", "width (overrides the size's)", kind="int",
                                 **AT_LEAST_1)
    n_head: int | None = setting(None, "model", "attention heads (overrides the size's)",
                                 kind="int", **AT_LEAST_1)
    arch: str = setting("llama", "model", "block: llama (the papers') or olmo2 "
                        "(reordered norms, QK-norm, ReLU² MLP)", choices=ARCHS)
    # compression: format specs and the gradient rule
    w_format: str = setting("none", "compression", "weight format (e.g. int4:had, "
                            "sparse0.5+int4, nf4)", flag="--w", metavar="SPEC")
    a_format: str = setting("none", "compression", "activation format (e.g. int4:had)",
                            flag="--a", metavar="SPEC")
    grad: str = setting("trust", "compression", "gradient rule of quantizers: QuEST trust "
                        "estimation (default), plain STE, clip, or a learned scale: lsq, lsq+ "
                        "(learned offset on activations), pact (learned clip)", choices=QUANT_RULES)
    trust_radius: float | None = setting(
        None, "compression", "trust radius in RMS units (default: half a grid step)",
        kind="number", **POSITIVE, valid="a number > 0")
    clip_scale: float = setting(1.0, "compression", "for --grad clip: multiple of the outer "
                                "level", kind="number", **POSITIVE, valid="a number > 0")
    hadamard: str = setting("full", "compression", "full: rotate both operands; half: leave an "
                            "uncompressed partner unrotated", choices=HADAMARD_MODES)
    sparse_grad: str = setting("fw", "compression", "backward mask of magnitude sparsity "
                               "(unified paper: fw, rms, b-rms = RBBM, a-b-rms)",
                               choices=SPARSE_RULES)
    sparse_p: float = setting(0.2, "compression", "median deviation p of rms/b-rms",
                              kind="number", lo=0, hi=0.5, lo_open=True, hi_open=True)
    sparse_area: float = setting(0.5, "compression", "band area a of a-b-rms", kind="number",
                                 **FRACTION)
    # data
    data: str = setting("builtin:wiki", "data", "builtin:wiki (embedded, offline), c4, an HF "
                        "dataset name, or .txt/.jsonl/.parquet files")
    tokenizer: str = setting("train:spm:4096", "data", "train:spm:4096 (local SentencePiece), "
                             "llama2, gpt2, mistral, or a path")
    data_cache: str | None = setting(None, "data", "token cache folder (default: "
                                     "$CAPSCALE_CACHE or ~/.cache/capscale)")
    val_fraction: float | None = setting(None, "data", "held-out fraction of the data for "
                                         "validation", kind="number", **FRACTION)
    seq_len: int = setting(512, "data", "sequence length", kind="int", **AT_LEAST_1)
    batch_tokens: int = setting(262144, "data", "tokens per optimizer step, all processes "
                                "together (default 262144 = 256Ki = 512 x 512; 8k is 8000, 8Ki "
                                "is 8192)",
                                kind="count", **AT_LEAST_1)
    micro_batch: int | None = setting(None, "data", "sequences per forward/backward and "
                                      "process (default: fit memory)", kind="int", **AT_LEAST_1)
    # length: explicit steps > explicit tokens > tokens per parameter
    tokens_per_param: float = setting(100.0, "length", "D / N", kind="number", lo=0,
                                      hi=MAX_TOKENS_PER_PARAM, lo_open=True)
    tokens: int | None = setting(None, "length", "training tokens D (e.g. 3e9, 3B, 250M)",
                                 kind="count", lo=1, hi=MAX_TOKENS,
                                 valid=f">= 1 and at most {MAX_TOKENS:.0e} (a quadrillion tokens)")
    steps: int | None = setting(None, "length", "optimizer steps", kind="count", lo=1,
                                hi=MAX_STEPS, valid=f">= 1 and at most {MAX_STEPS:.0e}")
    # optimisation
    lr: float | None = setting(None, "optimizer", "peak learning rate (default: the size's, "
                               "from the ladder)", kind="number", **POSITIVE, valid="a number > 0")
    scale_lr: float | None = setting(
        None, "optimizer", "peak learning rate of learned quantizer scales (--grad lsq, lsq+, "
        "pact), on the same schedule (default: the model's). Under Adam a scale moves by about "
        "its rate each step whatever its gradient; a slow scale stays near where it started "
        "(STUDIES.md, study lsq)", kind="number", **POSITIVE, valid="a number > 0")
    optimizer: str = setting("adamw", "optimizer", "AdamW (0.9, 0.95), or AdamW with AMSGrad "
                             "normalisation (the unified paper's Alg. 3)",
                             choices=("adamw", "amsgrad"))
    beta1: float = setting(0.9, "optimizer", "Adam's first-moment decay", kind="number", lo=0,
                           hi=1, hi_open=True)
    beta2: float = setting(0.95, "optimizer", "Adam's second-moment decay", kind="number",
                           lo=0, hi=1, hi_open=True)
    eps: float = setting(1e-8, "optimizer", "Adam's denominator floor", kind="number",
                         **FRACTION)
    weight_decay: float = setting(0.1, "optimizer", "decoupled weight decay", kind="number",
                                  lo=0, hi=10, hi_open=True)
    grad_clip: float = setting(1.0, "optimizer", "largest gradient norm", kind="number",
                               **POSITIVE, valid="> 0 (the largest gradient norm; use a large "
                               "value for no clipping)")
    warmup_frac: float = setting(0.1, "optimizer", "fraction of the steps spent warming up",
                                 kind="number", lo=0, hi=1, hi_open=True)
    warmup: str = setting("cos", "optimizer", "shape of the warm-up", choices=("cos", "linear"))
    initial_lr_frac: float = setting(0.01, "optimizer", "warm-up starts at LR x this",
                                     kind="number", lo=0, hi=1, valid="in [0, 1] (a fraction "
                                     "of the peak learning rate)")
    final_lr_frac: float = setting(0.1, "optimizer", "the cosine ends at LR x this",
                                   kind="number", lo=0, hi=1, valid="in [0, 1] (a fraction of "
                                   "the peak learning rate)")
    # evaluation and checkpoints (None: about ten times per run)
    eval_every: int | None = setting(None, "evaluation", "validate every k steps (default: "
                                     "10 times per run)", kind="int", **AT_LEAST_1)
    val_tokens: int = setting(1 << 20, "evaluation", "validation tokens", kind="count",
                              **AT_LEAST_1)
    ckpt_every: int | None = setting(None, "evaluation", "checkpoint every k steps (default: "
                                     "10 times per run)", kind="int", **AT_LEAST_1)
    keep_checkpoints: int = setting(1, "evaluation", "checkpoints kept in the run folder",
                                    kind="int", **AT_LEAST_1)
    # runtime
    seed: int = setting(0, "runtime", "seed of the initialisation and the data order",
                        kind="int")
    device: str = setting("auto", "runtime", "auto, cpu, cuda or cuda:N")
    dtype: str = setting("auto", "runtime", "auto: bf16 autocast on GPU, fp32 on CPU",
                         choices=("auto", "fp32", "bf16"))
    compile: bool = setting(False, "runtime", "torch.compile the model", kind="switch")
    log_every: int = setting(10, "runtime", "log the train loss every k steps", kind="int",
                             **AT_LEAST_1)
    progress: bool = setting(True, "runtime", "no progress bar", kind="switch",
                             flag="--no-progress")
    tensorboard: bool = setting(False, "runtime", "log to RUN_DIR/tensorboard", kind="switch")
    wandb_project: str | None = setting(None, "runtime", "log to Weights & Biases",
                                        flag="--wandb", metavar="PROJECT")
    out: str | None = setting(None, "runtime", "run folder (default "
                              "runs/<size>-<w>-<a>-s<seed>)", metavar="RUN_DIR")

    def validate(self) -> None:
        if self.size is None and None in (self.n_layer, self.n_embd, self.n_head):
            raise CapscaleError("give a model --size or all of --n-layer, --n-embd and --n-head")
        if self.size is not None:
            size_preset(self.size)  # its own message: the sizes, or an explicit shape
        for f in fields(self):
            _check_setting(f.name, getattr(self, f.name), f.metadata["setting"])
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
        # bad format specs and gradient-rule settings fail here, before any data is read
        from capscale.formats import parse_format
        from capscale.model.compressed_linear import OperandCompressor, grad_rule_from_config

        rule = grad_rule_from_config(self)
        operands = [OperandCompressor(parse_format(spec), rule)  # and the rule fits each format
                    for spec in (self.w_format, self.a_format)]
        if self.scale_lr is not None and not any(o.learns_scale for o in operands):
            why = (f"--grad {self.grad} learns none" if self.grad not in LEARNED_RULES else
                   f"--w {self.w_format} --a {self.a_format} have no grid to learn a scale for")
            raise CapscaleError(
                f"scale-lr={self.scale_lr} sets the learning rate of learned quantizer scales, "
                f"and {why}: use it with --grad {', '.join(LEARNED_RULES)} on a quantized "
                "operand, or leave it out")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CapscaleError(f"unknown training settings {sorted(unknown)} in config")
        return cls(**d)


def settings() -> dict[str, Setting]:
    """Field name -> its :class:`Setting`, in declaration order."""
    return {f.name: f.metadata["setting"] for f in fields(TrainConfig)}


def _check_setting(name: str, v, s: Setting) -> None:
    """``v`` of the kind, among the choices and in the range of ``s`` (None only where the
    setting is optional; NaN and inf never: a negative gradient clip would reverse the
    gradients, eps 0 divides by zero, a final LR above the peak is no decay)."""
    label = name.replace("_", "-")
    if v is None:
        if s.optional:
            return
        raise CapscaleError(f"{label}=None: must be {_KIND_TEXT[s.kind]} (leave it out for the "
                            "default)")
    if not _of_kind(v, s.kind):
        raise CapscaleError(f"{label}={v!r}: must be {_KIND_TEXT[s.kind]}")
    if s.choices and v not in s.choices:
        raise CapscaleError(f"{label} {v!r}: use one of {', '.join(s.choices)}")
    if (s.lo is not None or s.hi is not None) and not s.in_range(v):
        raise CapscaleError(f"{label}={v}: must be {s.range_text()}")


_KIND_TEXT = {"switch": "true or false", "text": "text", "number": "a finite number",
              "int": "a whole number", "count": "a whole number"}


def _of_kind(v, kind: str) -> bool:
    """Whole numbers are any integer type (numpy's too) but bool, compared without a float
    conversion (an integer of 400 digits is out of range, not an overflow); text may be a
    path."""
    if kind == "switch":
        return isinstance(v, bool)
    if kind == "text":
        return isinstance(v, (str, os.PathLike))
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    if kind == "number":
        return math.isfinite(v)
    return isinstance(v, numbers.Integral)


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
    from capscale.model.llama import LlamaConfig

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


def size_label(cfg: TrainConfig) -> str:
    """How run folders name the model: the size's name, or ``L{layers}d{width}h{heads}`` for
    an explicit or overridden shape."""
    if cfg.size is not None and all(getattr(cfg, k) is None for k in ("n_layer", "n_embd", "n_head")):
        return cfg.size
    m = model_config(cfg, 1)
    return f"L{m.n_layer}d{m.n_embd}h{m.n_head}"


def default_lr(cfg: TrainConfig, model: LlamaConfig) -> float:
    """The ladder's learning rate for a named size; for a custom shape, the rung whose
    non-embedding count is nearest in log scale."""
    if cfg.lr is not None:
        return cfg.lr
    if cfg.size is not None and None in (cfg.n_layer, cfg.n_embd, cfg.n_head):
        return size_preset(cfg.size).lr
    from capscale.model.llama import LlamaConfig

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
