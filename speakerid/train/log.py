"""What a training run records: per-epoch history, the curves PNG and the ``train.log`` handler."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from speakerid.fileio import atomic_path


@dataclass
class History:
    """Per-epoch curves; stored in every checkpoint so that a resumed run plots all epochs."""

    epoch: list[int] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)
    lr: list[float] = dataclasses.field(default_factory=list)
    dev_eer: list[float] = dataclasses.field(default_factory=list)
    dev_min_dcf: list[float] = dataclasses.field(default_factory=list)


def plot_curves(history: History, path: Path) -> None:
    """Loss, learning rate and dev EER per epoch in one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("training loss", history.loss), ("learning rate", history.lr)]
    if history.dev_eer:
        panels.append(("dev EER (%)", [100 * e for e in history.dev_eer]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        ax.plot(history.epoch[: len(values)], values, marker="o")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][1].set_yscale("log")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def train_logging(exp_dir: Path, is_main: bool) -> Iterator[None]:
    """Rank 0 logs INFO to the console and ``exp/train.log``; other ranks only warnings."""
    root = logging.getLogger("speakerid")
    old_level = root.level
    handler = None
    if is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
    else:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(old_level)
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
