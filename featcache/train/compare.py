"""Leaderboard of backbones x heads on one store: which frozen backbone suits this data best.

Every complete feature configuration in the store is tried with every requested head (default
parameters); incomplete ones are listed as skipped with the reason. Ranked by validation accuracy,
then validation loss: the test split never decides a rank.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import FeatcacheError
from ..heads import make_head
from ..progress import progress_bar
from ..stores import open_store
from .fit import fit_on_data, load_training_data
from .metrics import write_leaderboard


@dataclass
class CompareEntry:
    key: str
    backbone: str
    head: str
    val_accuracy: float | None
    val_loss: float | None
    test_accuracy: float | None
    fit_seconds: float
    images_per_s: float | None  # extraction speed, from the store's stats
    feature_dim: int
    run_dir: str | None = None


@dataclass
class CompareResult:
    store: str
    entries: list[CompareEntry]  # best first
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why
    out: str | None = None

    def rows(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    def to_dict(self) -> dict:
        return {"store": self.store, "leaderboard": self.rows(), "skipped": self.skipped, "out": self.out}


def rank_key(e: CompareEntry) -> tuple:
    """Validation accuracy, then validation loss, then fit time: the test split never decides a rank."""
    return (-(e.val_accuracy or 0.0), e.val_loss if e.val_loss is not None else float("inf"), e.fit_seconds)


def compare(store: str | Path, heads: tuple[str, ...] | list[str] = ("logreg",), out: str | Path | None = None,
            backbones: list[str] | None = None, seed: int = 0, progress: bool = True) -> CompareResult:
    """Fit each head on each feature config (all in the store unless ``backbones`` narrows it).

    With ``out``: ``compare.csv``, ``compare.json``, ``compare.png`` and one run folder per entry
    under ``out/runs/``.
    """
    heads = list(heads) or ["logreg"]
    for h in heads:
        make_head(h)  # an unknown head: fail before any work
    with open_store(store) as st:
        keys = [st.resolve_key(b) for b in backbones] if backbones else st.keys()
        path = str(Path(st.path).resolve())
    if not keys:
        raise FeatcacheError(f"{path} holds no features yet; run `featcache extract` first")
    out_dir = Path(out).expanduser().resolve() if out is not None else None
    entries, skipped = [], {}
    bar = progress_bar(total=len(keys) * len(heads), desc="compare", unit="fit", enabled=progress)
    try:
        for key in keys:
            try:
                data = load_training_data(path, [key], seed)
            except FeatcacheError as exc:  # e.g. incomplete features: report, keep comparing the rest
                skipped[key] = str(exc)
                bar.update(len(heads))
                continue
            for head in heads:
                run = out_dir / "runs" / f"{key}--{head}" if out_dir else None
                r = fit_on_data(data, make_head(head, seed=seed), out=run, progress=False)
                entries.append(CompareEntry(
                    key=key, backbone=data.configs[0].backbone.name, head=head,
                    val_accuracy=r.val_accuracy, val_loss=r.val.log_loss if r.val else None,
                    test_accuracy=r.test_accuracy,
                    fit_seconds=round(r.fit_seconds, 3), images_per_s=data.stats.get(key, {}).get("images_per_s"),
                    feature_dim=data.input_dim, run_dir=r.run_dir))
                bar.update(1)
    finally:
        bar.close()
    if not entries:
        raise FeatcacheError("no feature config could be compared: " +
                             "; ".join(f"{k}: {why}" for k, why in skipped.items()))
    entries.sort(key=rank_key)
    result = CompareResult(path, entries, skipped, str(out_dir) if out_dir else None)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def write_outputs(result: CompareResult, out: Path) -> None:
    write_leaderboard(result.rows(), out / "compare.csv", out / "compare.json", result.to_dict())
    plot_leaderboard(result, out / "compare.png")


def plot_leaderboard(result: CompareResult, path: Path) -> Path:
    """Horizontal bars of validation and test accuracy per (backbone config, head)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    entries = result.entries[::-1]  # best at the top
    labels = [f"{e.key} / {e.head}" for e in entries]
    y = np.arange(len(entries))
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.45 * len(entries)))
    ax.barh(y + 0.2, [e.val_accuracy or 0 for e in entries], 0.4, label="validation")
    ax.barh(y - 0.2, [e.test_accuracy or 0 for e in entries], 0.4, label="test")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title("featcache compare")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["CompareEntry", "CompareResult", "compare"]
