import pytest
import torch

from capscale.train.schedule import lr_at


@pytest.mark.parametrize("total", [20, 37, 100, 11444])
def test_schedule_is_the_one_cycle_of_the_quest_runs(total):
    # llm-baselines / QuEST: OneCycleLR(max_lr=lr, pct_start=warmup/total, anneal "cos",
    # div_factor=1e2, final_div_factor=0.1, cycle_momentum=False), warmup = 10% of the steps
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    warm = int(0.1 * total)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1e-3, total_steps=total, pct_start=warm / total, anneal_strategy="cos",
        cycle_momentum=False, div_factor=1e2, final_div_factor=0.1)
    for step in range(total):
        assert lr_at(step, total, 1e-3) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


def test_schedule_endpoints_and_linear_warmup():
    assert lr_at(0, 1000, 1.0) == pytest.approx(0.01)
    assert lr_at(99, 1000, 1.0) == pytest.approx(1.0)
    assert lr_at(999, 1000, 1.0) == pytest.approx(0.1)
    assert lr_at(49, 1000, 1.0, warmup="linear") == pytest.approx(0.01 + 0.99 * 49 / 99)
    assert lr_at(0, 5, 1.0) == pytest.approx(1.0)  # no room for a warm-up: cosine from the peak
    assert lr_at(0, 1, 0.5) == 0.5
