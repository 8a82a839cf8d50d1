"""A small expression language over the columns of a runs table, evaluated by this module.

Used for ``--where`` (select rows), ``--derive`` (compute a column) and any expression a fit
JSON or a sweep spec stores. Nothing is handed to Python's ``eval``, pandas' ``query`` or its
python engine: the text is tokenised and parsed here, and only these constructs exist:

- column names (identifiers, or any name in backquotes: ```Training FLOP```), numbers
  (``1e6``, ``0.5``), strings (``'int4:had'``), ``true`` / ``false``;
- arithmetic ``+ - * / **`` and unary ``-``; comparisons ``== != < <= > >=`` (chained, as in
  ``1e6 < N <= 1e8``), ``in [..]`` / ``not in [..]``; ``and or not`` (also ``& | ~``);
- the functions in :data:`FUNCTIONS`.

Arithmetic and ordering work on numbers (text that is not a number becomes NaN); ``==``,
``!=`` and ``in`` compare text with text and numbers with numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError

FUNCTIONS: dict[str, Callable] = {
    "log": np.log, "log10": np.log10, "log2": np.log2, "exp": np.exp, "sqrt": np.sqrt,
    "abs": np.abs, "round": np.round, "floor": np.floor, "ceil": np.ceil,
}
MAX_LENGTH = 2_000  # characters; longer text is not a hand-written selection
MAX_TOKENS = 300  # bounds the depth of the tree (evaluated recursively)
MAX_DEPTH = 40  # nesting of parentheses and unary operators

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<quoted>`[^`]*`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>\*\*|==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,|&|\||~)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "True", "False"}
_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, op, keyword, end
    text: str
    pos: int


def tokenize(text: str, what: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise CapscaleError(f"{what}: longer than {MAX_LENGTH} characters")
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise CapscaleError(
                f"{what}: unexpected {text[pos]!r} at position {pos}; an expression has column "
                "names, numbers, 'text', + - * / **, comparisons, and/or/not, in [...] and the "
                f"functions {', '.join(FUNCTIONS)}")
        kind = m.lastgroup
        if kind != "ws":
            tok = m.group(kind)
            if kind == "quoted":
                kind, tok = "name", tok[1:-1]
                if not tok:
                    raise CapscaleError(f"{what}: empty column name `` at position {pos}")
            elif kind == "name" and tok in _KEYWORDS:
                kind = "keyword"
            out.append(Token(kind, tok, pos))
        pos = m.end()
    if len(out) > MAX_TOKENS:
        raise CapscaleError(f"{what}: more than {MAX_TOKENS} names, numbers and operators")
    out.append(Token("end", "", len(text)))
    return out


# The parse tree is nested tuples: ("num", v), ("str", s), ("bool", b), ("col", name),
# ("list", [nodes]), ("call", fn, node), ("neg", node), ("not", node),
# ("bin", op, left, right), ("cmp", [ops], [nodes]), ("in", negated, node, list_node).


class _Parser:
    def __init__(self, text: str, what: str):
        self.what = what
        self.toks = tokenize(text, what)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, *texts: str) -> Token | None:
        tok = self.peek()
        if tok.kind in ("op", "keyword") and tok.text in texts:
            self.i += 1
            return tok
        return None

    def expect(self, text: str) -> None:
        if not self.accept(text):
            self.fail(f"expected {text!r}")

    def fail(self, msg: str):
        tok = self.peek()
        at = "the end" if tok.kind == "end" else f"{tok.text!r} at position {tok.pos}"
        raise CapscaleError(f"{self.what}: {msg} at {at}")

    def parse(self):
        node = self.or_()
        if self.peek().kind != "end":
            self.fail("unexpected text")
        return node

    def nested(self, fn):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} deep")
        try:
            return fn()
        finally:
            self.depth -= 1

    def or_(self):
        node = self.and_()
        while self.accept("or", "|"):
            node = ("bin", "or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.accept("and", "&"):
            node = ("bin", "and", node, self.not_())
        return node

    def not_(self):
        if self.accept("not", "~"):
            return ("not", self.nested(self.not_))
        return self.comparison()

    def comparison(self):
        first = self.sum_()
        if self.peek().text == "in" or (self.peek().text == "not"
                                         and self.toks[self.i + 1].text == "in"):
            negated = self.accept("not") is not None
            self.expect("in")
            return ("in", negated, first, self.list_())
        ops, nodes = [], [first]
        while (tok := self.accept(*_COMPARISONS)) is not None:
            ops.append(tok.text)
            nodes.append(self.sum_())
        return ("cmp", ops, nodes) if ops else first

    def list_(self):
        self.expect("[")
        items = []
        if not self.accept("]"):
            while True:
                items.append(self.unary())
                if self.accept("]"):
                    break
                self.expect(",")
        return ("list", items)

    def sum_(self):
        node = self.term()
        while (tok := self.accept("+", "-")) is not None:
            node = ("bin", tok.text, node, self.term())
        return node

    def term(self):
        node = self.unary()
        while (tok := self.accept("*", "/")) is not None:
            node = ("bin", tok.text, node, self.unary())
        return node

    def unary(self):
        if (tok := self.accept("-", "+")) is not None:
            inner = self.nested(self.unary)
            return ("neg", inner) if tok.text == "-" else inner
        return self.power()

    def power(self):
        node = self.atom()
        if self.accept("**"):
            node = ("bin", "**", node, self.nested(self.unary))  # right-associative
        return node

    def atom(self):
        tok = self.take()
        if tok.kind == "number":
            return ("num", float(tok.text))
        if tok.kind == "string":
            return ("str", tok.text[1:-1])
        if tok.kind == "keyword" and tok.text.lower() in ("true", "false"):
            return ("bool", tok.text.lower() == "true")
        if tok.kind == "name":
            if self.accept("("):
                if tok.text not in FUNCTIONS:
                    raise CapscaleError(f"{self.what}: unknown function {tok.text!r}; the "
                                        f"functions are {', '.join(FUNCTIONS)}")
                arg = self.nested(self.or_)
                self.expect(")")
                return ("call", tok.text, arg)
            return ("col", tok.text)
        if tok.kind == "op" and tok.text == "(":
            node = self.nested(self.or_)
            self.expect(")")
            return node
        self.i -= 1
        self.fail("expected a number, a column, 'text' or '('")


def parse(text: str, what: str = "expression"):
    """The parse tree of ``text`` (a CapscaleError naming ``what`` if it is not one)."""
    if not isinstance(text, str) or not text.strip():
        raise CapscaleError(f"{what}: empty expression")
    return _Parser(text, what).parse()


def columns_of(tree) -> set[str]:
    """The column names an expression reads."""
    if tree[0] == "col":
        return {tree[1]}
    out: set[str] = set()
    for part in tree[1:]:
        if isinstance(part, tuple):
            out |= columns_of(part)
        elif isinstance(part, list):
            for p in part:
                if isinstance(p, tuple):
                    out |= columns_of(p)
    return out


def _numeric(v) -> np.ndarray | float:
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "fiub":
            return v.astype(np.float64)
        return pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(dtype=np.float64)
    if isinstance(v, (bool, int, float, np.number)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _equal(a, b) -> np.ndarray | bool:
    a_text = isinstance(a, str) or (isinstance(a, np.ndarray) and a.dtype.kind == "O")
    b_text = isinstance(b, str) or (isinstance(b, np.ndarray) and b.dtype.kind == "O")
    if a_text or b_text:
        a = np.asarray(a, dtype=object) if isinstance(a, np.ndarray) else a
        b = np.asarray(b, dtype=object) if isinstance(b, np.ndarray) else b
        return np.asarray(a == b, dtype=bool) if isinstance(a == b, np.ndarray) else bool(a == b)
    return np.equal(_numeric(a), _numeric(b))


_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power}
_ORDER = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


def _truth(v, what: str) -> np.ndarray | bool:
    if isinstance(v, np.ndarray):
        if v.dtype == bool:
            return v
        return np.asarray(_numeric(v) != 0, dtype=bool) & ~np.isnan(_numeric(v))
    if isinstance(v, str):
        raise CapscaleError(f"{what}: the text {v!r} is not a condition")
    return bool(v)


def evaluate(tree, df: pd.DataFrame, what: str = "expression"):
    """The value of a parse tree over the rows of ``df``: a numpy array (one value per row)
    or a scalar when no column is involved."""
    kind = tree[0]
    if kind in ("num", "str", "bool"):
        return tree[1]
    if kind == "col":
        name = tree[1]
        if name not in df.columns:
            raise CapscaleError(f"{what}: no column {name!r}; the columns are {list(df.columns)}")
        col = df[name]
        if pd.api.types.is_bool_dtype(col):
            return col.to_numpy(dtype=bool)
        if pd.api.types.is_numeric_dtype(col):
            return col.to_numpy(dtype=np.float64)
        return col.to_numpy(dtype=object)
    if kind == "list":
        return [evaluate(t, df, what) for t in tree[1]]
    if kind == "call":
        return FUNCTIONS[tree[1]](_numeric(evaluate(tree[2], df, what)))
    if kind == "neg":
        return np.negative(_numeric(evaluate(tree[1], df, what)))
    if kind == "not":
        return np.logical_not(_truth(evaluate(tree[1], df, what), what))
    if kind == "bin":
        op, left, right = tree[1], evaluate(tree[2], df, what), evaluate(tree[3], df, what)
        if op in ("and", "or"):
            fn = np.logical_and if op == "and" else np.logical_or
            return fn(_truth(left, what), _truth(right, what))
        return _ARITH[op](_numeric(left), _numeric(right))
    if kind == "cmp":
        values = [evaluate(t, df, what) for t in tree[2]]
        out = True
        for op, a, b in zip(tree[1], values, values[1:]):
            if op == "==":
                r = _equal(a, b)
            elif op == "!=":
                r = np.logical_not(_equal(a, b))
            else:
                r = _ORDER[op](_numeric(a), _numeric(b))
            out = np.logical_and(out, r)
        return out
    if kind == "in":
        value = evaluate(tree[2], df, what)
        hit = False
        for item in evaluate(tree[3], df, what):
            hit = np.logical_or(hit, _equal(value, item))
        return np.logical_not(hit) if tree[1] else hit
    raise AssertionError(kind)


def select(df: pd.DataFrame, where: str, what: str | None = None) -> pd.DataFrame:
    """The rows of ``df`` for which the condition ``where`` holds."""
    what = what or f"--where {where!r}"
    with np.errstate(all="ignore"):
        mask = _truth(evaluate(parse(where, what), df, what), what)
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), (len(df),))
    return df[mask].reset_index(drop=True)


def compute(df: pd.DataFrame, expression: str, what: str | None = None) -> np.ndarray:
    """The values of an arithmetic ``expression`` over the rows of ``df`` (float64)."""
    what = what or f"expression {expression!r}"
    with np.errstate(all="ignore"):
        value = evaluate(parse(expression, what), df, what)
    if isinstance(value, str) or (isinstance(value, np.ndarray) and value.dtype.kind == "O"):
        raise CapscaleError(f"{what}: yields text, not numbers")
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (len(df),)).copy()
