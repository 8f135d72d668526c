"""Self-supervised losses as pure functions of tensors, importable alone.

Each loss computes in float32 whatever the autocast dtype, because the exponentials and
normalisations in these objectives lose too much precision in bf16/fp16."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    keys1: torch.Tensor | None = None,
    keys2: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1).

    z1[i] and z2[i] are the embeddings of two views of image i. Each of the 2n embeddings is an anchor
    whose positive is the other view of its image and whose negatives are the other 2N - 2 embeddings;
    the loss is the mean over anchors. Under data parallelism pass the embeddings gathered from all
    processes as keys1/keys2 ([N, d]) and this process's position in them as `offset`: averaging the
    per-process losses then equals the loss over the global batch.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent expects two [n, d] tensors of equal shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    keys1 = z1 if keys1 is None else keys1
    keys2 = z2 if keys2 is None else keys2
    n, total = z1.shape[0], keys1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    keys = F.normalize(torch.cat([keys1, keys2]).float(), dim=1)
    logits = anchors @ keys.T / temperature
    local = torch.arange(n, device=z1.device) + offset
    self_index = torch.cat([local, local + total])
    positive_index = torch.cat([local + total, local])
    rows = torch.arange(2 * n, device=z1.device)
    logits[rows, self_index] = float("-inf")
    return F.cross_entropy(logits, positive_index)
