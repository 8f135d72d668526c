"""Semantics of SwAV, DINO, the analytic predictors (DirectPred, DirectCopy, linear) and the beta-VAE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.errors import UserError
from selfsup.losses import beta_vae_elbo, dino
from selfsup.methods.base import Schedule
from selfsup.methods.build import build_model
from selfsup.nets.heads import ConvDecoder, upsampling_plan
from selfsup.nets.predictors import LinearPredictor, directcopy_weight, directpred_weight

SWAV = ["method=swav", "views.crop_size=16", "method.proj_hidden_dim=32", "method.proj_output_dim=16",
        "method.num_prototypes=12"]  # fmt: skip
DINO = ["method=dino", "views.crop_size=16", "method.proj_hidden_dim=32", "method.bottleneck_dim=8",
        "method.out_dim=24"]  # fmt: skip


def multicrop_views(batch: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(batch, 3, 8, 8, generator=g) for _ in range(3)
    ]


# ---- SwAV


def test_swav_prototypes_frozen_then_trained_and_kept_normalised():
    torch.manual_seed(0)
    model = build_model(load_config([*SWAV, "method.freeze_prototypes_epochs=2"]))
    views = multicrop_views()
    with pytest.raises(ValueError, match="SwAV needs the training schedule for freeze_prototypes_epochs=2"):
        model.drop_frozen_gradients(None)  # never a silent default: the prototypes used to stay frozen forever
    for step, frozen in [(0, True), (5, True), (6, False)]:
        model.zero_grad()
        schedule = Schedule(step, total_steps=30, steps_per_epoch=3)
        model(views, schedule=schedule)["loss"].backward()
        model.drop_frozen_gradients(schedule)
        grad = model.prototypes.weight.grad
        assert (grad is None) == frozen and (frozen or grad.abs().max() > 0), step
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    model.after_optimizer_step(6, 30)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(12))


def test_swav_loss_is_swapped_prediction_of_sinkhorn_codes_over_all_crops():
    torch.manual_seed(0)
    model = build_model(load_config(SWAV)).eval()  # BatchNorm per sample: crops may be encoded in any grouping
    views = multicrop_views()
    loss = model(views, schedule=Schedule(0, 10))["loss"]
    # Reference from the paper's definitions, written out here: codes of the two global crops by
    # Sinkhorn-Knopp (eps 0.05, 3 iterations), each predicted from the 4 other crops at T = 0.1.
    z = [F.normalize(model.projector(model.backbone(v)), dim=1) for v in views]
    scores = [e @ model.prototypes.weight.T for e in z]

    def codes(s: torch.Tensor) -> torch.Tensor:
        q = torch.exp(s.double() / 0.05).T
        q /= q.sum()
        k, b = q.shape
        for _ in range(3):
            q = q / q.sum(dim=1, keepdim=True) / k
            q = q / q.sum(dim=0, keepdim=True) / b
        return (q * b).T

    total = 0.0
    for i in range(2):
        q = codes(scores[i])
        terms = [-(q * F.log_softmax(scores[v].double() / 0.1, dim=1)).sum(dim=1).mean() for v in range(5) if v != i]
        total += sum(terms) / 4
    torch.testing.assert_close(loss.double(), total / 2, rtol=1e-4, atol=1e-5)


def test_swav_queue_fills_newest_first_then_joins_sinkhorn():
    torch.manual_seed(0)
    model = build_model(load_config([*SWAV, "method.queue_size=8"]))
    views = multicrop_views(batch=6)[:2]
    model(views, schedule=Schedule(0, 10))
    assert int(model.queue_filled) == 6
    z0 = F.normalize(model.projector(model.backbone(torch.cat(views))), dim=1)[:6]  # same batch, same BN stats
    torch.testing.assert_close(model.queue[0, :6], z0)
    # the next batch pushes the first one back; with the queue full the codes change
    scores = torch.randn(6, 12)
    z = F.normalize(torch.randn(6, 16), dim=1)
    codes_before_full = model.assign(scores, z, 0)
    model.queue_filled.add_(6)  # forward counts a batch once all its global views have read their queues
    codes_with_queue = model.assign(scores, z, 0)
    assert not torch.allclose(codes_before_full, codes_with_queue)
    torch.testing.assert_close(codes_with_queue.sum(dim=1), torch.ones(6))


def test_swav_queue_joins_sinkhorn_only_once_every_view_is_full():
    """The step that fills the queue computes every view's codes without it: view 1 once read a queue counted
    full by view 0's update while still half zeros."""
    torch.manual_seed(0)
    model = build_model(load_config([*SWAV, "method.queue_size=6"]))
    no_queue = build_model(load_config(SWAV))
    no_queue.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("queue")}, strict=False)
    views = multicrop_views(batch=6)[:2]
    loss = model(views, schedule=Schedule(0, 10))["loss"]
    torch.testing.assert_close(loss, no_queue(views, schedule=Schedule(0, 10))["loss"])
    assert int(model.queue_filled) == 6


