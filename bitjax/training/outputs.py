"""What a run writes besides checkpoints: TensorBoard scalars, a metrics log, a loss-curve PNG, a summary; with
`log.wandb` the same scalars go to Weights & Biases too (bitjax.training.wandb_run).

On a bucket (a `gs://` workdir) nothing can be appended to: metrics.jsonl is rewritten whole (one object
upload, atomic there) and TensorBoard's event files, which tensorboardX writes with local file operations,
go to a local temporary directory and are copied up; both every `UPLOAD_SECONDS` and when the logger closes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from etils import epath
from tensorboardX import SummaryWriter

from bitjax.paths import is_remote, user_path, write_atomic
from bitjax.run.metrics import loss_series, read_history

UPLOAD_SECONDS = 60.0   # how stale a bucket's metrics.jsonl and tb/ may be while a run goes on


class RunLogger:
    """Scalars to TensorBoard (`WORKDIR/tb`) and to `WORKDIR/metrics.jsonl` (kept across resumes), and to a W&B
    run when one is given (anything with `log(step, scalars_by_tag)` and `close()`: a WandbRun)."""

    def __init__(self, workdir: epath.Path | str, wandb_run=None):
        self.workdir = user_path(workdir, "workdir")
        self.tb_dir = self.workdir / "tb"
        self.path = self.workdir / "metrics.jsonl"
        self.history = read_history(self.path)
        self._remote = is_remote(self.workdir)
        self._tb_local = Path(tempfile.mkdtemp(prefix="bitjax-tb-")) if self._remote else Path(self.tb_dir)
        self._writer = SummaryWriter(str(self._tb_local))
        self._file = None if self._remote else self.path.open("a")
        self._uploaded = time.monotonic()
        self.wandb_run = wandb_run

    def log(self, step: int, scalars: dict[str, float]) -> None:
        tagged = {name if "/" in name else f"train/{name}": value for name, value in scalars.items()}
        for tag, value in tagged.items():
            self._writer.add_scalar(tag, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(step, tagged)
        record = {"step": step, **scalars}
        self.history.append(record)
        if self._file is None:
            if time.monotonic() - self._uploaded > UPLOAD_SECONDS:
                self._upload()
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def _upload(self) -> None:
        """Copy the whole metrics log and the event files to the bucket (objects are replaced whole)."""
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.history).encode())
        self._writer.flush()
        for event_file in sorted(self._tb_local.iterdir()):
            write_atomic(self.tb_dir / event_file.name, event_file.read_bytes())
        self._uploaded = time.monotonic()

    def last(self, key: str) -> float | None:
        return next((r[key] for r in reversed(self.history) if key in r), None)

    def close(self) -> None:
        self._writer.close()
        if self.wandb_run is not None:
            self.wandb_run.close()
        if self._file is None:
            self._upload()
            shutil.rmtree(self._tb_local, ignore_errors=True)
        else:
            self._file.close()


def plot_loss_curve(workdir: epath.Path, *, objectives: list[str] = (), task: str = "") -> epath.Path:
    """loss_curve.png: the training loss (named for the objectives it mixes), the held-out loss (next-token
    cross-entropy on held-out text) and, on a second axis, held-out accuracy on `task` when the run measures it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_history(user_path(workdir, "workdir") / "metrics.jsonl")
    fig, ax = plt.subplots(figsize=(7, 4))
    mix = " + ".join(objectives) or "loss"
    train_label = f"training loss ({mix}, weighted by source)" if len(objectives) > 1 else f"training loss ({mix})"
    lines = []
    for key, label in (("loss", train_label), ("eval/loss", "held-out cross-entropy")):
        steps, values = loss_series(records, key)
        if steps:
            lines += ax.plot(steps, values, label=label, marker="o" if key != "loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("nats/token")
    ax.grid(alpha=0.3)
    steps, values = loss_series(records, "eval/accuracy")
    if steps:
        acc = ax.twinx()
        lines += acc.plot(steps, [100 * v for v in values], color="tab:green", marker="s",
                          label=f"held-out accuracy, greedy ({task})")
        acc.set_ylabel("held-out accuracy (%)")
        acc.set_ylim(0, 100)
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8)
    out = user_path(workdir, "workdir") / "loss_curve.png"
    fig.tight_layout()
    with out.open("wb") as f:   # a file object: matplotlib opens paths with local file operations only
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out


def first_value(workdir: epath.Path, key: str) -> float | None:
    steps, values = loss_series(read_history(user_path(workdir, "workdir") / "metrics.jsonl"), key)
    return values[0] if values else None


def print_summary(summary: dict) -> None:
    width = max(len(k) for k in summary)
    print("\n" + "=" * 72)
    print(f"bitjax run '{summary.get('run')}' finished")
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        print(f"  {key:<{width}}  {value}")
    print("=" * 72, flush=True)
