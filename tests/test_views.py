"""Multi-view augmentation: each op against torchvision's functional op, and the statistics of the draws."""

import math
import pickle

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from omegaconf import OmegaConf

from selfsup.data import batched_colour as V
from selfsup.data.batched_colour import BatchAugment, normalize
from selfsup.data.views import CropFlip, ViewsConfig, crops_of_batch, eval_transform, views_config
from selfsup.errors import UserError
from tests.fault.cli_errors import one_line_error

OFF = {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def assert_rate(observed: torch.Tensor, p: float) -> None:
    """Observed Bernoulli rate within 4 binomial standard deviations of p."""
    n = observed.numel()
    rate = observed.float().mean().item()
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (rate, p, n)


def coordinate_image() -> torch.Tensor:
    """uint8 [3, 32, 32]: red = 8 * row, green = 8 * column, so any crop reveals where it came from."""
    idx = torch.arange(32, dtype=torch.uint8) * 8
    rows, cols = idx[:, None].expand(32, 32), idx[None, :].expand(32, 32)
    return torch.stack([rows, cols, torch.zeros_like(rows)])


def random_images(n: int, side: int = 12, seed: int = 0) -> torch.Tensor:
    """float [n, 3, side, side] in [0, 1], including a gray image and a uint8-quantised one (hue ties)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, side, side, generator=g)
    x[0] = x[0].mean(0, keepdim=True)
    x[1] = torch.randint(0, 4, (3, side, side), generator=g) / 3
    return x


# ---- CropFlip


def test_cropflip_shapes_dtype_and_pickles():
    crop = CropFlip({"num": 3, "crop_size": 16})
    out = pickle.loads(pickle.dumps(crop))(torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8))
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="uint8"):
        crop(torch.rand(3, 40, 50))


@pytest.mark.parametrize("flip_p", [0.0, 0.3, 1.0])
def test_cropflip_flip_rate(flip_p):
    torch.manual_seed(0)
    crop = CropFlip({"num": 4, "crop_size": 32, "flip_p": flip_p})
    views = torch.cat([crop(coordinate_image()) for _ in range(250)])
    mirrored = views[:, 1, 0, 0] > views[:, 1, 0, -1]  # green (column) decreases left to right
    assert_rate(mirrored, flip_p)


def crop_fractions(views: torch.Tensor) -> torch.Tensor:
    """Area fraction of the source each view covers; exact when the crop is upsampled (output = source)."""
    rows = (views[:, 0].amax((1, 2)) - views[:, 0].amin((1, 2))).float() / 8 + 1
    cols = (views[:, 1].amax((1, 2)) - views[:, 1].amin((1, 2))).float() / 8 + 1
    return rows * cols / 32**2


def test_cropflip_area_follows_scale():
    torch.manual_seed(0)
    fixed = CropFlip({"num": 4, "crop_size": 32, "crop_scale": [0.25, 0.25]})
    frac = crop_fractions(torch.cat([fixed(coordinate_image()) for _ in range(100)]))
    assert frac.min() >= 0.23 and frac.max() <= 0.27  # only pixel rounding of the aspect ratio

    wide = CropFlip({"num": 4, "crop_size": 32, "crop_scale": [0.08, 1.0]})
    frac = crop_fractions(torch.cat([wide(coordinate_image()) for _ in range(400)]))
    assert frac.min() >= 0.075 and frac.max() <= 1.0
    # reference: torchvision's own sampler of crop boxes (rejection sampling, centre-crop fallback)
    image, ratio = torch.empty(3, 32, 32), [3 / 4, 4 / 3]
    boxes = torch.tensor([T.RandomResizedCrop.get_params(image, [0.08, 1.0], ratio) for _ in range(4000)])
    ref = boxes[:, 2] * boxes[:, 3] / 32**2
    assert abs(frac.mean() - ref.mean()) <= 4 * math.sqrt(ref.var() / frac.numel() + ref.var() / ref.numel())
    assert abs((frac < 0.3).float().mean() - (ref < 0.3).float().mean()) <= 0.05


# ---- the batched ops against torchvision, per sample


@pytest.mark.parametrize(
    ("op", "reference", "atol"),
    [
        (V.adjust_brightness, TF.adjust_brightness, 1e-6),
        (V.adjust_contrast, TF.adjust_contrast, 1e-5),
        (V.adjust_saturation, TF.adjust_saturation, 1e-5),
        (V.adjust_hue, TF.adjust_hue, 1e-4),
    ],
)
def test_jitter_ops_match_torchvision(op, reference, atol):
    torch.manual_seed(0)
    aug = BatchAugment({**OFF, "jitter_p": 1.0, "jitter_strength": 1.0}, MEAN, STD)
    x = random_images(48)
    params = aug.sample_params(48, view=0)
    factor = params[op.__name__.removeprefix("adjust_")]
    expected = torch.stack([reference(img, f) for img, f in zip(x, factor.tolist(), strict=True)])
    torch.testing.assert_close(op(x, factor), expected, atol=atol, rtol=0)


def test_zero_hue_shift_is_exact():
    x = random_images(8)
    assert torch.equal(V.adjust_hue(x, torch.zeros(8)), x)


@pytest.mark.parametrize(("side", "kernel"), [(32, 3), (96, 9)])
def test_blur_matches_torchvision_and_removes_high_frequencies(side, kernel):
    torch.manual_seed(0)
    assert V.blur_kernel_size(side) == kernel
    aug = BatchAugment({**OFF, "crop_size": side, "blur_p": 0.5}, MEAN, STD)
    x = random_images(16, side)
    sigma = aug.sample_params(16, view=0)["sigma"]
    blurred = sigma > 0
    assert 0 < blurred.sum() < 16 and sigma[blurred].min() >= 0.1 and sigma.max() <= 2.0
    out = V.gaussian_blur(x, sigma, kernel)
    pairs = zip(x[blurred], sigma[blurred].tolist(), strict=True)
    expected = torch.stack([TF.gaussian_blur(img, [kernel, kernel], [s, s]) for img, s in pairs])
    torch.testing.assert_close(out[blurred], expected, atol=1e-5, rtol=0)
    assert torch.equal(out[~blurred], x[~blurred])

    def detail(t):  # energy of the discrete Laplacian: high spatial frequencies
        centre = t[..., 1:-1, 1:-1]
        lap = 4 * centre - t[..., :-2, 1:-1] - t[..., 2:, 1:-1] - t[..., 1:-1, :-2] - t[..., 1:-1, 2:]
        return lap.pow(2).mean((1, 2, 3))

    # white-noise images: the detail kept falls with sigma (sigma 0.1 is nearly a delta kernel)
    kept = (detail(out[blurred]) / detail(x[blurred]))[sigma[blurred].argsort()]
    assert kept.max() <= 1 and (kept.diff() <= 0.02).all() and kept[-1] < 0.1


def test_kernel_size_rule():
    assert [V.blur_kernel_size(s) for s in (28, 32, 64, 96, 224)] == [3, 3, 7, 9, 23]


def test_grayscale_and_solarize_match_torchvision():
    x = random_images(32)
    mask = torch.arange(32) % 3 == 0
    gray = torch.stack([TF.rgb_to_grayscale(img, 3) if m else img for img, m in zip(x, mask, strict=True)])
    assert torch.equal(V.grayscale(x, mask), gray)
    solar = torch.stack([TF.solarize(img, 0.5) if m else img for img, m in zip(x, mask, strict=True)])
    assert torch.equal(V.solarize(x, mask), solar)


def test_apply_equals_torchvision_pipeline_and_forward_is_sample_then_apply():
    cfg = {"jitter_p": 0.8, "jitter_strength": 0.5, "grayscale_p": 0.3, "blur_p": 0.5, "solarize_p": 0.5}
    aug = BatchAugment(cfg, MEAN, STD)
    x = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(1)
    out = aug(x, view=0)
    torch.manual_seed(1)
    params = aug.sample_params(24, view=0)
    x01 = x.float() / 255
    torch.testing.assert_close(out, normalize(aug.apply(x01, params), MEAN, STD), atol=1e-6, rtol=0)

    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    expected = []
    for i, img in enumerate(x01):
        for j in params["order"].tolist():
            img = ops[j](img, params[V.JITTER_OPS[j]][i].item())
        if params["grayscale"][i]:
            img = TF.rgb_to_grayscale(img, 3)
        if params["sigma"][i] > 0:
            img = TF.gaussian_blur(img, [3, 3], [params["sigma"][i].item()] * 2)
        if params["solarize"][i]:
            img = TF.solarize(img, 0.5)
        expected.append(img)
    torch.testing.assert_close(aug.apply(x01, params), torch.stack(expected), atol=1e-4, rtol=0)


# ---- rates and parameter ranges


def test_jitter_rate_and_factor_ranges():
    torch.manual_seed(0)
    s = 0.5
    aug = BatchAugment({**OFF, "jitter_p": 0.8, "jitter_strength": s}, MEAN, STD)
    n = 4000
    x = random_images(n, side=4)
    params = aug.sample_params(n, view=0)
    changed = (aug.apply(x, params) != x).flatten(1).any(1)
    assert_rate(changed, 0.8)
    on = params["brightness"] != 1
    assert torch.equal(on, changed)
    for name in ("brightness", "contrast", "saturation"):
        f = params[name][on]
        assert f.min() >= 1 - 0.8 * s and f.max() <= 1 + 0.8 * s
        assert f.min() < 1 - 0.8 * s + 0.01 and f.max() > 1 + 0.8 * s - 0.01  # the whole range is used
        assert abs(f.mean() - 1) < 4 * (1.6 * s / math.sqrt(12)) / math.sqrt(f.numel())  # uniform around 1
    hue = params["hue"][on]
    assert hue.abs().max() <= 0.2 * s and hue.abs().max() > 0.2 * s - 0.01
    assert (params["hue"][~on] == 0).all() and (params["contrast"][~on] == 1).all()


def test_jitter_factors_set_each_range_per_view_and_local_crops_take_view_0s():
    """views.jitter_factors gives torchvision ColorJitter's four factors, for all views or one list per view."""
    torch.manual_seed(0)
    byol, other = [0.4, 0.4, 0.2, 0.1], [1.2, 0.0, 0.6, 0.5]
    aug = BatchAugment({**OFF, "jitter_p": 1.0, "jitter_factors": [byol, other], "local_crops": 1}, MEAN, STD)
    for view, factors in ((0, byol), (1, other), (2, byol)):
        params = aug.sample_params(4000, view)
        for name, f in zip(V.JITTER_OPS[:3], factors[:3], strict=True):
            low, high = max(0.0, 1 - f), 1 + f
            assert params[name].min() >= low and params[name].max() <= high, (view, name)
            assert params[name].min() < low + 0.01 and params[name].max() > high - 0.01, (view, name)
        assert params["hue"].abs().max() <= factors[3] and params["hue"].abs().max() > factors[3] - 0.01
    assert views_config({"jitter_factors": byol}).jitter_factors == (tuple(byol),) * 2


def test_jitter_factors_of_the_strength_draw_exactly_as_the_strength():
    """SimCLR's (0.8, 0.8, 0.8, 0.2) x 0.5 written out draws bitwise what strength 0.5 draws (null, the
    default, is that path)."""
    draws = []
    for cfg in ({"jitter_strength": 0.5}, {"jitter_strength": 2.0, "jitter_factors": [0.4, 0.4, 0.4, 0.1]}):
        torch.manual_seed(0)
        draws.append(BatchAugment({**OFF, "jitter_p": 0.8, **cfg}, MEAN, STD).sample_params(64, view=1))
    assert draws[0].keys() == draws[1].keys() and all(torch.equal(draws[0][k], draws[1][k]) for k in draws[0])


def test_jitter_order_is_a_fresh_permutation_per_call():
    aug = BatchAugment({**OFF, "jitter_p": 1.0}, MEAN, STD)
    torch.manual_seed(0)
    orders = {tuple(aug.sample_params(1, view=0)["order"].tolist()) for _ in range(300)}
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and len(orders) == 24


def test_grayscale_rate():
    torch.manual_seed(0)
    aug = BatchAugment({**OFF, "grayscale_p": 0.3}, (0.0,) * 3, (1.0,) * 3)
    x = torch.randint(0, 256, (3000, 3, 4, 4), dtype=torch.uint8)
    out = aug(x, view=0)
    equal_channels = ((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).flatten(1).all(1)
    assert_rate(equal_channels, 0.3)
    torch.testing.assert_close(out[equal_channels], TF.rgb_to_grayscale(x[equal_channels].float() / 255, 3))
    torch.testing.assert_close(out[~equal_channels], x[~equal_channels].float() / 255, atol=1e-7, rtol=0)


def test_solarize_rate_and_uint8_threshold():
    torch.manual_seed(0)
    aug = BatchAugment({**OFF, "solarize_p": 0.4}, (0.0,) * 3, (1.0,) * 3)
    x = torch.randint(0, 256, (3000, 3, 4, 4), dtype=torch.uint8)
    x[:, :, 0, 0] = 200  # a pixel above the threshold in every image: each solarized image changes
    out = aug(x, view=0)
    solarized = (out - x.float() / 255).abs().flatten(1).amax(1) > 1e-6
    assert_rate(solarized, 0.4)
    expected = TF.solarize(x[solarized], 128).float() / 255  # torchvision's uint8 threshold 128
    torch.testing.assert_close(out[solarized], expected, atol=1e-6, rtol=0)


def test_blur_rate():
    torch.manual_seed(0)
    aug = BatchAugment({**OFF, "blur_p": 0.7}, MEAN, STD)
    sigma = aug.sample_params(4000, view=0)["sigma"]
    assert_rate(sigma > 0, 0.7)
    on = sigma[sigma > 0]
    assert on.min() >= 0.1 and on.max() <= 2.0 and abs(on.mean() - 1.05) < 0.03


# ---- configuration, skipping, per-view settings


def test_all_off_is_exactly_normalize():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    for cfg in (OFF, {**OFF, "jitter_p": 1.0, "jitter_strength": 0.0}):
        aug = BatchAugment(cfg, MEAN, STD)
        assert aug.sample_params(8, view=1) == {}
        assert torch.equal(aug(x, view=1), normalize(x, MEAN, STD))


def test_normalize_matches_formula():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    torch.testing.assert_close(normalize(x, MEAN, STD), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(normalize(x.float() / 255, MEAN, STD), expected, atol=1e-6, rtol=0)


def test_config_mean_std_override_dataset_stats():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    aug = BatchAugment({**OFF, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, MEAN, STD)
    torch.testing.assert_close(aug(x, 0), x.float() / 127.5 - 1)


def test_per_view_probabilities_select_by_view():
    aug = BatchAugment({**OFF, "blur_p": [1.0, 0.0], "solarize_p": [0.0, 1.0]}, MEAN, STD)
    first, second = aug.sample_params(64, view=0), aug.sample_params(64, view=1)
    assert set(first) == {"sigma"} and (first["sigma"] > 0).all()
    assert set(second) == {"solarize"} and second["solarize"].all()
    with pytest.raises(ValueError, match="view 2"):
        aug.sample_params(4, view=2)


def test_local_crops_use_view_one_jitter_and_grayscale_local_blur_and_no_solarize():
    cfg = {**OFF, "jitter_p": [1.0, 0.0], "grayscale_p": [1.0, 0.0], "solarize_p": 1.0, "local_crops": 2,
           "local_blur_p": 1.0}  # fmt: skip
    aug = BatchAugment(cfg, MEAN, STD)
    local = aug.sample_params(32, view=3)
    assert {"order", "grayscale", "sigma"} <= set(local) and "solarize" not in local
    assert local["grayscale"].all() and (local["sigma"] > 0).all()
    assert "sigma" not in aug.sample_params(32, view=1)
    with pytest.raises(ValueError, match="view 4"):
        aug.sample_params(4, view=4)


def test_cropflip_multicrop_gives_global_and_local_groups_in_view_order():
    crop = CropFlip({"num": 2, "crop_size": 16, "local_crops": 3, "local_crop_size": 8})
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    global_views, local_views = pickle.loads(pickle.dumps(crop))(image)
    assert global_views.shape == (2, 3, 16, 16) and local_views.shape == (3, 3, 8, 8)
    assert views_config({"local_crops": 3, "local_crop_size": 8}).sizes() == [32, 32, 8, 8, 8]
    batch = torch.utils.data.default_collate([crop(image) for _ in range(4)])
    crops = crops_of_batch(batch)
    assert [tuple(c.shape) for c in crops] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 3
    assert torch.equal(crops[3], batch[1][:, 1])
    assert [tuple(c.shape) for c in crops_of_batch(batch[0])] == [(4, 3, 16, 16)] * 2


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"num": 3, "blur_p": [1.0, 0.1]}, "views.blur_p has 2 entries but views.num=3"),
        ({"crop_size": 0}, "views.crop_size"),
        ({"flip_p": 1.5}, "views.flip_p"),
        ({"solarize_p": [0.0, -0.1]}, "views.solarize_p"),
        ({"crop_scale": [1.0, 0.5]}, "views.crop_scale"),
        ({"jitter_strength": 3.0}, "views.jitter_strength"),
        ({"blur_prob": 0.5}, "did you mean 'views.blur_p'"),
        ({"std": [0.5, 0.0, 0.5]}, "views.std"),
        ({"mean": [0.5, 0.5]}, "views.mean"),
        ({"local_crops": -1}, "views.local_crops"),
        ({"local_crop_scale": [0.5, 0.1]}, "views.local_crop_scale"),
        ({"local_crop_size": 0}, "views.local_crop_size"),
        ({"jitter_factors": [[0.4, 0.4, 0.2, 0.1]] * 3}, "views.jitter_factors has 3 entries but views.num=2"),
    ],
)
def test_bad_config_is_a_user_error(cfg, message):
    with pytest.raises(UserError, match=message):
        views_config(cfg)


