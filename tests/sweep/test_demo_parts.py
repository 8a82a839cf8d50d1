"""The demo's own measurements, on hand-made runs with known answers."""

import math

import pandas as pd
import pytest

from capscale.demo import iso_loss_rho, ordering_table, rank_verdict


def runs():
    rows = []
    for n, dense in ((1e4, 4.0), (1e5, 3.0)):
        rows.append({"N": n, "D": 10 * n, "loss": dense, "w_format": "none", "a_format": "none"})
    # at N=1e5: int8 matches dense; int4 equals the loss of a dense model of sqrt(1e4*1e5)
    mid = math.exp((math.log(4.0) + math.log(3.0)) / 2)
    rows += [{"N": 1e5, "D": 1e6, "loss": 3.0, "w_format": "int8", "a_format": "int8"},
             {"N": 1e5, "D": 1e6, "loss": mid, "w_format": "int4", "a_format": "int4"},
             {"N": 1e5, "D": 1e6, "loss": 4.5, "w_format": "int2", "a_format": "int2"},
             {"N": 1e4, "D": 1e5, "loss": 3.9, "w_format": "int4", "a_format": "int4"}]
    return pd.DataFrame(rows)


def test_equal_loss_capacity_interpolates_the_dense_curve_in_log_log():
    iso = iso_loss_rho(runs()).set_index(["format", "N"])
    assert iso.loc[("int8/int8", 1e5), "rho_iso_loss"] == pytest.approx(1.0)
    assert iso.loc[("int4/int4", 1e5), "dense_equivalent_N"] == pytest.approx(math.sqrt(1e9))
    assert iso.loc[("int4/int4", 1e5), "rho_iso_loss"] == pytest.approx(math.sqrt(1e9) / 1e5)
    assert math.isnan(iso.loc[("int2/int2", 1e5), "rho_iso_loss"])  # worse than every dense run
    assert iso.loc[("int4/int4", 1e4), "rho_iso_loss"] > 1  # better than dense at its own size


def test_ordering_per_size_and_ranking():
    table = ordering_table(runs()).set_index("N")
    assert table.loc[1e5, "order_by_gmse"] == "none/none < int8/int8 < int4/int4 < int2/int2"
    assert table.loc[1e5, "order_by_loss"].startswith("none/none < int8/int8") or \
        table.loc[1e5, "order_by_loss"].startswith("int8/int8 < none/none")
    assert not table.loc[1e4, "same_order"]  # int4 beat dense at N=1e4
    rho = pd.DataFrame({"format": ["int8/int8", "int4/int4"], "gmse_w": [1e-4, 1e-2],
                        "rho_iso_loss_largest_N": [0.99, 0.9]})
    assert "is the same as" in rank_verdict(rho)
    rho["rho_iso_loss_largest_N"] = [0.8, 0.9]
    assert "not the same as" in rank_verdict(rho)
