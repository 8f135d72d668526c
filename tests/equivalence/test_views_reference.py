"""Views against their references: selfsup's batched crop and colour samplers, under each method's preset,
draw the same distributions as lightly 1.6's per-method transforms (the probabilities and ranges read from
the constructed lightly objects, the draws from torchvision's own `get_params`); and, with the parameters
fixed, the batched pixels equal torchvision's functional ops (what tests/test_views.py and
tests/test_batched_crops.py do not already cover).

Statistics. Each view of a method is N = 20,000 draws on both sides. Continuous quantities (crop area
fraction, log aspect ratio, crop centre, each jitter factor, blur sigma) are compared by the two-sample
Kolmogorov-Smirnov test, rates (flip, jitter applied, grayscale, blur, solarize) by an exact binomial test
against the reference's probability. A method's test holds up to M = 200 such checks and rejects when any
p-value is below ALPHA / M (Bonferroni), so a correct sampler fails a test with probability at most
ALPHA = 1e-3, whatever the seed. At that level, with probability at least 1 - BETA = 0.999 (DKW bound for
KS, normal approximation for the binomial), the tests detect (see `test_stated_power`):
  * any two distributions whose CDFs differ by KS_DETECTABLE = 0.054 somewhere (crop scale (0.2, 1) vs
    (0.08, 1) is 0.13 in area; jitter strength 0.44 vs 0.5 is 0.06 in each factor);
  * a rate off by BINOMIAL_DETECTABLE = 0.027 (at p = 0.5; 0.022 at p = 0.2).
The negative controls run the same checks on settings just past these bounds and must be rejected. Seeds are
fixed, so the tests are deterministic.

Named differences from lightly, tested with lightly built at selfsup's settings and pinned by
`test_named_differences_from_lightly_defaults`:
  * CIFAR presets follow the CIFAR recipes (SimCLR B.9: strength 0.5, no blur; lightly's CIFAR-10 benchmark
    takes the same), not lightly's ImageNet defaults; selfsup's `simsiam` (CIFAR) crops at scale (0.08, 1),
    lightly's SimSiamTransform at (0.2, 1); DINO ViT uses the paper's 10 local crops, lightly 6 by default;
  * DINO and MAE crops are resized bilinearly (lightly: bicubic), and blur is torchvision's Gaussian kernel
    of 10% of the side (lightly: PIL's GaussianBlur with the same sigma); jitter order is drawn per batch.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from scipy import stats
from torch import Tensor

from selfsup.data import batched_colour as V
from selfsup.data import batched_crops
from selfsup.data.batched_colour import BatchAugment
from selfsup.data.batched_crops import BatchCropFlip
from selfsup.data.views import ViewsConfig, views_config
from tests.equivalence.harness import require_lightly

N = 20_000  # draws per view, on each side
ALPHA = 1e-3  # family-wise false-rejection rate of one method's test
BETA = 1e-3  # miss rate at the stated detectable shifts
M = 200  # most checks in one test (DINO ViT: 12 views x 14 checks = 168); Bonferroni level ALPHA / M
LEVEL = ALPHA / M
_KS_C = math.sqrt(-math.log(LEVEL / 2) / 2)  # asymptotic two-sample KS: reject D > c sqrt(2 / N)
KS_DETECTABLE = _KS_C * math.sqrt(2 / N) + 2 * math.sqrt(math.log(4 / BETA) / (2 * N))  # + DKW on each side
_Z = stats.norm.isf(LEVEL / 2) + stats.norm.isf(BETA)


def binomial_detectable(p: float) -> float:
    """Smallest rate shift from p that the binomial check misses with probability at most BETA."""
    return _Z * math.sqrt(p * (1 - p) / N)


BINOMIAL_DETECTABLE = binomial_detectable(0.5)
MEAN = (0.5, 0.5, 0.5)
CIFAR, IMAGENET = (32, 32), (48, 64)  # source sizes the boxes are drawn in (the same on both sides)
JITTER = ("brightness", "contrast", "saturation", "hue")


# ---- selfsup's draws, through its own samplers


@dataclasses.dataclass(frozen=True)
class Draws:
    """One view's sampled parameters: crop boxes (top, left, h, w) [N, 4], flip [N], colour params."""

    boxes: Tensor
    flip: Tensor
    colour: dict[str, Tensor]


