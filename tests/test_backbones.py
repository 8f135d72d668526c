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
