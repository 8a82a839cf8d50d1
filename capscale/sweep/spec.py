"""A sweep spec (TOML) and its expansion into planned runs with stable folder names.

    name = "int-ladder"
    out = "runs/int-ladder"              # default output folder (``-o`` overrides)

    [grid]                               # every combination of these lists
    size = ["30k", "100k", "350k"]
    tokens_per_param = [10, 20]
    formats = ["none", "int8", "int4", "int4/none"]   # "W/A"; one spec means both operands
    seed = [0]
    # or crossed operands: w_format = [...]  a_format = [...]
    # any training setting may be a list here, e.g. grad = ["trust", "ste"]

    [sizes]                              # named shapes beyond the ladder, usable as sizes
    200k = {n_layer = 4, n_embd = 64, n_head = 2}

    [train]                              # fixed settings of every run (any TrainConfig field)
    data = "builtin:wiki"
    seq_len = 128

    [[runs]]                             # extra single runs (fields as in [grid], one value each)
    size = "1M"
    formats = "int4:had"

    [[exclude]]                          # drop grid points matching every key given
    w_format = "none"
    a_format = "int4"

    [launcher]                           # defaults for `capscale sweep` (flags override)
    kind = "local"                       # local | torchrun | slurm
    jobs = 2
    [slurm]                              # SLURM job settings (see capscale.sweep.slurm)
    [cost]                               # accelerator assumptions for the cost estimate

A run's folder name is a function of its settings alone (size, length, formats, seed, and
any other setting that differs from ``[train]``), so the same spec always maps to the same
folders, and a spec that grows keeps the folders of the runs it already had.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from capscale.errors import CapscaleError
from capscale.model.flops import flops_per_token
from capscale.sweep.schema import unknown_key, validate_slurm
from capscale.train.records import RUNTIME_FIELDS, identity  # noqa: F401  (identity re-exported)

# Parts of every run name, in this order; other settings appear only when they vary.
NAME_FIELDS = ("size", "n_layer", "n_embd", "n_head", "tokens_per_param", "tokens", "steps",
               "w_format", "a_format", "seed")
TOP_LEVEL = ("name", "out", "sizes", "grid", "train", "runs", "exclude", "launcher", "slurm",
             "cost")
SIZE_KEYS = {"n_layer": int, "n_embd": int, "n_head": int, "lr": float}
LAUNCHERS = ("local", "torchrun", "slurm")
LAUNCHER_KEYS = {"kind": str, "jobs": int, "threads": int, "gpus_per_run": int}
COST_KEYS = {"mfu": float, "peak_tflops": float, "vocab_size": int, "accelerator": str}
FORMAT_SEPARATOR = "/"
MAX_NAME = 120


def _load_toml(text: str, source: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CapscaleError(f"{source} is not valid TOML: {e}") from None


def _train_fields() -> dict[str, tuple]:
    """TrainConfig field name -> (its Setting, whether it may be None): the config's own
    description of each key a spec may set (capscale.train.config)."""
    from capscale.train import TrainConfig

    return {f.name: (f.metadata["setting"], f.metadata["setting"].optional)
            for f in fields(TrainConfig)}


# the Python type a setting's kind holds, as the spec's messages name it
_KIND_TYPES = {"text": "str", "int": "int", "count": "int", "number": "float", "switch": "bool"}


def _check_type(where: str, name: str, value, field: tuple):
    """The value if it fits the field's kind (an int is a float; None where allowed)."""
    setting, optional = field
    if value is None and optional:
        return None
    base = _KIND_TYPES[setting.kind]
    if base in ("int", "float") and isinstance(value, str):  # "3B", "8Ki": the number grammar
        from capscale.numbers import NumberError, parse_number

        try:
            value = parse_number(value, integer=base == "int")
        except NumberError as e:
            raise CapscaleError(f"{where}.{name} = {value!r}: expected {'an' if base == 'int' else 'a'} "
                                f"{base}: {e}") from None
    ok = {"str": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool)}.get(base, True)
    if not ok:
        raise CapscaleError(f"{where}.{name} = {value!r}: expected {'a' if base != 'int' else 'an'} "
                            f"{base}{' (or leave it out)' if optional else ''}")
    return float(value) if base == "float" else value


