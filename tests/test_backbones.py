import pytest
import torch

from selfsup.errors import UserError
from selfsup.nets.backbones import build_backbone, use_cifar_stem
from selfsup.nets.heads import mlp


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_feature_dimension(name, dim):
    net, feature_dim = build_backbone(name, cifar_stem=True)
    assert feature_dim == dim
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    cifar, _ = build_backbone("resnet18", cifar_stem=True)
    imagenet, _ = build_backbone("resnet18", cifar_stem=False)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7)
    # The layer4 map of a 32-px image: 4x4 with the CIFAR stem, 1x1 with the ImageNet stem.
    x = torch.rand(2, 3, 32, 32)
    stem = lambda net: net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))  # noqa: E731
    assert stem(cifar).shape[-1] == 4
    assert stem(imagenet).shape[-1] == 1


def test_auto_stem_rule():
    assert use_cifar_stem("auto", 32) and use_cifar_stem("auto", 64)
    assert not use_cifar_stem("auto", 96) and not use_cifar_stem("auto", 224)
    assert use_cifar_stem(True, 224) and not use_cifar_stem(False, 32)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        build_backbone("resnt18")


def test_mlp_layout():
    head = mlp(512, 64, 16, num_layers=2)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.rand(4, 512)).shape == (4, 16)
    assert isinstance(mlp(8, 8, 4, num_layers=3, last_bn=True)[-1], torch.nn.BatchNorm1d)


def test_vit_through_timm_picks_small_patches_for_small_images():
    from selfsup.nets.backbones import vit_patch_size

    assert [vit_patch_size("auto", s) for s in (16, 32, 64, 96, 128, 224)] == [4, 4, 8, 12, 16, 16]
    assert vit_patch_size(8, 32) == 8
    net, dim = build_backbone("vit_tiny", image_size=32, patch_size=vit_patch_size("auto", 32), drop_path_rate=0.1)
    assert dim == 192 and net.patch_embed.num_patches == 64  # 32 px in 4-px patches: 64 tokens
    assert net.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # the last block's rate; 0 at the first
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        # cls: the normalised CLS token; mean: the mean of the patch tokens (timm then normalises it, fc_norm)
        assert torch.equal(net.eval()(x), net.forward_features(x)[:, 0]) and net(x).shape == (2, 192)
        mean, _ = build_backbone("vit_tiny", image_size=32, patch_size=4, pool="mean")
        patches = mean.eval().forward_features(x)[:, mean.num_prefix_tokens :].mean(1)
        assert torch.allclose(mean(x), mean.fc_norm(patches), atol=1e-6)
    with pytest.raises(UserError, match="crop_size=30 is not a multiple of backbone.patch_size=4"):
        build_backbone("vit_tiny", image_size=30, patch_size=4)


def test_any_timm_model_by_name_with_its_width():
    net, dim = build_backbone("timm:convnext_atto")
    assert dim == 320 and net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 320)
    with pytest.raises(UserError, match="unknown timm model 'convnext_ato'; did you mean 'convnext_atto'"):
        build_backbone("timm:convnext_ato")


def test_backbone_settings_follow_the_backbone(capsys):
    from selfsup.cli import main
    from tests.fault.cli_errors import one_line_error

    assert one_line_error(capsys, ["config", "backbone=vit_small", "backbone.cifar_stem=true"]).startswith(
        "unknown config key 'backbone.cifar_stem'"
    )
    assert one_line_error(capsys, ["config", "backbone=resnet18", "backbone.pool=cls"]).startswith(
        "unknown config key 'backbone.pool'"
    )
    assert one_line_error(capsys, ["config", "backbone=timm:resnet_18"]).startswith(
        "unknown timm model 'resnet_18'; did you mean 'resnet18'"
    )
    assert main(["config", "backbone=timm:convnext_atto", "backbone.drop_path_rate=0.1"]) == 0
    assert "name: timm:convnext_atto\n  drop_path_rate: 0.1\n  weights: null" in capsys.readouterr().out