# ---- DINO


def test_dino_center_update_and_loss_use_the_old_center():
    torch.manual_seed(0)
    model = build_model(
        load_config([*DINO, "method.warmup_teacher_temperature_epochs=0", "method.teacher_temperature=0.05"])
    )
    model.eval()  # BatchNorm per sample: crops may be encoded in any grouping
    model.training = True  # but DINO itself trains: its centre moves in training mode only
    model.center.fill_(0.3)
    views = multicrop_views()
    loss = model(views, schedule=Schedule(0, 10))["loss"]
    with torch.no_grad():
        teacher = model.teacher_head(model.teacher_backbone(torch.cat(views[:2])))
    student = [model.head(model.backbone(v)) for v in views]
    expected = dino(student, teacher.chunk(2), torch.full((24,), 0.3), 0.1, 0.05)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.center, 0.9 * 0.3 + 0.1 * teacher.mean(dim=0, keepdim=True))


def test_dino_teacher_temperature_warmup_and_frozen_last_layer():
    model = build_model(load_config(DINO))  # 0.04 -> 0.07 over 30 epochs, last layer frozen for 1
    for step, temp in [(0, 0.04), (150, 0.055), (300, 0.07), (900, 0.07)]:
        assert model.teacher_temperature_at(Schedule(step, total_steps=1000, steps_per_epoch=10)) == pytest.approx(temp)
    views = multicrop_views()
    with pytest.raises(ValueError, match="DINO needs the training schedule for freeze_last_layer_epochs=1"):
        model.drop_frozen_gradients(None)
    for step, frozen in [(9, True), (10, False)]:
        model.zero_grad()
        schedule = Schedule(step, total_steps=1000, steps_per_epoch=10)
        model(views, schedule=schedule)["loss"].backward()
        model.drop_frozen_gradients(schedule)
        grad = model.head.last_layer.parametrizations.weight.original1.grad
        assert (grad is None) == frozen and (frozen or grad.abs().max() > 0)
        assert model.head.mlp[0].weight.grad.abs().max() > 0


def test_dino_last_layer_rows_have_unit_norm():
    model = build_model(load_config(DINO))
    torch.testing.assert_close(model.head.last_layer.weight.norm(dim=1), torch.ones(24))


# ---- predictors


