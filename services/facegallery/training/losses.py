"""The metric-learning losses of the face-recognition literature, one ``nn.Module`` each.

Every loss is called as ``loss(embeddings, labels) -> scalar``: ``embeddings`` is the
backbone's ``(B, D)`` output, ``labels`` the ``(B,)`` identity indices of the training set.
Two families:

- *Pair and triplet losses* (contrastive, triplet) compare the batch's embeddings with each
  other, so a batch must hold several photos of each person (the P x K sampler). They learn
  no classifier, and scale to any number of identities.
- *Classification losses* (softmax, center, NormFace, A-Softmax, CosFace, ArcFace) train a
  classifier over the training identities and keep only the embedding. The margin variants
  make the classifier's decision boundary stricter than the one the test protocol uses, so
  unseen people separate better: the lesson of the SphereFace / CosFace / ArcFace line.

The pair and triplet losses L2-normalise the embeddings first (as FaceNet does), because the
gallery compares unit vectors by cosine: a distance learned on raw features would be a
different metric from the one served.
"""

from __future__ import annotations

import math
from typing import get_args

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from facegallery.core.config import LossName


def _pairwise_squared_distances(unit: torch.Tensor) -> torch.Tensor:
    """``||a - b||^2 = 2 - 2 a.b`` for unit rows, clamped at 0 against rounding."""
    return (2.0 - 2.0 * unit @ unit.T).clamp_min(0.0)


class SoftmaxLoss(nn.Module):
    """Softmax cross-entropy over a linear classifier ``W x + b`` (the DeepFace / DeepID
    baseline every margin loss is measured against).

    ``L = -log( exp(W_y . x + b_y) / sum_j exp(W_j . x + b_j) )``, averaged over the batch.
    """

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(embeddings)
        return logits

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), labels)