def split_formats(value, where: str) -> tuple[str, str]:
    """``"int4"`` -> (int4, int4); ``"int4/none"`` or ``["int4", "none"]`` -> (int4, none)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(isinstance(v, str) for v in value):
            raise CapscaleError(f"{where}: {value!r} must be a spec string or a [weights, "
                                "activations] pair of spec strings")
        return value[0], value[1]
    if not isinstance(value, str):
        raise CapscaleError(f"{where}: {value!r} is not a format spec (e.g. \"int4\", "
                            "\"int4:had/none\" for weights/activations)")
    if FORMAT_SEPARATOR in value:
        w, a = value.split(FORMAT_SEPARATOR, 1)
        return w.strip(), a.strip()
    return value.strip(), value.strip()


def canonical_format(spec: str, where: str) -> str:
    from capscale.formats import parse_format

    try:
        return str(parse_format(spec))
    except CapscaleError as e:
        raise CapscaleError(f"{where}: {e}") from None


def _slug(value) -> str:
    if isinstance(value, float):
        value = f"{value:g}"
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value).replace(":", "_"))


@dataclass
class PlannedRun:
    """One run of a sweep: its folder name, its training config and its planned size."""

    name: str
    config: object  # TrainConfig (out set to ROOT/name when the sweep runs)
    n_params: int
    tokens: int
    steps: int
    n_layer: int
    n_embd: int

    def flops(self, vocab_size: int) -> float:
        """Training FLOPs: 6·(N + V·d)·D for the matmuls (the LM head counted, the embedding
        lookup not) plus 6·L·T·d·D for attention scores and values (causal, Kaplan et al.),
        as the model counts them (:func:`capscale.model.flops.flops_per_token`)."""
        return flops_per_token(self.n_params, vocab_size, self.n_layer, self.n_embd,
                               self.config.seq_len) * self.tokens

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config.to_dict(), "N": self.n_params,
                "D": self.tokens, "steps": self.steps}


@dataclass
class SweepSpec:
    """A parsed, validated and expanded sweep spec."""

    name: str
    source: str
    runs: list[PlannedRun]
    out: str | None = None
    launcher: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    text: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def run(self, name: str) -> PlannedRun:
        for r in self.runs:
            if r.name == name:
                return r
        raise CapscaleError(f"sweep {self.name!r} has no run named {name!r}")

    def default_root(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / _slug(self.name)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read, validate and expand a sweep spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is dropped
    except FileNotFoundError:
        raise CapscaleError(f"sweep spec {path} does not exist") from None
    except IsADirectoryError:
        raise CapscaleError(f"sweep spec {path} is a folder; give a .toml file") from None
    except UnicodeDecodeError as e:
        raise CapscaleError(f"sweep spec {path} is not UTF-8 text ({e.reason} at byte "
                            f"{e.start})") from None
    except OSError as e:
        from capscale.io import describe_write_error

        raise CapscaleError(f"sweep spec {path} cannot be read: {describe_write_error(e)}") from None
    return spec_from_dict(_load_toml(text, str(path)), source=str(path), text=text,
                          default_name=p.stem)


def spec_from_text(text: str, source: str = "<spec>", default_name: str = "sweep") -> SweepSpec:
    return spec_from_dict(_load_toml(text, source), source=source, text=text,
                          default_name=default_name)


def spec_from_dict(d: dict, source: str = "<spec>", text: str | None = None,
                   default_name: str = "sweep") -> SweepSpec:
    """Validate a spec given as a dict (the parsed TOML) and expand it into runs."""
    where = Path(source).name
    for key in d:
        if key not in TOP_LEVEL:
            raise unknown_key(f"{where} (top level)", key, TOP_LEVEL)
    name = d.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise CapscaleError(f"{where}: name = {name!r} must be a non-empty string")
    out = d.get("out")
    if out is not None and not isinstance(out, str):
        raise CapscaleError(f"{where}: out = {out!r} must be a folder path (a string)")
    for table in ("sizes", "grid", "train", "launcher", "slurm", "cost"):
        if table in d and not isinstance(d[table], dict):
            raise CapscaleError(f"{where}: {table} must be a table ([{table}])")
    for arr in ("runs", "exclude"):
        if arr in d and not (isinstance(d[arr], list) and all(isinstance(x, dict) for x in d[arr])):
            raise CapscaleError(f"{where}: {arr} must be an array of tables ([[{arr}]])")

    settable = {k: v for k, v in _train_fields().items() if k != "out"}
    sizes = _custom_sizes(d.get("sizes", {}), f"{where} [sizes]")
    base = _base_settings(d.get("train", {}), settable, f"{where} [train]")
    points = _grid_points(d.get("grid", {}), settable, f"{where} [grid]")
    points = [p for p in points if not _excluded(p, d.get("exclude", []), settable, where)]
    for i, extra in enumerate(d.get("runs", [])):
        points.append(_run_point(extra, settable, f"{where} [[runs]] #{i + 1}"))
    points = [_expand_size(p, sizes) for p in points]
    base = _expand_size(base, sizes)
    if not points:
        raise CapscaleError(f"{where}: the sweep has no runs: give a [grid] with at least one "
                            "value per key, or [[runs]] tables")

    base_cfg = _make_config(base, f"{where} [train]")
    runs, seen = [], {}
    for point in points:
        settings = {**base, **point}
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        cfg = _make_config(settings, f"{where}: run ({label})")
        run = _plan_run(cfg, base_cfg, f"{where}: run ({label})")
        if run.name in seen:
            if seen[run.name] == cfg.to_dict():
                continue  # the same run reached twice (e.g. a grid point repeated in [[runs]])
            raise CapscaleError(f"{where}: two different runs get the folder name {run.name!r}; "
                                "make them differ in size, length, formats or seed")
        seen[run.name] = cfg.to_dict()
        runs.append(run)

    launcher = _typed_table(d.get("launcher", {}), LAUNCHER_KEYS, f"{where} [launcher]")
    if launcher.get("kind", "local") not in LAUNCHERS:
        raise CapscaleError(f"{where} [launcher]: kind = {launcher['kind']!r}; valid: "
                            f"{', '.join(LAUNCHERS)}")
    slurm = validate_slurm(d.get("slurm", {}), f"{where} [slurm]")
    cost = _typed_table(d.get("cost", {}), COST_KEYS, f"{where} [cost]")
    return SweepSpec(name=name.strip(), source=source, runs=runs, out=out, launcher=launcher,
                     slurm=slurm, cost=cost,
                     text=text if text is not None else json.dumps(d, sort_keys=True))


def _custom_sizes(table: dict, where: str) -> dict[str, dict]:
    """``[sizes]``: named model shapes beyond the ladder, e.g. ``200k = {n_layer = 4,
    n_embd = 64, n_head = 2}`` (``lr`` optional: else the nearest rung's)."""
    out = {}
    for name, shape in table.items():
        if not isinstance(shape, dict):
            raise CapscaleError(f"{where}.{name} must be a table like "
                                "{n_layer = 4, n_embd = 64, n_head = 2}")
        s = _typed_table(shape, SIZE_KEYS, f"{where}.{name}")
        missing = [k for k in ("n_layer", "n_embd", "n_head") if k not in s]
        if missing:
            raise CapscaleError(f"{where}.{name} lacks {', '.join(missing)}")
        out[name] = s
    return out


def _expand_size(point: dict, sizes: dict[str, dict]) -> dict:
    name = point.get("size")
    if name not in sizes:
        return point
    return {**{k: v for k, v in point.items() if k != "size"}, "size": None, **sizes[name]}


def _typed_table(table: dict, keys: dict, where: str) -> dict:
    out = {}
    for k, v in table.items():
        if k not in keys:
            raise unknown_key(where, k, keys)
        kind = keys[k]
        if kind in (int, float) and isinstance(v, str):  # "3B", "8Ki": the number grammar
            from capscale.numbers import parse_number

            v = parse_number(v, name=f"{where}: {k} =", integer=kind is int)
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise CapscaleError(f"{where}: {k} = {v!r} must be {'an' if kind is int else 'a'} "
                                f"{kind.__name__}")
        if kind in (int, float) and v <= 0:
            raise CapscaleError(f"{where}: {k} = {v!r} must be positive")
        out[k] = v
    return out


def _base_settings(train: dict, settable: dict, where: str) -> dict:
    out = {}
    for k, v in train.items():
        if k == "formats":
            w, a = split_formats(v, f"{where}.formats")
            out["w_format"], out["a_format"] = w, a
            continue
        if k not in settable:
            raise unknown_key(where, k, [*settable, "formats"])
        if isinstance(v, list):
            raise CapscaleError(f"{where}.{k} = {v!r}: [train] settings are single values; "
                                "put lists in [grid] to vary them")
        out[k] = _check_type(where, k, v, settable[k])
    return out


def _grid_points(grid: dict, settable: dict, where: str) -> list[dict]:
    """The crossed product of the grid's lists, as one dict of settings per point."""
    if "formats" in grid and ({"w_format", "a_format"} & set(grid)):
        raise CapscaleError(f"{where}: give either formats (weight/activation pairs) or "
                            "w_format/a_format (crossed), not both")
    axes = []
    for k, values in grid.items():
        if k != "formats" and k not in settable:
            raise unknown_key(where, k, [*settable, "formats"])
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise CapscaleError(f"{where}.{k} is an empty list: give at least one value")
        if k == "formats":
            pairs = [split_formats(v, f"{where}.formats") for v in values]
            axes.append([{"w_format": w, "a_format": a} for w, a in pairs])
        else:
            axes.append([{k: _check_type(where, k, v, settable[k])} for v in values])
    if not axes:
        return []
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


def _run_point(extra: dict, settable: dict, where: str) -> dict:
    point = {}
    for k, v in extra.items():
        if k == "formats":
            point["w_format"], point["a_format"] = split_formats(v, f"{where}.formats")
        elif k not in settable:
            raise unknown_key(where, k, [*settable, "formats"])
        elif isinstance(v, list):
            raise CapscaleError(f"{where}.{k} = {v!r}: a [[runs]] entry is one run; "
                                "put lists in [grid]")
        else:
            point[k] = _check_type(where, k, v, settable[k])
    return point


def _excluded(point: dict, excludes: list[dict], settable: dict, where: str) -> bool:
    for i, ex in enumerate(excludes):
        want = _run_point(ex, settable, f"{where} [[exclude]] #{i + 1}")
        if not want:
            raise CapscaleError(f"{where} [[exclude]] #{i + 1} is empty: it would drop every run")
        if all(_same(point.get(k), v) for k, v in want.items()):
            return True
    return False


def _same(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:  # formats compare by their canonical spec
            return canonical_format(a, "") == canonical_format(b, "")
        except CapscaleError:
            return False
    return a == b


def _make_config(settings: dict, where: str):
    from capscale.train import TrainConfig

    s = dict(settings)
    for key in ("w_format", "a_format"):
        if key in s:
            s[key] = canonical_format(s[key], f"{where}: {key}")
    s.setdefault("progress", False)  # a sweep's runs log to files, not to a terminal
    cfg = TrainConfig(**s)
    try:
        cfg.validate()
    except CapscaleError as e:
        raise CapscaleError(f"{where}: {e}") from None
    return cfg


def _plan_run(cfg, base_cfg, where: str) -> PlannedRun:
    from capscale.train import plan

    try:
        p = plan(cfg, vocab_size=1)  # N, D and steps do not depend on the vocabulary
    except CapscaleError as e:
        raise CapscaleError(f"{where}: {e}") from None
    _check_formats_fit(p.model, cfg, where)
    return PlannedRun(name=run_name(cfg, base_cfg), config=cfg, n_params=p.n_params,
                      tokens=p.tokens, steps=p.steps, n_layer=p.model.n_layer,
                      n_embd=p.model.n_embd)


_FITS: set = set()  # (widths, formats, gradient rule) already checked in this process


def _check_formats_fit(model, cfg, where: str) -> None:
    """Refuse a run whose formats cannot split its model's layers (groups of 32 over a width of
    40) while the sweep is planned: a dry run says so, and no run of the sweep starts."""
    from capscale.model.compressed_linear import check_formats, grad_rule_from_config
    from capscale.sweep.reuse import planned_plugins

    rule = grad_rule_from_config(cfg)
    key = (tuple(model.reduction_widths.items()), cfg.w_format, cfg.a_format, repr(rule),
           planned_plugins(cfg))  # a user format re-registered under its name is checked again
    if key in _FITS:
        return
    try:
        check_formats(model, cfg.w_format, cfg.a_format, rule)
    except CapscaleError as e:
        raise CapscaleError(f"{where}: {e}") from None
    _FITS.add(key)


def run_name(cfg, base_cfg=None) -> str:
    """A run's folder name: size, length, formats and seed, then every other setting that
    differs from ``base_cfg`` (the sweep's [train]), e.g. ``100k-tpp20-wint4-aint4-s0`` or
    ``100k-tpp20-wint4-aint4-s0-grad_ste``. Deterministic, filesystem-safe; very long names
    end in a hash of the rest."""
    from capscale.train import TrainConfig

    base_cfg = base_cfg or TrainConfig()
    from capscale.train.config import size_label

    size = _slug(size_label(cfg))
    if cfg.steps is not None:
        length = f"steps{cfg.steps}"
    elif cfg.tokens is not None:
        length = f"D{cfg.tokens}"
    else:
        length = f"tpp{cfg.tokens_per_param:g}"
    parts = [size, length, f"w{_slug(cfg.w_format)}", f"a{_slug(cfg.a_format)}", f"s{cfg.seed}"]
    for f in fields(cfg):
        if f.name in NAME_FIELDS or f.name in RUNTIME_FIELDS:
            continue
        v = getattr(cfg, f.name)
        if v != getattr(base_cfg, f.name):
            parts.append(f"{f.name}_{_slug(v)}")
    name = "-".join(parts)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 11]}-{digest}"
    return name


