import itertools
import json

import numpy as np
import pandas as pd
import pytest

from .conftest import chinchilla_loss, grid


@pytest.fixture
def runs_csv(tmp_path):
    rows = [{"params": n, "tokens": d, "fmt": f,
             "val_loss": chinchilla_loss(n, d, {"none": 1.0, "h4": 0.7, "h2": 0.3}[f])
             * (1 + 0.002 * np.cos(i))}
            for i, ((n, d), f) in enumerate(itertools.product(grid(), ["none", "h4", "h2"]))]
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_fit_predict_compare_end_to_end(only_laws_cli, runs_csv, tmp_path, capsys):
    main = only_laws_cli
    out = tmp_path / "fit.json"
    rc = main(["fit", str(runs_csv), "--law", "decoupled", "--map", "N=params,D=tokens",
               "--map", "loss=val_loss,format=fmt", "--bootstrap", "60", "-o", str(out),
               "--plot", str(tmp_path / "plots"), "--composability", "--independence"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "eff[h4]" in text and "held out" in text and "data independence" in text
    d = json.loads(out.read_text())
    for key in ("law", "params", "intervals", "rmse_loss", "rmse_log_loss", "heldout", "settings",
                "data"):
        assert key in d
    assert set(d["params"]["eff"]) == {"none", "h4", "h2"}
    assert d["params"]["eff"]["h4"] == pytest.approx(0.7, rel=0.05)
    assert (tmp_path / "plots" / "loss_vs_n.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "predicted_vs_measured.png").exists()

    rc = main(["predict", str(out), "--n", "1e9", "3e9", "--d", "2e10", "--format", "h4",
               "--compute", "1e21", "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    assert len(rec["predictions"]) == 2 and rec["compute_optimal"][0]["N_opt"] > 0

    rc = main(["compare", str(out), "--csv", str(tmp_path / "cmp.csv"),
               "--plot", str(tmp_path / "cmp.png")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "cmp.csv")
    assert table["format"].tolist() == ["h4", "h2"]
    assert (tmp_path / "cmp.png").exists()


def test_fit_builtin_chinchilla_prints_parameters(only_laws_cli, capsys):
    rc = only_laws_cli(["fit", "builtin:chinchilla", "--bootstrap", "0", "--no-heldout"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "0.3473" in out


@pytest.mark.parametrize("argv, message", [
    (["fit", "{csv}"], "missing column"),
    (["fit", "{csv}", "--map", "N=params,D=tokens,loss=val_loss", "--derive", "D=tokens/"], "expected a number"),
    (["fit", "{csv}", "--map", "N=params,D=tokens,loss=val_loss", "--law", "decoupled"], "format"),
    (["fit", "/no/such/table.csv"], "does not exist"),
    (["predict", "/no/such/fit.json", "--n", "1e9", "--d", "1e10"], "does not exist"),
    (["fit", "{one_size}"], "one value of N"),
    (["fit", "{nan}"], "loss missing or not finite"),
])
def test_bad_inputs_exit_2_with_a_message(only_laws_cli, runs_csv, tmp_path, capsys, argv, message):
    one = pd.DataFrame({"N": [1e8] * 4, "D": [1e9, 2e9, 4e9, 8e9], "loss": [3.0, 2.9, 2.8, 2.75]})
    one.to_csv(tmp_path / "one.csv", index=False)
    nan = pd.DataFrame({"N": [1e8, 2e8], "D": [1e9, 2e9], "loss": [np.nan, 2.9]})
    nan.to_csv(tmp_path / "nan.csv", index=False)
    paths = {"csv": runs_csv, "one_size": tmp_path / "one.csv", "nan": tmp_path / "nan.csv"}
    argv = [a.format(**paths) for a in argv]
    rc = only_laws_cli(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err
