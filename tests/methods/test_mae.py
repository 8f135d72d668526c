"""mae: its entry of the registry-wide tests (tests/method_specs.py), and its pieces against independent
implementations: patch layout and its inverse, the random masking (which patches, the restore order), the
masked-patch loss; the method refuses a backbone that is not a ViT."""

from __future__ import annotations

import pytest
import torch

from selfsup.losses import mae_reconstruction
from selfsup.methods.mae import patchify, random_masking, sincos_2d, unpatchify
from tests.method_specs import MethodSpec, Mutation, OptOut, Recipe

SPECS = {
    "mae": MethodSpec(
        tiny=["method.decoder_dim=32", "method.decoder_depth=1", "method.decoder_heads=2"],
        two_processes=OptOut(
            "MAE's loss is a mean over images of per-image reconstruction errors: nothing couples the images of a"
            " batch, so two processes cannot differ from one beyond DDP's gradient average"
        ),
        learning=Recipe(
            ["method=mae", "method.decoder_dim=64", "method.decoder_depth=2", "method.decoder_heads=4"]
            + ["optim.base_lr=1e-2"],
            margin=1.5,
            monitors=[],
            backbone=["backbone=resnet18", "backbone.name=test-small-vit"],  # mae's preset picks a ViT group
        ),
        mutations=[
            Mutation(
                "loss over every patch, mask not applied",
                "selfsup/losses.py",
                "return (per_patch * mask).sum() / mask.sum()",
                "return per_patch.mean()",
            ),
            Mutation(
                "encoder sees every patch (the mask not applied to its input)",
                "selfsup/methods/mae.py",
                "visible = x[:, prefix:].gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))",
                "visible = x[:, prefix:]",
            ),
            Mutation(
                "targets not normalised per patch with norm_pix_loss",
                "selfsup/losses.py",
                "target = (target - mean) / (var + eps) ** 0.5",
                "target = target",
            ),
            Mutation(
                "decoder position embeddings left out",
                "selfsup/methods/mae.py",
                ") + self.decoder_pos_embed",
                ")",
            ),
        ],
    ),
}


def test_patchify_lays_out_patches_row_major_and_round_trips():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    for row in range(2):
        for col in range(3):
            block = images[:, :, row * 4 : (row + 1) * 4, col * 4 : (col + 1) * 4]  # [n, c, p, p]
            assert torch.equal(patches[:, row * 3 + col], block.permute(0, 2, 3, 1).reshape(2, -1))
    assert torch.equal(unpatchify(patches, 4, 8, 12), images)
    with pytest.raises(ValueError, match="do not split into 5-px patches"):
        patchify(images, 5)


def reference_masking(noise: torch.Tensor, ratio: float) -> tuple[list[list[int]], list[list[int]]]:
    """Per sample, the patches with the smallest noise are kept, in increasing order of noise."""
    keep = int(noise.shape[1] * (1 - ratio))
    kept, masks = [], []
    for row in noise.tolist():
        order = sorted(range(len(row)), key=lambda i: row[i])
        kept.append(order[:keep])
        masks.append([0 if i in order[:keep] else 1 for i in range(len(row))])
    return kept, masks


def test_random_masking_matches_the_reference_and_restores_the_order():
    torch.manual_seed(3)
    ids_keep, mask, ids_restore = random_masking(4, 16, 0.75)
    torch.manual_seed(3)
    noise = torch.rand(4, 16)
    kept, masks = reference_masking(noise, 0.75)
    assert ids_keep.tolist() == kept and mask.tolist() == masks and (mask.sum(dim=1) == 12).all()
    # The decoder's sequence holds the visible patches, then a mask token per hidden one, both in increasing
    # noise: entry s is the image index of the patch at position s. ids_restore puts it in image order.
    sequence = torch.tensor([sorted(range(16), key=lambda i, row=row: row[i]) for row in noise.tolist()])
    assert sequence.gather(1, ids_restore).tolist() == [list(range(16))] * 4


def test_the_loss_counts_masked_patches_only_with_per_patch_normalised_targets():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    expected = []
    for i, j in mask.nonzero().tolist():
        t = target[i, j]
        t = (t - t.mean()) / (t.var() + 1e-6).sqrt()
        expected.append(((pred[i, j] - t) ** 2).mean())
    assert mae_reconstruction(pred, target, mask).item() == pytest.approx(torch.stack(expected).mean().item())
    changed = pred.clone()
    changed[0, 1] += 5  # a visible patch: no effect
    assert mae_reconstruction(changed, target, mask) == mae_reconstruction(pred, target, mask)
    raw = mae_reconstruction(pred, target, mask, norm_pix=False)
    assert raw.item() == pytest.approx(((pred - target) ** 2).mean(-1)[mask.bool()].mean().item())


def test_sincos_embedding_is_distinct_per_position_and_bounded():
    table = sincos_2d(3, 4, 16)
    assert table.shape == (12, 16) and table.abs().max() <= 1
    assert torch.cdist(table, table).add(torch.eye(12) * 9).min() > 0.1  # no two positions share a code
    assert table[0].tolist() == [0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4  # sin 0, cos 0 for row and column


def test_mae_refuses_a_backbone_that_is_not_a_vit(tmp_path, capsys):
    from selfsup.cli import main
    from tests.fault.cli_errors import the_error

    run = tmp_path / "run"
    args = ["pretrain", "method=mae", "backbone=resnet18", "data=synthetic", "device=cpu", f"output_dir={run}"]
    assert main(args) == 2
    assert the_error(capsys.readouterr().err) == (
        "MAE encodes a ViT's patch tokens; ResNet is not a timm ViT: set backbone=vit_tiny, vit_small or vit_base"
    )
    assert not run.exists()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_the_decoder_reads_layer_normalised_tokens_with_either_pooling(pool):
    """A mean-pooling timm ViT moves its final LayerNorm after the pooling (fc_norm); MAE must still normalise
    every encoded token, and train that norm, as with the CLS token."""
    from selfsup.methods.mae import MAE
    from selfsup.nets.backbones import build_backbone

    torch.manual_seed(0)
    vit, dim = build_backbone("vit_tiny", image_size=16, patch_size=4, pool=pool)
    model = MAE(vit, dim, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    ids_keep, _, _ = random_masking(3, 16, 0.75, torch.device("cpu"))
    tokens = model.encode(torch.randn(3, 3, 16, 16), ids_keep)
    assert tokens.shape == (3, 1 + 4, dim)
    # LayerNorm at init (weight 1, bias 0): every token has mean 0 and variance 1 over its channels
    assert torch.allclose(tokens.mean(-1), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(tokens.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3)
    tokens.sum().backward()
    norm = vit.fc_norm if pool == "mean" else vit.norm
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