def random_orthogonal(d: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_directpred_weight_from_a_known_correlation():
    u = random_orthogonal(5)
    s = torch.tensor([4.0, 1.0, 0.25, 0.0, 0.01], dtype=torch.float64)
    corr = u @ torch.diag(s) @ u.T
    w = directpred_weight(corr, eps=0.1)
    p = torch.tensor([1.0, 0.5, 0.25, 0.0, 0.05], dtype=torch.float64) + 0.1  # sqrt(s / 4) + eps
    torch.testing.assert_close(w, u @ torch.diag(p) @ u.T)
    for j in range(5):  # F's eigenvectors are W's, with eigenvalue p_j
        torch.testing.assert_close(w @ u[:, j], p[j] * u[:, j])


def test_directcopy_weight_is_normalised_correlation_plus_eps():
    u = random_orthogonal(4, seed=1)
    corr = u @ torch.diag(torch.tensor([8.0, 2.0, 1.0, 0.5], dtype=torch.float64)) @ u.T
    torch.testing.assert_close(directcopy_weight(corr, eps=0.2), corr / 8.0 + 0.2 * torch.eye(4, dtype=torch.float64))


def test_directpred_directcopy_predictor_tracks_the_ema_of_the_correlation_and_sets_w_every_freq_steps():
    pred = LinearPredictor(3, "directpred", rho=0.5, eps=0.0, freq=2)
    f1, f2 = torch.randn(8, 3), torch.randn(8, 3)
    torch.testing.assert_close(pred(f1), f1)  # identity before any F
    pred(f2)
    expected = 0.5 * (f1.T @ f1 / 8) + 0.5 * (f2.T @ f2 / 8)  # the first batch initialises F
    torch.testing.assert_close(pred.corr, expected)
    pred.after_optimizer_step(1)  # not a multiple of freq
    torch.testing.assert_close(pred.weight, torch.eye(3))
    pred.after_optimizer_step(2)
    torch.testing.assert_close(pred.weight, directpred_weight(expected, 0.0))
    pred.eval()
    pred(torch.randn(4, 3) * 100)  # evaluation does not move F
    torch.testing.assert_close(pred.corr, expected)


def test_predictor_step_decides_without_reading_the_device():
    """Whether F has been seen is known on the host: the step never reads `corr_updates` (a host sync on GPU)."""
    pred = LinearPredictor(3, "directcopy", rho=0.0, eps=0.0)
    pred.after_optimizer_step(0)  # no F yet: W stays the identity
    torch.testing.assert_close(pred.weight, torch.eye(3))
    f = torch.randn(8, 3)
    pred(f)
    pred.corr_updates = torch.empty((), dtype=torch.long, device="meta")  # reading it would raise
    pred.after_optimizer_step(1)
    torch.testing.assert_close(pred.weight, directcopy_weight(f.T @ f / 8, 0.0))


def test_trained_linear_predictor_symmetric_and_regularised():
    torch.manual_seed(0)
    pred = LinearPredictor(4, "linear", symmetric=True, symmetry_reg=0.5)
    w = pred.weight.detach()
    f = torch.randn(5, 4)
    torch.testing.assert_close(pred(f), f @ ((w + w.T) / 2).T)
    torch.testing.assert_close(pred.regularization(), 0.5 * (w - w.T).pow(2).sum())
    pred.regularization().backward()
    assert pred.weight.grad is not None


def test_directpred_and_directcopy_on_simsiam_targets():
    for kind in ("directpred", "directcopy", "linear"):
        cfg = load_config(["method=simsiam", "views.crop_size=16", "method.proj_hidden_dim=32",
                           "method.proj_output_dim=16", f"method.predictor.type={kind}"])  # fmt: skip
        model = build_model(cfg)
        assert isinstance(model.predictor, LinearPredictor) and model.predictor.kind == kind
        loss = model([torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)])["loss"]
        loss.backward()
        assert torch.isfinite(loss)


def test_three_layer_directpred_sets_only_its_last_layer_from_the_correlation_of_its_input():
    torch.manual_seed(0)
    pred = LinearPredictor(4, "directpred", rho=0.0, eps=0.1, layers=3)
    trained = [name for name, p in pred.named_parameters()]
    assert len(pred.trunk) == 2 and trained and all(name.startswith("trunk.") for name in trained)
    f = torch.randn(16, 4)
    out = pred(f)
    with torch.no_grad():
        h = pred.trunk(f)  # BatchNorm in training mode: the same batch statistics as the forward
    torch.testing.assert_close(pred.corr, h.T @ h / 16)  # F of W's input, the trunk's output
    torch.testing.assert_close(out, h)  # W is the identity until it is first set
    out.sum().backward()
    assert all(p.grad is not None for p in pred.trunk.parameters())
    pred.after_optimizer_step(1)
    torch.testing.assert_close(pred.weight, directpred_weight(h.T @ h / 16, 0.1))


