"""The Method base: a backbone plus heads plus a loss; `forward(views, schedule)` is one training step's loss."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from selfsup.methods.momentum import cosine_momentum, ema_update
from selfsup.nets.backbones import infer_feature_dim
from selfsup.registry import Registry
from selfsup.settings import check_arguments, declaration


class Schedule(NamedTuple):
    """Where training stands, for methods whose behaviour changes over a run (SwAV's frozen prototypes,
    DINO's teacher temperature and frozen last layer, the beta-VAE's capacity ramp): the optimizer step about
    to be taken (0-based), the run's total steps, and the steps per epoch that turn options given in epochs
    into steps. Without steps_per_epoch, a method with such an option refuses the schedule (no default
    would read its epochs as steps). A tuple, so that wrappers that walk a forward's arguments (Fabric's
    precision casts) pass it through."""

    step: int
    total_steps: int
    steps_per_epoch: int | None = None

    def steps(self, epochs: float) -> int:
        if self.steps_per_epoch is None:
            raise ValueError(
                f"{epochs:g} epochs need the schedule's steps_per_epoch: Schedule(step, total_steps, steps_per_epoch)"
            )
        return round(epochs * self.steps_per_epoch)


class Method(nn.Module):
    """A self-supervised method: composes a backbone, its heads and a loss function.

    Build one in plain Python around any module mapping images to [B, D] features, e.g.
    `SimCLR(backbone)`; every option is a keyword with the paper's default (the YAML configs are presets of
    them), whose type declares its rule (`temperature: Positive`): a subclass's constructor checks the
    arguments it is given against them before it builds anything (`__init_subclass__`), failing in one line
    as a ValueError. `forward(views, schedule)` takes the augmented views (each [B, 3, S, S]; multi-crop: the
    global views, then the local crops) and returns a dict with the scalar `loss` and detached tensors to log.
    Methods whose options depend on the point in training refuse to run without `schedule`. State that
    training moves in forward (queues, centres, running correlations) moves only in training mode: an
    eval-mode forward (a validation loss) changes no buffer. Work after each optimizer step (momentum
    networks, SwAV's prototype normalisation, analytic predictors) is in `after_optimizer_step(step,
    total_steps)`.

    Momentum (EMA) target networks (BYOL, MoCo, DINO) are declared, not written out: `momentum_pairs()` names
    the (online, target) module pairs (targets made by `momentum.frozen_copy`) and `base_momentum` /
    `final_momentum` the schedule (cosine from base to final, BYOL's; `final_momentum = None` holds it at the
    base, MoCo v2's). The base's `after_optimizer_step` moves every target by EMA; a method with other
    per-step work extends it with `super().after_optimizer_step(step, total_steps)`.

    Some parameters are held still early in a run (SwAV's prototypes, DINO's last layer): any training
    loop, the CLI's or a user's, calls `drop_frozen_gradients(schedule)` after backward and before gradient
    clipping and `optimizer.step()`, so that the optimizer skips them as the official code's does.
    """

    multi_crop = False  # whether forward takes local crops after the global views (SwAV, DINO)
    # Whether the loss compares an output with the input pixels (the beta-VAE): the views come
    # standardised, so the caller passes their mean and std as `pixel_stats` to undo that.
    reconstructs_pixels = False
    num_views: int | None = None  # the views forward takes (views.num), for a method that takes a fixed number
    # The momentum of the EMA of `momentum_pairs()`: cosine from base to final, or constant at base when final
    # is None (see `momentum_at`). Methods with momentum pairs set both in their constructor.
    base_momentum: float = 0.0
    final_momentum: float | None = None

    def __init__(self, backbone: nn.Module, feature_dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = infer_feature_dim(backbone) if feature_dim is None else int(feature_dim)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap the constructor a subclass defines so that it first checks the arguments it is given against
        the rules their types declare (`settings.declaration`), as a config's `method.*` is checked: a
        library user's `SimCLR(backbone, temperature=-1)` fails in one line before anything is built."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def checked_init(self: Method, *args: Any, **kwargs: Any) -> None:
            try:
                given = inspect.signature(init).bind(self, *args, **kwargs).arguments
            except TypeError:
                given = {}  # a wrong call: the constructor raises its own TypeError
            check_arguments(type(self).__name__, given, declaration(init))
            init(self, *args, **kwargs)

        cls.__init__ = checked_init  # type: ignore[method-assign]

    @classmethod
    def views_problem(cls, num: int) -> str | None:
        """Why `num` views do not fit this method, or None: the one check behind forward's and the config's."""
        if cls.num_views is None or num == cls.num_views:
            return None
        return f"{cls.__name__} takes {cls.num_views} view(s), got {num}: set views.num={cls.num_views}"

    def check_views(self, views: list[torch.Tensor]) -> None:
        """forward's guard: a user's loop passing another number of views fails here, not in the loss."""
        problem = self.views_problem(len(views))
        if problem:
            raise ValueError(problem)

    def representation(self) -> nn.Module:
        """The module whose output evaluation measures: the backbone (the beta-VAE: its posterior mean)."""
        return self.backbone

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def scheduled(self, schedule: Schedule | None, needs: str) -> Schedule:
        """`schedule` with its steps_per_epoch, for `needs` (an option in epochs), or a ValueError naming what
        needs it: a method never falls back to a silent default, nor reads epochs as steps."""
        call = "method(views, schedule=Schedule(step, total_steps, steps_per_epoch))"
        if schedule is None:
            raise ValueError(f"{type(self).__name__} needs the training schedule for {needs}: call it as {call}")
        if schedule.steps_per_epoch is None:
            raise ValueError(
                f"{type(self).__name__} needs the schedule's steps_per_epoch for {needs} (an option in epochs): "
                f"call it as {call}"
            )
        return schedule

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The (online, target) module pairs whose target follows its online module by EMA; none by default."""
        return []

    def momentum_targets(self) -> list[nn.Module]:
        """The target modules of `momentum_pairs()`: trained by no gradient, only by the EMA."""
        return [target for _, target in self.momentum_pairs()]

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The EMA momentum after optimizer step `step`: BYOL's cosine from `base_momentum` to
        `final_momentum`, or `base_momentum` throughout when `final_momentum` is None."""
        if self.final_momentum is None:
            return self.base_momentum
        return cosine_momentum(step, total_steps, self.base_momentum, self.final_momentum)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Once per optimizer step: the EMA of every momentum pair, in their order. Methods with other
        per-step work (queues, centres, analytic predictors) extend it, calling this first."""
        pairs = self.momentum_pairs()
        if not pairs:
            return
        momentum = self.momentum_at(step, total_steps)
        for online, target in pairs:
            ema_update(target, online, momentum)

    def frozen_parameters(self, schedule: Schedule | None) -> list[nn.Parameter]:
        """The parameters held still at `schedule`'s step; none by default."""
        return []

    def drop_frozen_gradients(self, schedule: Schedule | None) -> None:
        """Set the gradients of `frozen_parameters(schedule)` to None, once per optimizer step: after the
        last backward (after DDP's all-reduce, which runs inside it; after every accumulated micro-batch)
        and before gradient clipping and the optimizer step.

        None, not zero: the optimizer then skips them (the official code's `p.grad = None`: DINO's
        cancel_gradients_last_layer, SwAV's frozen prototypes), whereas a zero gradient would still let weight
        decay shrink them, momentum move them and AdamW count steps and update its moments. The forward uses
        them as usual: DDP without find_unused_parameters needs every parameter to receive a gradient in
        each backward, and their true gradient, all-reduced and then dropped here, is that gradient; a zero
        one made in the forward would add nothing once it is dropped."""
        for p in self.frozen_parameters(schedule):
            p.grad = None

    def param_group_options(self) -> list[tuple[nn.Module, dict[str, Any]]]:
        """Modules trained with optimizer options of their own (see `param_groups`): a predictor's own lr,
        weight decay, or lr fixed at the peak (SimSiam)."""
        return []


METHODS: Registry[Callable[..., Method]] = Registry("method")


def spread(z: torch.Tensor) -> torch.Tensor:
    """The collapse monitor of SimSiam (Chen & He 2021, section 4.1): the per-dimension std of the L2-normalised
    embeddings, times sqrt(dim). About 1 for embeddings spread over the sphere, 0 when every image maps to one
    direction; every joint-embedding method logs it as `spread`, and the learning test bounds it from below."""
    z = torch.nn.functional.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean() * z.shape[1] ** 0.5


def assignment_entropies(probs: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """The two collapse monitors of soft assignments [n, K] (DINO's teacher, SwAV's codes; Caron et al. 2021,
    section 5.3): `{name}_entropy`, the mean entropy of one image's assignment (ln K when every output is
    uniform), and `{name}_marginal_entropy`, the entropy of the batch's mean assignment (0 when every image
    goes to one prototype). A working method keeps the first well below ln K and the second well above 0."""
    p = probs.detach().float()
    marginal = p.mean(dim=0)
    return {
        f"{name}_entropy": -(p * p.clamp_min(1e-12).log()).sum(dim=1).mean(),
        f"{name}_marginal_entropy": -(marginal * marginal.clamp_min(1e-12).log()).sum(),
    }


def resolution_runs(views: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive crops of one resolution: multi-crop's global views, then
    its local crops."""
    runs: list[tuple[int, int]] = []
    for i, view in enumerate(views):
        if runs and view.shape[-2:] == views[runs[-1][0]].shape[-2:]:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def encode_crops(encode: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor]) -> list[torch.Tensor]:
    """`encode` applied to every crop, one batched call per run of one resolution, as DINO's
    MultiCropWrapper does."""
    outputs: list[torch.Tensor] = []
    for start, end in resolution_runs(views):
        outputs.extend(encode(torch.cat(views[start:end])).chunk(end - start))
    return outputs


def global_views(views: list[torch.Tensor]) -> int:
    """How many crops are global: the first run of one resolution (global views come first)."""
    return resolution_runs(views)[0][1]
