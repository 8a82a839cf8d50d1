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


def test_a_key_column_left_at_its_default_reads_default_not_nan():
    """A training key such as scale_lr is missing (None, NaN) on runs at the default: their
    key must name it, not become NaN (pandas 3 keeps NaN through astype(str))."""
    import numpy as np
    import pandas as pd

    df = pd.DataFrame({"w_format": ["int4", "int4", "none"], "a_format": ["int4"] * 2 + ["none"],
                       "scale_lr": [None, 4e-5, np.nan]})
    keys = rep.representation_keys(df, ["w_format", "a_format", "scale_lr"])
    assert keys == ["int4/int4/default", "int4/int4/4e-05", "none/none/default"]
