"""Bad inputs a user or a file can give: each is one message and exit 2, no traceback."""

import json

import pytest

from capscale.cli import main
from capscale.errors import CapscaleError


@pytest.fixture
def files(tmp_path):
    (tmp_path / "r.csv").write_text("N,D,loss\n1e6,1e9,3.0\n2e6,2e9,2.9\n4e6,4e9,2.8\n")
    return tmp_path


@pytest.mark.parametrize("argv, words", [
    (["fit", "{d}/r.csv", "--bootstrap", "-3"], "give a whole number >= 0"),
    (["fit", "{d}/r.csv", "--level", "0"], "give a number in (0, 1)"),
    (["fit", "{d}/r.csv", "--delta", "nan"], "'nan' is not finite; give a number > 0"),
    (["fit", "{d}/r.csv", "--map", "loss=loss,loss=N"], "names 'loss' twice"),
    (["fit", "{d}/r.csv", "--derive", "=N*2"], "needs a name"),
    (["fit", "{d}/r.csv", "--derive", "x=(-1)**0.5"], "no finite value"),
    (["predict", "{d}/f.json", "--n", "nan", "--d", "1e9"], "'nan' is not finite"),
    (["gmse", "noise1e400"], "not a finite number"),
    (["gmse", "int4", "--rel-err", "2"], "give a number in (0, 1)"),
    (["train", "--size", "30k", "--grad-clip", "-1", "--out", "{d}/t"], "grad-clip=-1.0: must be > 0"),
    (["train", "--size", "30k", "--eps", "0", "--out", "{d}/t"], "eps=0.0: must be in (0, 1)"),
    (["train", "--size", "30k", "--weight-decay", "-1", "--out", "{d}/t"], "weight-decay"),
    (["train", "--size", "30k", "--final-lr-frac", "5", "--out", "{d}/t"], "final-lr-frac"),
    (["train", "--size", "30k", "--tokens", "1e30", "--out", "{d}/t"], "at most 1e+15"),
    (["train", "--size", "30k", "--lr", "nan", "--out", "{d}/t"], "--lr: 'nan' is not finite"),
    (["train", "--size", "30k", "--out", "{d}/r.csv"], "is a file"),
    (["sweep", "{d}/nl.toml", "--dry-run", "--launcher", "slurm"], "one word"),
    (["fit", "{d}/runs"], "holds a list"),
    (["fit", "{d}/list.json"], "must be a list of records"),
    (["train", "--size", "30k", "--out", "{d}/r.csv/run"], "a file; a run is a folder"),
])
def test_bad_input_is_one_message_and_exit_2(files, capsys, argv, words):
    (files / "f.json").write_text("{}")
    (files / "list.json").write_text("[1, 2]")
    (files / "nl.toml").write_text('[grid]\nsize = ["30k"]\n[slurm]\njob_name = "x\\nrm -rf ~"\n')
    (files / "runs" / "a").mkdir(parents=True)
    (files / "runs" / "a" / "result.json").write_text("[1, 2]")
    argv = [a.replace("{d}", str(files)) for a in argv]
    with pytest.raises(SystemExit) as e:  # argparse's own errors exit 2 by SystemExit
        raise SystemExit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err, err
    assert not (files / "t").exists()


def test_a_spec_with_a_byte_order_mark_reads(tmp_path):
    from capscale.sweep import load_spec

    (tmp_path / "s.toml").write_bytes('\ufeffname = "bom"\n[grid]\nsize = ["30k"]\n'.encode())
    assert load_spec(tmp_path / "s.toml").name == "bom"


def test_the_sbatch_script_uses_absolute_paths(tmp_path, monkeypatch):
    from capscale.sweep.slurm import sbatch_script

    monkeypatch.chdir(tmp_path)
    text = sbatch_script({"timeout_min": 10, "cpus_per_gpu": 1}, "s", json_path := __import__(
        "pathlib").Path("rel/sweep.json"), ["a"], 1)
    assert str(tmp_path / "rel" / "sweep.json") in text and str(json_path) != str(tmp_path)
    assert f"--output={tmp_path / 'rel' / 'slurm'}" in text


def test_no_srun_is_one_message(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from capscale.sweep.slurm import submitit_executor

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CapscaleError, match="needs sbatch and srun on PATH"):
        submitit_executor({"timeout_min": 10, "cpus_per_gpu": 1}, "s", tmp_path, 1)


def test_gmse_of_formats_that_used_to_hang():
    """``gmse sparse0.1 --shape 64x256`` computed a Lloyd–Max grid of 2^15 levels;
    ``outliers0.5+int4 --shape 1x2`` recomputed its estimate over 10^8 tensors."""
    import math
    import time

    from capscale.capacity import gmse, scalar_bound
    from capscale.capacity.bounds import N2D_256

    t = time.perf_counter()
    assert scalar_bound(15.4) == N2D_256 / math.floor(2**15.4) ** 2
    assert scalar_bound(15.4) > 4.0 ** -15.4  # above Shannon's bound, as it must be
    r = gmse("outliers0.5+int4", shape=(1, 2), max_tensors=2000)
    assert r.gmse > 0 and r.n_samples == 4000
    assert time.perf_counter() - t < 60


@pytest.mark.slow
def test_the_high_resolution_constant():
    from capscale.capacity.bounds import N2D_256
    from capscale.formats.gaussian import grid_gmse
    from capscale.formats.grids import lloyd_max_levels

    assert grid_gmse(lloyd_max_levels(256)) * 256**2 == pytest.approx(N2D_256, rel=1e-9)


def test_the_bound_above_256_levels_is_below_the_grids(tmp_path):
    import math

    from capscale.capacity.bounds import N2D_256
    from capscale.formats.gaussian import grid_gmse
    from capscale.formats.grids import lloyd_max_levels

    n2d_64 = grid_gmse(lloyd_max_levels(64)) * 64**2
    assert n2d_64 < N2D_256 < math.pi * math.sqrt(3) / 2  # growing toward Panter–Dite


def test_result_json_holding_a_list(tmp_path):
    from capscale.train import load_result

    (tmp_path / "result.json").write_text(json.dumps([1]))
    with pytest.raises(CapscaleError, match="holds a list"):
        load_result(tmp_path)
