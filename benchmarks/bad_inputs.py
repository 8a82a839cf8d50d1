"""Tries bad inputs on every command, as a user or a damaged file would give them, and counts
how many are handled: exit status 2, one error message, no traceback, nothing executed, no
hang. Each case is one ``python -m capscale ...`` process in a scratch folder.

    python benchmarks/bad_inputs.py [--jobs 2] [--timeout 120] [--only fit,train] [--match TEXT] [-v]

Prints one line per case that is not handled, then the counts by command (the table in the
README's reliability section).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNS_CSV = "N,D,loss,format,seed\n" + "".join(
    f"{n},{n * k * 20},{1.8 + 400 * n ** -0.34 + 400 * (n * k * 20) ** -0.28:.5f},int4,0\n"
    for n in (1e6, 3e6, 1e7, 3e7) for k in (1, 2, 4))
TINY_TRAIN = ["--size", "30k", "--steps", "2", "--seq-len", "32", "--batch-tokens", "256",
              "--val-tokens", "256", "--tokenizer", "train:spm:512", "--no-progress"]
FIT = "builtin:chinchilla-epoch"  # a good fit, so that a wrongly accepted number shows
SPEC = '[grid]\nsize = ["30k"]\nformats = ["none"]\n[train]\nsteps = 2\n'


@dataclass
class Case:
    command: str
    what: str
    argv: list[str]
    expect: int = 2  # 0: an input that looks odd but is valid (must be accepted)
    sentinel: str | None = None  # a file whose existence means something was executed


def scratch_files(d: Path) -> None:
    """The damaged and hostile files the cases point at."""
    (d / "runs.csv").write_text(RUNS_CSV)
    (d / "nan.csv").write_text("N,D,loss\n1e6,1e9,nan\n2e6,2e9,2.9\n4e6,4e9,2.8\n")
    (d / "text.csv").write_text("N,D,loss\nbig,1e9,3\n1e6,1e9,3\n")
    (d / "empty.csv").write_text("")
    (d / "bad.parquet").write_bytes(b"PAR1 not really")
    (d / "table.xlsx").write_text("x")
    (d / "list.json").write_text("[1, 2, 3]")
    (d / "badfit.json").write_text("{")
    (d / "listfit.json").write_text("[]")
    (d / "bin.csv").write_bytes(b"\xff\xfe\x00N,D\n")
    fit = {"schema": "capscale.fit/1", "law_spec": {"name": "chinchilla"}}
    (d / "notheta.json").write_text(json.dumps(fit))
    (d / "strtheta.json").write_text(json.dumps({**fit, "theta": "abc"}))
    (d / "shorttheta.json").write_text(json.dumps({**fit, "theta": {"values": [1.0]}}))
    (d / "afile").write_text("x")
    for name, rec in (("listrun", "[1, 2]"), ("badrun", "{")):
        (d / name / "r1").mkdir(parents=True)
        (d / name / "r1" / "result.json").write_text(rec)
    (d / "norun").mkdir()
    (d / "foreign").mkdir()
    (d / "foreign" / "config.json").write_text('{"model_type": "bert"}')
    (d / "brokencfg").mkdir()
    (d / "brokencfg" / "config.json").write_text('{"config": {"lr": ')
    (d / "spec.toml").write_text(SPEC)
    (d / "bom.toml").write_bytes(b"\xef\xbb\xbf" + SPEC.encode())
    (d / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1") + SPEC.encode())
    (d / "bad.toml").write_text("[grid\nsize = ")
    (d / "unknown.toml").write_text(SPEC + "[trian]\nlr = 1\n")
    (d / "badlr.toml").write_text(SPEC.replace("steps = 2", "steps = 2\nlr = -1"))
    (d / "nl.toml").write_text(SPEC + '[slurm]\njob_name = "x\\ntouch PWNED"\n')
    (d / "part.toml").write_text(SPEC + '[slurm]\npartition = "gpu --wrap=touch PWNED"\n')
    (d / "badfmt.toml").write_text(SPEC.replace('["none"]', '["int99"]'))
    (d / "emptygrid.toml").write_text('[grid]\nsize = []\n')
    (d / "spec_dir.toml").mkdir()
    (d / "tokens3x.toml").write_text(SPEC.replace("steps = 2", 'tokens = "3X"'))
    (d / "negsize.toml").write_text(SPEC.replace('["30k"]', '["-30k"]'))
    (d / "batch8k.toml").write_text(SPEC.replace("steps = 2", 'steps = 2\nseq_len = 128\nbatch_tokens = "8k"'))


def cases() -> list[Case]:
    inj = "@pd.io.common.os.system('touch PWNED') == 0"
    c = [
        # fit: tables, mappings, expressions, numbers
        Case("fit", "--where runs Python (pandas' @ and attribute access)",
             ["fit", "runs.csv", "--where", inj], sentinel="PWNED"),
        Case("fit", "--where __import__", ["fit", "runs.csv", "--where",
                                           "__import__('os').system('touch PWNED') == 0"],
             sentinel="PWNED"),
        Case("fit", "--where dunder attribute", ["fit", "runs.csv", "--where", "N.__class__ == 1"]),
        Case("fit", "--where syntax error", ["fit", "runs.csv", "--where", "N >"]),
        Case("fit", "--where unknown column", ["fit", "runs.csv", "--where", "Q > 1"]),
        Case("fit", "--where selects nothing", ["fit", "runs.csv", "--where", "N > 1e20"]),
        Case("fit", "--where a text", ["fit", "runs.csv", "--where", "'abc'"]),
        Case("fit", "--where 1000 nested parentheses",
             ["fit", "runs.csv", "--where", "(" * 1000 + "N" + ")" * 1000]),
        Case("fit", "--derive runs Python", ["fit", "runs.csv", "--derive",
                                            "x=__import__('os').system('touch PWNED')"],
             sentinel="PWNED"),
        Case("fit", "--derive complex result", ["fit", "runs.csv", "--derive", "x=(-1)**0.5"]),
        Case("fit", "--derive empty name", ["fit", "runs.csv", "--derive", "=N*2"]),
        Case("fit", "--derive without '='", ["fit", "runs.csv", "--derive", "N*2"]),
        Case("fit", "--derive unknown function", ["fit", "runs.csv", "--derive", "x=eval(N)"]),
        Case("fit", "--derive of a text column", ["fit", "runs.csv", "--derive", "x=format*2"]),
        Case("fit", "--map one target twice", ["fit", "runs.csv", "--map", "loss=loss,loss=N"]),
        Case("fit", "--map missing column", ["fit", "runs.csv", "--map", "N=params"]),
        Case("fit", "--map without '='", ["fit", "runs.csv", "--map", "N"]),
        Case("fit", "--bootstrap -3", ["fit", "runs.csv", "--bootstrap", "-3"]),
        Case("fit", "--level 0", ["fit", "runs.csv", "--level", "0"]),
        Case("fit", "--level 1.5", ["fit", "runs.csv", "--level", "1.5"]),
        Case("fit", "--delta nan", ["fit", "runs.csv", "--delta", "nan"]),
        Case("fit", "--jobs 0", ["fit", "runs.csv", "--jobs", "0"]),
        Case("fit", "--max-starts 0", ["fit", "runs.csv", "--max-starts", "0"]),
        Case("fit", "--fix-L -1", ["fit", "runs.csv", "--law", "unified", "--fix-L", "-1"]),
        Case("fit", "unknown law", ["fit", "runs.csv", "--law", "kaplan2"]),
        Case("fit", "missing table", ["fit", "nope.csv"]),
        Case("fit", "empty CSV", ["fit", "empty.csv"]),
        Case("fit", "not a parquet file", ["fit", "bad.parquet"]),
        Case("fit", "unknown suffix", ["fit", "table.xlsx"]),
        Case("fit", "JSON list of numbers", ["fit", "list.json"]),
        Case("fit", "binary CSV", ["fit", "bin.csv"]),
        Case("fit", "NaN loss", ["fit", "nan.csv"]),
        Case("fit", "text in N", ["fit", "text.csv"]),
        Case("fit", "folder without runs", ["fit", "norun"]),
        Case("fit", "result.json holding a list", ["fit", "listrun"]),
        Case("fit", "result.json not JSON", ["fit", "badrun"]),
        Case("fit", "-o under a file", ["fit", "runs.csv", "--bootstrap", "0", "-o", "afile/fit.json"]),
        # predict / compare: fit files and numbers
        Case("predict", "fit JSON not JSON", ["predict", "badfit.json", "--n", "1e9", "--d", "1e10"]),
        Case("predict", "fit JSON a list", ["predict", "listfit.json", "--n", "1e9", "--d", "1e10"]),
        Case("predict", "fit JSON without theta", ["predict", "notheta.json", "--n", "1e9", "--d", "1e10"]),
        Case("predict", "fit JSON with a string theta", ["predict", "strtheta.json", "--n", "1e9", "--d", "1e10"]),
        Case("predict", "fit JSON with too few parameters", ["predict", "shorttheta.json", "--n", "1e9", "--d", "1e10"]),
        Case("predict", "missing fit", ["predict", "nope.json", "--n", "1e9", "--d", "1e10"]),
        Case("predict", "--n nan", ["predict", "notheta.json", "--n", "nan", "--d", "1e10"]),
        Case("predict", "--n -1", ["predict", "notheta.json", "--n", "-1", "--d", "1e10"]),
        Case("predict", "--d inf", ["predict", "notheta.json", "--n", "1e9", "--d", "inf"]),
        Case("predict", "--compute 0", ["predict", "notheta.json", "--compute", "0"]),
        Case("predict", "--level 0", ["predict", "notheta.json", "--n", "1e9", "--d", "1e9", "--level", "0"]),
        Case("predict", "--sparsity 1", ["predict", "notheta.json", "--n", "1e9", "--d", "1e9", "--sparsity", "1"]),
        Case("compare", "fit JSON a list", ["compare", "listfit.json", "int4"]),
        Case("compare", "missing fit", ["compare", "nope.json", "int4"]),
        Case("report", "missing source", ["report", "nope.csv", "-o", "rep"]),
        Case("report", "--bootstrap -1", ["report", "runs.csv", "-o", "rep", "--bootstrap", "-1"]),
        Case("report", "result.json holding a list", ["report", "listrun", "-o", "rep"]),
        Case("predict", "--n 1e400 (overflows a float)", ["predict", FIT, "--n", "1e400", "--d", "1e10"]),
        Case("predict", "--n 3X (unknown suffix)", ["predict", FIT, "--n", "3X", "--d", "1e10"]),
        Case("predict", "--n 1__000 (doubled separator)", ["predict", FIT, "--n", "1__000", "--d", "1e10"]),
        Case("predict", "--n 1e9 (valid, the good fit)", ["predict", FIT, "--n", "1e9", "--d", "20B"],
             expect=0),
        Case("predict", "--n '' (empty)", ["predict", FIT, "--n", "", "--d", "1e10"]),
        # gmse: format specs and shapes
        Case("gmse", "noise1e400", ["gmse", "noise1e400"]),
        Case("gmse", "noise0", ["gmse", "noise0"]),
        Case("gmse", "sparse1.5", ["gmse", "sparse1.5"]),
        Case("gmse", "int0", ["gmse", "int0"]),
        Case("gmse", "int99", ["gmse", "int99"]),
        Case("gmse", "fp4:g0", ["gmse", "fp4:g0"]),
        Case("gmse", "unknown format", ["gmse", "int4x"]),
        Case("gmse", "empty spec", ["gmse", ""]),
        Case("gmse", "'+' alone", ["gmse", "+"]),
        Case("gmse", "--shape 0x5", ["gmse", "int4", "--shape", "0x5"]),
        Case("gmse", "--shape abc", ["gmse", "int4", "--shape", "abc"]),
        Case("gmse", "--rel-err 0", ["gmse", "int4", "--rel-err", "0"]),
        Case("gmse", "--rel-err nan", ["gmse", "int4", "--rel-err", "nan"]),
        Case("gmse", "groups of 128 over 64 columns", ["gmse", "int4:g128", "--shape", "4x64"]),
        Case("gmse", "sparse0.1 --shape 64x256 (hung)", ["gmse", "sparse0.1", "--shape", "64x256"], expect=0),
        Case("gmse", "outliers0.5+int4 --shape 1x2 (hung)", ["gmse", "outliers0.5+int4", "--shape", "1x2"], expect=0),
        Case("gmse", "-o under a file", ["gmse", "int4", "-o", "afile/x.csv"]),
        # train: numbers, shapes, folders
        Case("train", "--grad-clip -1", ["train", *TINY_TRAIN, "--grad-clip", "-1", "--out", "t"]),
        Case("train", "--eps 0", ["train", *TINY_TRAIN, "--eps", "0", "--out", "t"]),
        Case("train", "--weight-decay -1", ["train", *TINY_TRAIN, "--weight-decay", "-1", "--out", "t"]),
        Case("train", "--final-lr-frac 5", ["train", *TINY_TRAIN, "--final-lr-frac", "5", "--out", "t"]),
        Case("train", "--initial-lr-frac -1", ["train", *TINY_TRAIN, "--initial-lr-frac", "-1", "--out", "t"]),
        Case("train", "--lr nan", ["train", *TINY_TRAIN, "--lr", "nan", "--out", "t"]),
        Case("train", "--lr -0.1", ["train", *TINY_TRAIN, "--lr", "-0.1", "--out", "t"]),
        Case("train", "--beta2 1", ["train", *TINY_TRAIN, "--beta2", "1", "--out", "t"]),
        Case("train", "--trust-radius 0", ["train", *TINY_TRAIN, "--trust-radius", "0", "--out", "t"]),
        Case("train", "--sparse-p 2", ["train", *TINY_TRAIN, "--sparse-p", "2", "--out", "t"]),
        Case("train", "--val-fraction 1.5", ["train", *TINY_TRAIN, "--val-fraction", "1.5", "--out", "t"]),
        Case("train", "--warmup-frac 1", ["train", *TINY_TRAIN, "--warmup-frac", "1", "--out", "t"]),
        Case("train", "--tokens 1e30", ["train", "--size", "30k", "--tokens", "1e30", "--out", "t"]),
        Case("train", "--tokens-per-param inf", ["train", "--size", "30k", "--tokens-per-param", "inf", "--out", "t"]),
        Case("train", "--tokens -3B", ["train", "--size", "30k", "--tokens", "-3B", "--out", "t"]),
        Case("train", "--tokens 3X (unknown suffix)", ["train", "--size", "30k", "--tokens", "3X", "--out", "t"]),
        Case("train", "--tokens 1e400", ["train", "--size", "30k", "--tokens", "1e400", "--out", "t"]),
        Case("train", "--size 3Bi (no such suffix)", ["train", "--size", "3Bi", "--out", "t"]),
        Case("train", "--steps 2.5 (not whole)", ["train", *TINY_TRAIN, "--steps", "2.5", "--out", "t"]),
        Case("train", "--batch-tokens 8k with --seq-len 128 (8Ki meant)",
             ["train", *TINY_TRAIN, "--seq-len", "128", "--batch-tokens", "8k", "--out", "t"]),
        Case("train", "--batch-tokens 8Ki with --seq-len 128 (valid)",
             ["train", *TINY_TRAIN, "--seq-len", "128", "--batch-tokens", "8Ki", "--steps", "1",
              "--out", "t"], expect=0),
        Case("train", "--seq-len 32k_ (trailing separator)", ["train", *TINY_TRAIN, "--seq-len", "32_", "--out", "t"]),
        Case("train", "--seq-len 0", ["train", *TINY_TRAIN, "--seq-len", "0", "--out", "t"]),
        Case("train", "--batch-tokens not a multiple", ["train", *TINY_TRAIN, "--batch-tokens", "100", "--out", "t"]),
        Case("train", "--keep-checkpoints 0", ["train", *TINY_TRAIN, "--keep-checkpoints", "0", "--out", "t"]),
        Case("train", "nvfp4 at width 24 (wrote config.json)",
             ["train", *TINY_TRAIN[2:], "--n-layer", "1", "--n-embd", "24", "--n-head", "2", "--w", "nvfp4",
              "--out", "t"]),
        Case("train", "unknown format", ["train", *TINY_TRAIN, "--w", "int4x", "--out", "t"]),
        Case("train", "--grad lsq on vq", ["train", *TINY_TRAIN, "--w", "vq2:b4", "--grad", "lsq", "--out", "t"]),
        Case("train", "--out on a file", ["train", *TINY_TRAIN, "--out", "afile"]),
        Case("train", "--out with a foreign config.json", ["train", *TINY_TRAIN, "--out", "foreign"]),
        Case("train", "--resume on a broken config.json", ["train", *TINY_TRAIN, "--out", "brokencfg", "--resume"]),
        Case("train", "--out under a file", ["train", *TINY_TRAIN, "--out", "afile/run"]),
        # sweep: spec files and launchers
        Case("sweep", "missing spec", ["sweep", "nope.toml", "--dry-run"]),
        Case("sweep", "spec is a folder", ["sweep", "spec_dir.toml", "--dry-run"]),
        Case("sweep", "invalid TOML", ["sweep", "bad.toml", "--dry-run"]),
        Case("sweep", "not UTF-8", ["sweep", "latin1.toml", "--dry-run"]),
        Case("sweep", "unknown table", ["sweep", "unknown.toml", "--dry-run"]),
        Case("sweep", "negative lr", ["sweep", "badlr.toml", "--dry-run"]),
        Case("sweep", "bad format in the grid", ["sweep", "badfmt.toml", "--dry-run"]),
        Case("sweep", "empty grid", ["sweep", "emptygrid.toml", "--dry-run"]),
        Case("sweep", "newline in job_name (shell injection)",
             ["sweep", "nl.toml", "--launcher", "slurm", "--sbatch", "-o", "sw"], sentinel="PWNED"),
        Case("sweep", "spaces in partition (option injection)",
             ["sweep", "part.toml", "--launcher", "slurm", "--sbatch", "-o", "sw"]),
        Case("sweep", "slurm without srun", ["sweep", "spec.toml", "--launcher", "slurm", "-o", "sw"]),
        Case("sweep", "tokens = \"3X\" in the spec", ["sweep", "tokens3x.toml", "--dry-run"]),
        Case("sweep", "size = \"-30k\" in the grid", ["sweep", "negsize.toml", "--dry-run"]),
        Case("sweep", "batch_tokens = \"8k\" with seq_len 128", ["sweep", "batch8k.toml", "--dry-run"]),
        Case("sweep", "--jobs 0", ["sweep", "spec.toml", "--jobs", "0", "--dry-run"]),
        Case("sweep", "--gpus-per-run -1", ["sweep", "spec.toml", "--gpus-per-run", "-1", "--dry-run"]),
        Case("sweep", "unknown launcher", ["sweep", "spec.toml", "--launcher", "k8s", "--dry-run"]),
        Case("sweep", "-o on a file", ["sweep", "spec.toml", "-o", "afile", "--collect"]),
        Case("sweep", "byte-order mark in the TOML", ["sweep", "bom.toml", "--dry-run"], expect=0),
        # data
        Case("data", "--val-fraction 2", ["data", "prepare", "--val-fraction", "2"]),
        Case("data", "unknown tokenizer", ["data", "prepare", "--tokenizer", "nosuch:tok"]),
        Case("data", "missing text file", ["data", "prepare", "--data", "nope.txt"]),
    ]
    return c


def run_case(case: Case, timeout: float) -> tuple[Case, str, float]:
    """(case, outcome, seconds): outcome "handled" or why not."""
    with tempfile.TemporaryDirectory(prefix="capscale-bad-") as tmp:
        d = Path(tmp)
        scratch_files(d)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
               "PATH": "/usr/bin:/bin",  # no sbatch/srun here
               "CAPSCALE_CACHE": os.environ.get("CAPSCALE_CACHE", str(Path(tmp) / "cache"))}
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, "-m", "capscale", *case.argv], cwd=d, env=env,
                               capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return case, f"hang (no answer in {timeout:g} s)", time.perf_counter() - t0
        dt = time.perf_counter() - t0
        if case.sentinel and (d / case.sentinel).exists():
            return case, "EXECUTED the input", dt
        err = p.stderr
        if "Traceback" in err:
            last = [line for line in err.splitlines() if line.strip()][-1]
            return case, f"traceback ({last[:100]})", dt
        if p.returncode != case.expect:
            if case.expect == 2 and p.returncode == 0:
                return case, "accepted", dt
            return case, f"exit {p.returncode} (expected {case.expect})", dt
        if case.expect == 2:
            errors = [line for line in err.splitlines() if "error:" in line]
            if len(errors) != 1:
                return case, f"{len(errors)} error lines", dt
        if case.argv[0] == "train" and case.expect == 2:
            for name in ("t", "afile/run"):
                if (d / name / "config.json").exists():
                    return case, "refused but wrote a run folder", dt
        return case, "handled", dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--only", help="commands to try, comma-separated")
    ap.add_argument("--match", help="only the cases whose description holds this text")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    todo = [c for c in cases() if (not args.only or c.command in args.only.split(","))
            and (not args.match or args.match in c.what)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_case(c, args.timeout), todo))
    by_command: dict[str, list[int]] = {}
    for case, outcome, dt in results:
        tally = by_command.setdefault(case.command, [0, 0])
        tally[0] += 1
        tally[1] += outcome == "handled"
        if outcome != "handled" or args.verbose:
            print(f"{case.command:<8} {case.what:<45} {outcome} ({dt:.1f} s)")
    print(f"\n{'command':<10} {'tried':>6} {'handled':>8} {'not handled':>12}")
    for command, (tried, ok) in by_command.items():
        print(f"{command:<10} {tried:>6} {ok:>8} {tried - ok:>12}")
    tried = sum(t for t, _ in by_command.values())
    ok = sum(h for _, h in by_command.values())
    print(f"{'all':<10} {tried:>6} {ok:>8} {tried - ok:>12}   ({time.perf_counter() - t0:.0f} s)")
    return 0 if ok == tried else 1


if __name__ == "__main__":
    sys.exit(main())
