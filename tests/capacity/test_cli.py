"""The gmse and formats commands, as a user runs them."""

import json
import subprocess
import sys

import pandas as pd

from capscale.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "capscale", *args], capture_output=True, text=True)


def test_gmse_json(capsys):
    assert main(["gmse", "int4", "e2m1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["spec"] for r in rows] == ["int4", "e2m1"]
    assert abs(rows[0]["gmse"] - 0.01154288) < 1e-8
    assert {"bits_per_value", "gmse_se", "log_quarter_gmse", "ratio_to_shannon", "rho_unified"} <= set(rows[0])


def test_gmse_table_csv_and_plot(tmp_path, capsys):
    out, png = tmp_path / "t.csv", tmp_path / "g.png"
    assert main(["gmse", "int4", "sparse0.5+int4", "--shape", "64x1024", "--rel-err", "0.01",
                 "-o", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "sparse0.5+int4" in text and "arXiv 2506.01863" in text
    df = pd.read_csv(out)
    assert list(df["spec"]) == ["int4", "sparse0.5+int4"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_spec_exits_2_without_traceback():
    r = run_cli("gmse", "int4", "int4x")
    assert r.returncode == 2
    assert "unknown format 'int4x'" in r.stderr and "Traceback" not in r.stderr


def test_bad_shape_exits_2():
    r = run_cli("gmse", "int4", "--shape", "12")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_formats_lists_every_family(capsys):
    from capscale.formats import FAMILIES

    assert main(["formats"]) == 0
    text = capsys.readouterr().out
    for fam in FAMILIES:
        assert fam.name in text
    assert main(["formats", "--check", "fp4"]) == 0
    assert "e2m1" in capsys.readouterr().out


def test_written_files_have_ordinary_permissions(tmp_path):
    import os
    import stat

    from capscale.io import atomic_write_text

    p = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
