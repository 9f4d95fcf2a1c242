"""Batch-hard triplet loss: same values and gradients as pytorch-metric-learning's, also against a memory."""
import pytest
import torch

from speakerid.losses import build_loss
from speakerid.losses.pair import TripletLoss, batch_hard_triplet

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")


@pytest.mark.parametrize("batch,speakers", [(32, 8), (64, 16), (48, 24)])
def test_batch_hard_equals_pml(batch: int, speakers: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 64, generator=gen)
    labels = torch.arange(batch) % speakers
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = TripletLoss(margin=0.3)(x1, labels)
    ours.backward()
    pml = pml_losses.TripletMarginLoss(margin=0.3)(x2, labels, pml_miners.BatchHardMiner()(x2, labels))
    pml.backward()
    assert ours.item() == pytest.approx(pml.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6)


def test_batch_hard_against_reference_set_skips_self() -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(8, 16, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])  # speakers 3 and 4 have no positive in the batch
    memory = torch.randn(8, 16, generator=gen)
    mem_labels = torch.tensor([3, 5, 5, 6, 6, 7, 7, 7])  # speaker 3 gets one in the memory
    ref, ref_labels = torch.cat([emb, memory]), torch.cat([labels, mem_labels])
    ours = batch_hard_triplet(emb, labels, ref, ref_labels, 0.2)
    # reference: the miner of pml against the same set, self pairs removed
    a, p, n = pml_miners.BatchHardMiner()(emb, labels, ref, ref_labels)
    keep = a != p
    expected = pml_losses.TripletMarginLoss(margin=0.2)(emb, labels, (a[keep], p[keep], n[keep]), ref, ref_labels)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


def test_no_valid_triplet_gives_zero_with_grad() -> None:
    x = torch.randn(4, 8, requires_grad=True)
    loss = build_loss("triplet", 8, 4)(x, torch.arange(4))  # no positives at all
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None
