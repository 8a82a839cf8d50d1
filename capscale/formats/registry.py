"""User formats: give a Python function x ↦ x̂, or a :class:`~capscale.formats.Part`, a name
that works wherever a format spec does (``gmse``, ``compare``, ``predict``, ``train``, sweeps,
reports, and inside compositions such as ``sparse0.5+myfp4`` or ``myfp4:had``).

    >>> import capscale.formats as cf
    >>> cf.register("myfp4", lambda x: my_round(x), bits=4.25)
    >>> cf.parse_format("sparse0.5+myfp4:had")

A function receives a float32 or float64 tensor viewed as rows × columns (the last dimension
is a row, as for every format here) and returns x̂ of the same shape and dtype. Its storage
cost ``bits`` is a number of bits per value or a function of the shape ``(rows, cols)``.
Declaring ``grid`` (the format's levels in units of the per-row RMS) lets training use the
trust and clip gradient rules; without it gradients pass straight through.

Plugins are Python files or modules that call :func:`register`; they are loaded only when a
user asks: ``--plugin FILE.py|MODULE`` on the command line (exported to sweep workers through
the ``CAPSCALE_PLUGINS`` environment variable, ``os.pathsep``-separated), or an installed
package's ``capscale.formats`` entry point (a module, or a function of no arguments that
registers). Each registration is checked on a fixed Gaussian tensor (shape, dtype, NaN from
finite input, determinism, bits) and keeps a hash of its source, so run records can tell two
versions of a format apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from capscale.errors import CapscaleError
from capscale.formats.base import Part

ENTRY_POINT_GROUP = "capscale.formats"
ENV_VAR = "CAPSCALE_PLUGINS"
NAME_PATTERN = r"[a-z][a-z0-9_]*"
KINDS = ("scalar", "vector", "sparse", "noise")
CHECK_SHAPE = (64, 256)  # the Gaussian tensor every registration is checked on


@dataclass(frozen=True)
class Plugin:
    """A registered user format: its name, the part it parses to, where it came from and a
    hash of its source (the file's bytes for a plugin file, else the object's source)."""

    name: str
    part: Part
    origin: str
    source_hash: str

    def record(self) -> dict:
        return {"origin": self.origin, "sha256": self.source_hash}


@dataclass(frozen=True)
class CallablePart(Part):
    """A user function x ↦ x̂ as the terminal part of a format pipeline. Entries already decided
    by an earlier part (pruned by ``sparse0.5+``) pass through unchanged."""

    name: str = ""
    fn: Callable = field(default=None, compare=False, repr=False)
    bits_per_value: float | Callable = field(default=0.0, compare=False, repr=False)
    rms_grid: tuple[float, ...] | None = None
    format_kind: str = "scalar"
    source_hash: str = ""

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.format_kind

    @property
    def spec(self) -> str:
        return self.name

    def apply(self, x2d, active):
        out = _checked_output(self.name, self.fn(x2d), x2d)
        if active is not None:
            out = torch.where(active, out, x2d)
        return out, None

    def bits(self, rows, cols, active_fraction):
        b = self.bits_per_value
        value = float(b((rows, cols)) if callable(b) else b)
        return active_fraction * value, 0.0

    # the trust and clip rules of training, when the plugin declares its grid (RMS units)
    @property
    def trust_radius(self) -> float | None:  # type: ignore[override]
        g = self.rms_grid
        return None if g is None or len(g) < 2 else float(max(b - a for a, b in zip(g, g[1:]))) / 2

    @property
    def clip_radius(self) -> float | None:  # type: ignore[override]
        return None if self.rms_grid is None else float(max(abs(v) for v in self.rms_grid))


_REGISTRY: dict[str, Plugin] = {}
_LOADED: set[str] = set()  # plugin files (resolved paths) and modules already imported
_ORIGIN: list[tuple[str, str]] = []  # (origin, file hash) of the plugin being loaded
_AUTOLOADED = False
_AUTOLOAD_ERROR: list[str] = []


def register(name: str, fmt, bits: float | Callable | None = None, *, grid=None,
             kind: str = "scalar", replace: bool = False) -> Plugin:
    """Register a user format under ``name`` and check it on a Gaussian tensor.

    ``fmt`` is a function x ↦ x̂ (then ``bits`` is required: bits per value, or a function of
    the shape ``(rows, cols)``; ``grid`` optionally gives its levels in units of the per-row
    RMS, for the trust and clip gradient rules; ``kind`` is its compression type for the
    capacity law) or a :class:`Part` (instance or class with no required arguments) whose
    ``spec`` is ``name``. Registering a different format under a taken name needs
    ``replace=True``. Raises CapscaleError naming the plugin when a check fails.
    """
    key = _check_name(name)
    origin, file_hash = _ORIGIN[-1] if _ORIGIN else ("python", "")
    if isinstance(fmt, type) and issubclass(fmt, Part):
        try:
            fmt = fmt()
        except TypeError as e:
            raise CapscaleError(f"format plugin {key!r}: register a Part instance, or a Part class "
                                f"that needs no arguments ({e})") from None
    if isinstance(fmt, Part):
        if bits is not None or grid is not None:
            raise CapscaleError(f"format plugin {key!r}: a Part gives its own bits() and grid; "
                                "pass bits= and grid= only with a function")
        if fmt.spec != key:
            raise CapscaleError(f"format plugin {key!r}: the Part's spec is {fmt.spec!r}; it must "
                                "print as the name it is registered under")
        source = _source_of(type(fmt))
        part: Part = fmt
    elif callable(fmt):
        if bits is None:
            raise CapscaleError(f"format plugin {key!r}: give its storage cost, bits=<bits per "
                                "value> or bits=<function of (rows, cols)>")
        if kind not in KINDS:
            raise CapscaleError(f"format plugin {key!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
        levels = _check_grid(key, grid)
        source = _source_of(fmt) + (_source_of(bits) if callable(bits) else repr(float(bits)))
        source += repr(levels) + kind
        part = CallablePart(name=key, fn=fmt, bits_per_value=bits, rms_grid=levels,
                            format_kind=kind, source_hash="")
    else:
        raise CapscaleError(f"format plugin {key!r}: expected a function x -> x_hat or a "
                            f"capscale.formats.Part, got {type(fmt).__name__}")
    digest = hashlib.sha256((file_hash + source).encode()).hexdigest()[:16]
    if isinstance(part, CallablePart):
        part = CallablePart(name=key, fn=part.fn, bits_per_value=part.bits_per_value,
                            rms_grid=part.rms_grid, format_kind=part.format_kind, source_hash=digest)
    old = _REGISTRY.get(key)
    if old is not None and old.source_hash != digest and not replace:
        raise CapscaleError(f"format plugin {key!r} is already registered (from {old.origin}, "
                            f"source {old.source_hash}); pass replace=True to replace it")
    check_part(key, part)
    plugin = Plugin(key, part, origin, digest)
    _REGISTRY[key] = plugin
    return plugin


def unregister(name: str) -> None:
    """Forget a registered format (tests, notebooks)."""
    _REGISTRY.pop(str(name).strip().lower(), None)


def registered() -> dict[str, Plugin]:
    """The registered user formats by name."""
    return dict(_REGISTRY)


def lookup(name: str) -> Plugin | None:
    """The plugin registered as ``name``; on a miss, loads the plugins named in
    ``CAPSCALE_PLUGINS`` and the installed ``capscale.formats`` entry points once, then looks
    again."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    _autoload()
    if name not in _REGISTRY and _AUTOLOAD_ERROR:
        raise CapscaleError(f"format {name!r} is not registered, and a plugin failed to load: "
                            f"{_AUTOLOAD_ERROR[0]}")
    return _REGISTRY.get(name)


