"""Linear probe: a single linear layer trained on cached frozen features.

The standard linear-evaluation protocol (e.g. MoCo, SimCLR): SGD with momentum, cross-entropy, a cosine
learning-rate schedule decayed to `final_lr` (0 by default) over all steps, and the linear lr-scaling rule
lr = base_lr * batch_size / 256. Training on cached features instead of images makes a probe cost seconds,
so every checkpoint can be probed.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from selfsup.errors import UserError
from selfsup.eval.knn import check_labeled_features, check_same_width, topk_accuracy
from selfsup.settings import MOMENTUM, NON_NEGATIVE, POSITIVE, POSITIVE_INT, Declaration, one_of

NORMALIZE_OPTIONS = ("true", "false", "batchnorm")

LINEAR_SETTINGS: Declaration = {
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "lr": POSITIVE,  # x batch_size / 256
    "final_lr": NON_NEGATIVE,
    "momentum": MOMENTUM,
    "weight_decay": NON_NEGATIVE,
    "normalize": one_of(*NORMALIZE_OPTIONS),  # train-set standardisation | raw | MAE's non-affine BatchNorm
}


def linear_classifier(in_dim: int, num_classes: int, generator: torch.Generator) -> torch.nn.Linear:
    """A Linear layer with MoCo's linear-eval init, N(0, 0.01) weights and zero bias, drawn from `generator`; the
    global RNG is left as it was (nn.Linear's own init would draw from it), so a probe trained alongside
    pretraining does not change the pretraining's random stream."""
    with torch.random.fork_rng(devices=[]):
        linear = torch.nn.Linear(in_dim, num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    return linear


def train_linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int = 90,
    batch_size: int = 256,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    normalize: bool | str = True,
    final_lr: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Train a linear classifier on frozen features and report test accuracy in percent.

    `lr` is the base lr for a batch of 256; the effective lr (lr * batch_size / 256) is returned under "lr".
    The cosine schedule ends at `final_lr` (absolute, not scaled): 0 as MoCo and solo-learn, 0.001 in some
    studies' protocols.
    `normalize=True` standardises every feature dimension with the train-set mean and std (applied to both
    splits). Frozen self-supervised features have arbitrary per-dimension offsets and scales (pooled
    post-ReLU activations are all positive, and their scale differs from method to method), which makes one
    fixed SGD lr too large for one backbone and too small for another. Standardising is what MoCo v3's
    non-affine BatchNorm before the classifier amounts to at test time, without its batch-statistic noise;
    `normalize="batchnorm"` is that BatchNorm itself (MAE's linear protocol, appendix A.2: BatchNorm1d without
    affine, eps 1e-6, batch statistics in training and their average over the training at test);
    `normalize=False` keeps raw features, as solo-learn does.

    Deterministic for a given seed on CPU: the weight init and every epoch's shuffle come from one
    torch.Generator. Returns top1, top5 (min(5, num_classes) guesses), train_loss (mean over the last
    epoch), epochs, lr (effective), base_lr and batch_size.
    """
    for split, feats, labels in (("train", train_feats, train_labels), ("test", test_feats, test_labels)):
        check_labeled_features("linear probe", split, feats, labels, num_classes)
    check_same_width("linear probe", train_feats, test_feats)
    if epochs < 1 or batch_size < 1 or lr <= 0 or not 0 <= final_lr <= lr * batch_size / 256:
        raise UserError(
            f"linear probe needs epochs >= 1, batch_size >= 1, lr > 0 and 0 <= final_lr <= the scaled lr; got "
            f"epochs={epochs}, batch_size={batch_size}, lr={lr}, final_lr={final_lr}"
        )

    x_train = train_feats.to(device, torch.float32)
    x_test = test_feats.to(device, torch.float32)
    y_train = train_labels.to(device, torch.long)
    mode = str(normalize).lower()  # True / "true" / "True" alike
    if mode not in NORMALIZE_OPTIONS:
        raise UserError(f"linear probe: normalize must be one of {' | '.join(NORMALIZE_OPTIONS)}, got {normalize!r}")
    if mode == "true":
        mean, std = x_train.mean(0), x_train.std(0, unbiased=False).clamp_min(1e-6)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    generator = torch.Generator().manual_seed(seed)
    linear = linear_classifier(x_train.shape[1], num_classes, generator)
    # momentum=None: the test-time statistics are the average over every training batch, not an exponential
    # average that a short probe (a few hundred steps) leaves far from the features' offset
    norm = torch.nn.BatchNorm1d(x_train.shape[1], affine=False, eps=1e-6, momentum=None)
    classifier = (torch.nn.Sequential(norm, linear) if mode == "batchnorm" else linear).to(device)
    effective_lr = lr * batch_size / 256
    optimizer = torch.optim.SGD(classifier.parameters(), lr=effective_lr, momentum=momentum, weight_decay=weight_decay)

    n = x_train.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    step = 0
    epoch_loss = 0.0
    bar = tqdm(range(epochs), desc="linear probe", disable=not progress)
    for _ in bar:
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            for group in optimizer.param_groups:
                cosine = 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
                group["lr"] = final_lr + (effective_lr - final_lr) * cosine
            loss = F.cross_entropy(classifier(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * idx.numel()
            step += 1
        epoch_loss = loss_sum.item() / n
        bar.set_postfix(loss=f"{epoch_loss:.4f}")

    with torch.no_grad():
        scores = torch.cat([classifier.eval()(chunk) for chunk in x_test.split(4096)])
    return {
        **topk_accuracy(scores, test_labels),
        "train_loss": epoch_loss,
        "epochs": epochs,
        "lr": effective_lr,
        "base_lr": lr,
        "batch_size": batch_size,
    }
