"""Each loss term against a value computed by hand on a tiny tensor; co-occurrence gradient check."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ehrgen.errors import InputError
from ehrgen.models.losses import (
    PromptBartLoss,
    age_loss,
    cooc_from_tensors,
    cooc_to_tensors,
    cooccurrence_loss,
    frequent_pairs,
    lm_loss,
    sex_loss,
)

OFFSET = 7
# Counts over 3 code tokens (ids 7, 8, 9); with tau=5: 0-1 frequent, 1-2 frequent, 0-2 rare.
COUNTS = sp.csr_matrix(np.array([[0, 9, 1], [9, 0, 7], [1, 7, 0]]))


def _frequent(tau: float = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return frequent_pairs(COUNTS, tau, dtype)


def test_lm_loss_is_mean_nll_over_labelled_positions() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[0, 1, -100]])
    nll0 = -(2.0 - math.log(math.exp(2) + 2))
    nll1 = -(1.0 - math.log(1 + math.exp(1) + math.exp(3)))
    assert lm_loss(logits, labels).item() == pytest.approx((nll0 + nll1) / 2, rel=1e-6)


def test_age_loss_is_masked_token_mse_on_scaled_age() -> None:
    pred = torch.tensor([[0.5, 0.7, 9.0]])
    labels = torch.tensor([[7, 8, -100]])
    # target 60 / 100 = 0.6: ((0.5 - 0.6)^2 + (0.7 - 0.6)^2) / 2; the padded 9.0 is ignored
    assert age_loss(pred, torch.tensor([60.0]), labels, 100.0).item() == pytest.approx(0.01, rel=1e-5)


def test_sex_loss_is_masked_token_cross_entropy() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [50.0, -50.0]]])
    labels = torch.tensor([[7, 8, -100]])
    # sex=1: -log(1/2) and -log(1/4); the padded position would cost 100
    assert sex_loss(logits, torch.tensor([1]), labels).item() == pytest.approx(1.5 * math.log(2), rel=1e-6)


def test_frequent_pairs_threshold_and_diagonal() -> None:
    dense = _frequent(5).to_dense()
    assert dense.tolist() == [[1, 1, 0], [1, 1, 1], [0, 1, 1]]
    assert _frequent(8).to_dense().tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    with pytest.raises(InputError, match="tau"):
        frequent_pairs(COUNTS, 0)
    with pytest.raises(InputError, match="square"):
        frequent_pairs(sp.csr_matrix(np.ones((2, 3))), 1)


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two visits; every position has P(codes 7, 8, 9) = (1, 2, 3) / 34 (specials weigh 4 each)."""
    ids = torch.tensor([[0, 4, 7, 8, 5, 4, 9, 5]])
    row = torch.log(torch.tensor([4.0] * 7 + [1.0, 2.0, 3.0]))
    return row.expand(1, ids.shape[1], 10).clone(), ids


def test_cooccurrence_loss_hand_computed() -> None:
    logits, ids = _hand_case()
    # t=2 (after code 7): rare partners of 7 = {9}: 3/34.
    # t=3 (after 7, 8):   mean(rare(7) = 3/34, rare(8) = 0) = 1.5/34.
    # t=6 (new visit, after 9): rare partners of 9 = {7}: 1/34 (7 and 8 of visit 1 do not count).
    # <s>, <v> (no codes yet) and <\v> positions have no context.
    expected = (3 + 1.5 + 1) / 34 / 3
    got = cooccurrence_loss(logits, ids, _frequent(5), OFFSET)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_cooccurrence_loss_respects_position_mask_and_batch() -> None:
    logits, ids = _hand_case()
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 6] = False  # drop t=6
    assert cooccurrence_loss(logits, ids, _frequent(5), OFFSET, mask).item() == pytest.approx(4.5 / 34 / 2)
    # A second, padded patient whose only context position is t=2 (rare mass 3/34).
    ids2 = torch.cat([ids, torch.tensor([[0, 4, 7, 5, 2, 1, 1, 1]])])
    logits2 = torch.cat([logits, logits])
    mask2 = ids2 != 1
    got = cooccurrence_loss(logits2, ids2, _frequent(5), OFFSET, mask2)
    assert got.item() == pytest.approx((3 + 1.5 + 1 + 3) / 34 / 4, rel=1e-6)


def test_cooccurrence_loss_is_zero_without_context() -> None:
    logits = torch.randn(1, 4, 10, requires_grad=True)
    loss = cooccurrence_loss(logits, torch.tensor([[0, 4, 5, 2]]), _frequent(5), OFFSET)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert logits.grad is not None


def test_cooccurrence_loss_gradcheck() -> None:
    torch.manual_seed(0)
    ids = torch.tensor([[0, 4, 7, 9, 8, 5, 4, 8, 7], [0, 4, 9, 8, 5, 2, 1, 1, 1]])
    mask = ids != 1
    logits = torch.randn(2, ids.shape[1], 10, dtype=torch.float64, requires_grad=True)
    frequent = _frequent(5, torch.float64)
    assert torch.autograd.gradcheck(lambda x: cooccurrence_loss(x, ids, frequent, OFFSET, mask), (logits,))


def test_cooc_tensors_round_trip() -> None:
    payload = cooc_to_tensors(COUNTS)
    assert isinstance(payload["indices"], torch.Tensor) and payload["shape"] == [3, 3]
    assert (cooc_from_tensors(payload) != COUNTS).nnz == 0


def test_combined_loss_weights_and_cooc_shape_check() -> None:
    logits, ids = _hand_case()
    labels = torch.tensor([[4, 7, 8, 5, 4, 9, 5, 2]])
    out = SimpleNamespace(
        logits=logits,
        age_pred=torch.full(ids.shape, 0.5),
        sex_logits=torch.zeros(1, ids.shape[1], 2),
    )
    batch = {
        "labels": labels,
        "decoder_input_ids": ids,
        "age": torch.tensor([70.0]),
        "sex": torch.tensor([0]),
    }
    loss_fn = PromptBartLoss(OFFSET, w_age=0.5, w_sex=0.25, w_cooc=2.0, tau=5, cooc=COUNTS, n_tokens=3)
    terms = loss_fn(out, batch)
    assert terms["age"].item() == pytest.approx(0.04, rel=1e-5)
    assert terms["sex"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms["cooc"].item() == pytest.approx(5.5 / 102, rel=1e-6)
    expected = terms["lm"] + 0.5 * 0.04 + 0.25 * math.log(2) + 2.0 * 5.5 / 102
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert PromptBartLoss(OFFSET)(out, batch)["cooc"].item() == 0.0  # no matrix: term off
    with pytest.raises(InputError, match="code tokens"):
        PromptBartLoss(OFFSET, cooc=COUNTS, n_tokens=4)
