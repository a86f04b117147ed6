"""Weighted k-nearest-neighbour classification of features, as an online metric.

The vote follows Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR 2018), in the two variants solo-learn offers:

- ``cosine``: features are L2-normalised, similarity s = cosine, and each of the k most similar
  training samples votes for its label with weight exp(s / T).
- ``euclidean``: the k nearest training samples (smallest L2 distance d) vote with weight
  1 / (d + 1e-5); T plays no part.

The class scores are the summed votes. Top-1 is the highest-scoring class; top-5 counts a hit
when the true class is among the min(5, num_classes) highest scores AND received a vote, so
classes that no neighbour voted for never count, whatever order their zero scores sort in.
"""

from typing import Annotated, Literal, get_args

import torch
from pydantic import ConfigDict, Field, validate_call
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

Distance = Literal["cosine", "euclidean"]
DISTANCES: tuple[str, ...] = get_args(Distance)
_EUCLIDEAN_EPS = 1e-5


# the settings' ranges, declared once; a bad one raises pydantic's ValidationError (a ValueError
# naming the argument)
Neighbours = Annotated[int, Field(ge=1)]
Temperature = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Positive = Annotated[int, Field(ge=1)]
_ARGUMENTS = ConfigDict(arbitrary_types_allowed=True, strict=True)


@validate_call(config=_ARGUMENTS)
def knn_predict(
    train_features: Tensor,
    train_targets: Tensor,
    test_features: Tensor,
    k: Neighbours,
    T: Temperature,
    distance_fx: Distance,
    num_classes: Positive,
    chunk_size: Positive | None = None,
    max_distance_matrix_size: Positive = 5_000_000,
) -> Tensor:
    """Class scores of each test sample from a weighted vote of its k nearest training samples.

    Args:
        train_features: (N_train, D).
        train_targets: (N_train,) integer labels in [0, num_classes).
        test_features: (N_test, D).
        k: neighbours per test sample (at most N_train are used).
        T: temperature of the cosine vote weight exp(s / T).
        distance_fx: ``"cosine"`` or ``"euclidean"`` (see the module docstring).
        num_classes: C.
        chunk_size: test rows per chunk; by default the largest with
            chunk_size * N_train <= max_distance_matrix_size (at least 1), which bounds memory.
        max_distance_matrix_size: bound on the elements of one similarity block.

    Returns:
        scores (N_test, C) float32, the summed vote weight of each class.
    """
    num_train = train_features.shape[0]
    shapes_fit = (
        train_features.ndim == test_features.ndim == 2
        and train_features.shape[1] == test_features.shape[1]
        and train_targets.shape == (num_train,)
    )
    if not shapes_fit or (num_train and not 0 <= train_targets.min() <= train_targets.max() < num_classes):
        raise ValueError(
            f"need train (N, D), test (M, D) features and (N,) train_targets in [0, {num_classes}); got "
            f"{tuple(train_features.shape)}, {tuple(test_features.shape)}, {tuple(train_targets.shape)}"
        )
    if chunk_size is None:
        chunk_size = max(1, max_distance_matrix_size // max(num_train, 1))
    k = min(k, num_train)

    # float32 even for half-precision features: exp(s / T) with T = 0.07 overflows float16
    train_features = train_features.float()
    test_features = test_features.float()
    train_targets = train_targets.long()
    if distance_fx == "cosine":
        train_features = torch.nn.functional.normalize(train_features, dim=1)
        test_features = torch.nn.functional.normalize(test_features, dim=1)

    scores = []
    for test_chunk in test_features.split(chunk_size):
        if distance_fx == "cosine":
            similarity = test_chunk @ train_features.T
        else:
            similarity = 1.0 / (torch.cdist(test_chunk, train_features) + _EUCLIDEAN_EPS)
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / T).exp() if distance_fx == "cosine" else top_similarity
        chunk_scores = torch.zeros(test_chunk.shape[0], num_classes, device=weights.device)
        scores.append(chunk_scores.scatter_add_(1, train_targets[top_index], weights))
    if not scores:
        return torch.zeros(0, num_classes, device=train_features.device)
    return torch.cat(scores)


def knn_accuracy(scores: Tensor, targets: Tensor) -> tuple[float, float]:
    """(N, C) class scores and (N,) labels -> (acc@1, acc@5) in percent, top-5 as in the module
    docstring (min(5, C) classes, only classes with a vote)."""
    targets = targets.long()
    top = scores.topk(min(5, scores.shape[1]), dim=1)
    hits = (top.indices == targets[:, None]) & (top.values > 0)
    acc1 = hits[:, 0].float().mean().item() * 100
    acc5 = hits.any(dim=1).float().mean().item() * 100
    return acc1, acc5


