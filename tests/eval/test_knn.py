import math

import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from solo_ext.eval.knn import WeightedKNNClassifier, knn_accuracy, knn_predict


def random_problem(seed: int = 0, n_train: int = 40, n_test: int = 13, dim: int = 6, num_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_train, dim, generator=g),
        torch.randint(0, num_classes, (n_train,), generator=g),
        torch.randn(n_test, dim, generator=g),
        torch.randint(0, num_classes, (n_test,), generator=g),
    )


def brute_force_scores(train_x, train_y, test_x, k, T, distance_fx, num_classes):
    """One test sample at a time, in plain Python: rank all training samples, sum the votes."""
    scores = []
    for query in test_x.tolist():
        neighbours = []
        for row, label in zip(train_x.tolist(), train_y.tolist()):
            if distance_fx == "cosine":
                cosine = sum(a * b for a, b in zip(query, row)) / (math.hypot(*query) * math.hypot(*row))
                neighbours.append((cosine, math.exp(cosine / T), label))
            else:
                weight = 1 / (math.dist(query, row) + 1e-5)
                neighbours.append((weight, weight, label))
        neighbours.sort(key=lambda item: item[0], reverse=True)
        votes = [0.0] * num_classes
        for _, weight, label in neighbours[:k]:
            votes[label] += weight
        scores.append(votes)
    return torch.tensor(scores)