def plugin_records(fmt) -> dict[str, dict]:
    """``{name: {"origin", "sha256"}}`` for the user parts of a Format (empty for built-ins)."""
    out = {}
    for part in getattr(fmt, "parts", ()):
        plugin = _REGISTRY.get(part.spec)
        if plugin is not None and plugin.part == part:
            out[plugin.name] = plugin.record()
    return out


def plugin_signature(records: dict[str, dict]) -> str | None:
    """The user formats of :func:`plugin_records` as one line, ``name@sha256 ...``: what a run
    record keeps to tell whether a run was trained with the same plugin sources."""
    return " ".join(f"{n}@{p['sha256']}" for n, p in records.items()) or None


def load_plugin(ref: str) -> list[str]:
    """Import a plugin file (``path/to/formats.py``) or module (``mypkg.formats``) and return
    the names it registered. Loading the same plugin twice does nothing the second time."""
    ref = str(ref).strip()
    path = Path(ref).expanduser()
    is_file = ref.endswith(".py") or path.is_file()
    if is_file:
        if not path.is_file():
            raise CapscaleError(f"plugin file {ref} does not exist")
        path = path.resolve()
        key = str(path)
    else:
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", ref):
            raise CapscaleError(f"plugin {ref!r}: give a Python file (ending in .py) or a module "
                                "path such as mypkg.formats")
        key = ref
    if key in _LOADED:
        return [p.name for p in _REGISTRY.values() if p.origin == key]
    before = dict(_REGISTRY)
    if is_file:
        data = path.read_bytes()
        file_hash = hashlib.sha256(data).hexdigest()
        module_name = f"capscale_plugin_{path.stem}_{file_hash[:8]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        with _loading(key, file_hash, ref):
            spec.loader.exec_module(module)
    else:
        with _loading(key, "", ref):
            try:
                module = importlib.import_module(ref)
            except ModuleNotFoundError as e:
                raise CapscaleError(f"plugin module {ref!r} cannot be imported: {e}") from None
    _LOADED.add(key)
    names = [n for n, p in _REGISTRY.items() if before.get(n) is not p]
    if not names:
        raise CapscaleError(f"plugin {ref} registered no format: call "
                            "capscale.formats.register(name, fn, bits=...) in it")
    return names


