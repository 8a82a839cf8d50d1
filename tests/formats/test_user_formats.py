"""User formats: a 10-line function and a Part subclass (tests/formats/user_formats.py) through
gmse, compare, predict, training, a sweep and the report; the checks on bad plugins."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

import capscale.formats as cf
from capscale.capacity import gmse
from capscale.cli import main
from capscale.errors import CapscaleError
from capscale.formats import registry

PLUGIN = str(Path(__file__).with_name("user_formats.py"))


@pytest.fixture
def plugin(monkeypatch):
    """The test plugin loaded as the CLI loads it; CAPSCALE_PLUGINS restored afterwards."""
    monkeypatch.setenv(registry.ENV_VAR, "")
    cf.load_plugins([PLUGIN])
    return PLUGIN


def test_a_function_parses_composes_and_prints_back(plugin):
    for spec in ("myfp4", "sparse0.5+myfp4", "myfp4:had", "2:4+myfp4:had64", "sparse0.5+signmean"):
        f = cf.parse_format(spec)
        assert cf.parse_format(str(f)) == f and str(f) == spec
    assert cf.parse_format("myfp4").bits((4096, 4096)) == pytest.approx(4 + 16 / 4096)
    assert cf.parse_format("sparse0.5+myfp4").bits((8, 128)) == pytest.approx(1 + 0.5 * (4 + 16 / 128))  # mask + its values
    x = torch.randn(64, 128)
    # pruned entries pass through the user function unchanged (they stay zero)
    xh = cf.parse_format("sparse0.5+myfp4").quantize(x)
    assert int((xh == 0).sum()) >= x.numel() // 2
    with pytest.raises(CapscaleError, match="myfp4 takes: none"):
        cf.parse_format("myfp4:g32")


def test_gmse_of_user_formats_against_independent_values(plugin):
    # the function is FP4 E2M1 with a per-row absmax scale: the built-in e2m1:absmax (checked
    # bit for bit against ml_dtypes elsewhere) must give the same x̂ (up to the last bit of x/s·s)
    x = torch.randn(256, 512, dtype=torch.float64)
    mine, built_in = cf.parse_format("myfp4").quantize(x), cf.parse_format("e2m1:absmax").quantize(x)
    assert torch.allclose(mine, built_in, rtol=1e-13, atol=0)
    # sign · mean|x|: GMSE 1 - 2/π on N(0, 1); after top-50% sparsity 1 - 8 φ(Φ⁻¹(3/4))²
    r = gmse("signmean", shape=(256, 2048), rel_err=2e-3)
    assert abs(r.gmse - (1 - 2 / math.pi)) < 4 * r.stderr + 1e-3
    t = norm.ppf(0.75)
    r = gmse("sparse0.5+signmean", shape=(256, 2048), rel_err=2e-3)
    assert abs(r.gmse - (1 - 8 * norm.pdf(t) ** 2)) < 4 * r.stderr + 1e-3


def test_cli_gmse_with_plugin(monkeypatch, capsys):
    monkeypatch.setenv(registry.ENV_VAR, "")
    assert main(["gmse", "myfp4", "e2m1:absmax", "sparse0.5+signmean", "--shape", "64x512",
                 "--rel-err", "1e-2", "--json", "--plugin", PLUGIN]) == 0
    rows = {r["spec"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["myfp4"]["gmse"] == pytest.approx(rows["e2m1:absmax"]["gmse"], rel=1e-6)
    assert main(["gmse", "nosuchfmt"]) == 2
    assert "--plugin" in capsys.readouterr().err
    assert main(["gmse", "myfp4", "--plugin", "missing_plugin.py"]) == 2
    assert "missing_plugin.py does not exist" in capsys.readouterr().err


def _bad(name, fn, **kw):
    with pytest.raises(CapscaleError, match=f"'{name}'") as e:
        cf.register(name, fn, **kw)
    assert name not in cf.registered()
    return str(e.value)


def test_bad_plugins_are_named_and_explained():
    assert "shape and dtype" in _bad("badshape", lambda x: x[:1], bits=4)
    assert "shape and dtype" in _bad("baddtype", lambda x: x.half(), bits=4)
    assert "NaN or inf" in _bad("badnan", lambda x: x / (x - x), bits=4)
    rng = np.random.default_rng()
    assert "not deterministic" in _bad("badrandom", lambda x: x + float(rng.random()), bits=4)
    assert "bits=" in _bad("badbits", lambda x: x)
    assert "positive number" in _bad("badbits2", lambda x: x, bits=-1)
    assert "torch.Tensor" in _bad("badtype", lambda x: x.numpy(), bits=4)
    assert "failed" in _bad("badraise", lambda x: x.no_such_method(), bits=4)
    assert "built-in" in _bad("int4", lambda x: x, bits=4)
    # a function that draws from torch's generator is deterministic under a fixed seed
    cf.register("mynoise", lambda x: x + 0.1 * torch.randn_like(x), bits=16, kind="noise")
    cf.unregister("mynoise")


def test_a_plugin_file_is_hashed_and_versions_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, "")
    src = "import capscale.formats as cf\ncf.register('{n}', lambda x: x.round(), bits={b})\n"
    f1 = tmp_path / "v1.py"
    f1.write_text(src.format(n="myround", b=4))
    assert cf.load_plugin(str(f1)) == ["myround"]
    h1 = cf.registered()["myround"].source_hash
    assert registry.plugin_records(cf.parse_format("sparse0.5+myround")) == {
        "myround": {"origin": str(f1.resolve()), "sha256": h1}}
    f2 = tmp_path / "v2.py"
    f2.write_text(src.format(n="myround", b=5))
    with pytest.raises(CapscaleError, match="already registered"):
        cf.load_plugin(str(f2))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(CapscaleError, match="registered no format"):
        cf.load_plugin(str(tmp_path / "empty.py"))
    cf.unregister("myround")


def test_declared_grid_gives_the_trust_rule_of_the_built_in_grid(plugin):
    """A user copy of int2 (RMS-scaled) that declares its grid gets the same trust mask."""
    from capscale.formats.grids import int_levels
    from capscale.formats.scalar import IntQuantizer
    from capscale.model import CompressedLinear

    alpha = IntQuantizer(n_bits=2).alpha
    levels = torch.tensor(int_levels(2), dtype=torch.float64) * alpha

    def myint2(x):
        rms = x.square().mean(-1, keepdim=True).sqrt()
        nearest = ((x / rms).unsqueeze(-1) - levels.to(x.dtype)).abs().argmin(-1)
        return levels.to(x.dtype)[nearest] * rms

    cf.register("myint2", myint2, bits=2 + 16 / 4096, grid=levels.tolist(), replace=True)
    grads = {}
    for spec in ("int2", "myint2"):
        torch.manual_seed(0)
        lin = CompressedLinear(64, 32, weight_format=spec, grad_rule="trust")
        with torch.no_grad():  # Gaussian weights: some lie beyond the grid's trust region
            lin.weight.copy_(torch.randn(32, 64))
        lin(torch.randn(8, 64)).square().sum().backward()
        grads[spec] = lin.weight.grad
        assert lin.w_comp.effective == [f"{spec}:trust"]
    assert (grads["myint2"] == 0).sum() > 0
    assert torch.equal(grads["int2"] == 0, grads["myint2"] == 0)
    ste = CompressedLinear(64, 32, weight_format="myfp4", grad_rule="trust")
    assert ste.w_comp.effective == ["myfp4:ste"]  # no declared grid: straight through
    with pytest.raises(CapscaleError, match="lsq"):
        CompressedLinear(64, 32, weight_format="myfp4", grad_rule="lsq")


TRAIN = ["--n-layer", "1", "--n-embd", "32", "--n-head", "1", "--seq-len", "64",
         "--batch-tokens", "512", "--val-tokens", "2048", "--eval-every", "1000000",
         "--data", "builtin:wiki", "--tokenizer", "train:spm:512", "--no-progress"]


def test_train_a_user_function_and_a_user_part_in_a_composition(tmp_path, monkeypatch):
    from capscale.train import load_result

    monkeypatch.setenv(registry.ENV_VAR, "")
    for name, w, a in (("fn", "myfp4", "none"), ("part", "sparse0.5+signmean", "none")):
        out = tmp_path / name
        assert main(["train", *TRAIN, "--w", w, "--a", a, "--steps", "20", "--out", str(out),
                     "--plugin", PLUGIN]) == 0
        r = load_result(out)
        assert r["w_format"] == w and r["steps"] == 20 and math.isfinite(r["loss"])
        plugin = w.split("+")[-1]
        assert r["plugin_w"] == f"{plugin}@{cf.registered()[plugin].source_hash}"
        assert r["plugins_w"][plugin]["origin"] == str(Path(PLUGIN).resolve())
        assert r["gmse_w"] == pytest.approx(gmse(w).gmse)
        losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line).get("kind") == "train"]
        assert losses[-1] < losses[0]  # it learns through the user format


SWEEP = """
name = "plugins"
[sizes]
13k = {n_layer = 1, n_embd = 32, n_head = 1}
[grid]
size = ["13k"]
formats = ["myfp4", "sparse0.5+signmean"]
[train]
tokenizer = "train:spm:512"
seq_len = 64
batch_tokens = 1024
tokens_per_param = 1
val_tokens = 4096
eval_every = 1000000
"""


def test_sweep_fit_compare_predict_and_report_with_user_formats(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from capscale.laws.fit import fit_law, save_fit
    from tests.laws.test_recovery import unified_table

    monkeypatch.setenv(registry.ENV_VAR, "")
    spec = tmp_path / "plugins.toml"
    spec.write_text(SWEEP)
    root = tmp_path / "runs"
    assert main(["sweep", str(spec), "-o", str(root), "--jobs", "2", "--threads", "1", "--quiet",
                 "--plugin", PLUGIN]) == 0
    runs = pd.read_csv(root / "runs.csv")
    assert sorted(runs["w_format"]) == ["myfp4", "sparse0.5+signmean"]
    assert (runs["status"] == "finished").all() and runs["plugin_w"].str.contains("@").all()
    report = tmp_path / "report"
    assert main(["report", str(root / "runs.csv"), "-o", str(report), "--bootstrap", "20",
                 "--quiet", "--plugin", PLUGIN]) == 0
    html = (report / "index.html").read_text()
    assert "myfp4" in html and "sparse0.5+signmean" in html

    # a unified fit (synthetic table, known constants) predicts the user formats from their GMSE
    fit = fit_law(unified_table(np.random.default_rng(0)), "unified", n_bootstrap=20, heldout=False)
    fit_path = tmp_path / "fit.json"
    save_fit(fit, fit_path)
    capsys.readouterr()
    assert main(["compare", str(fit_path), "myfp4", "e2m1:absmax", "--json", "--plugin", PLUGIN]) == 0
    rows = {r["format"]: r for r in json.loads(capsys.readouterr().out)}
    nat = dict(zip(fit.law.natural_names, fit.natural))
    g = gmse("myfp4").gmse
    assert rows["myfp4"]["rho"] == pytest.approx(fit.law.rho(nat, g, "scalar") ** 2, rel=1e-9)
    assert rows["myfp4"]["rho"] == pytest.approx(rows["e2m1:absmax"]["rho"], rel=1e-6)
    assert main(["predict", str(fit_path), "--n", "1e8", "--d", "1e10", "--format", "myfp4",
                 "--json", "--plugin", PLUGIN]) == 0
    pred = json.loads(capsys.readouterr().out)["predictions"][0]
    assert pred["eff"] == pytest.approx(rows["myfp4"]["rho"], rel=1e-9)


def test_a_fit_refuses_two_versions_of_one_plugin_format():
    import pandas as pd

    from capscale.laws.table import validate_runs

    df = pd.DataFrame({"N": [1e6, 2e6, 4e6], "D": [1e8, 2e8, 4e8], "loss": [3.0, 2.9, 2.8],
                       "w_format": ["myfp4", "myfp4", "int4"], "a_format": ["none"] * 3,
                       "plugin_w": ["myfp4@aaaa", "myfp4@bbbb", None]})
    with pytest.raises(CapscaleError, match="2 versions of its plugin"):
        validate_runs(df)
    df.loc[1, "plugin_w"] = "myfp4@aaaa"
    assert len(validate_runs(df)[0]) == 3


def test_plugins_named_in_the_environment_load_on_first_use(tmp_path, monkeypatch):
    """What a sweep worker does: CAPSCALE_PLUGINS names the plugin, the first unknown name loads
    it; a broken one is reported with the name that was not found."""
    good = tmp_path / "envfmt.py"
    good.write_text("import capscale.formats as cf\ncf.register('envfmt', lambda x: x.round(), bits=8)\n")
    monkeypatch.setattr(registry, "_AUTOLOADED", False)
    monkeypatch.setattr(registry, "_AUTOLOAD_ERROR", [])
    monkeypatch.setenv(registry.ENV_VAR, str(good))
    assert str(cf.parse_format("sparse0.5+envfmt")) == "sparse0.5+envfmt"
    cf.unregister("envfmt")
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    monkeypatch.setattr(registry, "_AUTOLOADED", False)
    monkeypatch.setattr(registry, "_AUTOLOAD_ERROR", [])
    monkeypatch.setenv(registry.ENV_VAR, str(bad))
    with pytest.raises(CapscaleError, match="boom"):
        cf.parse_format("nosuchfmt")
    assert not cf.is_format_spec("nosuchfmt")  # free labels of foreign tables stay labels
