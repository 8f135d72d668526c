"""Property-based tests (hypothesis): command-line values round-trip through override parsing, key checks
accept exactly the keys of the config, and the losses keep the invariances their definitions imply.

Tensors are drawn from a seed with small shapes, so each property runs its examples in about a second."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from selfsup import losses
from selfsup.config import GROUPS, _parse_value, apply_overrides, check_keys, leaf_keys, load_config
from selfsup.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
FEW = settings(max_examples=30, deadline=None)
CLOSE = {"rtol": 1e-4, "atol": 1e-5}


@functools.cache
def base_config() -> DictConfig:
    return load_config(["data=synthetic"])


def saved_config() -> DictConfig:
    """A copy as `selfsup eval` reads it from a run's config.yaml (plain, not Hydra's struct mode)."""
    return OmegaConf.create(OmegaConf.to_container(base_config()))


# ---------------------------------------------------------------------------------------------------------
# Overrides and keys

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.integers(), finite_floats, st.booleans())


def as_text(value: int | float | bool) -> str:
    """How one writes a value on the command line: Python's repr of numbers, YAML's true/false."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


@FEW
@given(scalars)
def test_scalars_parse_back_to_themselves(value):
    parsed = _parse_value(as_text(value))
    assert type(parsed) is type(value) and parsed == value


@FEW
@given(st.lists(scalars, max_size=5))
def test_lists_parse_back_to_themselves(values):
    parsed = _parse_value("[" + ", ".join(as_text(v) for v in values) + "]")
    assert parsed == values and [type(p) for p in parsed] == [type(v) for v in values]


@FEW
@given(st.one_of(scalars, st.lists(scalars, max_size=4)))
def test_a_value_parses_back_to_itself(value):
    text = "[" + ", ".join(map(as_text, value)) + "]" if isinstance(value, list) else as_text(value)
    assert _parse_value(text) == value


@FEW
@given(st.integers(-10, 10**6))
def test_an_integer_setting_takes_what_its_rule_allows_and_refuses_the_rest(epochs):
    if epochs >= 1:
        assert apply_overrides(saved_config(), [f"trainer.epochs={epochs}"]).trainer.epochs == epochs
    else:
        with pytest.raises(UserError) as err:
            apply_overrides(saved_config(), [f"trainer.epochs={epochs}"])
        assert str(err.value) == f"trainer.epochs must be a positive integer, got {epochs}"


@FEW
@given(st.floats(-2, 2, allow_nan=False))
def test_a_momentum_setting_takes_what_its_rule_allows_and_refuses_the_rest(momentum):
    override = [f"optim.momentum={momentum!r}"]
    if 0 <= momentum < 1:
        assert apply_overrides(saved_config(), override).optim.momentum == momentum
    else:
        with pytest.raises(UserError) as err:
            apply_overrides(saved_config(), override)
        assert str(err.value) == f"optim.momentum must be a number in [0, 1), got {momentum!r}"


config_keys = st.deferred(lambda: st.sampled_from(leaf_keys(base_config())))  # composed when first drawn
names = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)
near_misses = st.builds(  # a real key with one character dropped or replaced, or with one appended
    lambda key, cut, extra: key[:cut] + extra + key[cut + 1 :],
    config_keys,
    st.integers(0, 30),
    st.sampled_from(["", "s", "_", "."]),
)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.lists(names, min_size=1, max_size=3).map(".".join), near_misses))
def test_check_keys_refuses_every_key_the_config_lacks(key):
    assume(key not in leaf_keys(base_config()) and key not in GROUPS and key.strip(".") == key)
    with pytest.raises(UserError) as err:
        check_keys(base_config(), [f"{key}=1"])
    assert str(err.value).startswith(f"unknown config key {key!r}")


@FEW
@given(config_keys)
def test_check_keys_accepts_every_key_the_config_has(key):
    check_keys(base_config(), [f"{key}=1"])


# ---------------------------------------------------------------------------------------------------------
# Loss invariants


