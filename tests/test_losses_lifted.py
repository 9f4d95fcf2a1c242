"""Lifted structure losses (original and generalized): the values and gradients of
pytorch-metric-learning's, on random batches (hypothesis), with one-sample classes, one class only,
no positive pair, and against a reference set (cross-batch memory)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speakerid.losses import GeneralizedLiftedStructureLoss, LiftedStructureLoss, build_loss

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")

torch.set_num_threads(1)

FORMS = {
    "lifted_structure": lambda m, pm: pml_losses.LiftedStructureLoss(neg_margin=m, pos_margin=pm),
    "lifted_structure_generalized": lambda m, pm: pml_losses.GeneralizedLiftedStructureLoss(neg_margin=m, pos_margin=pm),
}


def assert_same(ours: torch.Tensor, ref: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> None:
    ours.backward()
    ref.backward()
    assert abs(ours.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
    g1 = x1.grad if x1.grad is not None else torch.zeros_like(x1)
    g2 = x2.grad if x2.grad is not None else torch.zeros_like(x2)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-5)


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
