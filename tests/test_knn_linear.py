"""kNN monitor and linear probe: against a brute-force reference and data with known answers."""

import math

import pytest
import torch

from selfsup.errors import UserError
from selfsup.eval.knn import knn_accuracy, knn_predict
from selfsup.eval.linear import train_linear_probe


def reference_knn_scores(
    train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, num_classes: int, k: int, temperature: float
) -> list[list[float]]:
    """InstDisc weighted kNN written with Python loops: cosine similarity, top-k, sum of exp(sim / T)."""
    train_rows, test_rows, label_list = train.tolist(), test.tolist(), labels.tolist()
    out = []
    for q in test_rows:
        q_norm = math.sqrt(sum(v * v for v in q))
        sims = []
        for x, label in zip(train_rows, label_list, strict=True):
            x_norm = math.sqrt(sum(v * v for v in x))
            sims.append((sum(a * b for a, b in zip(q, x, strict=True)) / (q_norm * x_norm), label))
        sims.sort(key=lambda s: s[0], reverse=True)
        scores = [0.0] * num_classes
        for sim, label in sims[:k]:
            scores[label] += math.exp(sim / temperature)
        out.append(scores)
    return out


def reference_topk_accuracy(scores: list[list[float]], labels: list[int], k: int) -> float:
    hits = 0
    for row, label in zip(scores, labels, strict=True):
        ranked = sorted(range(len(row)), key=lambda c: row[c], reverse=True)
        hits += label in ranked[:k]
    return 100.0 * hits / len(labels)


@pytest.fixture
def random_set() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(60, 8, generator=g)
    test = torch.randn(25, 8, generator=g)
    return train, torch.randint(0, 10, (60,), generator=g), test, torch.randint(0, 10, (25,), generator=g)


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (7, 0.1), (20, 0.5), (1000, 0.07)])
def test_knn_predict_matches_brute_force(random_set, k, temperature):
    train, train_labels, test, _ = random_set
    scores = knn_predict(train, train_labels, test, 10, k=k, temperature=temperature, chunk_size=4)
    ref = reference_knn_scores(train, train_labels, test, 10, k, temperature)
    assert scores.shape == (25, 10)
    torch.testing.assert_close(scores, torch.tensor(ref, dtype=torch.float32), rtol=1e-4, atol=1e-6)


def test_knn_predict_chunking_does_not_change_scores(random_set):
    train, train_labels, test, _ = random_set
    whole = knn_predict(train, train_labels, test, 10, k=5, chunk_size=1024)
    for chunk in (1, 3, 24, 25):
        # Only float32 matmul blocking may differ between chunk sizes.
        torch.testing.assert_close(
            knn_predict(train, train_labels, test, 10, k=5, chunk_size=chunk), whole, rtol=1e-5, atol=0
        )


def test_knn_predict_hand_checked():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    test = torch.tensor([[2.0, 0.0]])  # cosine similarities 1, 0, -1 (scale does not matter)
    e = math.e
    torch.testing.assert_close(knn_predict(train, labels, test, 3, k=2, temperature=1.0), torch.tensor([[e, 1.0, 0.0]]))
    # k larger than the train set is clamped to all 3 neighbours.
    torch.testing.assert_close(
        knn_predict(train, labels, test, 3, k=200, temperature=1.0), torch.tensor([[e, 1.0, 1 / e]])
    )
    torch.testing.assert_close(
        knn_predict(train, labels, test, 3, k=1, temperature=0.5), torch.tensor([[e**2, 0.0, 0.0]])
    )


def test_knn_accuracy_hand_checked_with_fewer_than_five_classes():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    test = torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, -0.1]])
    result = knn_accuracy(train, labels, test, torch.tensor([0, 1, 1]), 3, k=1)
    assert result["top1"] == pytest.approx(200 / 3)
    assert result["top5"] == pytest.approx(100.0)  # min(5, 3) = 3 guesses cover every class
    two = knn_accuracy(train[:2], labels[:2], test[:2], torch.tensor([0, 1]), 2, k=1)
    assert two == {"top1": pytest.approx(100.0), "top5": pytest.approx(100.0), "k": 1}


def test_knn_accuracy_matches_brute_force(random_set):
    train, train_labels, test, test_labels = random_set
    ref_scores = reference_knn_scores(train, train_labels, test, 10, 15, 0.1)
    result = knn_accuracy(train, train_labels, test, test_labels, 10, k=15, temperature=0.1)
    assert result["top1"] == pytest.approx(reference_topk_accuracy(ref_scores, test_labels.tolist(), 1))
    assert result["top5"] == pytest.approx(reference_topk_accuracy(ref_scores, test_labels.tolist(), 5))
    assert 0 < result["top1"] < result["top5"] < 100


def test_knn_separable_clusters_are_perfect():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(4) * 10
    train_labels, test_labels = torch.arange(4).repeat(50), torch.arange(4).repeat(10)
    train = centres[train_labels] + torch.randn(200, 4, generator=g)
    test = centres[test_labels] + torch.randn(40, 4, generator=g)
    assert knn_accuracy(train, train_labels, test, test_labels, 4, k=20)["top1"] == 100.0


def test_knn_rejects_bad_inputs(random_set):
    train, train_labels, test, test_labels = random_set
    with pytest.raises(UserError, match="labelled train split"):
        knn_predict(train, torch.full_like(train_labels, -1), test, 10)
    with pytest.raises(UserError, match="k >= 1"):
        knn_predict(train, train_labels, test, 10, k=0)
    with pytest.raises(UserError, match="equal width"):
        knn_predict(train, train_labels, test[:, :4], 10)
    with pytest.raises(UserError, match="one label per feature"):
        knn_accuracy(train, train_labels, test, test_labels[:3], 10)


