"""MAE against lightly 1.6's MAE example (MaskedVisionTransformerTIMM around the same timm ViT, MAEDecoderTIMM,
random_token_mask, get_at_index / set_at_index, patchify, MSE on the masked patches), step by step: loss,
gradients, encoder and decoder, with raw and per-patch normalised pixel targets.

Differences, and how the comparison bridges them:
- The mask: both draw it by argsort of uniform noise. lightly's random_token_mask draws the mask of each step
  (seeded by the step) and selfsup's `random_masking` is replaced by one returning that same mask (the visible
  patches in lightly's order, the mask and the restoring permutation derived from lightly's indices).
- Encoder position embedding: lightly's MaskedVisionTransformerTIMM (as the MAE paper) fixes it to a 2-D sin-cos
  embedding by default; selfsup's MAE trains the ViT backbone's learnable timm embedding. lightly's is built with
  pos_embed_initialization="learn" here.
- Decoder position embedding: both are the fixed 2-D sin-cos embedding with a zero row for the CLS token
  (selfsup keeps that row out), but lightly's (and the official MAE's) first half of the channels encodes the
  column and the second the row; selfsup's the reverse (the same embedding of the transposed grid). The test
  checks this, then copies lightly's into selfsup's.
- lightly's example computes predictions of the masked tokens only; selfsup of every token, then averages the
  error over the masked ones: the same loss.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from selfsup.methods.base import Schedule
from selfsup.methods.mae import MAE
from tests.equivalence.harness import STEPS, Pair, Sides, held, random_views, require_lightly, sgd

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE, PATCH, WIDTH, BATCH, RATIO, LR = 16, 4, 16, 4, 0.75, 0.5
PATCHES = (SIZE // PATCH) ** 2
ONE_VIEW = random_views(batch=BATCH, sizes=(SIZE,))


def lightly_mask(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """lightly's (idx_keep, idx_mask) of `step`, over the CLS token and the patches (the CLS token kept first)."""
    from lightly.models.utils import random_token_mask

    torch.manual_seed(step)
    return random_token_mask((BATCH, PATCHES + 1), mask_ratio=RATIO)


def selfsup_mask(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lightly's mask of `step` as selfsup's `random_masking` returns one: (ids_keep, mask, ids_restore)."""
    idx_keep, idx_mask = lightly_mask(step)
    ids_keep, ids_masked = idx_keep[:, 1:] - 1, idx_mask - 1
    mask = torch.zeros(BATCH, PATCHES).scatter(1, ids_masked, 1.0)
    return ids_keep, mask, torch.cat([ids_keep, ids_masked], dim=1).argsort(dim=1)


def mae_sides(norm_pix: bool, monkeypatch: pytest.MonkeyPatch) -> Sides:
    """selfsup's MAE and lightly's example modules on one ViT, with identical SGDs."""
    from lightly.models import utils
    from lightly.models.modules import MaskedVisionTransformerTIMM
    from timm.models.vision_transformer import VisionTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # lightly 1.6 deprecates MAEDecoderTIMM for 1.7
        from lightly.models.modules import MAEDecoderTIMM

        torch.manual_seed(0)
        vit = VisionTransformer(
            img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=0
        )
        ours = MAE(copy.deepcopy(vit), WIDTH, mask_ratio=RATIO, decoder_dim=WIDTH, decoder_depth=1, decoder_heads=2,
                   norm_pix_loss=norm_pix)  # fmt: skip
        encoder = MaskedVisionTransformerTIMM(vit=vit, pos_embed_initialization="learn")
        decoder = MAEDecoderTIMM(
            num_patches=PATCHES, patch_size=PATCH, embed_dim=WIDTH, decoder_embed_dim=WIDTH, decoder_depth=1,
            decoder_num_heads=2,
        )  # fmt: skip
    half = WIDTH // 2
    swapped = torch.cat([ours.decoder_pos_embed[..., half:], ours.decoder_pos_embed[..., :half]], dim=-1)
    torch.testing.assert_close(swapped, decoder.decoder_pos_embed[:, 1:])
    assert not decoder.decoder_pos_embed[:, 0].any()
    monkeypatch.setattr("selfsup.methods.mae.random_masking", lambda *args, **kwargs: selfsup_mask(at["step"]))
    at = {"step": 0}

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        images = views[0]
        idx_keep, idx_mask = lightly_mask(step)
        x = decoder.embed(encoder.encode(images, idx_keep=idx_keep))
        tokens = utils.set_at_index(utils.repeat_token(decoder.mask_token, (BATCH, PATCHES + 1)), idx_keep, x)
        pred = decoder.predict(utils.get_at_index(decoder.decode(tokens), idx_mask))
        target = utils.get_at_index(utils.patchify(images, PATCH), idx_mask - 1)
        return F.mse_loss(pred, utils.normalize_mean_var(target) if norm_pix else target)

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        at["step"] = step
        return ours(views, Schedule(step, STEPS))["loss"]

    pairs = [
        Pair("encoder", ours.backbone, vit),
        Pair("decoder_embed", ours.decoder_embed, decoder.decoder_embed),
        Pair("mask_token", held(mask_token=ours.mask_token), held(mask_token=decoder.mask_token)),
        Pair("decoder_pos_embed", held(pos=ours.decoder_pos_embed), held(pos=decoder.decoder_pos_embed[:, 1:])),
        Pair("decoder_blocks", ours.decoder_blocks, decoder.decoder_blocks),
        Pair("decoder_norm", ours.decoder_norm, decoder.decoder_norm),
        Pair("decoder_pred", ours.decoder_pred, decoder.decoder_pred),
    ]
    for pair in pairs:  # LayerNorm epsilons are no tensors: compared here
        eps = [[m.eps for m in side.modules() if isinstance(m, nn.LayerNorm)] for side in (pair.selfsup, pair.lightly)]
        assert eps[0] == eps[1], f"{pair.name}: LayerNorm eps {eps[0]} vs lightly {eps[1]}"
    optimizers = (sgd(ours.parameters(), LR), sgd([*vit.parameters(), *decoder.parameters()], LR))
    return Sides(pairs, selfsup_loss, lightly_loss, optimizers)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_steps_equal_lightly(norm_pix: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss, gradients, encoder and decoder equal lightly's at each of STEPS SGD steps, on one mask per step."""
    require_lightly()
    losses = mae_sides(norm_pix, monkeypatch).lockstep(ONE_VIEW)
    assert len(set(losses)) == STEPS


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_mae_lockstep_fails_on_a_perturbed_loss(side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        mae_sides(True, monkeypatch).lockstep(ONE_VIEW, perturb=side)
