"""Progress bar, TensorBoard and Weights & Biases, all on rank 0 and all optional.

TensorBoard and W&B are imported only when asked for; a missing package is a user error
with the command that installs it.
"""

from __future__ import annotations

import sys

from capscale.errors import CapscaleError


def check_available(tensorboard: bool, wandb_project: str | None) -> None:
    """Fail before a run starts, not after its folder is written, when a logger is missing."""
    import importlib.util

    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise CapscaleError("--tensorboard needs the tensorboard package: pip install tensorboard")
    if wandb_project and importlib.util.find_spec("wandb") is None:
        raise CapscaleError("--wandb needs the wandb package: pip install wandb")


class Monitor:
    def __init__(
        self,
        total_steps: int,
        start_step: int,
        enabled: bool,
        progress: bool,
        tensorboard_dir: str | None = None,
        wandb_project: str | None = None,
        wandb_config: dict | None = None,
        run_name: str | None = None,
    ):
        self.enabled = enabled
        self.bar = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                            file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise CapscaleError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
            self.tb = SummaryWriter(log_dir=tensorboard_dir)
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise CapscaleError("--wandb needs the wandb package: pip install wandb") from None
            self.wandb = wandb.init(project=wandb_project, name=run_name, config=wandb_config,
                                    resume="allow")

    def step(self, step: int, n: int = 1, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        scalars = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in scalars.items():
                if k != "step":
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)