def blobs(n_per_class: int, num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs with well-separated means: linearly separable with overwhelming probability."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 6
    labels = torch.arange(num_classes).repeat(n_per_class)
    feats = centres[labels] + torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed))
    return feats, labels


@pytest.mark.parametrize("normalize", [True, False, "batchnorm"])
def test_linear_probe_separates_blobs(normalize):
    x_train, y_train = blobs(100, 5, 16, seed=0)
    x_test, y_test = blobs(40, 5, 16, seed=1)
    result = train_linear_probe(
        x_train, y_train, x_test, y_test, 5, epochs=15, batch_size=64, lr=0.1, normalize=normalize
    )
    assert result["top1"] == 100.0
    assert result["top5"] == 100.0
    assert result["train_loss"] < 0.05


def test_linear_probe_normalize_handles_badly_scaled_features():
    # Post-ReLU-like features: a large positive offset, per-dimension scales spanning 4 orders of magnitude.
    x_train, y_train = blobs(100, 5, 16, seed=0)
    x_test, y_test = blobs(40, 5, 16, seed=1)
    scale = torch.logspace(-2, 2, 16)
    result = train_linear_probe(
        x_train * scale + 500,
        y_train,
        x_test * scale + 500,
        y_test,
        5,
        epochs=15,
        batch_size=64,
        lr=0.1,
        normalize=True,
    )
    assert result["top1"] == 100.0


def test_linear_probe_batchnorm_is_invariant_to_feature_scales():
    """MAE's protocol: a BatchNorm1d without affine before the layer makes the probe blind to per-dimension
    offsets and scales (up to its eps), in training (batch statistics) and at test (running statistics, which
    a probe forgetting eval() would replace with the test batch's)."""
    x_train, y_train = blobs(100, 5, 16, seed=0)
    x_test, y_test = blobs(40, 5, 16, seed=1)
    x_test = x_test[y_test < 2]  # a test split of other statistics than the training split's
    y_test = y_test[y_test < 2]
    scale = torch.logspace(-2, 2, 16)
    plain = train_linear_probe(x_train, y_train, x_test, y_test, 5, epochs=5, batch_size=64, normalize="batchnorm")
    scaled = train_linear_probe(
        x_train * scale + 500, y_train, x_test * scale + 500, y_test, 5, epochs=5, batch_size=64, normalize="batchnorm"
    )
    assert plain["train_loss"] == pytest.approx(scaled["train_loss"], rel=1e-3) and plain["top1"] == scaled["top1"]
    assert plain["top1"] == 100.0
    with pytest.raises(UserError, match=r"normalize must be one of true \| false \| batchnorm, got 'bn'"):
        train_linear_probe(x_train, y_train, x_test, y_test, 5, normalize="bn")


def test_linear_probe_random_labels_are_chance_on_test():
    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(500, 32, generator=g), torch.randn(3000, 32, generator=g)
    y_train, y_test = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (3000,), generator=g)
    result = train_linear_probe(x_train, y_train, x_test, y_test, 10, epochs=30, batch_size=100)
    # Chance is 10% / 50%; binomial std on 3000 samples is ~0.55% / ~0.9%.
    assert 7.0 < result["top1"] < 13.0
    assert 45.0 < result["top5"] < 55.0
    assert result["train_loss"] < math.log(10)  # it does fit (memorise) the training labels somewhat


def test_linear_probe_is_deterministic_and_records_lr():
    x_train, y_train = blobs(30, 4, 8, seed=0)
    x_test, y_test = blobs(10, 4, 8, seed=1)
    x_train = x_train + torch.randn(x_train.shape, generator=torch.Generator().manual_seed(5)) * 4  # overlap
    kwargs = dict(epochs=3, batch_size=32, lr=0.4)
    a = train_linear_probe(x_train, y_train, x_test, y_test, 4, seed=7, **kwargs)
    b = train_linear_probe(x_train, y_train, x_test, y_test, 4, seed=7, **kwargs)
    c = train_linear_probe(x_train, y_train, x_test, y_test, 4, seed=8, **kwargs)
    assert a == b
    assert a["train_loss"] != c["train_loss"]
    assert a["lr"] == pytest.approx(0.4 * 32 / 256)
    assert (a["base_lr"], a["batch_size"], a["epochs"]) == (0.4, 32, 3)


def test_linear_probe_progress_bar_and_errors(capsys):
    x, y = blobs(5, 3, 4, seed=0)
    result = train_linear_probe(x, y, x, y, 3, epochs=2, batch_size=4, progress=True)
    assert "linear probe" in capsys.readouterr().err
    assert result["epochs"] == 2
    with pytest.raises(UserError, match="labelled splits"):
        train_linear_probe(x, y, x, y, 2, epochs=1)
    with pytest.raises(UserError, match="epochs >= 1"):
        train_linear_probe(x, y, x, y, 3, epochs=0)


def test_linear_probe_cosine_ends_at_final_lr(monkeypatch):
    """The lr of every step: cosine from lr * batch / 256 down to final_lr (seed 003's protocol: 0.001)."""
    seen: list[float] = []
    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    x_train, y_train = blobs(32, 4, 8, seed=0)  # 128 images: 2 steps per epoch at batch 64
    train_linear_probe(x_train, y_train, x_train, y_train, 4, epochs=10, batch_size=64, lr=0.4, final_lr=0.001)
    total = len(seen)
    assert total == 20
    expected = [0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * i / total)) for i in range(total)]
    assert seen == pytest.approx(expected, rel=1e-12)
    with pytest.raises(UserError, match="final_lr"):
        train_linear_probe(x_train, y_train, x_train, y_train, 4, epochs=1, batch_size=64, lr=0.4, final_lr=0.2)
