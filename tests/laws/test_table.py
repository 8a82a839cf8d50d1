import json

import numpy as np
import pandas as pd
import pytest

from capscale.errors import CapscaleError
from capscale.laws import load_builtin, load_runs
from capscale.laws.table import data_hash, derive_column, parse_mapping, size_groups


def small_table():
    return pd.DataFrame({"params": [1e7, 2e7, 4e7], "tokens": [2e8, 4e8, 8e8],
                         "loss": [3.5, 3.3, 3.1], "format": ["none", "int4", "int4"]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json"])
def test_reads_every_file_kind(tmp_path, suffix):
    df = small_table()
    path = tmp_path / f"runs{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        path.write_text(json.dumps(df.to_dict(orient="records")))
    out = load_runs(path, mapping="N=params,D=tokens")
    assert list(out["N"]) == [1e7, 2e7, 4e7]
    assert list(out["format"]) == ["none", "int4", "int4"]
    assert out.attrs["report"]["bad"] == {}


def test_reads_run_folders_and_names_unfinished(tmp_path):
    for i, (n, loss) in enumerate([(1e7, 3.5), (2e7, 3.3)]):
        run = tmp_path / f"run{i}"
        (run / "ckpt").mkdir(parents=True)
        (run / "config.json").write_text("{}")
        (run / "result.json").write_text(json.dumps(
            {"N": n, "D": 20 * n, "loss": loss, "w_format": "int4", "a_format": "none"}))
        (run / "ckpt" / "result.json").write_text("not a record")  # never read: inside a run
    (tmp_path / "run9").mkdir()
    (tmp_path / "run9" / "config.json").write_text("{}")  # unfinished: no result record
    df = load_runs(tmp_path)
    assert sorted(df["run"]) == ["run0", "run1"]
    assert df.attrs["unfinished_runs"] == ["run9"]


def test_mapping_and_derive():
    df = pd.DataFrame({"Model Size": [1e8, 2e8], "C": [6e18, 2.4e19], "loss": [3.0, 2.9]})
    out = load_runs(df, mapping={"N": "Model Size"}, derive="D=C/(6*N)")
    np.testing.assert_allclose(out["D"], [1e10, 2e10])
    out = derive_column(df, "logC=log10(`C`) + 0*`Model Size`")
    np.testing.assert_allclose(out["logC"], np.log10(df["C"]))
    assert parse_mapping("N=a, D=b") == {"N": "a", "D": "b"}


@pytest.mark.parametrize("expr, msg", [
    ("D", "NAME=EXPRESSION"),
    ("D=C/(6*Q)", "no column 'Q'"),
    ("D=__import__('os')", "unknown function '__import__'"),
    ("D=C.real", "no column 'C.real'"),
    ("D=`C", "unexpected '`'"),
    ("=C*2", "needs a name"),
    ("D=(-1)**0.5", "no finite value"),
    ("D=format", "text, not numbers"),
])
def test_derive_rejects_bad_expressions(expr, msg):
    df = pd.DataFrame({"C": [1.0], "N": [1.0], "loss": [1.0], "format": ["int4"]})
    with pytest.raises(CapscaleError, match=msg):
        derive_column(df, expr)


def test_map_refuses_one_column_named_twice():
    with pytest.raises(CapscaleError, match="names 'loss' twice"):
        parse_mapping("loss=loss,loss=N")


def test_missing_columns_name_what_exists():
    with pytest.raises(CapscaleError, match=r"missing column\(s\) \['D'\].*--map"):
        load_runs(pd.DataFrame({"N": [1.0], "loss": [2.0]}))
    with pytest.raises(CapscaleError, match="does not have"):
        load_runs(small_table(), mapping="N=nope")


def test_bad_rows_are_reported_then_dropped_on_request():
    df = pd.DataFrame({"N": [1e7, -2e7, 4e7, np.nan, 8e7, 8e7],
                       "D": [1e9, 1e9, 0.0, 1e9, 1e9, 1e9],
                       "loss": [3.0, 3.0, 3.0, 3.0, 2.9, 2.9],
                       "status": ["ok", "ok", "ok", "ok", "ok", "ok"]})
    df.loc[6] = [1.6e8, 1e9, 2.8, "diverged"]
    with pytest.raises(CapscaleError) as e:
        load_runs(df)
    text = str(e.value)
    for reason in ("N <= 0", "D <= 0", "N missing or not finite", "duplicate", "diverged", "--drop-bad"):
        assert reason in text
    out = load_runs(df, drop_bad=True)
    assert list(out["N"]) == [1e7, 8e7]
    assert out.attrs["report"]["dropped"]


def test_all_losses_nan_is_an_error_even_when_dropping():
    df = pd.DataFrame({"N": [1e7, 2e7], "D": [1e9, 2e9], "loss": [np.nan, np.nan]})
    with pytest.raises(CapscaleError, match="every row is bad"):
        load_runs(df, drop_bad=True)


def test_unknown_file_and_builtin():
    with pytest.raises(CapscaleError, match="does not exist"):
        load_runs("/nonexistent/runs.csv")
    with pytest.raises(CapscaleError, match="builtin:quest"):
        load_runs("builtin:nope")


def test_data_hash_is_stable_and_sensitive():
    df = small_table().rename(columns={"params": "N", "tokens": "D"})
    h = data_hash(df)
    assert h == data_hash(df.copy())
    df2 = df.copy()
    df2.loc[0, "loss"] = 3.5000001
    assert h != data_hash(df2)


def test_size_groups_merge_near_equal_sizes():
    ids = size_groups(np.array([30.48e6, 30.5e6, 49.5e6, 102.7e6, 203e6, 203.2e6]))
    assert ids.tolist() == [0, 0, 1, 2, 3, 3]


def test_builtin_tables_have_the_published_shapes():
    chin, every = load_builtin("chinchilla"), load_builtin("chinchilla-all")
    assert len(chin) == 240 and len(every) == 245
    np.testing.assert_allclose(chin["D"], chin["C"] / (6 * chin["N"]))
    # Epoch's filter drops exactly the five highest losses
    assert (np.sort(every["loss"])[-5:] > chin["loss"].max()).all()
    quest = load_builtin("quest")
    assert len(quest) == 104
    assert set(quest["w_format"]) >= {"none", "int4", "int4:had", "int1:had", "e2m1:had",
                                      "2:4:pairs+int4:had"}
    # half-Hadamard and Hadamard share the forward format; the method column keeps them apart
    had4 = quest[(quest["w_format"] == "int4:had") & (quest["a_format"] == "int4:had")]
    assert set(had4["method"]) == {"HadamardTrust/HadamardTrust", "HalfHadamardTrust/HalfHadamardTrust"}
    assert len(load_builtin("frantar-t5")) == 48 and len(load_builtin("frantar-vit")) == 112


def test_where_selects_rows_and_rejects_bad_queries():
    df = small_table().rename(columns={"params": "N", "tokens": "D"})
    assert load_runs(df, where="format == 'int4'")["N"].tolist() == [2e7, 4e7]
    with pytest.raises(CapscaleError, match="selects no runs"):
        load_runs(df, where="N > 1e12")
    with pytest.raises(CapscaleError, match="--where"):
        load_runs(df, where="nonexistent_column > 3")


def test_trainer_style_run_folders_feed_the_unified_law(tmp_path):
    """The trainer's result.json names per-operand GMSE gmse_w / gmse_a and finishes with
    status "finished"; diverged runs are bad rows."""
    from capscale.laws.representation import part_table

    recs = [("none", "none", None, None, "finished"), ("int4", "int4", 0.0115, 0.0115, "finished"),
            ("int2", "none", 0.1188, None, "finished"), ("int1", "int1", 0.36, 0.36, "diverged")]
    for i, (w, a, gw, ga, status) in enumerate(recs):
        run = tmp_path / f"r{i}"
        run.mkdir()
        (run / "result.json").write_text(json.dumps(
            {"N": 1e7 * (i + 1), "D": 2e8 * (i + 1), "loss": 3.0 if status == "finished" else None,
             "w_format": w, "a_format": a, "gmse_w": gw, "gmse_a": ga, "status": status}))
    with pytest.raises(CapscaleError, match="diverged"):
        load_runs(tmp_path)
    df = load_runs(tmp_path, drop_bad=True)
    assert len(df) == 3
    slots = part_table(df.assign(w_kind="scalar", a_kind="scalar"))
    assert slots[0]["gmse"].tolist() == [0.0, 0.0115, 0.1188]
    assert slots[1]["gmse"].tolist() == [0.0, 0.0115, 0.0]


def test_runs_that_differ_only_in_a_training_setting_are_not_duplicates():
    """RBBM against the plain sparse backward, LSQ against trust: the same format, N, D and
    seed trained two ways are two representations, not a repeated row."""
    base = {"N": 2e4, "D": 1e6, "loss": 3.5, "w_format": "sparse0.5", "a_format": "none",
            "seed": 0}
    df = pd.DataFrame([{**base, "sparse_grad": "fw"}, {**base, "sparse_grad": "b-rms"},
                       {**base, "grad": "lsq", "sparse_grad": "fw"}])
    df.loc[2, "grad"] = "lsq"
    df["grad"] = df["grad"].fillna("trust")
    assert len(load_runs(df)) == 3
    with pytest.raises(CapscaleError, match="duplicate"):
        load_runs(pd.concat([df, df.iloc[[1]]], ignore_index=True))