def load_plugins(refs, export: bool = True) -> list[str]:
    """Load several plugins; with ``export``, add them to ``CAPSCALE_PLUGINS`` so that the
    processes this one starts (sweep workers, torchrun ranks) load them too."""
    names = []
    for ref in refs or ():
        names += load_plugin(ref)
        if export:
            p = Path(ref).expanduser()
            item = str(p.resolve()) if p.is_file() else str(ref)
            current = [x for x in os.environ.get(ENV_VAR, "").split(os.pathsep) if x]
            if item not in current:
                os.environ[ENV_VAR] = os.pathsep.join([*current, item])
    return names


def check_part(name: str, part: Part) -> None:
    """Run a format part on a fixed Gaussian tensor and raise CapscaleError naming the plugin
    when it returns the wrong shape or dtype, NaN or inf from finite input, or a different
    answer the second time (the global torch generator is reseeded before each call, so a
    format that draws from it is deterministic), or when its bits are not a positive number."""
    try:
        b, _ = part.bits(*CHECK_SHAPE, 1.0)
    except Exception as e:  # a user's function: any failure is the plugin's
        raise CapscaleError(f"format plugin {name!r}: bits per value failed: {e!r}") from None
    if not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
        raise CapscaleError(f"format plugin {name!r}: bits per value must be a positive number, "
                            f"got {b!r}")
    gen = torch.Generator().manual_seed(20250601)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(CHECK_SHAPE, generator=gen, dtype=dtype)
        outs = []
        for _ in range(2):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                try:
                    out = part.apply(x.clone(), None)
                except CapscaleError:
                    raise
                except Exception as e:
                    raise CapscaleError(f"format plugin {name!r} failed on a {tuple(x.shape)} "
                                        f"{dtype} Gaussian tensor: {e!r}") from None
            if not (isinstance(out, tuple) and len(out) == 2):
                raise CapscaleError(f"format plugin {name!r}: Part.apply must return (x_hat, "
                                    "still-active mask or None)")
            outs.append(_checked_output(name, out[0], x))
        if not torch.isfinite(outs[0]).all():
            raise CapscaleError(f"format plugin {name!r} returned NaN or inf for finite Gaussian "
                                "input")
        if not torch.equal(outs[0], outs[1]):
            raise CapscaleError(f"format plugin {name!r} is not deterministic: two calls on the same "
                                "tensor (same torch seed) gave different x_hat")


