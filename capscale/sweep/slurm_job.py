"""The job a SLURM submission runs (imported only when submitting: it needs submitit).

A ``Checkpointable`` job: when SLURM signals the end of the time limit (or a preemption),
submitit asks the job for its checkpoint, and this one answers with itself, so the job is
requeued and the run continues from its latest training checkpoint.
"""

from __future__ import annotations

import submitit

from capscale.sweep.worker import BUSY, run_worker


class RunJob(submitit.helpers.Checkpointable):
    def __call__(self, manifest: str, name: str, nproc: int) -> int:
        rc = run_worker(manifest, name, nproc)
        if rc not in (0, BUSY):
            raise RuntimeError(f"run {name} failed with exit status {rc}")
        return rc