@contextmanager
def recorded_crops() -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Replace batched_crops.resized_crops with a recorder of the (boxes, flip) BatchCropFlip draws; returns
    a tiny tensor instead of pixels, so N draws cost no image memory."""
    calls: list[tuple[Tensor, Tensor]] = []

    def record(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
        calls.append((boxes.clone(), flip.clone()))
        return torch.zeros(boxes.shape[:-1])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batched_crops, "resized_crops", record)
        yield calls


def selfsup_draws(views: ViewsConfig, source: tuple[int, int], seed: int = 0) -> list[Draws]:
    """N draws of every view (global views, then local crops) from BatchCropFlip and BatchAugment."""
    torch.manual_seed(seed)
    with recorded_crops() as calls:
        BatchCropFlip(views)(torch.zeros(1, 1, 1, 1).expand(N, 3, *source))  # a view: no pixels
    boxes = torch.cat([b for b, _ in calls], dim=1)  # [N, views, 4] in view order
    flip = torch.cat([f for _, f in calls], dim=1)
    augment = BatchAugment(views, MEAN, MEAN)
    return [Draws(boxes[:, v], flip[:, v], augment.sample_params(N, v)) for v in range(views.total)]


@functools.cache
def preset(method: str) -> ViewsConfig:
    """The `views` section of a method's preset, composed as a run composes it."""
    from selfsup.config import load_config

    return views_config(load_config([f"method={method}"]).views)


# ---- the reference: lightly's transform objects, torchvision's samplers


@dataclasses.dataclass(frozen=True)
class Reference:
    """What one lightly view transform is built with, read from its components."""

    scale: tuple[float, float]
    ratio: tuple[float, float]
    interpolation: str
    flip_p: float
    jitter_p: float = 0.0
    jitter: tuple[tuple[float, float] | None, ...] | None = None  # ColorJitter's ranges, in JITTER order
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    sigmas: tuple[float, float] | None = None
    solarize_p: float = 0.0


def reference_of(view: Any) -> Reference:
    """A lightly view transform's parameters; a component selfsup has no counterpart for must be off."""
    fields: dict[str, Any] = {}
    compose = view.transform if hasattr(view, "transform") else view
    for part in compose.transforms:
        name = type(part).__name__
        if name == "RandomResizedCrop":
            fields.update(
                scale=tuple(part.scale),
                ratio=tuple(part.ratio),
                interpolation=str(getattr(part.interpolation, "value", part.interpolation)),
            )
            assert part.antialias, "lightly crops without antialiasing; selfsup's crops antialias"
        elif name == "RandomHorizontalFlip":
            fields["flip_p"] = part.p
        elif name == "RandomApply":
            (jitter,) = part.transforms
            assert type(jitter).__name__ == "ColorJitter", jitter
            fields.update(jitter_p=part.p, jitter=tuple(getattr(jitter, k) for k in JITTER))
        elif name == "RandomGrayscale":
            fields["grayscale_p"] = part.p
        elif name == "GaussianBlur":
            fields.update(blur_p=part.prob, sigmas=tuple(part.sigmas))
        elif name == "RandomSolarization":
            assert part.threshold == 128, "selfsup solarizes at 0.5 of [0, 1], i.e. uint8 128"
            fields["solarize_p"] = part.prob
        elif name == "RandomVerticalFlip":
            assert part.p == 0, "selfsup has no vertical flip"
        elif name == "RandomRotate":
            assert part.prob == 0, "selfsup has no rotation"
        else:
            assert name in ("ToTensor", "Normalize"), f"lightly view has a {name} that selfsup does not model"
    return Reference(**fields)


def lightly_views(transform: Any) -> list[Reference]:
    """Every view of a lightly transform (a MultiViewTransform, a single view, or a list of views)."""
    views = transform if isinstance(transform, list) else getattr(transform, "transforms", [transform])
    if views and type(views[0]).__name__ != "Compose" and not hasattr(views[0], "transform"):
        views = [transform]  # a single view whose `transforms` are its components
    return [reference_of(v) for v in views]


