"""The SLURM launcher: the job-array script, and submission through submitit with a stand-in
``sbatch`` on PATH (it records the submission file and answers like SLURM does)."""

import json
import os
import stat
from pathlib import Path

import pytest

from capscale.sweep import run_sweep, spec_from_text
from capscale.sweep.slurm import job_parameters, sbatch_script, validate_slurm

SPEC = """
name = "cluster"
[grid]
size = ["30M", "50M"]
formats = ["none", "int4:had"]
[train]
tokenizer = "train:spm:512"
[launcher]
kind = "slurm"
gpus_per_run = 2
[slurm]
partition = "gpu"
account = "lab"
timeout_min = 90
array_parallelism = 3
mem_gb = 64
setup = ["module load cuda/12.4", "source .venv/bin/activate"]
additional = {exclusive = true, mail-type = "END"}
"""


def test_job_array_script(tmp_path):
    spec = spec_from_text(SPEC)
    names = [r.name for r in spec.runs]
    text = sbatch_script(spec.slurm, spec.name, tmp_path / "sweep.json", names, 2)
    lines = text.splitlines()
    for want in ("#SBATCH --array=0-3%3", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=16",
                 "#SBATCH --time=01:30:00", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 "#SBATCH --mem=64G", "#SBATCH --exclusive", "#SBATCH --mail-type=END",
                 "#SBATCH --nodes=1", "module load cuda/12.4"):
        assert want in lines, want
    runs_line = next(line for line in lines if line.startswith("RUNS=("))
    assert runs_line == "RUNS=(" + " ".join(names) + ")"
    worker = next(line for line in lines if "-m capscale.sweep.worker" in line)
    assert worker.endswith(f"-m capscale.sweep.worker {tmp_path / 'sweep.json'} "
                           '"${RUNS[$SLURM_ARRAY_TASK_ID]}" --nproc 2 &')
    assert text.index("module load") < text.index("RUNS=(")


def test_submitit_parameters():
    s = validate_slurm({"partition": "p", "qos": "high", "setup": ["x"]}, "t")
    p = job_parameters(s, "demo", 4)
    assert p == {"name": "capscale-demo", "timeout_min": 1440, "nodes": 1, "tasks_per_node": 1,
                 "gpus_per_node": 4, "cpus_per_task": 32, "slurm_partition": "p",
                 "slurm_qos": "high", "slurm_setup": ["x"]}


def test_dry_run_prints_the_job_description(tmp_path, capsys):
    spec = spec_from_text(SPEC)
    run_sweep(spec, tmp_path / "root", dry_run=True)
    out = capsys.readouterr().out
    assert "'slurm_partition': 'gpu'" in out and "#SBATCH --array=0-3%3" in out
    assert not (tmp_path / "root").exists()