@pytest.mark.parametrize("distance_fx", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5, 60])
def test_scores_match_a_per_sample_loop(distance_fx, k):
    train_x, train_y, test_x, _ = random_problem()
    got = knn_predict(train_x, train_y, test_x, k=k, T=0.5, distance_fx=distance_fx, num_classes=4)
    expected = brute_force_scores(train_x, train_y, test_x, min(k, 40), 0.5, distance_fx, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("distance_fx", ["cosine", "euclidean"])
def test_chunked_equals_unchunked(distance_fx):
    train_x, train_y, test_x, _ = random_problem(seed=1)
    args = {"k": 7, "T": 0.07, "distance_fx": distance_fx, "num_classes": 4}
    whole = knn_predict(train_x, train_y, test_x, **args, chunk_size=1000)
    torch.testing.assert_close(knn_predict(train_x, train_y, test_x, **args, chunk_size=3), whole)
    # 100 elements over 40 training rows -> chunks of 2 test rows
    torch.testing.assert_close(
        knn_predict(train_x, train_y, test_x, **args, max_distance_matrix_size=100), whole
    )


def test_accuracy_counts_only_voted_classes_in_top5():
    scores = torch.tensor([[0.0, 3.0, 1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    # row 0: true class 2 is second -> top-5 hit; row 1: class 3 has no vote -> never a hit
    assert knn_accuracy(scores, torch.tensor([2, 3])) == (0.0, 50.0)
    assert knn_accuracy(scores, torch.tensor([1, 0])) == (100.0, 100.0)
    # top-5 is capped at the number of classes
    assert knn_accuracy(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0])) == (0.0, 100.0)


@pytest.mark.parametrize("distance_fx", ["cosine", "euclidean"])
def test_metric_equals_brute_force_accuracy(distance_fx):
    train_x, train_y, test_x, test_y = random_problem(seed=2, n_test=30)
    metric = WeightedKNNClassifier(k=5, T=0.2, distance_fx=distance_fx, num_classes=4)
    metric.update(train_features=train_x[:25], train_targets=train_y[:25])
    metric.update(
        train_features=train_x[25:], train_targets=train_y[25:], test_features=test_x, test_targets=test_y
    )
    scores = brute_force_scores(train_x, train_y, test_x, 5, 0.2, distance_fx, 4)
    top1 = [row.index(max(row)) for row in scores.tolist()]
    expected_acc1 = 100 * sum(p == t for p, t in zip(top1, test_y.tolist())) / 30
    acc1, acc5 = metric.compute()
    assert acc1 == pytest.approx(expected_acc1)
    assert acc1 <= acc5 <= 100


def test_unlabelled_rows_are_dropped():
    train_x, train_y, test_x, test_y = random_problem(seed=3)
    train_y_holes, test_y_holes = train_y.clone(), test_y.clone()
    train_y_holes[::3] = -1
    test_y_holes[1::4] = -1
    with_holes = WeightedKNNClassifier(k=3, num_classes=4)
    with_holes.update(train_x, train_y_holes, test_x, test_y_holes)
    keep_train, keep_test = train_y_holes != -1, test_y_holes != -1
    clean = WeightedKNNClassifier(k=3, num_classes=4)
    clean.update(train_x[keep_train], train_y[keep_train], test_x[keep_test], test_y[keep_test])
    # the -1 rows stay in the banks until compute (dropping them in update would synchronise
    # with the host every training step) and play no part in the vote
    assert dim_zero_cat(with_holes.train_features).shape[0] == train_x.shape[0]
    assert with_holes.compute() == clean.compute()


def test_empty_banks_give_none():
    train_x, train_y, test_x, test_y = random_problem()
    only_train = WeightedKNNClassifier(num_classes=4)
    only_train.update(train_features=train_x, train_targets=train_y)
    assert only_train.compute() is None
    only_test = WeightedKNNClassifier(num_classes=4)
    only_test.update(test_features=test_x, test_targets=test_y)
    assert only_test.compute() is None
    all_unlabelled = WeightedKNNClassifier(num_classes=4)
    all_unlabelled.update(train_x, torch.full_like(train_y, -1), test_x, test_y)
    assert all_unlabelled.compute() is None
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert WeightedKNNClassifier(num_classes=4).compute() is None


@pytest.mark.parametrize("distance_fx", ["cosine", "euclidean"])
def test_well_separated_classes_are_all_right(distance_fx):
    g = torch.Generator().manual_seed(4)
    centres = torch.eye(8)[:3] * 10
    train_y, test_y = torch.arange(3).repeat(10), torch.arange(3).repeat(4)
    train_x = centres[train_y] + 0.1 * torch.randn(30, 8, generator=g)
    test_x = centres[test_y] + 0.1 * torch.randn(12, 8, generator=g)
    metric = WeightedKNNClassifier(k=5, distance_fx=distance_fx, num_classes=3)
    metric.update(train_x, train_y, test_x, test_y)
    assert metric.compute() == (100.0, 100.0)


def test_banks_are_detached_copies_and_reset_clears_them():
    train_x, train_y, test_x, test_y = random_problem()
    features = train_x.clone().requires_grad_()
    metric = WeightedKNNClassifier(num_classes=4)
    metric.update(features, train_y, test_x, test_y)
    with torch.no_grad():
        features.zero_()
    stored = dim_zero_cat(metric.train_features)
    assert not stored.requires_grad
    torch.testing.assert_close(stored, train_x)
    assert metric._reductions["train_features"] is dim_zero_cat  # banks are concatenated across processes
    metric.reset()
    assert metric.train_features == [] and metric.test_features == []


def test_half_precision_features_are_scored_in_float32():
    train_x, train_y, test_x, _ = random_problem()
    got = knn_predict(
        train_x.half(), train_y, test_x.half(), k=5, T=0.07, distance_fx="cosine", num_classes=4
    )
    assert got.dtype == torch.float32 and torch.isfinite(got).all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    # pydantic's message names the argument on a line of its own, then the value given
    [
        ({"k": 0}, r"\nk\n.*input_value=0,"),
        ({"T": 0.0}, r"\nT\n.*input_value=0.0,"),
        ({"distance_fx": "manhattan"}, r"\ndistance_fx\n.*input_value='manhattan',"),
    ],
)
def test_invalid_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        WeightedKNNClassifier(**kwargs, num_classes=4)
    train_x, train_y, test_x, _ = random_problem()
    args = {"k": 5, "T": 0.07, "distance_fx": "cosine", "num_classes": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        knn_predict(train_x, train_y, test_x, **args)


def test_labels_outside_num_classes_are_rejected():
    train_x, train_y, test_x, _ = random_problem()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        knn_predict(train_x, train_y, test_x, k=5, T=0.07, distance_fx="cosine", num_classes=3)


def test_update_does_not_synchronise_with_the_host(monkeypatch):
    # a boolean mask read on the host (nonzero) is what would stall a GPU every training step
    train_x, train_y, _, _ = random_problem(seed=4)
    knn = WeightedKNNClassifier(k=3, num_classes=4)

    def refuse(*args, **kwargs):
        raise AssertionError("host synchronisation in update")

    monkeypatch.setattr(torch.Tensor, "nonzero", refuse)
    monkeypatch.setattr(torch.Tensor, "item", refuse)
    knn.update(train_features=train_x, train_targets=train_y)


def test_mismatched_shapes_are_rejected():
    train_x, train_y, test_x, _ = random_problem()
    with pytest.raises(ValueError, match=r"need train \(N, D\)"):
        knn_predict(train_x, train_y, test_x[:, :-1], k=5, T=0.07, distance_fx="cosine", num_classes=4)
    knn = WeightedKNNClassifier(k=5, T=0.07, num_classes=4)
    with pytest.raises(ValueError, match=r"train_features and train_targets must be \(N, D\) and \(N,\)"):
        knn.update(train_features=train_x, train_targets=train_y[:-1])
    with pytest.raises(ValueError, match="test_features and test_targets"):
        knn.update(test_features=test_x)


def test_top5_counts_five_classes_not_six():
    # ten classes, the true class ranked sixth with a vote: outside the top 5
    scores = torch.tensor([[10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 0.0, 0.0, 0.0, 0.0]])
    assert knn_accuracy(scores, torch.tensor([5])) == (0.0, 0.0)
    assert knn_accuracy(scores, torch.tensor([4])) == (0.0, 100.0)


def test_bad_shapes_are_named_with_the_shapes_given():
    knn = WeightedKNNClassifier(num_classes=4)
    message = r"must be \(N, D\) and \(N,\), got \[\(5,\), \(5,\)\]"
    with pytest.raises(ValueError, match=message):  # 1-D features, even with matching labels
        knn.update(train_features=torch.randn(5), train_targets=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \[None, \(3,\)\]"):  # labels without features
        knn.update(test_targets=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \[\(3, 2\), \(2,\)\]"):
        knn.update(train_features=torch.randn(3, 2), train_targets=torch.zeros(2, dtype=torch.long))


def test_an_empty_batch_adds_nothing_to_the_banks():
    knn = WeightedKNNClassifier(num_classes=4)
    knn.update(torch.randn(0, 6), torch.zeros(0, dtype=torch.long), torch.randn(0, 6), torch.zeros(0))
    assert knn.train_features == [] and knn.test_features == []


def test_all_test_rows_unlabelled_give_none():
    train_x, train_y, test_x, test_y = random_problem()
    knn = WeightedKNNClassifier(num_classes=4)
    knn.update(train_x, train_y, test_x, torch.full_like(test_y, -1))
    assert knn.compute() is None
