"""Triplet loss (batch_hard, semi_hard, all) and lifted structure losses (original, generalized):
the values and gradients of pytorch-metric-learning's (miner +) loss within 1e-5, on random batches
(hypothesis) with one-sample classes, one class only, no valid pair or triplet, and against a
reference set (cross-batch memory)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speakerid.losses import GeneralizedLiftedStructureLoss, LiftedStructureLoss, build_loss
from speakerid.losses.triplet import TripletLoss, batch_hard_triplet

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")

torch.set_num_threads(1)


def pml_triplet(mining: str, margin: float, emb, labels, ref=None, ref_labels=None):
    """pml's miner + TripletMarginLoss on our reference-set contract (self pairs dropped)."""
    loss = pml_losses.TripletMarginLoss(margin=margin)
    if mining == "all" and ref is None:
        return loss(emb, labels)  # every triplet: pml's loss without a miner
    if mining == "batch_hard":
        miner = pml_miners.BatchHardMiner()
    else:
        miner = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard" if mining == "semi_hard" else "all")
    if ref is None:
        return loss(emb, labels, miner(emb, labels))
    a, p, n = miner(emb, labels, ref, ref_labels)
    keep = a != p
    return loss(emb, labels, (a[keep], p[keep], n[keep]), ref, ref_labels)


def assert_same(ours: torch.Tensor, ref: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> None:
    ours.backward()
    ref.backward()
    assert abs(ours.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
    g1 = x1.grad if x1.grad is not None else torch.zeros_like(x1)
    g2 = x2.grad if x2.grad is not None else torch.zeros_like(x2)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=2, max_size=24),
    seed=st.integers(0, 2**16),
    mining=st.sampled_from(TripletLoss.MINING),
    margin=st.sampled_from([0.05, 0.2, 1.0]),
)
def test_triplet_equals_pml_on_random_batches(labels, seed, mining, margin) -> None:
    y = torch.tensor(labels)  # classes of one sample and batches without a triplet come up often
    x = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(seed))
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    assert_same(TripletLoss(margin=margin, mining=mining)(x1, y), pml_triplet(mining, margin, x2, y), x1, x2)


@pytest.mark.parametrize("mining", TripletLoss.MINING)
def test_triplet_against_reference_set_skips_self(mining: str) -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(8, 16, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])  # speakers 3 and 4 have no positive in the batch
    memory = torch.randn(8, 16, generator=gen)
    mem_labels = torch.tensor([3, 5, 5, 6, 6, 7, 7, 7])  # speaker 3 gets one in the memory
    ref, ref_labels = torch.cat([emb, memory]), torch.cat([labels, mem_labels])
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours = TripletLoss(margin=0.5, mining=mining).pair_forward(x1, labels, torch.cat([x1, memory]), ref_labels)
    assert_same(ours, pml_triplet(mining, 0.5, x2, labels, torch.cat([x2, memory]), ref_labels), x1, x2)
    assert batch_hard_triplet(emb, labels, ref, ref_labels, 0.5).item() > 0


@pytest.mark.parametrize("mining", TripletLoss.MINING)
def test_no_valid_triplet_gives_zero_with_grad(mining: str) -> None:
    x = torch.randn(4, 8, requires_grad=True)
    loss = build_loss("triplet", 8, 4, mining=mining)(x, torch.arange(4))  # no positives at all
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


# --- lifted structure ----------------------------------------------------------------------

FORMS = {
    "lifted_structure": lambda m, pm: pml_losses.LiftedStructureLoss(neg_margin=m, pos_margin=pm),
    "lifted_structure_generalized": lambda m, pm: pml_losses.GeneralizedLiftedStructureLoss(neg_margin=m, pos_margin=pm),
}


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=24),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(sorted(FORMS)),
    margins=st.sampled_from([(1.0, 0.0), (0.5, 0.1), (2.0, 0.0)]),
)
def test_lifted_equals_pml_on_random_batches(labels, seed, name, margins) -> None:
    y = torch.tensor(labels)  # one-sample classes, one class only, no positive pair: all come up
    x = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(seed))
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = build_loss(name, 8, 0, margin=margins[0], pos_margin=margins[1])(x1, y)
    assert_same(ours, FORMS[name](*margins)(x2, y), x1, x2)


@pytest.mark.parametrize("cls,name", [(LiftedStructureLoss, "lifted_structure"),
                                      (GeneralizedLiftedStructureLoss, "lifted_structure_generalized")])
def test_lifted_against_reference_set(cls, name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    emb, memory = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    mem_labels = torch.tensor([3, 0, 5, 6, 1, 7, 4, 7])  # memory positives are no anchors
    ref_labels = torch.cat([labels, mem_labels])
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours = cls().pair_forward(x1, labels, torch.cat([x1, memory]), ref_labels)
    a1, p, a2, n = lmu.get_all_pairs_indices(labels, ref_labels)
    keep = a1 != p
    ref = FORMS[name](1.0, 0.0)(x2, labels, (a1[keep], p[keep], a2, n), torch.cat([x2, memory]), ref_labels)
    assert_same(ours, ref, x1, x2)


def test_lifted_gradcheck_double() -> None:
    x = torch.randn(8, 5, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    for cls in (LiftedStructureLoss, GeneralizedLiftedStructureLoss):
        assert torch.autograd.gradcheck(lambda e: cls()(e, y), (x,))