@functools.cache
def reference_boxes(scale: tuple[float, float], ratio: tuple[float, float], source: tuple[int, int]) -> Tensor:
    """N boxes from torchvision's RandomResizedCrop.get_params."""
    image = torch.empty(3, *source)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return torch.tensor([T.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(N)])


@functools.cache
def reference_jitter(ranges: tuple[tuple[float, float] | None, ...]) -> dict[str, Tensor]:
    """N factors per jitter op from torchvision's ColorJitter.get_params."""
    with torch.random.fork_rng():
        torch.manual_seed(2)
        draws = [T.ColorJitter.get_params(*ranges)[1:] for _ in range(N)]
    return {name: torch.tensor([d[i] for d in draws]) for i, name in enumerate(JITTER)}


@functools.cache
def reference_sigmas(sigmas: tuple[float, float]) -> np.ndarray:
    """N blur sigmas as lightly's GaussianBlur draws them: uniform over `sigmas`."""
    return np.random.default_rng(3).uniform(sigmas[0], sigmas[1], N)


# ---- the checks


def geometry(boxes: Tensor, source: tuple[int, int]) -> dict[str, Tensor]:
    top, left, h, w = boxes.double().unbind(1)
    height, width = source
    return {
        "crop area": h * w / (height * width),
        "crop log aspect": torch.log(w / h),
        "crop centre y": (top + h / 2) / height,
        "crop centre x": (left + w / 2) / width,
    }


def ks(ours: Tensor | np.ndarray, theirs: Tensor | np.ndarray) -> float:
    return float(stats.ks_2samp(np.asarray(ours), np.asarray(theirs)).pvalue)


def rate(hits: Tensor | None, p: float) -> float:
    k = 0 if hits is None else int(hits.sum())
    return float(stats.binomtest(k, N, p).pvalue)


def pvalues(ours: Draws, ref: Reference, source: tuple[int, int]) -> dict[str, float]:
    """p-value of every check of one view: crop geometry, flip, jitter, grayscale, blur, solarize."""
    assert ref.ratio == pytest.approx(batched_crops.RATIO), "aspect-ratio range"
    theirs = geometry(reference_boxes(ref.scale, ref.ratio, source), source)
    p = {name: ks(value, theirs[name]) for name, value in geometry(ours.boxes, source).items()}
    p["flip rate"] = rate(ours.flip, ref.flip_p)
    c = ours.colour
    on = (c["brightness"] != 1) | (c["hue"] != 0) if "order" in c else None
    p["jitter rate"] = rate(on, ref.jitter_p)
    if on is not None and ref.jitter is not None:
        reference = reference_jitter(ref.jitter)
        p.update({name: ks(c[name][on], reference[name]) for name in JITTER})
    p["grayscale rate"] = rate(c.get("grayscale"), ref.grayscale_p)
    blurred = c["sigma"] > 0 if "sigma" in c else None
    p["blur rate"] = rate(blurred, ref.blur_p)
    if blurred is not None and ref.sigmas is not None and blurred.any():
        p["blur sigma"] = ks(c["sigma"][blurred], reference_sigmas(ref.sigmas))
    p["solarize rate"] = rate(c.get("solarize"), ref.solarize_p)
    return p


def rejected(views: ViewsConfig, refs: Sequence[Reference], source: tuple[int, int]) -> dict[str, float]:
    """The checks of every view that reject equality at LEVEL, as 'view v: check' -> p-value."""
    draws = selfsup_draws(views, source)
    assert len(draws) == len(refs), f"selfsup draws {len(draws)} views, lightly {len(refs)}"
    checks = {f"view {v}: {k}": p for v, (d, r) in enumerate(zip(draws, refs, strict=True)) for k, p in
              pvalues(d, r, source).items()}  # fmt: skip
    assert len(checks) <= M, f"{len(checks)} checks: raise M (and the stated power) for this family"
    return {k: p for k, p in checks.items() if p < LEVEL}


def kinds(failed: dict[str, float]) -> set[str]:
    """The check names of rejected checks, without their view."""
    return {k.split(": ", 1)[1] for k in failed}


# ---- per method: preset against lightly built with the same settings


def _lightly() -> Any:
    """lightly.transforms, or the harness's skip when lightly 1.6 is missing."""
    require_lightly()
    import lightly.transforms

    return lightly.transforms


