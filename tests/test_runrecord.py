"""One run-record contract: the trainer writes it, the laws' table reader and the report read
it, by the same names; the contract module itself needs no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from capscale import runrecord
from capscale.durations import format_duration

sys.path.insert(0, str(Path(__file__).parent / "train"))  # the trainer tests' token source


def test_the_contract_imports_no_torch():
    probe = ("import sys; import capscale.runrecord, capscale.durations; "
             "assert 'torch' not in sys.modules, 'torch imported'; "
             "assert 'pandas' not in sys.modules, 'pandas imported'")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_two_gmse_spellings():
    assert (runrecord.GMSE_W, runrecord.GMSE_A) == ("gmse_w", "gmse_a")
    assert runrecord.GMSE_ALIASES == {"w_gmse": "gmse_w", "a_gmse": "gmse_a"}
    assert runrecord.part_column_names("w_format", "gmse") == ("w_gmse", "gmse_w")
    assert runrecord.part_column_names("format", "gmse") == ("gmse",)
    assert runrecord.part_key("a_format", "bits") == "bits_a"
    from capscale.laws.representation import part_table

    base = pd.DataFrame({"w_format": ["none", "q4", "q2"], "a_format": ["none", "none", "q4"],
                         "w_kind": ["dense", "scalar", "scalar"],
                         "a_kind": ["dense", "dense", "scalar"]})
    canonical = base.assign(gmse_w=[0.0, 0.04, 0.12], gmse_a=[0.0, None, 0.04])
    alias = base.assign(w_gmse=[0.0, 0.04, 0.12], a_gmse=[0.0, None, 0.04])
    for a, b in zip(part_table(canonical), part_table(alias)):
        assert a["gmse"].tolist() == b["gmse"].tolist()


def test_predict_writes_the_record_name_of_a_gmse():
    from capscale.errors import CapscaleError
    from capscale.laws.builtin_fits import load_fit
    from capscale.laws.predict import predict

    fit = load_fit("builtin:quest-unified")  # a weights/activations fit
    both = predict(fit, 1e8, 2e9, format="q4", gmse=0.04, kind="scalar")
    assert {"gmse_w", "gmse_a"} <= set(both.columns) and "w_gmse" not in both.columns
    by_alias = predict(fit, 1e8, 2e9, w_format="q4", w_gmse=0.04, w_kind="scalar")
    by_name = predict(fit, 1e8, 2e9, w_format="q4", gmse_w=0.04, w_kind="scalar")
    assert "w_gmse" not in by_alias.columns
    assert by_alias["loss"].iloc[0] == by_name["loss"].iloc[0]
    with pytest.raises(CapscaleError, match="name one GMSE"):
        predict(fit, 1e8, 2e9, w_format="q4", w_gmse=0.04, gmse_w=0.05, w_kind="scalar")


def test_one_duration_formatter_two_styles():
    assert format_duration(0) == "0.0s" and format_duration(45) == "45s"
    assert format_duration(135) == "2m15s" and format_duration(7500) == "2h05m"
    assert format_duration(200_000) == "2.3 days"
    sweep = {"whole_seconds": True, "days": False}
    assert format_duration(0, **sweep) == "0s" and format_duration(119.7, **sweep) == "2m00s"
    assert format_duration(200_000, **sweep) == "55h33m"


def test_trainer_table_reader_and_report_read_the_same_keys(tmp_path):
    from synthetic import synthetic_data

    from capscale.laws import load_runs
    from capscale.laws.representation import part_table
    from capscale.report.build import add_runs, has_compressed
    from capscale.report.html import Report
    from capscale.train import TrainConfig, train
    from capscale.train import load_runs as trainer_runs

    run = tmp_path / "runs" / "r0"
    cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=32 * 16, steps=4, lr=1e-2,
                      progress=False, val_tokens=2048, log_every=2, w_format="int4",
                      a_format="none", out=str(run))
    result = train(cfg, data=synthetic_data())
    assert result["status"] == runrecord.FINISHED
    names = {p.name for p in run.iterdir()}
    assert {runrecord.CONFIG, runrecord.METRICS, runrecord.CHECKPOINTS, runrecord.RESULT} <= names
    assert runrecord.folder_status(run) == (runrecord.FINISHED, runrecord.read_result(run))

    # the trainer's record holds every contract column but the derived gmse, by its name
    record = runrecord.read_result(run)
    written = [c for c in runrecord.ROW_COLUMNS if c != runrecord.GMSE]
    assert set(written) <= set(record)
    row = runrecord.result_row(record)
    assert tuple(row)[: len(runrecord.ROW_COLUMNS)] == runrecord.ROW_COLUMNS
    assert row[runrecord.GMSE] == record[runrecord.GMSE_W]  # weights alone compressed
    # the training settings a study keys its representations on, as TrainConfig names them
    assert {k: record[k] for k in runrecord.TRAINING_KEY_COLUMNS} == {
        k: getattr(cfg, k) for k in runrecord.TRAINING_KEY_COLUMNS}

    # the trainer's table and the laws' reader of run folders see the same values
    mine = trainer_runs(tmp_path / "runs")
    laws = load_runs(tmp_path / "runs")
    assert tuple(mine.columns[: len(runrecord.ROW_COLUMNS)]) == runrecord.ROW_COLUMNS
    for key in written:
        assert key in laws.columns, key
        a, b = laws[key].iloc[0], mine[key].iloc[0]
        assert a == b or (a != a and b != b), (key, a, b)
    # ... and the laws find the per-operand GMSE under the trainer's spelling
    slots = part_table(laws)
    assert slots[0]["gmse"][0] == record[runrecord.GMSE_W]
    assert slots[0]["kind"][0] == record[runrecord.operand_key("kind", "w")]

    # the report shows the summary columns of the same table
    rep = Report(tmp_path / "report", "runs")
    add_runs(rep, laws)
    shown = [c for c in runrecord.SUMMARY_COLUMNS if c in laws.columns]
    assert shown == ["N", "D", "loss", "w_format", "a_format", "seed", "status"]
    assert "".join(f"<th>{c}</th>" for c in shown) in rep.parts[-1]
    assert has_compressed(laws)
    assert not runrecord.is_dense_run(record["w_format"], record["a_format"])
