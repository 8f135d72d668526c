"""Projection / prediction heads shared by the methods."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a Linear: the projector of SimCLR (2 layers) and BYOL/SimSiam heads.

    `last_bn` adds a BatchNorm on the output (SimSiam's projector, Barlow Twins)."""
    if num_layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, section 3.1 and appendix): a 3-layer MLP with GELU
    (hidden 2048, bottleneck 256), L2 normalisation, then a weight-normalised linear layer to `out_dim`
    prototypes whose norms are fixed to 1 when `norm_last_layer`."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def upsampling_plan(size: int) -> tuple[int, int]:
    """(start side, number of x2 upsamplings) with start * 2**n == size and start <= 7 where possible."""
    start, ups = size, 0
    while start % 2 == 0 and start > 7:
        start //= 2
        ups += 1
    return start, ups


class ConvDecoder(nn.Module):
    """The beta-VAE's decoder: a linear map of z to a [channels, s, s] grid, then transposed-conv x2
    upsamplings (BN, ReLU), halving the channels each time (at least 32), to a 3 x size x size image."""

    def __init__(self, latent_dim: int, size: int, channels: int = 256) -> None:
        super().__init__()
        start, ups = upsampling_plan(size)
        self.start, self.channels = start, channels
        self.fc = nn.Linear(latent_dim, channels * start * start)
        blocks: list[nn.Module] = []
        c = channels
        for _ in range(ups):
            out = max(32, c // 2)
            blocks += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        blocks.append(nn.Conv2d(c, 3, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(z)).view(-1, self.channels, self.start, self.start)
        return self.net(h)