# method preset -> (lightly transform at selfsup's settings, source size)
MATCHING: dict[str, tuple[Callable[[], Any], tuple[int, int]]] = {
    # lightly's CIFAR-10 benchmark settings = SimCLR appendix B.9 (strength 0.5, no blur)
    "simclr": (lambda: _lightly().SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0), CIFAR),
    "simclr_imagenet": (lambda: _lightly().SimCLRTransform(), IMAGENET),  # lightly's defaults
    "byol": (
        lambda: [
            _lightly().BYOLView1Transform(input_size=32, gaussian_blur=0.0),
            _lightly().BYOLView2Transform(input_size=32, gaussian_blur=0.0),
        ],
        CIFAR,
    ),
    "byol_imagenet": (lambda: _lightly().BYOLTransform(), IMAGENET),  # lightly's defaults
    "simsiam": (lambda: _lightly().SimSiamTransform(input_size=32, gaussian_blur=0.0, min_scale=0.08), CIFAR),
    "simsiam_imagenet": (lambda: _lightly().SimSiamTransform(), IMAGENET),  # lightly's defaults
    "dino": (
        lambda: _lightly().DINOTransform(
            global_crop_size=32,
            global_crop_scale=(0.14, 1.0),
            n_local_views=0,
            gaussian_blur=(0.0, 0.0, 0.0),
            solarization_prob=0.0,
        ),
        CIFAR,
    ),  # fmt: skip
    "dino_imagenet": (
        lambda: _lightly().DINOTransform(global_crop_scale=(0.14, 1.0), local_crop_scale=(0.05, 0.14), n_local_views=8),
        IMAGENET,
    ),
    "dino_vit": (lambda: _lightly().DINOTransform(n_local_views=10), IMAGENET),
    "mae": (lambda: _lightly().MAETransform(input_size=32), CIFAR),
}


@pytest.mark.parametrize("method", list(MATCHING))
def test_views_match_lightly(method: str) -> None:
    """Every sampled quantity of every view of the preset equals lightly's, built at the preset's settings
    (BYOL: view 1 blur 1.0 / solarize 0, view 2 blur 0.1 / solarize 0.2; DINO: global then local crops)."""
    build, source = MATCHING[method]
    refs = lightly_views(build())
    failed = rejected(preset(method), refs, source)
    assert not failed, f"{method}: selfsup's views differ from lightly's: {failed}"


def test_mae_and_dino_are_bicubic_in_lightly_bilinear_in_selfsup() -> None:
    """The named interpolation difference; the other methods' lightly crops are bilinear, as selfsup's."""
    lightly = _lightly()
    assert {r.interpolation for r in lightly_views(lightly.MAETransform())} == {"bicubic"}
    assert {r.interpolation for r in lightly_views(lightly.DINOTransform())} == {"bicubic"}
    for transform in (lightly.SimCLRTransform(), lightly.BYOLTransform(), lightly.SimSiamTransform()):
        assert {r.interpolation for r in lightly_views(transform)} == {"bilinear"}


def test_mae_preset_has_no_colour_ops() -> None:
    """MAE (and lightly's MAETransform) is crop and flip only: the colour sampler draws nothing."""
    assert BatchAugment(preset("mae"), MEAN, MEAN).sample_params(8, 0) == {}
    assert lightly_views(_lightly().MAETransform())[0].jitter is None


# lightly's defaults -> the checks selfsup's preset must fail against them, and why (the named differences)
DEFAULTS: dict[str, tuple[Callable[[], Any], tuple[int, int], set[str]]] = {
    # CIFAR recipe: strength 0.5 (lightly 1.0), no blur (lightly 0.5)
    "simclr": (lambda: _lightly().SimCLRTransform(input_size=32), CIFAR, {*JITTER, "blur rate"}),
    # the CIFAR preset crops at scale (0.08, 1); lightly's SimSiamTransform and the SimSiam paper at (0.2, 1)
    "simsiam": (lambda: _lightly().SimSiamTransform(input_size=32, gaussian_blur=0.0), CIFAR, {"crop area"}),
}
CROP = {"crop area", "crop log aspect", "crop centre y", "crop centre x"}


