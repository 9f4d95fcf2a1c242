"""Losses: Circle vs pytorch-metric-learning, stability, gradchecks, MixUp, XBM, MoCo, registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from speakerid.losses import (
    LOSSES,
    AAMSoftmax,
    CircleLoss,
    CircleProxyLoss,
    CrossBatchMemory,
    LossConfigError,
    MoCoLoss,
    MomentumEncoder,
    build_loss,
)

torch.set_num_threads(1)


def _batch(seed: int, n: int = 24, dim: int = 12, classes: int = 6, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, dim, generator=gen, dtype=dtype)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return emb, labels


# --- Circle Loss, pair form ------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [256.0, 80.0])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_circle_matches_pml_value_and_gradient(seed: int, gamma: float) -> None:
    emb, labels = _batch(seed, n=32, dim=16, classes=5 + seed)
    ours_in = emb.clone().requires_grad_(True)
    # pml in float64: at gamma 256 its float32 gradient is itself 1.7e-4 (relative) off the float64
    # one, ten times further than ours (closed-form gradient, no underflowing exp).
    pml_in = emb.double().requires_grad_(True)
    ours = CircleLoss(m=0.25, gamma=gamma)(ours_in, labels)
    ref = pml_losses.CircleLoss(m=0.25, gamma=gamma)(pml_in, labels)
    assert abs(ours.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours_in.grad, pml_in.grad.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 16.0, 256.0])
@pytest.mark.parametrize("with_memory", [False, True])
def test_circle_closed_form_gradient_equals_autograd_of_the_formula(gamma: float, with_memory: bool) -> None:
    """PairCircleTerms (gradient written out) against autograd through Eq. (6) with detached weights,
    float64, lonely anchors (no positive) and a reference set longer than the batch (XBM) included."""
    from speakerid.losses.circle import PairCircleTerms, pair_circle_terms

    emb, labels = _batch(6, n=20, dim=8, classes=5, dtype=torch.float64)
    labels[-2:] = torch.tensor([50, 51])  # anchors without a positive
    extra, extra_labels = _batch(7, n=9 if with_memory else 0, dim=8, classes=5, dtype=torch.float64)
    ref_labels = torch.cat([labels, extra_labels])
    same = labels.view(-1, 1) == ref_labels.view(1, -1)
    not_pos = ~same
    not_pos[:, : len(labels)].fill_diagonal_(True)
    weights = torch.rand(len(labels), dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    grads, values = [], []
    for closed_form in (True, False):
        x = emb.clone().requires_grad_(True)
        xn = F.normalize(torch.cat([x, extra]), dim=1)
        sim = xn[: len(labels)] @ xn.t()
        if closed_form:
            per_anchor = PairCircleTerms.apply(sim, same, not_pos, 0.25, gamma)
        else:
            per_anchor = pair_circle_terms(sim, same, not_pos, 0.25, gamma, detach=True)
        (per_anchor * weights).sum().backward()
        grads.append(x.grad)
        values.append(per_anchor.detach())
    torch.testing.assert_close(values[0], values[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-12)


def test_circle_anchor_without_positive_is_ignored_like_pml() -> None:
    emb, _ = _batch(5, n=7)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 4])  # anchors 4..6 have no positive
    ours = CircleLoss(m=0.25, gamma=80.0)(emb, labels)
    ref = pml_losses.CircleLoss(m=0.25, gamma=80.0)(emb, labels)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    lonely = CircleLoss()(emb[4:].requires_grad_(True), labels[4:])
    assert lonely.item() == 0.0 and lonely.requires_grad


def test_circle_stable_at_gamma_256_with_near_duplicates() -> None:
    base = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    emb = base.repeat_interleave(8, dim=0) + 1e-7 * torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    emb[::8] = emb[1::8]  # exact duplicates too
    labels = torch.arange(32) % 4  # near-duplicates of other speakers as negatives: worst case
    for dtype in (torch.float32, torch.bfloat16):
        x = emb.detach().to(dtype, copy=True).requires_grad_(True)
        loss = CircleLoss(m=0.25, gamma=256.0)(x, labels)
        loss.backward()
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss) and loss.item() > 100.0
        assert torch.isfinite(x.grad.float()).all()


def test_pair_losses_use_dominant_mixup_label() -> None:
    emb, labels_a = _batch(3)
    labels_b = labels_a.roll(1)
    loss = CircleLoss(gamma=80.0)
    assert loss(emb, labels_a, labels_b, 0.7).item() == loss(emb, labels_a).item()
    assert loss(emb, labels_a, labels_b, 0.3).item() == loss(emb, labels_b).item()


@pytest.mark.parametrize(
    "name,kwargs,reference",
    [
        ("contrastive", {}, lambda: (pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0), None)),
        ("triplet", {"mining": "batch_hard"}, lambda: (pml_losses.TripletMarginLoss(margin=0.2), pml_miners.BatchHardMiner())),
        (
            "triplet",
            {"mining": "semi_hard"},
            lambda: (
                pml_losses.TripletMarginLoss(margin=0.2),
                pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
            ),
        ),
        ("lifted_structure", {}, lambda: (pml_losses.LiftedStructureLoss(neg_margin=1.0), None)),
    ],
)
def test_pml_wrappers_equal_plain_pml_in_batch(name: str, kwargs: dict, reference) -> None:
    emb, labels = _batch(4, n=20, classes=4)
    ours = build_loss(name, embed_dim=12, num_classes=0, **kwargs)(emb, labels)
    loss, miner = reference()
    ref = loss(emb, labels, miner(emb, labels) if miner is not None else None)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)


# --- class-level losses ------------------------------------------------------------------------


def test_circle_proxy_equals_eq6_written_out() -> None:
    emb, labels = _batch(6, n=10, dim=8, classes=5, dtype=torch.float64)
    loss = CircleProxyLoss(8, 5, m=0.25, gamma=64.0).double()
    cos = F.normalize(emb, dim=1) @ F.normalize(loss.weight, dim=1).t()
    m, g = 0.25, 64.0
    total = 0.0
    for i in range(10):
        y = int(labels[i])
        s_p = cos[i, y]
        s_n = torch.cat([cos[i, :y], cos[i, y + 1 :]])
        neg = torch.exp(g * torch.relu(s_n + m) * (s_n - m)).sum()
        pos = torch.exp(-g * torch.relu(1 + m - s_p) * (s_p - (1 - m)))
        total += torch.log1p(neg * pos)
    torch.testing.assert_close(loss(emb, labels), total / 10)


def test_class_level_mixup_is_convex_combination() -> None:
    emb, labels_a = _batch(7, classes=6)
    labels_b = labels_a.flip(0)
    for loss in (CircleProxyLoss(12, 6), AAMSoftmax(12, 6, sub_centers=3)):
        mixed = loss(emb, labels_a, labels_b, 0.3)
        expected = 0.3 * loss(emb, labels_a) + 0.7 * loss(emb, labels_b)
        torch.testing.assert_close(mixed, expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CircleProxyLoss(6, 4, gamma=8.0, detach_weights=False),
        lambda: CircleProxyLoss(6, 4, gamma=8.0, sub_centers=2, detach_weights=False),
        lambda: AAMSoftmax(6, 4, margin=0.2, scale=4.0),
        lambda: AAMSoftmax(6, 4, margin=0.3, scale=4.0, sub_centers=2, easy_margin=True),
    ],
    ids=["circle_proxy", "circle_proxy_subcenter", "aam", "aam_easy_subcenter"],
)
@pytest.mark.parametrize("mixup", [False, True])
def test_gradcheck_class_level(make, mixup: bool) -> None:
    torch.manual_seed(0)
    loss = make().double()
    emb = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 1])
    labels_b = torch.tensor([3, 2, 1, 0, 0]) if mixup else None
    weight = loss.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels, labels_b, 0.35), (emb,))
    assert torch.autograd.gradcheck(  # gradient w.r.t. the class weights too
        lambda w: torch.func.functional_call(loss, {"weight": w}, (emb.detach(), labels, labels_b, 0.35)),
        (weight,),
    )


def test_circle_proxy_detached_weights_same_value() -> None:
    emb, labels = _batch(8, classes=6)
    a = CircleProxyLoss(12, 6, detach_weights=True)
    b = CircleProxyLoss(12, 6, detach_weights=False)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(emb, labels), b(emb, labels))


def test_aam_margin_schedule_and_fallback() -> None:
    emb, labels = _batch(9, classes=6)
    loss = AAMSoftmax(12, 6, margin=0.0, scale=32.0)
    cos = F.normalize(emb, dim=1) @ F.normalize(loss.weight, dim=1).t()
    torch.testing.assert_close(loss(emb, labels), F.cross_entropy(32.0 * cos, labels))  # m=0: normalised softmax
    base = loss(emb, labels).item()
    loss.set_margin(0.2)
    assert loss.has_margin and loss.margin == 0.2 and loss(emb, labels).item() > base
    # The loss is continuous at theta_y = pi - m and keeps increasing beyond it (linear fallback).
    m = 0.2
    values = []
    for theta in (math.pi - m - 1e-4, math.pi - m + 1e-4, math.pi - 0.01):
        c = torch.full((1, 6), -0.5)
        c[0, 0] = math.cos(theta)
        values.append(loss.class_loss(c, torch.zeros(1, dtype=torch.long)).item())
    assert abs(values[0] - values[1]) < 1e-2 and values[2] > values[1]
    with pytest.raises(LossConfigError):
        loss.set_margin(2.0)


def test_classifier_rejects_out_of_range_labels() -> None:
    with pytest.raises(LossConfigError, match=r"labels must be in \[0, 6\)"):
        AAMSoftmax(12, 6)(torch.randn(2, 12), torch.tensor([0, 6]))


# --- every registered loss trains --------------------------------------------------------------


def _training_case(name: str):
    if name == "xbm_circle":
        return build_loss("circle", 16, 6, xbm_size=64, gamma=64.0)
    kwargs = {"gamma": 64.0} if name == "circle" else {}
    return build_loss(name, 16, 6, **kwargs)


@pytest.mark.parametrize("name", sorted(LOSSES) + ["xbm_circle"])
def test_each_loss_decreases_with_sgd(name: str) -> None:
    torch.manual_seed(0)
    loss_fn = _training_case(name)
    emb = torch.nn.Parameter(torch.randn(24, 16))
    labels = torch.arange(24) % 6
    keys = torch.randn(24, 16)
    params = [emb, *loss_fn.parameters()]
    opt = torch.optim.SGD(params, lr=0.5 if name == "moco" else 0.1)

    def value() -> torch.Tensor:
        if name == "moco":
            return loss_fn(emb, keys, enqueue=False)
        return loss_fn(emb, labels)

    first = value()
    assert torch.isfinite(first) and first.item() > 0
    for _ in range(5):
        opt.zero_grad()
        value().backward()
        opt.step()
    assert value().item() < first.item()


def test_registry_flags() -> None:
    flags = {
        name: (cls.is_pair_based, cls.has_classifier, cls.has_margin, cls.needs_two_views)
        for name, cls in LOSSES.items()
    }
    assert flags["circle"] == (True, False, False, False)
    assert flags["circle_proxy"] == (False, True, False, False)
    assert flags["aam"] == (False, True, True, False)
    assert flags["moco"] == (False, False, False, True)
    assert all(flags[n][0] for n in ("contrastive", "triplet", "lifted_structure"))
    assert CircleLoss is LOSSES["circle"]


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (("circle_softmax", 8, 4), {}, "unknown loss"),
        (("aam", 8, 4), {"gama": 1.0}, "unknown argument"),
        (("aam", 8, 4), {"xbm_size": 10}, "pair-based"),
        (("triplet", 8, 4), {"mining": "hardest"}, "mining"),
        (("circle_proxy", 8, 1), {}, "num_classes"),
    ],
)
def test_build_loss_errors(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(LossConfigError, match=message):
        build_loss(*args, **kwargs)


# --- cross-batch memory ------------------------------------------------------------------------


def test_xbm_memory_is_fifo() -> None:
    xbm = CrossBatchMemory(CircleLoss(), embed_dim=3, memory_size=5)
    for step in range(4):  # 8 embeddings into 5 slots: the 3 oldest fall out
        emb = torch.full((2, 3), float(step)) + torch.tensor([[0.0], [0.5]])
        xbm.enqueue(emb, torch.tensor([2 * step, 2 * step + 1]))
    mem_emb, mem_labels = xbm.memory()
    assert mem_labels.tolist() == [3, 4, 5, 6, 7]
    torch.testing.assert_close(mem_emb[:, 0], torch.tensor([1.5, 2.0, 2.5, 3.0, 3.5]))
    state = xbm.state_dict()
    other = CrossBatchMemory(CircleLoss(), embed_dim=3, memory_size=5)
    other.load_state_dict(state)
    assert other.memory()[1].tolist() == [3, 4, 5, 6, 7]


def test_xbm_mines_against_memory() -> None:
    torch.manual_seed(0)
    circle = CircleLoss(gamma=64.0)
    xbm = CrossBatchMemory(circle, embed_dim=8, memory_size=16, start_step=1)
    first = torch.randn(4, 8)
    labels = torch.arange(4)  # all different: no positive inside any single batch
    assert xbm(first, labels).item() == 0.0  # step 0 < start_step: in-batch only, nothing to mine
    emb = torch.randn(4, 8, requires_grad=True)
    loss = xbm(emb, labels)  # now every anchor finds its positive in the memory
    expected = circle.pair_forward(emb, labels, torch.cat([emb, first]), torch.cat([labels, labels]))
    assert loss.item() > 0.0
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert emb.grad.abs().sum() > 0
    assert xbm.memory()[1].tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and int(xbm.step) == 2
    xbm.eval()
    xbm(torch.randn(4, 8), labels)
    assert int(xbm.filled) == 8  # eval mode leaves the memory alone


@pytest.mark.parametrize("name", ["contrastive", "triplet", "lifted_structure"])
def test_xbm_wraps_pml_losses(name: str) -> None:
    xbm = build_loss(name, 8, 0, xbm_size=32)
    labels = torch.arange(4)
    xbm(torch.randn(4, 8), labels)
    emb = torch.randn(4, 8, requires_grad=True)
    loss = xbm(emb, labels)
    loss.backward()
    assert loss.item() > 0 and emb.grad.abs().sum() > 0


# --- MoCo --------------------------------------------------------------------------------------


def test_moco_loss_and_queue_update() -> None:
    torch.manual_seed(0)
    moco = MoCoLoss(embed_dim=4, queue_size=5, temperature=0.1)
    queue0 = moco.queue.clone()
    q, k = torch.randn(3, 4), torch.randn(3, 4)
    loss = moco(q, k)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ queue0.t()], dim=1) / 0.1
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)))
    torch.testing.assert_close(moco.queue[:3], kn)
    torch.testing.assert_close(moco.queue[3:], queue0[3:])
    assert int(moco.ptr) == 3
    k2 = torch.randn(3, 4)
    moco(q, k2)  # wraps around: slots 3, 4, 0
    torch.testing.assert_close(moco.queue[[3, 4, 0]], F.normalize(k2, dim=1))
    torch.testing.assert_close(moco.queue[1:3], kn[1:])
    assert int(moco.ptr) == 1
    moco.eval()
    moco(q, k)
    assert int(moco.ptr) == 1  # eval: no enqueue


def test_momentum_encoder_update() -> None:
    torch.manual_seed(0)
    query = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    key = MomentumEncoder(query, momentum=0.9)
    assert all(not p.requires_grad for p in key.encoder.parameters())
    old_key = [p.clone() for p in key.encoder.parameters()]
    with torch.no_grad():
        for p in query.parameters():
            p.add_(1.0)
        query[1].running_mean.fill_(0.5)
    key.update(query)
    for k_p, old, q_p in zip(key.encoder.parameters(), old_key, query.parameters()):
        torch.testing.assert_close(k_p, 0.9 * old + 0.1 * q_p)
    torch.testing.assert_close(key.encoder[1].running_mean, torch.full((3,), 0.5))
    out = key(torch.randn(5, 4))
    assert out.shape == (5, 3) and not out.requires_grad
