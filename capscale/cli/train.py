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


def _flag(name: str, s) -> str:
    return s.flag or "--" + name.replace("_", "-")


def _help(s, default) -> str:
    """The setting's documentation, with its default where the text does not give one."""
    if s.kind == "switch" or default is None or "(default" in s.doc:
        return s.doc
    shown = f"{default:,}" if s.kind == "count" else f"{default:g}" if s.kind == "number" else default
    return f"{s.doc} (default {shown})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag from the config's settings (capscale.train.config): its group, flag, kind,
    choices and help. A flag not given parses as None and leaves the config's default."""
    from dataclasses import fields

    from capscale.train.config import GROUPS, TrainConfig

    parse = {"text": str, "int": INTEGER, "number": NUMBER, "count": count}
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for f in fields(TrainConfig):
        s = f.metadata["setting"]
        g = groups[s.group]
        if s.kind == "switch":  # a switch flips its default
            g.add_argument(_flag(f.name, s), dest=f.name, action="store_const",
                           const=not f.default, default=None, help=_help(s, f.default))
            continue
        g.add_argument(_flag(f.name, s), dest=f.name, type=parse[s.kind], default=None,
                       choices=s.choices or None, metavar=s.metavar, help=_help(s, f.default))
    g = groups["runtime"]
    g.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its latest checkpoint (starts it if absent)")
    g.add_argument("--json", action="store_true", help="print the result record as JSON")


def default_out(cfg) -> str:
    """runs/<size>-w<format>-a<format>-s<seed>, with the shape for a custom one."""
    def slug(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9.+_-]+", "_", s)

    from capscale.train.config import size_label

    size = size_label(cfg)
    if cfg.arch != "llama":
        size = f"{cfg.arch}-{size}"
    return f"runs/{slug(size)}-w{slug(cfg.w_format)}-a{slug(cfg.a_format)}-s{cfg.seed}"


def config_from_args(args):
    """The TrainConfig of the flags given; a size is implied (30M) unless the whole shape is."""
    from dataclasses import fields, replace

    from capscale.train import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name) is not None}
    if "size" not in given and all(k in given for k in ("n_layer", "n_embd", "n_head")):
        given["size"] = None
    cfg = TrainConfig(**given)
    if cfg.out is not None:
        return cfg
    cfg.validate()  # its messages first: the default folder name needs a valid shape
    return replace(cfg, out=default_out(cfg))


def to_argv(cfg) -> list[str]:
    """The ``capscale train`` arguments that reproduce ``cfg`` (non-default settings only),
    for launchers that start runs as processes (torchrun, SLURM)."""
    from dataclasses import fields

    argv: list[str] = []
    for f in fields(cfg):
        value, s = getattr(cfg, f.name), f.metadata["setting"]
        if value == f.default and f.name != "size":
            continue
        flag = _flag(f.name, s)
        if f.name == "size":
            if value is not None:
                argv += [flag, value]
        elif s.kind == "switch":
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
