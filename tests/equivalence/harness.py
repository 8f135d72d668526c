"""Step-level equivalence with lightly 1.6: the same initial weights copied into both implementations, the
same views fed to both, the same optimizer, K steps, and at every step the loss, every gradient and every
parameter and buffer (momentum encoders, queues, centres, prototypes) compared within a stated tolerance.

A test pairs the modules that correspond (selfsup's backbone with lightly's, selfsup's projector with
lightly's head, ...) as `Pair`s; within a pair, tensors correspond by registration order and must agree in
shape, which is what `copy_pairs` and `assert_pairs_equal` check before comparing values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from selfsup.methods.base import Schedule

LIGHTLY_VERSION = "1.6.0"
STEPS = 5  # K: optimizer steps compared per method
# fp32 on CPU: both sides run the same math in a different order (a cat over views against two forwards, a
# sum against a mean), so values agree to rounding, which grows over steps through the optimizer.
RTOL = 1e-4
ATOL = 1e-5


def tiny_backbone(dim: int = 16) -> nn.Module:
    """A small conv net (conv-BN-ReLU twice, global average pooling) mapping images to [B, dim] features: BatchNorm
    makes the batch composition of a forward matter, as it does for a ResNet, at a cost of milliseconds on CPU.
    Deep-copy one instance into both sides."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, dim, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(dim),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


MULTI_CROP = (16, 16, 8, 8)  # `random_views` sizes of DINO's and SwAV's multi-crop: 2 global crops, 2 local ones