def test_predictor_own_lr_and_weight_decay_reach_the_optimizer():
    from selfsup.train.loop import training_optimizer

    cfg = load_config(["method=simsiam", "views.crop_size=16", "method.proj_hidden_dim=32", "method.proj_output_dim=16",
                       "method.predictor.type=linear", "method.predictor.symmetric=true",
                       "method.predictor.lr_scale=10", "method.predictor.weight_decay=0"])  # fmt: skip
    model = build_model(cfg)
    optimizer, peak = training_optimizer(model, cfg)
    own = [g for g in optimizer.param_groups if g.get("lr_scale") == 10.0]
    assert [p for g in own for p in g["params"]] == [model.predictor.weight]
    assert own[0]["weight_decay"] == 0.0 and own[0]["fixed_lr"]  # SimSiam's predictor lr stays at the peak
    others = [g for g in optimizer.param_groups if "lr_scale" not in g]
    assert others[0]["weight_decay"] == cfg.optim.weight_decay


def test_unknown_predictor_is_a_user_error_with_a_suggestion():
    with pytest.raises(UserError, match="did you mean 'directpred'"):
        build_model(load_config(["method=byol", "method.predictor.type=directpredd"]))


# ---- beta-VAE

VAE = ["method=beta_vae", "views.crop_size=16", "method.latent_dim=6", "method.decoder_channels=32"]


@pytest.mark.parametrize(("size", "plan"), [(32, (4, 3)), (96, (6, 4)), (224, (7, 5)), (28, (7, 2)), (16, (4, 2))])
def test_decoder_upsamples_to_the_crop(size, plan):
    assert upsampling_plan(size) == plan
    assert ConvDecoder(5, size, 32)(torch.randn(2, 5)).shape == (2, 3, size, size)


def test_beta_vae_representation_is_the_posterior_mean_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = build_model(load_config(VAE)).eval()
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(model.representation()(x), model.mu(model.backbone(x)))
    torch.testing.assert_close(model([x])["loss"], model([x])["loss"])


def test_beta_vae_loss_is_recon_plus_beta_kl_and_capacity_ramps():
    torch.manual_seed(0)
    model = build_model(load_config([*VAE, "method.beta=2.0"])).eval()
    x = torch.rand(4, 3, 16, 16)
    out = model([x])
    torch.testing.assert_close(out["loss"], out["recon"] + 2.0 * out["kl"])
    capped = build_model(load_config([*VAE, "method.capacity=10.0", "method.capacity_epochs=4"]))
    for step, c in [(0, 0.0), (10, 5.0), (20, 10.0), (90, 10.0)]:
        assert capped.capacity_at(Schedule(step, total_steps=100, steps_per_epoch=5)) == pytest.approx(c)
    with pytest.raises(ValueError, match="BetaVAE needs the training schedule for the capacity ramp"):
        capped([x])
    assert math.isclose(build_model(load_config(VAE)).beta, 4.0)


def test_beta_vae_encodes_standardised_views_and_reconstructs_unit_range_pixels():
    """The backbone sees views standardised like every other method's (and like evaluation feeds it);
    the likelihood is on the pixels in [0, 1] that the views came from."""
    cfg = load_config([*VAE, "data=cifar10"])
    assert cfg.views.mean is None and cfg.views.std is None and cfg.views.num == 1
    assert cfg.method.image_size == cfg.views.crop_size
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    pixels = torch.rand(4, 3, 16, 16)
    standardised = (pixels - mean) / std
    h = model.backbone(standardised)
    mu, logvar = model.mu(h), model.logvar(h)
    expected, _ = beta_vae_elbo(pixels, model.decoder(mu), mu, logvar, beta=4.0)
    torch.testing.assert_close(model([standardised])["loss"], expected, rtol=1e-4, atol=1e-3)
    # with views.mean 0 / std 1 the views are the pixels themselves
    raw = build_model(load_config([*VAE, "data=cifar10", "views.mean=[0,0,0]", "views.std=[1,1,1]"])).eval()
    raw.load_state_dict(model.state_dict())
    h = raw.backbone(pixels)
    mu, logvar = raw.mu(h), raw.logvar(h)
    torch.testing.assert_close(
        raw([pixels])["loss"], beta_vae_elbo(pixels, raw.decoder(mu), mu, logvar, beta=4.0)[0], rtol=1e-4, atol=1e-3
    )
