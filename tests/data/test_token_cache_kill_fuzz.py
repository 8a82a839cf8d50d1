"""Fault injection: `capscale data prepare` SIGKILLed at random moments of a token-cache build,
many times over. After every kill no half-written cache is visible under its final name (every
visible folder opens and verifies against its own hashes), and the build that finally
completes holds exactly the tokens of an uninterrupted build. Prints what it did."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from capscale.data import open_token_cache

pytest.importorskip("sentencepiece")
REPO = Path(__file__).resolve().parents[2]
TOK = "train:spm:512"


def _prepare(source: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "capscale", "data", "prepare", "--data",
                             str(source), "--tokenizer", TOK, "--cache-dir", str(cache),
                             "--quiet"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _visible(cache: Path) -> list[Path]:
    tokens = cache / "tokens"
    return [p for p in tokens.iterdir() if not p.name.startswith(".")] if tokens.is_dir() else []


@pytest.mark.slow
def test_random_sigkills_of_a_token_cache_build(jsonl_corpus, tmp_path, capsys):
    ref_cache = tmp_path / "reference"
    t0 = time.monotonic()
    proc = _prepare(jsonl_corpus, ref_cache)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    full_s = time.monotonic() - t0
    (ref_dir,) = _visible(ref_cache)
    ref = open_token_cache(ref_dir)

    rng = random.Random(int(os.environ.get("CAPSCALE_FUZZ_SEED", "11")))
    cache = tmp_path / "killed"
    starts = kills = mid_build = completed = 0
    for _ in range(int(os.environ.get("CAPSCALE_FUZZ_STARTS", "8"))):
        proc = _prepare(jsonl_corpus, cache)
        starts += 1
        time.sleep(rng.uniform(0.0, full_s))
        if proc.poll() is None:
            if any((cache / "tokens").glob(".*.tmp-*")):
                mid_build += 1
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode not in (0, -signal.SIGKILL):
            pytest.fail(proc.stderr.read().decode()[-2000:])
        for folder in _visible(cache):  # whatever carries a final name is whole
            open_token_cache(folder).verify()
            completed += 1
            shutil.rmtree(folder)  # so that the next start builds (and is killed) again
    # then a build that is left alone completes (sweeping any half-written folder)
    proc = _prepare(jsonl_corpus, cache)
    assert proc.wait(timeout=600) == 0
    (built_dir,) = _visible(cache)
    assert built_dir.name == ref_dir.name
    assert not list((cache / "tokens").glob(".*.tmp-*"))
    built = open_token_cache(built_dir)
    built.verify()
    np.testing.assert_array_equal(np.asarray(built.train), np.asarray(ref.train))
    np.testing.assert_array_equal(np.asarray(built.val), np.asarray(ref.val))
    assert built.meta["sha256"] == ref.meta["sha256"]
    assert (built_dir / "tokenizer.model").read_bytes() == (ref_dir / "tokenizer.model").read_bytes()
    assert kills >= 3 and mid_build >= 1, (kills, mid_build)
    with capsys.disabled():
        print(f"\n[fault injection] token cache: {starts} builds, {kills} SIGKILLs ({mid_build} "
              f"inside the build folder's writes, {completed} after the cache was complete; "
              f"uninterrupted build {full_s:.1f}s), tokens identical to an uninterrupted "
              "build, no half-written "
              "cache ever visible")