def random_views(batch: int = 8, sizes: Sequence[int] = (16, 16)) -> Callable[[int], list[torch.Tensor]]:
    """A view of `batch` random images per entry of `sizes` (its side in px) per step, drawn from a generator
    seeded by the step, so that every step (and every rerun) feeds both sides the same, fresh views."""

    def views(step: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(step)
        return [torch.randn(batch, 3, size, size, generator=generator) for size in sizes]

    return views


def held(**tensors: torch.Tensor) -> nn.Module:
    """A module holding `tensors` themselves, not copies (trainable parameters as parameters, so that their
    gradients are compared too; anything else as buffers), to pair tensors that no module holds alone or that
    a module holds in another layout."""
    holder = nn.Module()
    for name, tensor in tensors.items():
        if isinstance(tensor, nn.Parameter) and tensor.requires_grad:
            holder.register_parameter(name, tensor)
        else:
            holder.register_buffer(name, tensor)
    return holder


def require_lightly():
    """lightly, or a skip that says in one line why and how to get it."""
    lightly = pytest.importorskip(
        "lightly", reason=f"lightly is not installed: `pip install --no-deps lightly=={LIGHTLY_VERSION}` (make setup)"
    )
    if lightly.__version__ != LIGHTLY_VERSION:
        pytest.skip(f"lightly {lightly.__version__} installed; these tests pin the reference at {LIGHTLY_VERSION}")
    return lightly


@dataclass(frozen=True)
class Pair:
    """A selfsup module and the lightly module it must equal, named for the failure messages."""

    name: str
    selfsup: nn.Module
    lightly: nn.Module


def _tensors(module: nn.Module, buffers: bool = True) -> list[tuple[str, torch.Tensor]]:
    named = list(module.named_parameters())
    if buffers:
        named += [(n, b) for n, b in module.named_buffers() if b.is_floating_point() or b.dtype == torch.long]
    return named


def _matched(pair: Pair, buffers: bool = True) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
    ours, theirs = _tensors(pair.selfsup, buffers), _tensors(pair.lightly, buffers)
    assert len(ours) == len(theirs), (
        f"{pair.name}: selfsup has {len(ours)} tensors {[n for n, _ in ours]}, "
        f"lightly {len(theirs)} {[n for n, _ in theirs]}"
    )
    for (n1, a), (n2, b) in zip(ours, theirs, strict=True):
        assert a.shape == b.shape, f"{pair.name}: selfsup {n1} {tuple(a.shape)} vs lightly {n2} {tuple(b.shape)}"
        yield f"{pair.name}.{n1} (lightly {n2})", a, b


@torch.no_grad()
def copy_pairs(pairs: Iterable[Pair]) -> None:
    """lightly's initial weights and buffers copied into selfsup's modules."""
    for pair in pairs:
        for _, ours, theirs in _matched(pair):
            ours.copy_(theirs)


def assert_close(name: str, ours: torch.Tensor, theirs: torch.Tensor, rtol: float = RTOL, atol: float = ATOL) -> None:
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def assert_pairs_equal(pairs: Iterable[Pair], step: int, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Every parameter and buffer of each pair equal after optimizer step `step`."""
    for pair in pairs:
        for name, ours, theirs in _matched(pair):
            assert_close(f"step {step}: {name}", ours.detach(), theirs.detach(), rtol, atol)


def assert_grads_equal(pairs: Iterable[Pair], step: int, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Every gradient of each pair equal (both None or both close) at step `step`."""
    for pair in pairs:
        for name, ours, theirs in _matched(pair, buffers=False):
            assert (ours.grad is None) == (theirs.grad is None), f"step {step}: {name}: gradient on one side only"
            if ours.grad is not None:
                assert_close(f"step {step}: grad of {name}", ours.grad, theirs.grad, rtol, atol)


def lockstep(
    pairs: list[Pair],
    selfsup_loss: Callable[[int, list[torch.Tensor]], torch.Tensor],
    lightly_loss: Callable[[int, list[torch.Tensor]], torch.Tensor],
    views: Callable[[int], list[torch.Tensor]],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    after_step: tuple[Callable[[int], None], Callable[[int], None]] | None = None,
    steps: int = STEPS,
    rtol: float = RTOL,
    atol: float = ATOL,
    after_backward: Callable[[int], None] | None = None,
) -> list[float]:
    """Train both sides `steps` steps on the same views; at each step the losses, then the gradients (after
    `after_backward(step)`: the frozen parameters' gradients dropped, as each side's loop does), then (after
    the optimizer step and each side's `after_step(step)`: EMA, queue, centre updates) every parameter and
    buffer must agree. Returns selfsup's losses, so a test can also check they changed."""
    copy_pairs(pairs)
    assert_pairs_equal(pairs, -1, rtol=0, atol=0)
    losses = []
    for step in range(steps):
        batch = views(step)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        ours = selfsup_loss(step, [v.clone() for v in batch])
        theirs = lightly_loss(step, [v.clone() for v in batch])
        assert_close(f"step {step}: loss", ours.detach(), theirs.detach(), rtol, atol)
        ours.backward()
        theirs.backward()
        if after_backward is not None:
            after_backward(step)
        assert_grads_equal(pairs, step, rtol, atol)
        for optimizer in optimizers:
            optimizer.step()
        if after_step is not None:
            for update in after_step:
                update(step)
        assert_pairs_equal(pairs, step, rtol, atol)
        losses.append(float(ours.detach()))
    return losses


def perturbed(loss: Callable[[int, list[torch.Tensor]], torch.Tensor], factor: float = 1 + 1e-3):
    """`loss` scaled by `factor`: a side that no longer equals the other, which `lockstep` must refuse (each
    method's test checks this for both sides, so its comparison can fail)."""
    return lambda step, views: loss(step, views) * factor


def sgd(params: Iterable[torch.Tensor], lr: float = 0.1) -> torch.optim.Optimizer:
    """The optimizer of both sides: SGD with momentum and weight decay, so that both enter the comparison (a
    test may take a larger `lr`, to carry its weights further from their start within the STEPS steps)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


@dataclass(frozen=True)
class Sides:
    """One method's two implementations as `lockstep` takes them: the module pairs, each side's loss of a
    step's views, each side's optimizer and optional after-step update, the optional after-backward drop of
    frozen parameters' gradients, and the tolerance (a method whose rounding grows faster over the steps
    states its own)."""

    pairs: list[Pair]
    selfsup_loss: Callable[[int, list[torch.Tensor]], torch.Tensor]
    lightly_loss: Callable[[int, list[torch.Tensor]], torch.Tensor]
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer]
    after_step: tuple[Callable[[int], None], Callable[[int], None]] | None = None
    rtol: float = RTOL
    atol: float = ATOL
    after_backward: Callable[[int], None] | None = None

    def lockstep(self, views: Callable[[int], list[torch.Tensor]], perturb: str | None = None) -> list[float]:
        """`lockstep` on these sides; `perturb` ("selfsup" or "lightly") scales that side's loss by `perturbed`."""
        if perturb not in (None, "selfsup", "lightly"):
            raise ValueError(f"perturb must be None, 'selfsup' or 'lightly', got {perturb!r}")
        ours = perturbed(self.selfsup_loss) if perturb == "selfsup" else self.selfsup_loss
        theirs = perturbed(self.lightly_loss) if perturb == "lightly" else self.lightly_loss
        return lockstep(
            self.pairs,
            ours,
            theirs,
            views,
            self.optimizers,
            self.after_step,
            rtol=self.rtol,
            atol=self.atol,
            after_backward=self.after_backward,
        )


def one_head_sides(
    ours: nn.Module,
    head_name: str,
    backbone: nn.Module,
    head: nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    atol: float = ATOL,
) -> Sides:
    """Sides of a method that compares two views' embeddings from one backbone and one head (SimCLR, Barlow
    Twins, VICReg): selfsup's `ours` (its head at attribute `head_name`) against lightly's `backbone`, `head`
    and `criterion`, fed the concatenated views as selfsup's one forward sees them, with identical SGDs."""

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        z0, z1 = head(backbone(torch.cat(views)).flatten(start_dim=1)).chunk(2)
        return criterion(z0, z1)

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        return ours(views, Schedule(step, STEPS))["loss"]

    return Sides(
        pairs=[Pair("backbone", ours.backbone, backbone), Pair(head_name, getattr(ours, head_name), head)],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(sgd(ours.parameters()), sgd([*backbone.parameters(), *head.parameters()])),
        atol=atol,
    )
