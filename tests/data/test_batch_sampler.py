"""Batches: determinism, seeking and resuming, the rank-slicing identity, epoch coverage, and
the fixed validation windows. Token arrays of consecutive integers make every window's start
readable from its first token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.data import BatchSampler, val_batches, val_windows
from capscale.errors import CapscaleError


def ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint32)


def test_shapes_and_shift():
    s = BatchSampler(ramp(10_000), batch_size=4, seq_len=32, seed=0)
    x, y = s.batch(0)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    starts = x[:, 0]
    assert torch.equal(x, starts[:, None] + torch.arange(32))  # contiguous windows
    assert torch.equal(y, x + 1)  # next-token targets


def test_same_seed_same_batches_other_seed_others():
    a, b, c = (BatchSampler(ramp(50_000), 8, 64, seed=s) for s in (3, 3, 4))
    for i in (0, 1, 17):
        assert torch.equal(a.batch(i)[0], b.batch(i)[0])
    assert not torch.equal(a.batch(0)[0], c.batch(0)[0])


def test_seek_and_resume_are_exact():
    tokens = ramp(20_000)
    s = BatchSampler(tokens, 4, 50, seed=7)
    run = [next(s)[0] for _ in range(10)]
    for i in (0, 4, 9):
        assert torch.equal(run[i], s.batch(i)[0])
    state = BatchSampler(tokens, 4, 50, seed=7)
    for _ in range(6):
        next(state)
    saved = state.state_dict()
    resumed = BatchSampler(tokens, 4, 50, seed=7)
    resumed.load_state_dict(saved)
    assert resumed.step == 6 and torch.equal(next(resumed)[0], run[6])


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_split_the_global_batch_exactly(world):
    tokens = ramp(9_000)
    one = BatchSampler(tokens, batch_size=8, seq_len=40, seed=1)
    ranks = [BatchSampler(tokens, 8 // world, 40, seed=1, rank=r, world_size=world)
             for r in range(world)]
    for i in range(0, 60, 7):  # crosses several epochs (222 windows per epoch)
        x1, y1 = one.batch(i)
        parts = [r.batch(i) for r in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x1)
        assert torch.equal(torch.cat([p[1] for p in parts]), y1)
    # a run saved by one process resumes on two
    one.step = 5
    r0 = BatchSampler(tokens, 8 // world, 40, seed=1, rank=0, world_size=world)
    r0.load_state_dict(one.state_dict())
    assert torch.equal(next(r0)[0], one.batch(5)[0][: 8 // world])


def test_each_epoch_uses_every_window_once():
    n, t = 4_001, 20
    s = BatchSampler(ramp(n), 1, t, seed=2)  # batch 1 so that epochs end on batch edges
    m = s.windows_per_epoch
    assert m == (n - t) // t == 199
    epochs = [np.concatenate([s.global_starts(i) for i in range(e * m, (e + 1) * m)])
              for e in range(3)]
    for starts in epochs:
        shift = starts[0] % t
        assert np.all(starts % t == shift) and len(np.unique(starts)) == m
        assert starts.max() + t + 1 <= n
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])  # reshuffled
    assert s.epoch_of(m) == 1.0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 3_000), t=st.integers(1, 64), b=st.integers(1, 9),
       seed=st.integers(-5, 2**40), i=st.integers(0, 500))
def test_windows_stay_inside_the_tokens(n, t, b, seed, i):
    if n < 2 * t:
        with pytest.raises(CapscaleError, match="too few"):
            BatchSampler(ramp(n), b, t, seed)
        return
    s = BatchSampler(ramp(n), b, t, seed)
    starts = s.global_starts(i)
    assert starts.min() >= 0 and starts.max() + t + 1 <= n


def test_bad_arguments():
    with pytest.raises(CapscaleError, match="rank 2"):
        BatchSampler(ramp(100), 2, 8, rank=2, world_size=2)
    with pytest.raises(CapscaleError, match="1-D"):
        BatchSampler(np.zeros((4, 4)), 2, 2)
    s = BatchSampler(ramp(1_000), 4, 8, seed=0)
    with pytest.raises(CapscaleError, match="saved seed is 1"):
        s.load_state_dict({**s.state_dict(), "seed": 1})
    with pytest.raises(CapscaleError, match="global_batch_size"):
        s.load_state_dict({**s.state_dict(), "global_batch_size": 8})


def test_validation_windows_are_fixed_and_capped():
    tokens = ramp(1_000)
    a = list(val_batches(tokens, 4, 30))
    b = list(val_batches(tokens, 4, 30))
    assert len(a) == 9 and all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    xs = torch.cat([x for x, _ in a])
    assert xs.shape == (33, 30) and torch.equal(xs[:, 0], torch.arange(33) * 30)
    assert a[-1][0].shape == (1, 30)  # 33 windows = 8 full batches and one of 1
    assert torch.equal(torch.cat([y for _, y in a]), xs + 1)
    capped = torch.cat([x for x, _ in val_batches(tokens, 4, 30, max_tokens=200)])
    assert capped.numel() <= 200 and torch.equal(capped, xs[:6])
    assert val_windows(1_000, 30, 200) == 6
    with pytest.raises(CapscaleError, match="at least one window"):
        list(val_batches(tokens, 4, 30, max_tokens=10))


def test_validation_ranks_cover_the_windows_once():
    tokens = ramp(2_000)
    whole = torch.cat([x for x, _ in val_batches(tokens, 3, 16)])
    parts = [torch.cat([x for x, _ in val_batches(tokens, 3, 16, rank=r, world_size=3)])
             for r in range(3)]
    merged = torch.cat(parts)
    assert torch.equal(merged[merged[:, 0].argsort()], whole)


def test_works_on_a_token_cache(jsonl_corpus, cache):
    from capscale.data import prepare_tokens

    td = prepare_tokens(str(jsonl_corpus), "train:spm:512", cache_dir=cache, progress=False)
    x, y = BatchSampler(td.train, 2, 64, seed=0).batch(3)
    assert int(x.max()) < td.vocab_size
    text = td.decode(x[0].tolist())
    assert len(text) > 64 and text in td.decode(td.train[:].tolist())
