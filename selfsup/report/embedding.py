"""t-SNE maps of each run's test features, from the feature cache that kNN / linear evaluation writes
(`eval/<checkpoint>/features-<test_split>.pt`); a missing or outdated cache is made by a kNN evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from sklearn.manifold import TSNE

from selfsup.eval.offline import evaluate
from selfsup.report.collect import Run
from selfsup.report.plots import Plot, new_figure, save
from selfsup.runs.checkpoint import checkpoint_digest

MAX_POINTS = 2000
SEED = 0


def _current_cache(path: Path, checkpoint_file: Path) -> dict[str, Any] | None:
    """The cache when it was extracted from the checkpoint as it is now (`last.pt` moves while a run trains);
    a cache whose checkpoint file is gone is all there is, so it is used."""
    if not path.is_file():
        return None
    cached = torch.load(path, map_location="cpu", weights_only=True)
    extracted_from = cached.get("key", {}).get("checkpoint_sha256")
    return None if checkpoint_file.is_file() and extracted_from != checkpoint_digest(checkpoint_file) else cached


def load_test_features(run: Run, checkpoint: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features [N, D], labels [N], class names) of the run's test split at `checkpoint`, extracting them
    when needed; caches written before the names were stored give no names."""
    name = Path(checkpoint).stem
    path = run.path / "eval" / name / f"features-{run.test_split}.pt"
    cached = _current_cache(path, run.path / "checkpoints" / f"{name}.pt")
    if cached is None:
        evaluate("knn", run.path, checkpoint)
        cached = torch.load(path, map_location="cpu", weights_only=True)
    return cached["features"], cached["labels"], list(cached.get("classes", []))


def class_label(index: int, names: list[str]) -> str:
    """A legend entry: the class name when the dataset has one, else its index."""
    return names[index] if 0 <= index < len(names) and names[index] else str(index)


def tsne_points(features: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of at most MAX_POINTS features (a fixed random subset), L2-normalised as kNN compares them;
    fixed seeds and PCA initialisation make the map the same on every rerun."""
    if len(features) > MAX_POINTS:
        keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(SEED))[:MAX_POINTS].sort().values
        features, labels = features[keep], labels[keep]
    data = F.normalize(features.float(), dim=1).numpy()
    perplexity = min(30.0, (len(data) - 1) / 3)  # t-SNE needs perplexity < number of points
    points = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=SEED).fit_transform(data)
    return points, labels.numpy()


def embedding_plot(run: Run, checkpoint: str, out: Path) -> Plot:
    """`embedding-<run name>`: the t-SNE map coloured by class, a legend entry per class when they are few
    enough to tell apart by colour (20), a colour bar otherwise."""
    features, labels, names = load_test_features(run, checkpoint)
    points, labels = tsne_points(features, labels)
    classes = np.unique(labels)
    fig, (ax,) = new_figure(width=7.5, height=6.0)
    style = {"s": 6, "alpha": 0.8, "linewidths": 0}
    if len(classes) <= 20:
        palette = colormaps["tab10" if len(classes) <= 10 else "tab20"].colors
        for color, cls in zip(palette, classes, strict=False):
            mask = labels == cls
            ax.scatter(points[mask, 0], points[mask, 1], color=color, label=class_label(int(cls), names), **style)
        fig.legend(title="class", loc="outside right upper", fontsize="small", markerscale=2)
    else:
        fig.colorbar(ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="viridis", **style), ax=ax, label="class")
    ax.set(title=f"t-SNE of {run.label} test features ({checkpoint}, {len(points)} points)", xticks=[], yticks=[])
    return save(fig, out, f"embedding-{run.name}", f"t-SNE of the {run.test_split} features of {run.label}")