class WeightedKNNClassifier(Metric):
    """Online weighted kNN accuracy: a train bank and a test bank filled by ``update``, scored
    by :func:`knn_predict` in ``compute``.

    Under DDP the banks of all processes are concatenated before ``compute`` (list states with
    ``dist_reduce_fx="cat"``). ``compute`` does not clear the banks: call ``reset()`` after it
    (for example at the end of each validation epoch), so the train bank holds one epoch.

    Args:
        k: neighbours.
        T: temperature of the cosine vote (unused for euclidean).
        distance_fx: ``"cosine"`` or ``"euclidean"``.
        num_classes: C; labels must lie in [0, C), with -1 meaning "no label" (dropped).
        max_distance_matrix_size: bound on the elements of one test-chunk x train similarity block.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    # the banks (add_state): lists of per-update tensors, concatenated by a DDP sync
    train_features: list[Tensor] | Tensor
    train_targets: list[Tensor] | Tensor
    test_features: list[Tensor] | Tensor
    test_targets: list[Tensor] | Tensor

    @validate_call(config=_ARGUMENTS)
    def __init__(
        self,
        k: Neighbours = 20,
        T: Temperature = 0.07,
        distance_fx: Distance = "cosine",
        *,
        num_classes: Positive,
        max_distance_matrix_size: Positive = 5_000_000,
    ) -> None:
        super().__init__()
        self.k = k
        self.T = T
        self.distance_fx = distance_fx
        self.num_classes = num_classes
        self.max_distance_matrix_size = int(max_distance_matrix_size)
        for name in ("train_features", "train_targets", "test_features", "test_targets"):
            self.add_state(name, default=[], dist_reduce_fx="cat", persistent=False)

    def update(
        self,
        train_features: Tensor | None = None,
        train_targets: Tensor | None = None,
        test_features: Tensor | None = None,
        test_targets: Tensor | None = None,
    ) -> None:
        """Add (N, D) features with their (N,) labels to the train and/or test bank; rows
        labelled -1 are dropped."""
        for which, features, targets in (
            ("train", train_features, train_targets),
            ("test", test_features, test_targets),
        ):
            if features is None and targets is None:
                continue
            if (
                features is None
                or features.ndim != 2
                or targets is None
                or targets.shape != features.shape[:1]
            ):
                shapes = [None if t is None else tuple(t.shape) for t in (features, targets)]
                raise ValueError(
                    f"{which}_features and {which}_targets must be (N, D) and (N,), got {shapes}"
                )
            # copies, so the banks never alias the caller's tensors; rows labelled -1 are dropped in
            # compute, not here: boolean indexing would synchronise with the host on every update
            features, targets = features.detach().clone(), targets.detach().clone()
            if features.shape[0]:
                getattr(self, f"{which}_features").append(features)
                getattr(self, f"{which}_targets").append(targets)

    @staticmethod
    def _bank(state: list[Tensor] | Tensor) -> Tensor | None:
        if isinstance(state, list) and not state:
            return None
        bank = dim_zero_cat(state)
        return bank if bank.numel() else None

    def compute(self) -> tuple[float, float] | None:
        """(acc@1, acc@5) in percent over the test bank, or None if either bank is empty."""
        train_features = self._bank(self.train_features)
        test_features = self._bank(self.test_features)
        if train_features is None or test_features is None:
            return None
        train_targets = self._bank(self.train_targets)
        test_targets = self._bank(self.test_targets)
        # the banks of targets fill with those of features, row for row
        assert train_targets is not None and test_targets is not None
        test_targets = test_targets.to(train_features.device)
        test_features = test_features.to(train_features.device)
        train_keep, test_keep = train_targets != -1, test_targets != -1
        train_features, train_targets = train_features[train_keep], train_targets[train_keep]
        test_features, test_targets = test_features[test_keep], test_targets[test_keep]
        if not train_features.shape[0] or not test_features.shape[0]:
            return None
        scores = knn_predict(
            train_features,
            train_targets,
            test_features,
            k=self.k,
            T=self.T,
            distance_fx=self.distance_fx,
            num_classes=self.num_classes,
            max_distance_matrix_size=self.max_distance_matrix_size,
        )
        return knn_accuracy(scores, test_targets)