def test_sbatch_flag_writes_the_script_and_manifest(tmp_path):
    spec = spec_from_text(SPEC)
    out = run_sweep(spec, tmp_path / "root", sbatch=True, quiet=True)
    script = tmp_path / "root" / "slurm" / "sweep.sbatch"
    assert script.exists() and "#SBATCH --array=0-3%3" in script.read_text()
    manifest = json.loads((tmp_path / "root" / "sweep.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == [r.name for r in spec.runs]
    assert set(out.status["status"]) == {"pending"}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "submitted"
    record.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\nn=$(ls {record} | wc -l)\ncp "$1" {record}/job$n.sh\n'
                  'echo "Submitted batch job $((4200 + n))"\n',
        "srun": "#!/bin/sh\nexit 0\n", "sacct": "#!/bin/sh\nexit 0\n",
        "squeue": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_submitit_submits_one_job_array(tmp_path, fake_slurm):
    spec = spec_from_text(SPEC)
    out = run_sweep(spec, tmp_path / "root", quiet=True)
    [script] = sorted(fake_slurm.iterdir())
    text = script.read_text()
    for want in ("#SBATCH --array=0-3%3", "#SBATCH --gpus-per-node=2", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --time=90", "#SBATCH --exclusive",
                 "module load cuda/12.4"):
        assert want in text, want
    assert [j.job_id for j in out.submitted] == [f"4200_{i}" for i in range(4)]
    jobs = json.loads((tmp_path / "root" / "slurm" / "jobs.json").read_text())
    ordered = [j["run"] for j in jobs]  # the longest runs first
    assert sorted(ordered) == sorted(r.name for r in spec.runs)
    assert all(n.startswith("50M") for n in ordered[:2])


def test_submitit_one_job_per_run(tmp_path, fake_slurm):
    text = SPEC.replace("array_parallelism = 3", "array = false")
    out = run_sweep(spec_from_text(text), tmp_path / "root", quiet=True)
    scripts = sorted(fake_slurm.iterdir())
    assert len(scripts) == 4 and all("--array" not in s.read_text() for s in scripts)
    assert sorted(j.job_id for j in out.submitted) == [str(4200 + i) for i in range(4)]


def test_missing_submitit_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from capscale.errors import CapscaleError

    real = builtins.__import__

    def no_submitit(name, *a, **k):
        if name.startswith("submitit"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(CapscaleError, match=r"pip install 'capscale\[slurm\]'"):
        run_sweep(spec_from_text(SPEC), tmp_path / "root", quiet=True)


def test_debug_cluster_runs_the_jobs(tmp_path):
    """submitit's debug executor runs the same job objects in this process: a real run."""
    pytest.importorskip("submitit")
    spec = spec_from_text("""
[grid]
size = ["30k"]
formats = ["none", "int4"]
[train]
tokenizer = "train:spm:512"
seq_len = 32
batch_tokens = 512
steps = 2
val_tokens = 1024
[slurm]
cluster = "debug"
""")
    out = run_sweep(spec, tmp_path / "root", launcher="slurm", wait=True, quiet=True)
    assert out.launched == {r.name: "finished" for r in spec.runs}
    assert set(out.status["status"]) == {"finished"}
    assert len(Path(out.runs_csv).read_text().splitlines()) == 3


TINY = """
name = "tiny"
[grid]
size = ["30k"]
formats = ["none", "int4"]
[train]
tokenizer = "train:spm:512"
seq_len = 64
batch_tokens = 1024
tokens_per_param = 10
[launcher]
kind = "slurm"
"""


def test_the_request_is_sized_from_the_cost_estimate(tmp_path):
    from capscale.sweep import cost
    from capscale.sweep.runner import _slurm_request

    tiny = spec_from_text(TINY)
    text = sbatch_script(_slurm_request(tiny), "tiny", tmp_path / "m.json", ["a", "b"], 1)
    assert "#SBATCH --time=00:15:00" in text  # runs of seconds: the 15-minute floor, not a day
    big = spec_from_text(SPEC.replace("timeout_min = 90\n", ""))
    est = cost.estimate(big)
    longest = max(est.hours_of(i) for i in range(len(big.runs)))
    minutes = _slurm_request(big)["timeout_min"]
    assert longest * 60 * 1.5 + 10 <= minutes < longest * 60 * 1.5 + 11
    assert _slurm_request(spec_from_text(SPEC))["timeout_min"] == 90  # the spec's own, kept


def test_sbatch_prebuilds_the_token_cache_and_warns_about_node_local_paths(tmp_path, monkeypatch,
                                                                           capsys):
    from capscale.sweep.slurm import node_local_paths

    assert node_local_paths(["/tmp/x", "/home/u/runs", "/dev/shm/c", "/tmpfoo"]) == [
        "/tmp/x", "/dev/shm/c"]
    cache = tmp_path / "cache"
    monkeypatch.setenv("CAPSCALE_CACHE", str(cache))
    spec = spec_from_text(TINY)
    run_sweep(spec, tmp_path / "root", sbatch=True, requeue=True)
    err = capsys.readouterr().err
    assert list((cache / "tokens").glob("builtin-wiki--train-spm-512--*"))  # built before submit
    if str(tmp_path).startswith("/tmp/"):
        assert "may be node-local" in err and str(tmp_path / "root") in err
    text = (tmp_path / "root" / "slurm" / "sweep.sbatch").read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@300" in text


FAKE_RUN = """#!/bin/bash
# stands in for the worker: trains until told to stop, then 'checkpoints' and exits 76
trap 'echo stopped > "$OUT/stopped"; exit 76' TERM
echo "$@" > "$OUT/args"
for i in $(seq 300); do sleep 0.1; done
exit 0
"""


@pytest.mark.parametrize("requeue", [True, False])
def test_the_script_passes_the_time_limit_signal_on_and_requeues(tmp_path, requeue):
    """The generated script under bash: SIGUSR1 to the batch shell (SLURM's --signal=B:USR1)
    reaches the run as SIGTERM; the run stops at a checkpoint (exit 76) and the task
    requeues itself with scontrol (with --requeue) or says how to resume."""
    import signal
    import subprocess
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(FAKE_RUN)
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" > "$OUT/scontrol"\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    slurm = validate_slurm({"python": str(fake)}, "t")
    script = tmp_path / "job.sh"
    script.write_text(sbatch_script(slurm, "x", tmp_path / "m.json", ["run-a", "run-b"], 0,
                                    requeue=requeue))
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1"}
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "args").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0
    assert (tmp_path / "stopped").exists()
    assert "run-b" in (tmp_path / "args").read_text()
    if requeue:
        assert (tmp_path / "scontrol").read_text().split() == ["requeue", "77_1"]
    else:
        assert not (tmp_path / "scontrol").exists() and "submit the sweep again" in out


def test_a_cpu_sized_sweep_asks_for_cpus_only(tmp_path, capsys):
    """Runs of minutes on one core get no GPU and two CPUs; a 30M-scale sweep keeps its GPU
    and eight CPUs per GPU (cost model: capscale.sweep.cost.cpu_seconds_of)."""
    from capscale.sweep import cost

    tiny = spec_from_text(TINY)
    assert cost.cpu_sized(tiny)
    run_sweep(tiny, tmp_path / "tiny", launcher="slurm", dry_run=True)
    out = capsys.readouterr().out
    assert "#SBATCH --gpus-per-node" not in out
    assert "#SBATCH --cpus-per-task=2" in out and "'gpus_per_node': 0" in out
    big = spec_from_text(SPEC.replace("gpus_per_run = 2\n", ""))
    assert not cost.cpu_sized(big)
    run_sweep(big, tmp_path / "big", launcher="slurm", dry_run=True)
    out = capsys.readouterr().out
    assert "#SBATCH --gpus-per-node=1" in out and "#SBATCH --cpus-per-task=8" in out