@pytest.mark.parametrize("method", list(DEFAULTS))
def test_named_differences_from_lightly_defaults(method: str) -> None:
    """Against lightly's default transform the preset differs in exactly the named quantities (a crop scale
    may also move the crop's aspect and centre): a new difference, or a fixed one, shows up here."""
    build, source, expected = DEFAULTS[method]
    got = kinds(rejected(preset(method), lightly_views(build()), source))
    assert expected <= got and got - expected <= (CROP if "crop area" in expected else set()), (method, got)


# ---- negative controls: the same checks reject settings just past the stated power


NEGATIVE = {
    # setting changed on selfsup's side -> the checks that must reject it
    "crop scale (0.2, 1) vs (0.08, 1)": ({"crop_scale": (0.2, 1.0)}, {"crop area"}),
    "jitter strength 0.4 vs 0.5": ({"jitter_strength": 0.4}, set(JITTER)),
    "jitter strength 0.44 vs 0.5 (KS gap 0.06)": ({"jitter_strength": 0.44}, set(JITTER)),
    "grayscale 0.3 vs 0.2": ({"grayscale_p": (0.3, 0.3)}, {"grayscale rate"}),
    "grayscale 0.23 vs 0.2": ({"grayscale_p": (0.23, 0.23)}, {"grayscale rate"}),
    "flip 0.47 vs 0.5": ({"flip_p": 0.47}, {"flip rate"}),
    "jitter p 0.77 vs 0.8": ({"jitter_p": (0.77, 0.77)}, {"jitter rate"}),
}


@pytest.mark.parametrize("change", list(NEGATIVE))
def test_simclr_negative_controls_are_rejected(change: str) -> None:
    """The SimCLR check, with one selfsup setting moved just past the stated detectable shift, rejects
    exactly that quantity (a crop scale may also move aspect and centre): the checks can fail."""
    overrides, expected = NEGATIVE[change]
    build, source = MATCHING["simclr"]
    views = dataclasses.replace(preset("simclr"), **overrides)
    got = kinds(rejected(views, lightly_views(build()), source))
    assert expected <= got and got - expected <= (CROP if "crop area" in expected else set()), (change, got)


def test_byol_negative_control_views_swapped() -> None:
    """BYOL's asymmetric views, swapped on selfsup's side (blur 0.1/1.0, solarize 0.2/0): rejected per view."""
    build, source = MATCHING["byol_imagenet"]
    swapped = dataclasses.replace(preset("byol_imagenet"), blur_p=(0.1, 1.0), solarize_p=(0.2, 0.0))
    failed = rejected(swapped, lightly_views(build()), source)
    assert set(failed) == {f"view {v}: {k}" for v in (0, 1) for k in ("blur rate", "solarize rate")}


def test_byol_negative_control_simclr_ratios() -> None:
    """BYOL with SimCLR's ratios at strength 0.5 (jitter_factors=null: saturation 0.4, the presets before
    jitter_factors) against lightly's BYOLTransform (the paper's 0.2): exactly saturation, in both views."""
    build, source = MATCHING["byol_imagenet"]
    views = dataclasses.replace(preset("byol_imagenet"), jitter_strength=0.5, jitter_factors=None)
    assert set(rejected(views, lightly_views(build()), source)) == {f"view {v}: saturation" for v in (0, 1)}


def test_dino_negative_control_local_scale() -> None:
    """DINO's local crops at scale (0.05, 0.14) against lightly's (0.05, 0.4): every local view rejected."""
    build, source = MATCHING["dino_vit"]
    views = dataclasses.replace(preset("dino_vit"), local_crop_scale=(0.05, 0.14))
    failed = rejected(views, lightly_views(build()), source)
    assert {f"view {v}: crop area" for v in range(2, 12)} <= set(failed)
    assert all(int(k.split()[1].rstrip(":")) >= 2 for k in failed)  # the global views still match


