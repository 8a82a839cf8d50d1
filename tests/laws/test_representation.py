"""`is_dense` decides from the text what the format parser decides by parsing."""

from __future__ import annotations

import pytest

from capscale.formats import FAMILIES, parse_format
from capscale.formats.spec import DENSE_NAMES
from capscale.laws import representation as rep

SPECS = sorted({*DENSE_NAMES, *rep.DENSE_ALIASES, "None", " BF16 ", "b f16", "int4:had",
                "2:4+int4", "sparse0.5+int4", "nvfp4", "noise0.01", "int4x", "", "nan",
                *(e for f in FAMILIES for e in f.examples)})


@pytest.mark.parametrize("spec", SPECS)
def test_is_dense_agrees_with_the_parser(spec):
    try:
        parsed = parse_format(spec).is_identity
    except Exception:  # not a format: dense only if it is one of the free dense labels
        assert rep.is_dense(spec) == (spec.strip().lower().replace(" ", "") in rep.DENSE_ALIASES)
        return
    assert rep.is_dense(spec) == parsed


def test_every_dense_name_of_the_parser_is_a_dense_alias():
    assert set(DENSE_NAMES) <= rep.DENSE_ALIASES