@pytest.mark.parametrize(
    "value",
    ["[0.4,0.4,0.2]", "[0.4,-0.4,0.2,0.1]", "[0.4,0.4,0.2,0.6]", "[[0.4,0.4,0.2,0.1],[0.4,0.4,0.2]]", "0.4"],
)
def test_bad_jitter_factors_are_refused_in_one_line(value, tmp_path, capsys):
    """Wrong length, a negative factor, hue above torchvision's 0.5, one bad view's list, a scalar."""
    out = tmp_path / "out"
    message = one_line_error(
        capsys, ["pretrain", "data=synthetic", f"views.jitter_factors={value}", f"output_dir={out}"]
    )
    assert message.startswith(
        "views.jitter_factors must be null (from jitter_strength), a list [brightness, contrast, saturation, hue] "
        "of numbers >= 0 with hue <= 0.5, or one such list per view, got "
    ), message
    assert not out.exists()


def test_config_forms_agree():
    raw = {"num": 2, "crop_size": 24, "blur_p": [1.0, 0.1], "solarize_p": [0.0, 0.2]}
    parsed = views_config(raw)
    assert parsed == views_config(OmegaConf.create({"views": raw}).views) == views_config(parsed)
    assert parsed.blur_p == (1.0, 0.1) and parsed.grayscale_p == (0.2, 0.2) and parsed.crop_size == 24
    assert views_config(None) == views_config(ViewsConfig())


def test_autocast_does_not_lower_precision():
    aug = BatchAugment({"blur_p": 1.0, "solarize_p": 0.2}, MEAN, STD)
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    torch.manual_seed(3)
    plain = aug(x, view=0)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = aug(x, view=0)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)


# ---- evaluation transform


def test_eval_transform_sizes():
    same = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert eval_transform(32)(same) is same
    half = torch.zeros(3, 48, 64, dtype=torch.uint8)
    half[:, :, 32:] = 255  # right half bright: stays split down the middle after the centre crop
    out = pickle.loads(pickle.dumps(eval_transform(32)))(half)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert out[:, :, :15].max() == 0 and out[:, :, 17:].min() == 255
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    expected = TF.center_crop(TF.resize(image, 256, antialias=True), 224)  # ImageNet: resize 256, crop 224
    assert torch.equal(eval_transform(224)(image), expected)
    with pytest.raises(UserError):
        eval_transform(0)
