"""What a run writes besides checkpoints: TensorBoard scalars, a metrics log, a loss-curve PNG, a summary."""

from __future__ import annotations

import json
from pathlib import Path

from tensorboardX import SummaryWriter


class RunLogger:
    """Scalars to TensorBoard (`WORKDIR/tb`) and to `WORKDIR/metrics.jsonl` (kept across resumes)."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.tb_dir = self.workdir / "tb"
        self.path = self.workdir / "metrics.jsonl"
        self.history = read_history(self.path)
        self._writer = SummaryWriter(str(self.tb_dir))
        self._file = self.path.open("a")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            tag = name if "/" in name else f"train/{name}"
            self._writer.add_scalar(tag, value, step)
        record = {"step": step, **scalars}
        self.history.append(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def last(self, key: str) -> float | None:
        return next((r[key] for r in reversed(self.history) if key in r), None)

    def close(self) -> None:
        self._writer.close()
        self._file.close()


def read_history(path: Path) -> list[dict]:
    """Parse metrics.jsonl, skipping a final line cut short by a killed process."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def loss_series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of `key`, the latest record winning where a resumed run logged a step again."""
    by_step = {r["step"]: r[key] for r in records if key in r}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def plot_loss_curve(workdir: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_history(Path(workdir) / "metrics.jsonl")
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "train loss"), ("eval/loss", "held-out loss")):
        steps, values = loss_series(records, key)
        if steps:
            ax.plot(steps, values, label=label, marker="o" if key != "loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(workdir) / "loss_curve.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def first_value(workdir: Path, key: str) -> float | None:
    steps, values = loss_series(read_history(Path(workdir) / "metrics.jsonl"), key)
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
