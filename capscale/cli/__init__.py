"""The `capscale` command: a thin layer over library calls.

Each subcommand lives in its own module here and defines ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Modules import heavy libraries inside ``run`` so that
``capscale --help`` stays fast. A :class:`~capscale.errors.CapscaleError` is printed
without a traceback and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from capscale import __version__
from capscale.errors import SPELLING, CapscaleError
from capscale.numbers import HELP as NUMBER_HELP

# name -> module under capscale.cli; the order is the order of `capscale --help`.
COMMANDS = {
    "formats": "formats",
    "gmse": "gmse",
    "data": "data",
    "train": "train",
    "fit": "fit",
    "predict": "predict",
    "compare": "compare",
    "probe": "probe",
    "sweep": "sweep",
    "plan": "plan",
    "report": "report",
    "demo": "demo",
    "study": "study",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``capscale`` parser; with ``only``, the one subcommand that a command line names
    (what it parses and prints is the same; the other subcommands' modules stay unloaded)."""
    parser = argparse.ArgumentParser(
        prog="capscale",
        description="How well a model trains over a compressed representation: "
        "formats, Gaussian-MSE capacity, scaling-law fits, compressed training.",
        epilog=NUMBER_HELP,
    )
    parser.add_argument("--version", action="version", version=f"capscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"capscale.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=NUMBER_HELP)
        module.add_arguments(p)
        p.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                       help="load user formats from a Python file or module that calls "
                            "capscale.formats.register (repeatable)")
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    token = SPELLING.set("cli")  # hints name flags, not keyword arguments
    try:
        if args.plugin:  # user formats, before any spec is parsed (exported to workers)
            from capscale.formats.registry import load_plugins

            load_plugins(args.plugin)
        return int(args._run(args) or 0)
    except CapscaleError as e:
        print(f"capscale {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk or a path the user gave: full, read-only, not a folder
        from capscale.io import describe_write_error

        print(f"capscale {args.command}: error: {describe_write_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"capscale {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        SPELLING.reset(token)


if __name__ == "__main__":
    sys.exit(main())
