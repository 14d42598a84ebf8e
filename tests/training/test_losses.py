"""Each loss against a hand computation on tiny tensors (plain-Python loops over the formula
in its docstring, not the vectorised code), its gradients against finite differences, and the
literature's identities between them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from facegallery.training.losses import (
    LOSSES,
    ArcFaceLoss,
    CenterLoss,
    ContrastiveLoss,
    CosFaceLoss,
    NormFaceLoss,
    SoftmaxLoss,
    SphereFaceLoss,
    TripletLoss,
    build_loss,
)

Vector = list[float]


def _unit(v: Vector) -> Vector:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a: Vector, b: Vector) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _sq_dist(a: Vector, b: Vector) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def _cross_entropy(logits: Vector, label: int) -> float:
    return -logits[label] + math.log(sum(math.exp(z) for z in logits))


def _points(n: int, dim: int = 3, seed: int = 0) -> list[Vector]:
    rng = random.Random(seed)
    return [[rng.uniform(-1, 1) for _ in range(dim)] for _ in range(n)]


EMB = _points(6)
LABELS = [0, 0, 1, 1, 2, 2]
WEIGHTS = _points(3, seed=1)


def _tensor(rows: list[Vector]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _labels() -> torch.Tensor:
    return torch.tensor(LABELS)


Cosine = TypeVar("Cosine", NormFaceLoss, SphereFaceLoss)


def _with_weights(loss: Cosine) -> Cosine:
    loss = loss.double()
    with torch.no_grad():
        loss.weight.copy_(_tensor(WEIGHTS))
    return loss


def _cosines(x: Vector) -> Vector:
    return [_dot(_unit(x), _unit(w)) for w in WEIGHTS]


def test_softmax_value_and_gradient_by_hand() -> None:
    loss = SoftmaxLoss(3, 3).double()
    with torch.no_grad():
        loss.classifier.weight.copy_(_tensor(WEIGHTS))
        loss.classifier.bias.copy_(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    x = _tensor(EMB).requires_grad_()
    value = loss(x, _labels())
    bias = [0.1, -0.2, 0.3]
    logits = [[_dot(w, e) + b for w, b in zip(WEIGHTS, bias, strict=True)] for e in EMB]
    want = sum(_cross_entropy(z, y) for z, y in zip(logits, LABELS, strict=True)) / 6
    assert value.item() == pytest.approx(want, rel=1e-12)
    value.backward()
    assert x.grad is not None
    for i, (z, y) in enumerate(zip(logits, LABELS, strict=True)):  # dL/dx = W^T (p - onehot) / B
        total = sum(math.exp(v) for v in z)
        p = [math.exp(v) / total - (j == y) for j, v in enumerate(z)]
        grad = [sum(p[j] * WEIGHTS[j][d] for j in range(3)) / 6 for d in range(3)]
        assert x.grad[i].tolist() == pytest.approx(grad, rel=1e-9)


def test_contrastive_by_hand() -> None:
    unit = [_unit(e) for e in EMB]
    margin, terms = 1.0, []
    for i in range(6):
        for j in range(i + 1, 6):
            d = math.sqrt(_sq_dist(unit[i], unit[j]))
            same = LABELS[i] == LABELS[j]
            terms.append(0.5 * (d**2 if same else max(0.0, margin - d) ** 2))
    got = ContrastiveLoss(margin)(_tensor(EMB), _labels()).item()
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_batch_hard_triplet_by_hand() -> None:
    unit, margin, terms = [_unit(e) for e in EMB], 0.2, []
    for a in range(6):
        pos = [_sq_dist(unit[a], unit[p]) for p in range(6) if p != a and LABELS[p] == LABELS[a]]
        neg = [_sq_dist(unit[a], unit[n]) for n in range(6) if LABELS[n] != LABELS[a]]
        terms.append(max(0.0, max(pos) - min(neg) + margin))
    got = TripletLoss(margin, "batch_hard")(_tensor(EMB), _labels()).item()
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-12)


@pytest.mark.parametrize("margin", [0.2, 1.5])
def test_semi_hard_triplet_by_hand(margin: float) -> None:
    unit, terms = [_unit(e) for e in EMB], []
    for a in range(6):
        for p in range(6):
            if p == a or LABELS[p] != LABELS[a]:
                continue
            d_ap = _sq_dist(unit[a], unit[p])
            neg = [_sq_dist(unit[a], unit[n]) for n in range(6) if LABELS[n] != LABELS[a]]
            farther = [d for d in neg if d > d_ap]
            chosen = min(farther) if farther else max(neg)
            terms.append(max(0.0, d_ap - chosen + margin))
    got = TripletLoss(margin, "semi_hard")(_tensor(EMB), _labels()).item()
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-12)
    assert any(t > 0 for t in terms)  # the case exercises the hinge, not only zeros


def test_a_triplet_batch_without_positives_is_refused() -> None:
    with pytest.raises(ValueError, match="two photos of someone"):
        TripletLoss()(_tensor(EMB[:3]), torch.tensor([0, 1, 2]))


def test_center_loss_value_and_the_papers_center_update() -> None:
    loss = CenterLoss(3, 3, weight=0.1, alpha=0.5, normalize=True).double()
    with torch.no_grad():
        loss.softmax.classifier.weight.copy_(_tensor(WEIGHTS))
        loss.softmax.classifier.bias.zero_()
        loss.centers.copy_(_tensor([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, -0.3]]))
    centers = loss.centers.tolist()
    x = _tensor(EMB)
    softmax = sum(
        _cross_entropy([_dot(w, e) for w in WEIGHTS], y) for e, y in zip(EMB, LABELS, strict=True)
    )
    compact = sum(0.5 * _sq_dist(_unit(e), centers[y]) for e, y in zip(EMB, LABELS, strict=True))
    got = loss(x, _labels()).item()
    assert got == pytest.approx(softmax / 6 + 0.1 * compact / 6, rel=1e-12)
    for j in range(3):  # c_j -= alpha * sum_{y_i = j} (c_j - x_i) / (1 + n_j)
        mine = [_unit(e) for e, y in zip(EMB, LABELS, strict=True) if y == j]
        delta = [sum(centers[j][d] - m[d] for m in mine) / (1 + len(mine)) for d in range(3)]
        want = [centers[j][d] - 0.5 * delta[d] for d in range(3)]
        assert loss.centers[j].tolist() == pytest.approx(want, rel=1e-12)
    moved = loss.centers.clone()
    loss.eval()(x, _labels())
    assert torch.equal(loss.centers, moved)  # evaluation never moves the centers


def test_normface_and_cosface_by_hand() -> None:
    s, m = 30.0, 0.35
    norm = sum(
        _cross_entropy([s * c for c in _cosines(e)], y) for e, y in zip(EMB, LABELS, strict=True)
    )
    cos = 0.0
    for e, y in zip(EMB, LABELS, strict=True):
        logits = [s * (c - m * (j == y)) for j, c in enumerate(_cosines(e))]
        cos += _cross_entropy(logits, y)
    assert _with_weights(NormFaceLoss(3, 3, s))(_tensor(EMB), _labels()).item() == pytest.approx(
        norm / 6, rel=1e-12
    )
    got = _with_weights(CosFaceLoss(3, 3, s, m))(_tensor(EMB), _labels()).item()
    assert got == pytest.approx(cos / 6, rel=1e-12)


def test_arcface_by_hand_on_both_sides_of_pi() -> None:
    s, m = 30.0, 0.5
    total, past = 0.0, 0
    for e, y in zip(EMB, LABELS, strict=True):
        cosines = _cosines(e)
        theta = math.acos(cosines[y])
        if theta + m <= math.pi:
            target = math.cos(theta + m)
        else:  # past pi: cos(theta + m) would rise again; the authors' linear stand-in
            target, past = cosines[y] - m * math.sin(m), past + 1
        logits = [s * (target if j == y else c) for j, c in enumerate(cosines)]
        total += _cross_entropy(logits, y)
    got = _with_weights(ArcFaceLoss(3, 3, s, m))(_tensor(EMB), _labels()).item()
    assert got == pytest.approx(total / 6, rel=1e-12)

    arc = ArcFaceLoss(3, 3, s, margin=1.0)  # a large margin puts much of [0, pi] past pi
    thetas = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    logit = arc.target_logit(thetas.cos())
    assert (logit.diff() <= 1e-12).all()  # never rewards a worse angle
    assert (thetas + 1.0 > math.pi).sum() > 500


def test_sphereface_psi_is_the_papers_monotonic_extension() -> None:
    sphere = SphereFaceLoss(3, 3, margin=4)
    for theta in [0.1, 0.5, 0.9, 1.3, 1.7, 2.2, 2.6, 3.0]:
        k = math.floor(4 * theta / math.pi)
        want = (-1) ** k * math.cos(4 * theta) - 2 * k
        got = sphere.psi(torch.tensor([math.cos(theta)], dtype=torch.float64)).item()
        assert got == pytest.approx(want, abs=1e-9)
    thetas = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    assert (sphere.psi(thetas.cos()).diff() <= 1e-9).all()


def test_sphereface_by_hand_with_lambda_annealing() -> None:
    sphere = _with_weights(SphereFaceLoss(3, 3, margin=4))
    assert sphere.annealing() == 1000.0
    total = 0.0
    for e, y in zip(EMB, LABELS, strict=True):
        norm, cosines = math.sqrt(_dot(e, e)), _cosines(e)
        theta = math.acos(cosines[y])
        k = math.floor(4 * theta / math.pi)
        psi = (-1) ** k * math.cos(4 * theta) - 2 * k
        target = (1000.0 * cosines[y] + psi) / 1001.0
        total += _cross_entropy(
            [norm * (target if j == y else c) for j, c in enumerate(cosines)], y
        )
    assert sphere(_tensor(EMB), _labels()).item() == pytest.approx(total / 6, rel=1e-12)
    assert int(sphere.step) == 1 and sphere.annealing() == pytest.approx(1000 / 1.12)
    sphere.step.fill_(10**6)
    assert sphere.annealing() == 5.0  # lambda_min


def test_zero_margins_are_normface_and_unit_sphereface_is_normalised_weight_softmax() -> None:
    x, y = _tensor(EMB), _labels()
    norm = _with_weights(NormFaceLoss(3, 3, 30.0))(x, y)
    assert _with_weights(CosFaceLoss(3, 3, 30.0, 0.0))(x, y).item() == pytest.approx(norm.item())
    assert _with_weights(ArcFaceLoss(3, 3, 30.0, 0.0))(x, y).item() == pytest.approx(norm.item())
    unit_margin = _with_weights(SphereFaceLoss(3, 3, margin=1))
    weights = F.normalize(_tensor(WEIGHTS), dim=1)
    plain = F.cross_entropy(x @ weights.T, y)  # ||x|| cos theta_j, no bias
    for step in (0, 50, 10**6):  # whatever lambda
        unit_margin.step.fill_(step)
        assert unit_margin.eval()(x, y).item() == pytest.approx(plain.item(), rel=1e-12)


LOSS_FACTORIES: dict[str, Callable[[], torch.nn.Module]] = {
    "softmax": lambda: SoftmaxLoss(3, 3),
    "contrastive": lambda: ContrastiveLoss(1.9),
    "triplet batch-hard": lambda: TripletLoss(0.5, "batch_hard"),
    "triplet semi-hard": lambda: TripletLoss(1.5, "semi_hard"),
    "center": lambda: CenterLoss(3, 3, weight=0.5),
    "normface": lambda: NormFaceLoss(3, 3, 4.0),
    "sphereface": lambda: SphereFaceLoss(3, 3, margin=4),
    "cosface": lambda: CosFaceLoss(3, 3, 4.0, 0.35),
    "arcface": lambda: ArcFaceLoss(3, 3, 4.0, 0.5),
}


@pytest.mark.parametrize("name", list(LOSS_FACTORIES))
def test_gradients_match_finite_differences(name: str) -> None:
    loss = LOSS_FACTORIES[name]().double().eval()  # eval: no center or lambda step mid-check
    x = _tensor(EMB).requires_grad_()
    assert torch.autograd.gradcheck(lambda e: loss(e, _labels()), (x,), eps=1e-6, atol=1e-6)
    loss(x, _labels()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_every_named_loss_builds_and_an_unknown_one_is_refused() -> None:
    for name in LOSSES:
        value = build_loss(name, 3, 3)(torch.tensor(EMB), _labels())
        assert torch.isfinite(value)
    with pytest.raises(ValueError, match="unknown loss 'large-margin'"):
        build_loss("large-margin", 3, 3)


def test_imprinting_starts_each_class_at_its_mean_direction() -> None:
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 8), dim=1)
    labels = torch.arange(4).repeat_interleave(5)
    features = F.normalize(centres[labels] + 0.2 * torch.randn(20, 8), dim=1)
    sums = torch.zeros(4, 8).index_add_(0, labels, features)
    random_head, imprinted = ArcFaceLoss(8, 4), ArcFaceLoss(8, 4)
    imprinted.imprint(sums)
    assert torch.allclose(imprinted.weight.norm(dim=1), torch.ones(4))
    assert torch.allclose(imprinted.weight, F.normalize(sums, dim=1))
    assert torch.equal(imprinted.logits(features).argmax(dim=1), labels)
    assert float(imprinted(features, labels)) < float(random_head(features, labels))
    with pytest.raises(ValueError, match="class means"):
        imprinted.imprint(sums[:3])
