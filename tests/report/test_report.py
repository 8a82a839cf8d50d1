"""Reports from a fit JSON: the runs found again by their recorded source and data hash, or
left out with a note; every image of the page loads in headless Chromium."""

import json

from browser import image_states

from capscale.laws import fit_law, load_runs
from capscale.report import build_report

PANEL = ["int3", "nf4", "nvfp4", "2:4+int4"]  # formats never trained, cheap to probe


def test_report_of_a_unified_fit_on_the_quest_runs(tmp_path):
    df = load_runs("builtin:quest")
    fit = fit_law(df, "unified", capacity_groups="single", n_bootstrap=20, heldout=False)
    fit_path = tmp_path / "fit.json"
    fit.to_json(fit_path)
    index = build_report(fit_path, tmp_path / "report", n_bootstrap=20, quiet=True, panel=PANEL)
    html = index.read_text()
    assert "104 runs from builtin:quest (fit" in html  # the fit's runs, found by source and hash
    for name in ("fit_unified.csv", "fit_decoupled.csv", "capacity_bound.csv", "pareto.csv",
                 "composability.csv", "runs.csv"):
        assert (tmp_path / "report" / "tables" / name).exists(), name
    assert "assumed symmetric" in html  # QuEST has no activation-only runs
    states = image_states(index)
    assert {s[0] for s in states} >= {"plots/capacity_vs_gmse.png", "plots/composability.png",
                                      "plots/pareto.png", "plots/loss_vs_n_unified.png"}
    assert all(complete and width > 0 for _, complete, width, _ in states)

    # a fit whose runs cannot be found still gets a report, without the plots of runs
    d = json.loads(fit_path.read_text())
    d["data"]["source"] = str(tmp_path / "gone.csv")
    fit_path.write_text(json.dumps(d))
    index = build_report(fit_path, tmp_path / "report2", n_bootstrap=20, quiet=True, panel=PANEL)
    html = index.read_text()
    assert "were not found" in html and "loss_vs_n" not in html
    assert "capacity_vs_gmse.png" in html and "pareto.png" in html