def test_stated_power() -> None:
    """The detectable shifts the module docstring states, and that the negative controls sit past them."""
    assert KS_DETECTABLE == pytest.approx(0.054, abs=5e-4)
    assert BINOMIAL_DETECTABLE == pytest.approx(0.027, abs=5e-4)
    assert binomial_detectable(0.2) == pytest.approx(0.022, abs=5e-4)
    assert 0.8 * (0.5 - 0.44) / (2 * 0.8 * 0.5) > KS_DETECTABLE  # strength 0.44 vs 0.5: CDFs 0.06 apart
    assert (0.2 - 0.08) / (1 - 0.08) > KS_DETECTABLE  # crop scale 0.2 vs 0.08: area CDFs about 0.13 apart
    assert 0.03 > binomial_detectable(0.5) and 0.03 > binomial_detectable(0.2) and 0.03 > binomial_detectable(0.8)


# ---- pixels with the parameters fixed (what tests/test_views.py and test_batched_crops.py do not cover)


def test_dino_multicrop_pixels_equal_torchvision_resized_crop_and_flip() -> None:
    """BatchCropFlip end to end (uint8 in, uint8 out, global and local crops of one call) equals torchvision's
    resized_crop(antialias=True) + horizontal_flip of the recorded boxes, to 1 grey level (rounding)."""
    torch.manual_seed(0)
    views = dataclasses.replace(preset("dino_vit"), crop_size=24, local_crop_size=12)
    images = torch.randint(0, 256, (3, 3, 30, 40), dtype=torch.uint8)
    original = batched_crops.resized_crops
    calls: list[tuple[Tensor, Tensor, int]] = []

    def record(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
        calls.append((boxes, flip, size))
        return original(images, boxes, size, flip)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batched_crops, "resized_crops", record)
        global_views, local_views = BatchCropFlip(views)(images)
    assert global_views.dtype == torch.uint8 and local_views.shape == (3, 10, 3, 12, 12)
    for out, (boxes, flip, size) in zip((global_views, local_views), calls, strict=True):
        for b, k in itertools.product(range(3), range(boxes.shape[1])):
            top, left, h, w = boxes[b, k].tolist()
            ref = TF.resized_crop(images[b], top, left, h, w, [size, size], antialias=True)
            ref = TF.horizontal_flip(ref) if flip[b, k] else ref
            assert (out[b, k].int() - ref.int()).abs().max() <= 1, (b, k)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))), ids=lambda o: "".join(map(str, o)))
def test_jitter_in_every_order_equals_torchvision(order: tuple[int, ...]) -> None:
    """BatchAugment.apply with a fixed order and fixed factors equals torchvision's functional ops in that
    order, for each of the 24 orders (tests/test_views.py covers one drawn order)."""
    torch.manual_seed(0)
    x = torch.rand(6, 3, 10, 10)
    x[0] = x[0].mean(0, keepdim=True)  # a gray image: hue of zero chroma
    factors = {"brightness": torch.tensor([0.2, 0.6, 1.0, 1.4, 1.8, 0.9]),
               "contrast": torch.tensor([1.8, 0.2, 1.3, 0.6, 1.0, 1.1]),
               "saturation": torch.tensor([0.6, 1.8, 0.2, 1.0, 1.4, 0.7]),
               "hue": torch.tensor([0.2, -0.2, 0.05, 0.0, -0.1, 0.5])}  # fmt: skip
    out = BatchAugment({"jitter_p": 1.0}, MEAN, MEAN).apply(x, {**factors, "order": torch.tensor(order)})
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i, image in enumerate(x):
        for j in order:
            image = ops[j](image, factors[JITTER[j]][i].item())
        torch.testing.assert_close(out[i], image, atol=2e-4, rtol=0)


def test_simclr_imagenet_blur_kernel_23_equals_torchvision_gaussian_blur() -> None:
    """At 224 px (SimCLR/BYOL ImageNet) the kernel is 23 taps, and blur at the sigma range's ends and middle
    equals torchvision's gaussian_blur with the same kernel and sigma (existing tests stop at 96 px)."""
    side = preset("simclr_imagenet").crop_size
    kernel = V.blur_kernel_size(side)
    assert (side, kernel) == (224, 23)
    x = torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.1, 1.05, 2.0])
    out = V.gaussian_blur(x, sigma, kernel)
    for image, s, got in zip(x, sigma.tolist(), out, strict=True):
        torch.testing.assert_close(got, TF.gaussian_blur(image, [kernel, kernel], [s, s]), atol=1e-5, rtol=0)