def _checked_output(name: str, out, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise CapscaleError(f"format plugin {name!r} returned {type(out).__name__}; it must return "
                            "a torch.Tensor x_hat")
    if out.shape != x.shape or out.dtype != x.dtype:
        raise CapscaleError(f"format plugin {name!r} returned {tuple(out.shape)} {out.dtype} for "
                            f"a {tuple(x.shape)} {x.dtype} input; x_hat must have the shape and "
                            "dtype of x")
    return out


def _check_name(name) -> str:
    key = str(name).strip().lower() if isinstance(name, str) else ""
    if not re.fullmatch(NAME_PATTERN, key):
        raise CapscaleError(f"format plugin name {name!r}: use lower-case letters, digits and _ , "
                            "starting with a letter (e.g. myfp4)")
    from capscale.formats.spec import DENSE_NAMES, FAMILIES  # spec imports this module

    clash = [f.name for f in FAMILIES if re.fullmatch(f.pattern, key)]
    if clash or key in DENSE_NAMES or re.fullmatch(r"had\d*", key):
        raise CapscaleError(f"format plugin name {key!r} is a built-in format name "
                            f"({clash[0] if clash else 'reserved'}); choose another")
    return key


def _check_grid(name: str, grid) -> tuple[float, ...] | None:
    if grid is None:
        return None
    try:
        levels = tuple(sorted(float(v) for v in grid))
    except (TypeError, ValueError):
        raise CapscaleError(f"format plugin {name!r}: grid must be a list of levels (RMS units)") from None
    if len(levels) < 2 or not all(math.isfinite(v) for v in levels):
        raise CapscaleError(f"format plugin {name!r}: grid needs at least two finite levels")
    return levels


def _source_of(obj) -> str:
    """The source text of a function or class, or its bytecode when the source is not there."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        if code is not None:
            return code.co_code.hex() + repr(code.co_consts)
        return getattr(obj, "__qualname__", type(obj).__qualname__)


@contextlib.contextmanager
def _loading(origin: str, file_hash: str, ref: str):
    _ORIGIN.append((origin, file_hash))
    try:
        yield
    except CapscaleError:
        raise
    except Exception as e:
        raise CapscaleError(f"plugin {ref} failed while loading: {e!r}") from None
    finally:
        _ORIGIN.pop()


def _autoload() -> None:
    """Load CAPSCALE_PLUGINS and the entry points, once; a failure is kept and reported with
    every name that is then not found."""
    global _AUTOLOADED
    if _AUTOLOADED:
        return
    _AUTOLOADED = True
    from importlib.metadata import entry_points

    for ref in [x for x in os.environ.get(ENV_VAR, "").split(os.pathsep) if x]:
        try:
            load_plugin(ref)
        except CapscaleError as e:
            _AUTOLOAD_ERROR.append(f"{ENV_VAR}: {e}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            with _loading(f"entry point {ep.value}", "", f"entry point {ep.name} ({ep.value})"):
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type):
                    obj()
        except CapscaleError as e:
            _AUTOLOAD_ERROR.append(str(e))
