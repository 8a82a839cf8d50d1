"""A linear layer that trains over compressed weights and/or activations, and a converter.

``CompressedLinear(in, out, weight_format="int4:had", activation_format="int4:had",
grad_rule="trust")`` computes ``x̂ · ŵᵀ`` where x̂ and ŵ are the operands as the formats
represent them (exactly ``Format.quantize``), and passes gradients straight through, masked
by the gradient rule (see :mod:`capscale.model.gradient_rules`; the rule and mask of each
part type come from :mod:`capscale.model.part_gradients`). It subclasses
``nn.Linear``: same parameters, same state-dict keys, so checkpoints move freely between the
dense and the compressed model and ``isinstance(m, nn.Linear)`` still holds (weight decay).

A format is a pipeline of parts (``sparse0.5+int4``: prune, then quantize what is kept); the
layer runs it with ``Format.run_parts``, the pipeline ``Format.quantize`` runs, and watches
each part so that every part can contribute its mask: the sparse part the sparse backward
mask, the quantizer the trust or clip mask, the vector quantizer its hypersphere mask. The
masks multiply. A ``:had`` format is compressed in the Hadamard-rotated
domain, masks included. With a learned-scale rule (``lsq``, ``lsq+``, ``pact``) the scalar
quantizer's scale is a parameter of the layer (``w_scale`` / ``a_scale``, saved in its state
dict) and its gradients come from autograd through :mod:`capscale.model.learned_scale`.

``compress_model(model, w_format, a_format, grad_rule)`` swaps matching ``nn.Linear`` modules
for ``CompressedLinear`` in place, by fully-qualified module name, like torchtitan's model
converters, so any ``nn.Module`` can be trained over a compressed representation.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from capscale.errors import CapscaleError
from capscale.formats import Format, parse_format
from capscale.formats.hadamard import effective_block, fwht
from capscale.model.gradient_rules import GradRule, straight_through
from capscale.model.learned_scale import LEARNED_RULES, LearnedScale
from capscale.model.part_gradients import part_gradient

# The linears inside the Llama blocks; embeddings and LM head stay dense.
BLOCK_LINEARS = ("*attn.qkv", "*attn.proj", "*mlp.gate", "*mlp.up", "*mlp.down")


def rotate(x: torch.Tensor, block: int) -> torch.Tensor:
    """Orthonormal block Walsh–Hadamard rotation of the last dimension (differentiable; the
    matrices are symmetric and orthogonal, so the backward pass is the same rotation)."""
    return fwht(x, block)


def _describe(part) -> str:
    return getattr(part, "spec", type(part).__name__)


class OperandCompressor:
    """Runs a format's parts on one operand (``Format.run_parts``) and collects the backward
    mask of each part."""

    def __init__(self, fmt: Format, rule: GradRule):
        self.fmt = fmt
        self.rule = rule
        self.learned_index = self._learned_part() if rule.quant in LEARNED_RULES else None
        self.part_rules = [self._part_rule(part) for part in fmt.parts]
        # the rule each part really uses, for the run record: "sparse0.5:b-rms", "int4:trust"
        self.effective = [f"{_describe(p)}:{r}" for p, r in zip(fmt.parts, self.part_rules)]

    def _learned_part(self) -> int | None:
        """Index of the scalar quantizer whose scale a learned-scale rule trains (None when the
        format quantizes nothing, e.g. pure sparsity)."""
        rule, parts = self.rule.quant, self.fmt.parts
        roles = [part_gradient(p).learned for p in parts]
        if "fixed" in roles:
            raise CapscaleError(
                f"gradient rule {rule} learns the scale of a scalar grid (int, fp, nf4, ternary, "
                f"lloydmax); {self.fmt} has {_describe(parts[roles.index('fixed')])}, whose scales "
                "are fixed by its own rules: use --grad trust, ste or clip"
            )
        scalar = [i for i, r in enumerate(roles) if r == "learn"]
        if not scalar:
            return None
        if len(scalar) > 1 or scalar[0] != len(parts) - 1:
            raise CapscaleError(
                f"gradient rule {rule} needs the format's one scalar quantizer to be its last "
                f"part; {self.fmt} is not (e.g. sparse0.5+int4 works)"
            )
        return scalar[0]

    @property
    def learns_scale(self) -> bool:
        """Whether this operand trains a scale (a learned-scale rule on a format that quantizes)."""
        return self.learned_index is not None and not self.fmt.is_identity

    def learned_module(self, role: str, shape: tuple[int, int]) -> LearnedScale | None:
        """The parameters of a learned-scale rule for this operand, or None."""
        if not self.learns_scale:
            return None
        module = LearnedScale(self.rule.quant, self.fmt.parts[self.learned_index], role, shape)
        self.effective[self.learned_index] = module.label
        return module

    def _part_rule(self, part) -> str:
        return part_gradient(part).rule(part, self.rule)

    def __call__(self, x: torch.Tensor, learned: LearnedScale | None = None) -> torch.Tensor:
        """x̂ with the masked straight-through gradient; x is already in the working domain.
        With ``learned``, the last part quantizes with the learned scale, differentiably."""
        if self.fmt.is_identity:
            return x
        if learned is None:
            with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
                xq, mask = self.compress(x.detach())
            return straight_through(x, xq, mask)
        n_fixed = self.learned_index
        shape = x.shape
        active = None
        if n_fixed:  # the parts before the quantizer (sparsity, outliers) keep their own masks
            with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
                pre, mask, active = self._run(x.detach(), n_fixed)
            x = straight_through(x, pre.reshape(shape).to(x.dtype),
                                 None if mask is None else mask.reshape(shape))
        with torch.autocast(device_type=x.device.type, enabled=False):
            x2d = x.reshape(-1, shape[-1])
            out = learned(x2d if x2d.dtype in (torch.float32, torch.float64) else x2d.float(), active)
        return out.reshape(shape).to(x.dtype)

    def compress(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        shape, dtype = x.shape, x.dtype
        out, mask, _ = self._run(x, len(self.fmt.parts))
        out = out.reshape(shape).to(dtype)
        return out, None if mask is None else mask.reshape(shape)

    def _run(self, x: torch.Tensor, n_parts: int):
        """The first ``n_parts`` parts on x viewed as rows: (x̂ 2-D, mask 2-D, active 2-D)."""
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        mask = None

        def collect(index, part, before, out, active, keep):
            nonlocal mask
            m = self._mask(part, self.part_rules[index], before, out, active, keep)
            if m is not None:
                mask = m if mask is None else mask & m

        out, active = self.fmt.run_parts(work.reshape(-1, x.shape[-1]), n_parts, collect)
        return out, mask, active

    def _mask(self, part, rule: str, x, xq, active, keep) -> torch.Tensor | None:
        if rule in ("ste", "exact"):
            return None
        mask = part_gradient(part).mask
        return None if mask is None else mask(part, rule, self.rule, x, xq, active, keep)


def _block_for(fmt: Format, in_features: int, where: str) -> int | None:
    if fmt.rotation is None:
        return None
    b = effective_block(fmt.rotation, in_features)
    if b < 2:
        raise CapscaleError(
            f"{where}: {fmt} rotates rows in Hadamard blocks, but the reduction dimension "
            f"{in_features} has no power-of-two factor to rotate"
        )
    return b


class CompressedLinear(nn.Linear):
    """``nn.Linear`` whose forward runs on compressed weights and/or activations."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        weight_format: str | Format = "none",
        activation_format: str | Format = "none",
        grad_rule: GradRule | str = "trust",
        device=None,
        dtype=None,
        name: str = "CompressedLinear",
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight_format = _as_format(weight_format)
        self.activation_format = _as_format(activation_format)
        self.grad_rule = GradRule.parse(grad_rule)
        self.w_comp = OperandCompressor(self.weight_format, self.grad_rule)
        self.a_comp = OperandCompressor(self.activation_format, self.grad_rule)
        # learned-scale rules (lsq, lsq+, pact): the scales are parameters of the layer
        self.w_scale = self.w_comp.learned_module("weight", (out_features, in_features))
        self.a_scale = self.a_comp.learned_module("activation", (1, in_features))
        self.w_block = _block_for(self.weight_format, in_features, name)
        self.a_block = _block_for(self.activation_format, in_features, name)
        if self.w_block and self.a_block and self.w_block != self.a_block:
            raise CapscaleError(
                f"{name}: weights and activations must rotate in the same Hadamard blocks "
                f"({self.weight_format} vs {self.activation_format})"
            )

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> CompressedLinear:
        """A CompressedLinear sharing ``linear``'s parameters (no copy)."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device="meta", **kwargs)
        new.weight = linear.weight
        if linear.bias is not None:
            new.bias = linear.bias
        for scales in (new.w_scale, new.a_scale):
            if scales is not None:
                scales.to(linear.weight.device)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        bw, ba = self.w_block, self.a_block
        if bw and ba:  # both rotated: compute in the rotated domain, xH·(WH)ᵀ = x·Wᵀ
            xq = self.a_comp(rotate(x, ba), self.a_scale)
            wq = self.w_comp(rotate(w, bw), self.w_scale)
        elif bw:
            wq = self.w_comp(rotate(w, bw), self.w_scale)
            if self.grad_rule.hadamard == "full":
                wq = rotate(wq, bw)
            xq = self.a_comp(x, self.a_scale)
        elif ba:
            xq = self.a_comp(rotate(x, ba), self.a_scale)
            if self.grad_rule.hadamard == "full":
                xq = rotate(xq, ba)
            wq = self.w_comp(w, self.w_scale)
        else:
            xq = self.a_comp(x, self.a_scale)
            wq = self.w_comp(w, self.w_scale)
        return F.linear(xq, wq, self.bias)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, w={self.weight_format}, a={self.activation_format}, "
                f"grad={self.grad_rule.quant}")


def _as_format(fmt: str | Format) -> Format:
    return fmt if isinstance(fmt, Format) else parse_format(str(fmt))


Filter = Callable[[str, nn.Module], bool] | Sequence[str] | None


def _matches(name: str, module: nn.Module, patterns: Filter, default: bool) -> bool:
    if patterns is None:
        return default
    if callable(patterns):
        return bool(patterns(name, module))
    if isinstance(patterns, str):
        patterns = (patterns,)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def compress_model(
    model: nn.Module,
    w_format: str | Format = "none",
    a_format: str | Format = "none",
    grad_rule: GradRule | str = "trust",
    include: Filter = None,
    exclude: Filter = ("lm_head", "*embed*", "*emb"),
) -> dict:
    """Replace the ``nn.Linear`` modules of ``model`` selected by name with CompressedLinear.

    ``include`` / ``exclude`` are fnmatch patterns on the fully-qualified module name (e.g.
    ``"layers.*.mlp.*"``) or a callable ``(name, module) -> bool``; by default every linear
    except an LM head / embedding is compressed. Returns a report: the canonical formats,
    the gradient rule, the names of the replaced layers and the rule each part really uses.
    Identity formats on both operands leave the model untouched (plain nn.Linear).
    """
    wf, af = _as_format(w_format), _as_format(a_format)
    rule = GradRule.parse(grad_rule)
    report = {"w_format": wf.spec, "a_format": af.spec, "grad_rule": rule.to_dict(),
              "layers": [], "effective_rules": {}}
    if wf.is_identity and af.is_identity:
        return report
    targets = [
        (name, mod) for name, mod in model.named_modules()
        if type(mod) is nn.Linear
        and _matches(name, mod, include, True)
        and not _matches(name, mod, exclude, False)
    ]
    if not targets:
        raise CapscaleError("no nn.Linear module matched the include/exclude filter")
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = CompressedLinear.from_linear(mod, weight_format=wf, activation_format=af,
                                           grad_rule=rule, name=name)
        setattr(parent, child, new)
        report["layers"].append(name)
    first = model.get_submodule(report["layers"][0])
    report["effective_rules"] = {"weight": first.w_comp.effective, "activation": first.a_comp.effective}
    return report


def grad_rule_from_config(cfg) -> GradRule:
    """The GradRule of a TrainConfig (its grad, trust_radius, clip_scale, hadamard, sparse_*)."""
    return GradRule(
        quant=cfg.grad, trust_radius=cfg.trust_radius, clip_scale=cfg.clip_scale,
        hadamard=cfg.hadamard, sparse=cfg.sparse_grad, sparse_p=cfg.sparse_p,
        sparse_area=cfg.sparse_area,
    )


def check_shapes(model: nn.Module) -> None:
    """Run each compressed layer's formats once on rows of zeros of the layer's width, so that
    a format that cannot split a layer's rows (NVFP4's groups of 16 over a width of 24) fails
    when the model is built, not at the first training step. Draws no random numbers that
    training would see."""
    seen = set()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, CompressedLinear):
                _check_layer(mod, name, seen)


def check_formats(model_cfg, w_format: str | Format, a_format: str | Format,
                  grad_rule: GradRule | str = "trust") -> None:
    """:func:`check_shapes` before any model is built: one small layer per reduction width of
    ``model_cfg`` (a LlamaConfig), so that a sweep refuses a run whose formats cannot split its
    model (groups of 32 over a width of 40) when it is planned, not when it starts."""
    if _as_format(w_format).is_identity and _as_format(a_format).is_identity:
        return
    seen = set()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for what, width in model_cfg.reduction_widths.items():
            layer = CompressedLinear(width, 1, weight_format=w_format, activation_format=a_format,
                                     grad_rule=grad_rule, name=what)
            _check_layer(layer, what, seen)


def _check_layer(mod: CompressedLinear, name: str, seen: set) -> None:
    for role, comp in (("weights", mod.w_comp), ("activations", mod.a_comp)):
        key = (id(comp.fmt), mod.in_features)
        if comp.fmt.is_identity or key in seen:
            continue
        seen.add(key)
        try:
            comp._run(torch.zeros(2, mod.in_features), len(comp.fmt.parts))
        except CapscaleError as e:
            raise CapscaleError(f"{name} ({role}, width {mod.in_features}): {e}") from None
