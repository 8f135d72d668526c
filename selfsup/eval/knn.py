"""Weighted cosine k-nearest-neighbour classifier on frozen features.

The monitor used by InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination") and by the SimCLR / MoCo CIFAR demos: it needs no training, so it can score every
checkpoint cheaply. Each test feature votes with its k most cosine-similar training features, each vote
weighted by exp(similarity / T).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import UserError
from selfsup.settings import POSITIVE, POSITIVE_INT, Declaration

KNN_SETTINGS: Declaration = {"k": POSITIVE_INT, "temperature": POSITIVE}  # weighted kNN (Wu et al. 2018)


def check_labeled_features(task: str, split: str, feats: Tensor, labels: Tensor, num_classes: int) -> None:
    """Features of a split as [N, D] with N >= 1 and one label each in [0, num_classes); kNN and the
    linear probe share this so both refuse the same bad input with the same words."""
    if feats.ndim != 2:
        raise UserError(
            f"{task} needs 2-D features of equal width; got {split} {tuple(feats.shape)}: pass features as [N, D]"
        )
    if feats.shape[0] == 0 or labels.shape != (feats.shape[0],):
        raise UserError(
            f"{task} needs a non-empty {split} set with one label per feature; got "
            f"{feats.shape[0]} features and labels of shape {tuple(labels.shape)}"
        )
    if num_classes < 1 or labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(
            f"{task} {split} labels must lie in [0, {num_classes}); got range "
            f"[{int(labels.min())}, {int(labels.max())}]: use labelled splits (a labelled {split} split here)"
        )


def check_same_width(task: str, train_feats: Tensor, test_feats: Tensor) -> None:
    if test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise UserError(
            f"{task} needs 2-D features of equal width; got train {tuple(train_feats.shape)} and "
            f"test {tuple(test_feats.shape)}: pass features as [N, D] tensors"
        )


def used_k(k: int, bank_size: int) -> int:
    """The neighbours that vote: `k`, clamped to the train set (what a result records as its k)."""
    return min(k, bank_size)


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores [N_test, num_classes] (float32, on the train features' device) for each test feature.

    Features are L2-normalised, so the dot product is the cosine similarity. The test set is processed
    `chunk_size` rows at a time so the similarity matrix never exceeds chunk_size x N_train.
    `k` is clamped to the train-set size.
    """
    if k < 1 or temperature <= 0:
        raise UserError(f"kNN needs k >= 1 and temperature > 0; got k={k}, temperature={temperature}")
    check_labeled_features("kNN", "train", train_feats, train_labels, num_classes)
    check_same_width("kNN", train_feats, test_feats)
    device = train_feats.device
    bank = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    k = used_k(k, bank.shape[0])
    scores = torch.zeros(test_feats.shape[0], num_classes, device=device)
    for start in range(0, test_feats.shape[0], chunk_size):
        query = F.normalize(test_feats[start : start + chunk_size].to(device).float(), dim=1)
        sim, idx = (query @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        scores[start : start + query.shape[0]].scatter_add_(1, labels[idx], weights)
    return scores


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent of the weighted kNN classifier, and the k that voted (`k` clamped
    to the train set, so that a result records the k it used).

    Top-5 uses min(5, num_classes) guesses, so it is defined (and 100%) for datasets with fewer classes.
    """
    check_labeled_features("kNN", "test", test_feats, test_labels, num_classes)
    scores = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature)
    return {**topk_accuracy(scores, test_labels), "k": used_k(k, train_feats.shape[0])}


def topk_accuracy(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1 and top-min(5, C) accuracy in percent from class scores [N, C] and labels [N]."""
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hits = top == labels.to(top.device, torch.long)[:, None]
    n = hits.shape[0]
    return {"top1": 100.0 * hits[:, 0].sum().item() / n, "top5": 100.0 * hits.any(1).sum().item() / n}