class ContrastiveLoss(nn.Module):
    """Contrastive loss over every pair in the batch (Hadsell, Chopra & LeCun, "Dimensionality
    Reduction by Learning an Invariant Mapping", CVPR 2006; the siamese loss of DeepID2).

    With ``d`` the Euclidean distance of two unit embeddings and ``y = 1`` for the same
    person: ``L = 1/2 [ y d^2 + (1 - y) max(0, margin - d)^2 ]``, averaged over all pairs
    ``i < j``. Same-person pairs are pulled together; different people are pushed apart only
    while closer than ``margin`` (unit vectors are at most 2 apart).
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(embeddings, dim=1)
        rows, cols = torch.triu_indices(len(unit), len(unit), offset=1, device=unit.device)
        distance = (unit[rows] - unit[cols]).norm(dim=1)
        same = (labels[rows] == labels[cols]).to(unit.dtype)
        per_pair: torch.Tensor = (
            same * distance**2 + (1 - same) * F.relu(self.margin - distance) ** 2
        )
        return per_pair.mean() / 2


class TripletLoss(nn.Module):
    """Triplet loss with online mining inside a P x K batch (Schroff, Kalenichenko & Philbin,
    "FaceNet", CVPR 2015; batch-hard from Hermans, Beyer & Leibe, "In Defense of the Triplet
    Loss for Person Re-Identification", 2017).

    On unit embeddings with squared distances ``D``: ``L = max(0, D(a, p) - D(a, n) + margin)``.
    Which triplets: random ones are almost all already satisfied and teach nothing, while
    mining over the whole training set is too expensive, so both strategies mine inside the
    batch.

    - ``batch_hard``: per anchor, its farthest positive and its nearest negative; averaged over
      anchors.
    - ``semi_hard`` (FaceNet's): per positive pair ``(a, p)``, the nearest negative that is
      still farther than the positive (``D(a, n) > D(a, p)``: hard, but not so hard that it
      collapses training early); where no negative is farther, the farthest one. Averaged over
      positive pairs.
    """

    def __init__(self, margin: float = 0.2, mining: str = "batch_hard") -> None:
        super().__init__()
        if mining not in {"batch_hard", "semi_hard"}:
            raise ValueError(f"mining must be batch_hard or semi_hard, not {mining!r}")
        self.margin = margin
        self.mining = mining

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        distance = _pairwise_squared_distances(F.normalize(embeddings, dim=1))
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive, negative = same & ~eye, ~same
        if not positive.any() or not negative.any():
            raise ValueError("a triplet batch needs two photos of someone and two people")
        if self.mining == "batch_hard":
            hardest_positive = distance.masked_fill(~positive, -math.inf).amax(dim=1)
            hardest_negative = distance.masked_fill(~negative, math.inf).amin(dim=1)
            anchors = positive.any(dim=1) & negative.any(dim=1)
            hinge = F.relu(hardest_positive - hardest_negative + self.margin)
            return hinge[anchors].mean()
        anchor, other = positive.nonzero(as_tuple=True)
        d_ap = distance[anchor, other]  # (pairs,)
        d_an = distance[anchor]  # (pairs, B)
        is_negative = negative[anchor]
        farther = is_negative & (d_an > d_ap[:, None])
        nearest_farther = d_an.masked_fill(~farther, math.inf).amin(dim=1)
        farthest = d_an.masked_fill(~is_negative, -math.inf).amax(dim=1)
        chosen = torch.where(farther.any(dim=1), nearest_farther, farthest)
        return F.relu(d_ap - chosen + self.margin).mean()


class CenterLoss(nn.Module):
    """Softmax plus center loss (Wen, Zhang, Li & Qiao, "A Discriminative Feature Learning
    Approach for Deep Face Recognition", ECCV 2016).

    ``L = L_softmax + lambda * 1/2 * mean_i ||x_i - c_{y_i}||^2``: softmax separates the
    classes, the center term makes each class compact around its center ``c_j``. The centers
    are not learned by the gradient but moved as in the paper, after each training step:
    ``delta c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)``, ``c_j <- c_j - alpha delta c_j``
    (``n_j`` photos of class j in the batch; the ``1 +`` keeps a class with few photos from
    jumping). With ``normalize`` the center term is taken on L2-normalised features (the
    cosine the gallery serves).
    """

    centers: torch.Tensor

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        weight: float = 0.01,
        alpha: float = 0.5,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.softmax = SoftmaxLoss(embedding_dim, num_classes)
        self.weight = weight
        self.alpha = alpha
        self.normalize = normalize
        self.register_buffer("centers", torch.zeros(num_classes, embedding_dim))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.softmax.logits(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        centers = self.centers[labels]
        compactness = 0.5 * ((features - centers) ** 2).sum(dim=1).mean()
        if self.training:
            self._move_centers(features.detach(), labels)
        softmax: torch.Tensor = self.softmax(embeddings, labels)
        return softmax + self.weight * compactness

    @torch.no_grad()
    def _move_centers(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        classes, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        summed = features.new_zeros(len(classes), features.shape[1])
        summed.index_add_(0, index, self.centers[labels] - features)
        delta = summed / (1 + counts[:, None].to(features.dtype))
        self.centers[classes] -= self.alpha * delta


class CosineClassifier(nn.Module):
    """Weights normalised per class, so a logit is ``||x|| cos(theta_j)`` or ``cos(theta_j)``."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Unmargined logits (what accuracy on training identities is measured with)."""
        return self.cosine(embeddings)

    @torch.no_grad()
    def imprint(self, class_means: torch.Tensor) -> None:
        """Weight imprinting (Qi, Brown & Lowe, "Low-Shot Learning with Imprinted Weights",
        CVPR 2018): each class's weight starts at the direction of its photos' mean
        embedding. A pretrained backbone's classes then start near where training would put
        them, instead of at random directions whose large early gradients reach the
        backbone."""
        if class_means.shape != self.weight.shape:
            shape = tuple(self.weight.shape)
            raise ValueError(f"{tuple(class_means.shape)} class means for a {shape} head")
        self.weight.copy_(F.normalize(class_means, dim=1))


class NormFaceLoss(CosineClassifier):
    """NormFace (Wang, Xiang, Cheng & Yuille, "NormFace: L2 Hypersphere Embedding for Face
    Verification", ACM MM 2017): softmax over cosines, features and weights both normalised,
    scaled by ``s`` (without it, logits in [-1, 1] cannot drive the softmax near 0 or 1).

    ``L = -log( exp(s cos theta_y) / sum_j exp(s cos theta_j) )``.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__(embedding_dim, num_classes)
        self.scale = scale

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        """The true class's logit before scaling; the margin losses change only this."""
        return cosine

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        target = cosine.gather(1, labels[:, None])
        logits = cosine.scatter(1, labels[:, None], self.target_logit(target))
        return F.cross_entropy(self.scale * logits, labels)


class CosFaceLoss(NormFaceLoss):
    """CosFace / large margin cosine loss (Wang et al., "CosFace: Large Margin Cosine Loss for
    Deep Face Recognition", CVPR 2018): the true class must win by an additive cosine margin.

    ``L = -log( exp(s (cos theta_y - m)) / (exp(s (cos theta_y - m)) + sum_{j != y}
    exp(s cos theta_j)) )``. With ``m = 0`` it is NormFace.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.35
    ) -> None:
        super().__init__(embedding_dim, num_classes, scale)
        self.margin = margin

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.margin


class ArcFaceLoss(NormFaceLoss):
    """ArcFace / additive angular margin (Deng, Guo, Xue & Zafeiriou, "ArcFace: Additive
    Angular Margin Loss for Deep Face Recognition", CVPR 2019): the margin is added to the
    angle, a constant geodesic distance on the hypersphere.

    True class logit ``s cos(theta_y + m)``. ``cos(theta + m)`` stops falling once
    ``theta + m > pi`` (it would *reward* a worse angle), so there, as in the authors' code,
    the target is ``cos theta - m sin(m)`` instead: still monotonic in ``theta``, and
    continuous at ``theta = pi - m``. With ``m = 0`` it is NormFace.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.5
    ) -> None:
        super().__init__(embedding_dim, num_classes, scale)
        self.margin = margin

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        sine = (1.0 - cosine**2).clamp_min(1e-12).sqrt()
        shifted = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        past_pi = cosine <= math.cos(math.pi - self.margin)
        return torch.where(past_pi, cosine - self.margin * math.sin(self.margin), shifted)


class SphereFaceLoss(CosineClassifier):
    """A-Softmax (Liu, Wen, Yu, Li, Raj & Song, "SphereFace: Deep Hypersphere Embedding for
    Face Recognition", CVPR 2017): weights normalised, no bias, features *not* normalised, and
    a multiplicative angular margin ``m`` on the true class.

    True class logit ``||x|| psi(theta_y)`` with ``psi(theta) = (-1)^k cos(m theta) - 2k`` for
    ``theta`` in ``[k pi / m, (k + 1) pi / m]``, the paper's monotonic extension of
    ``cos(m theta)`` to the whole of ``[0, pi]``; other classes ``||x|| cos theta_j``.
    ``cos(m theta)`` is the Chebyshev polynomial ``T_m(cos theta)``, so no ``arccos`` sits on
    the gradient's path. Training with the full margin from the start does not converge, so
    the authors anneal: the target logit is ``(lambda ||x|| cos theta + ||x|| psi(theta)) /
    (1 + lambda)`` with ``lambda = max(lambda_min, base (1 + gamma t)^-power)`` at training
    step ``t`` (their values: 1000, 0.12, 1, lambda_min 5). With ``m = 1`` it is the
    normalised-weight softmax, whatever ``lambda``.
    """

    step: torch.Tensor

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        margin: int = 4,
        lambda_base: float = 1000.0,
        lambda_gamma: float = 0.12,
        lambda_power: float = 1.0,
        lambda_min: float = 5.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if margin < 1:
            raise ValueError("A-Softmax's margin is a whole number >= 1")
        self.margin = margin
        self.lambda_base, self.lambda_gamma = lambda_base, lambda_gamma
        self.lambda_power, self.lambda_min = lambda_power, lambda_min
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def annealing(self) -> float:
        """``lambda`` at the current training step."""
        decayed = self.lambda_base * (1 + self.lambda_gamma * int(self.step)) ** -self.lambda_power
        return max(self.lambda_min, float(decayed))

    def psi(self, cosine: torch.Tensor) -> torch.Tensor:
        cos_m_theta = _chebyshev(self.margin, cosine)
        with torch.no_grad():
            theta = cosine.clamp(-1.0, 1.0).acos()
            k = (self.margin * theta / math.pi).floor().clamp(max=self.margin - 1)
        sign = 1.0 - 2.0 * (k % 2)
        return sign * cos_m_theta - 2.0 * k

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        norm = embeddings.norm(dim=1, keepdim=True)
        cosine = self.cosine(embeddings)
        target = cosine.gather(1, labels[:, None])
        lam = self.annealing()
        margined = (lam * target + self.psi(target)) / (1 + lam)
        logits = norm * cosine.scatter(1, labels[:, None], margined)
        if self.training:
            self.step += 1
        return F.cross_entropy(logits, labels)


def _chebyshev(m: int, x: torch.Tensor) -> torch.Tensor:
    """``T_m(x)``, so that ``T_m(cos theta) = cos(m theta)``: T_0 = 1, T_1 = x,
    T_{n+1} = 2 x T_n - T_{n-1}."""
    previous, current = torch.ones_like(x), x
    for _ in range(m - 1):
        previous, current = current, 2 * x * current - previous
    return current


LOSSES: tuple[str, ...] = get_args(LossName)
# The losses with a head over the training identities, by name.
CLASSIFIERS: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxLoss,
    "center": CenterLoss,
    "normface": NormFaceLoss,
    "sphereface": SphereFaceLoss,
    "cosface": CosFaceLoss,
    "arcface": ArcFaceLoss,
}
# Compare the batch with itself: no classifier to train.
HEADLESS = tuple(name for name in LOSSES if name not in CLASSIFIERS)
# Heads of unit class weights, which weight imprinting can start.
IMPRINTABLE = tuple(n for n, c in CLASSIFIERS.items() if issubclass(c, CosineClassifier))


def build_loss(
    name: str, embedding_dim: int, num_classes: int, mining: str = "batch_hard"
) -> nn.Module:
    """The loss called ``name`` (one of ``LOSSES``) with the papers' usual hyperparameters,
    scaled for a few thousand identities (s = 30 rather than ArcFace's 64 for 85k);
    ``mining`` is the triplet loss's strategy."""
    if name == "contrastive":
        return ContrastiveLoss()
    if name == "triplet":
        return TripletLoss(mining=mining)
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return CLASSIFIERS[name](embedding_dim, num_classes)
