"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"): a ViT encodes a random 25% of an
image's patches, a light transformer decoder fills in the rest from mask tokens, and the loss is the
reconstruction error of the masked patches' (per-patch normalised) pixels. The encoder is the backbone."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn

from selfsup.errors import UserError
from selfsup.losses import mae_reconstruction
from selfsup.methods.base import METHODS, Method, Schedule
from selfsup.settings import BELOW_ONE, Flag, PositiveInt

MaskRatio = Annotated[float, BELOW_ONE]


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[n, c, H, W] -> [n, L, patch * patch * c]: patches in row-major order, each flattened as (row, column,
    channel), MAE's layout."""
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"images of {h}x{w} px do not split into {patch}-px patches")
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """The inverse of `patchify` for [height, width]-px images."""
    n, length, size = patches.shape
    c = size // (patch * patch)
    rows, cols = height // patch, width // patch
    if rows * cols != length or c * patch * patch != size:
        raise ValueError(f"{length} patches of {size} values are not {height}x{width} px in {patch}-px patches")
    x = patches.reshape(n, rows, cols, patch, patch, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, height, width)


def random_masking(n: int, length: int, ratio: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """MAE's per-sample random masking by argsort of uniform noise: (ids_keep [n, keep], the indices of the
    visible patches in the order the encoder sees them; mask [n, length], 1 where masked, in image order;
    ids_restore [n, length], which puts the [visible, masked] sequence back in image order)."""
    keep = int(length * (1 - ratio))
    noise = torch.rand(n, length, device=device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    # 0 for the first `keep` of the shuffled order, 1 after; built on the device (no host value per step)
    shuffled = (torch.arange(length, device=device) >= keep).float().expand(n, length)
    return ids_shuffle[:, :keep], shuffled.gather(1, ids_restore), ids_restore


def sincos_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """[rows * cols, dim] fixed 2-D sine-cosine position embedding (MAE's decoder): half the channels encode
    the row, half the column, each as sines and cosines of geometric frequencies."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    parts = []
    for positions in (ys.flatten(), xs.flatten()):
        angles = positions[:, None].double() * omega[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


@METHODS.register("mae")
class MAE(Method):
    """Defaults: the paper's (mask 75%, decoder 8 blocks of width 512 with 16 heads, normalised-pixel
    targets). The backbone must be a timm ViT (backbone=vit_tiny|vit_small|vit_base): MAE encodes a subset
    of its patch tokens."""

    num_views = 1

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        mask_ratio: MaskRatio = 0.75,
        decoder_dim: PositiveInt = 512,
        decoder_depth: PositiveInt = 8,
        decoder_heads: PositiveInt = 16,
        norm_pix_loss: Flag = True,
    ) -> None:
        if not all(hasattr(backbone, a) for a in ("patch_embed", "_pos_embed", "blocks", "norm", "num_prefix_tokens")):
            raise UserError(
                f"MAE encodes a ViT's patch tokens; {type(backbone).__name__} is not a timm ViT: "
                "set backbone=vit_tiny, vit_small or vit_base"
            )
        super().__init__(backbone, feature_dim)
        from timm.models.vision_transformer import Block

        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.patch = int(backbone.patch_embed.patch_size[0])
        rows, cols = backbone.patch_embed.grid_size
        width = int(backbone.embed_dim)
        self.decoder_embed = nn.Linear(width, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("decoder_pos_embed", sincos_2d(rows, cols, decoder_dim)[None], persistent=False)
        self.decoder_blocks = nn.Sequential(
            *(Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth))
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * 3)

    def encode(self, images: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """The ViT on the visible patches: [n, prefix + keep, width] (position embeddings added before the
        masking, as in MAE), layer-normalised as the decoder expects. A mean-pooling timm ViT keeps that final
        LayerNorm after its pooling (`fc_norm`, with `norm` an identity), so then `fc_norm` normalises each token."""
        vit = self.backbone
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        prefix = vit.num_prefix_tokens
        visible = x[:, prefix:].gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        norm = vit.fc_norm if isinstance(vit.norm, nn.Identity) else vit.norm
        return norm(vit.blocks(torch.cat([x[:, :prefix], visible], dim=1)))

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of every patch, [n, L, patch * patch * 3], from the visible tokens and mask tokens."""
        prefix = self.backbone.num_prefix_tokens
        x = self.decoder_embed(latent)
        visible = x[:, prefix:]
        masked = self.mask_token.expand(x.shape[0], ids_restore.shape[1] - visible.shape[1], -1)
        patches = torch.cat([visible, masked.to(visible.dtype)], dim=1)
        patches = patches.gather(1, ids_restore[..., None].expand(-1, -1, x.shape[-1])) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(torch.cat([x[:, :prefix], patches], dim=1)))
        return self.decoder_pred(x[:, prefix:])

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        images = views[0]
        length = self.decoder_pos_embed.shape[1]
        if images.shape[-2] * images.shape[-1] != length * self.patch**2:
            raise ValueError(f"MAE was built for {length} patches; images of {tuple(images.shape[-2:])} px differ")
        ids_keep, mask, ids_restore = random_masking(images.shape[0], length, self.mask_ratio, images.device)
        pred = self.decode(self.encode(images, ids_keep), ids_restore)
        loss = mae_reconstruction(pred, patchify(images, self.patch), mask, self.norm_pix_loss)
        return {"loss": loss}