@st.composite
def pairs(draw, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Two [n, d] embeddings (n in [min_rows, 8], d in [2, 8]) and a permutation of the batch."""
    n, d = draw(st.integers(min_rows, 8)), draw(st.integers(2, 8))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    z1, z2 = torch.randn(2, n, d, generator=generator)
    return z1, z2, draw(st.permutations(range(n)))


def scores(z: torch.Tensor, prototypes: int = 5) -> torch.Tensor:
    """Cosine similarities to fixed prototypes, the kind of scores SwAV feeds to Sinkhorn."""
    generator = torch.Generator().manual_seed(0)
    return F.normalize(z, dim=1) @ F.normalize(torch.randn(prototypes, z.shape[1], generator=generator), dim=1).T


PAIR_LOSSES = {
    "nt_xent": losses.nt_xent,
    "vicreg": losses.vicreg,
    "barlow_twins": losses.barlow_twins,
    "negative_cosine": losses.negative_cosine,
    "info_nce": lambda q, k: losses.info_nce(q, k, torch.ones(3, q.shape[1])),
    "swav": lambda a, b: losses.swav(
        scores(a), scores(b), losses.sinkhorn(scores(a)), losses.sinkhorn(scores(b)), temperature=0.1
    ),
    "dino": lambda a, b: losses.dino([a, b, a * b], [a, b], center=torch.zeros(a.shape[1])),
}


@pytest.mark.parametrize("name", PAIR_LOSSES)
@FEW
@given(pairs())
def test_permuting_the_batch_leaves_the_loss_unchanged(name, pair):
    z1, z2, order = pair
    loss = PAIR_LOSSES[name]
    torch.testing.assert_close(loss(z1[order], z2[order]), loss(z1, z2), **CLOSE)


@FEW
@given(pairs(min_rows=1))
def test_sinkhorn_codes_follow_their_samples(pair):
    z, _, order = pair
    torch.testing.assert_close(losses.sinkhorn(scores(z)[order]), losses.sinkhorn(scores(z))[order], **CLOSE)


@pytest.mark.parametrize("name", ["nt_xent", "negative_cosine", "info_nce"])
@FEW
@given(pairs(), st.floats(1e-3, 1e3))
def test_normalising_losses_ignore_positive_scales_of_each_embedding(name, pair, scale):
    z1, z2, _ = pair
    generator = torch.Generator().manual_seed(len(z1))
    row_scales = torch.empty(2, len(z1), 1).uniform_(-4, 4, generator=generator).exp() * scale
    loss = PAIR_LOSSES[name]
    torch.testing.assert_close(loss(z1 * row_scales[0], z2 * row_scales[1]), loss(z1, z2), **CLOSE)


DUPLICABLE = {
    "negative_cosine": losses.negative_cosine,
    # Barlow Twins standardises with the biased batch variance, which duplication leaves unchanged.
    "barlow_twins": losses.barlow_twins,
    "vicreg invariance": lambda a, b: losses.vicreg_terms(a, b)["invariance"],
    "swav": lambda a, b: losses.swav(scores(a), scores(b), F.softmax(scores(b), 1), F.softmax(scores(a), 1)),
    "dino": PAIR_LOSSES["dino"],
}


@pytest.mark.parametrize("name", DUPLICABLE)
@FEW
@given(pairs())
def test_batch_means_are_unchanged_by_duplicating_the_batch(name, pair):
    z1, z2, _ = pair
    loss = DUPLICABLE[name]
    torch.testing.assert_close(loss(torch.cat([z1, z1]), torch.cat([z2, z2])), loss(z1, z2), **CLOSE)


@FEW
@given(pairs(min_rows=1))
def test_sinkhorn_of_a_duplicated_batch_is_the_codes_duplicated(pair):
    z, _, _ = pair
    codes = losses.sinkhorn(scores(z))
    torch.testing.assert_close(losses.sinkhorn(scores(torch.cat([z, z]))), torch.cat([codes, codes]), **CLOSE)
