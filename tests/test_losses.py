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
    lm_and_cooccurrence_loss,
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
    # Shares among the codes (code mass 6/34):
    # t=2 (after code 7): rare partners of 7 = {9}: 3/6.
    # t=3 (after 7, 8):   mean(rare(7) = 3/6, rare(8) = 0) = 1.5/6.
    # t=6 (new visit, after 9): rare partners of 9 = {7}: 1/6 (7 and 8 of visit 1 do not count).
    # <s>, <v> (no codes yet) and <\v> positions have no context.
    expected = (3 + 1.5 + 1) / 6 / 3
    got = cooccurrence_loss(logits, ids, _frequent(5), OFFSET)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_cooccurrence_loss_respects_position_mask_and_batch() -> None:
    logits, ids = _hand_case()
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 6] = False  # drop t=6
    assert cooccurrence_loss(logits, ids, _frequent(5), OFFSET, mask).item() == pytest.approx(4.5 / 6 / 2)
    # A second, padded patient whose only context position is t=2 (rare share 3/6).
    ids2 = torch.cat([ids, torch.tensor([[0, 4, 7, 5, 2, 1, 1, 1]])])
    logits2 = torch.cat([logits, logits])
    mask2 = ids2 != 1
    got = cooccurrence_loss(logits2, ids2, _frequent(5), OFFSET, mask2)
    assert got.item() == pytest.approx((3 + 1.5 + 1 + 3) / 6 / 4, rel=1e-6)


def test_cooccurrence_loss_cannot_shorten_visits() -> None:
    """Moving probability between the codes and <\\v> (or any special) leaves the regulariser
    unchanged, so it never rewards closing a visit: its gradient outside the code block is 0."""
    logits, ids = _hand_case()
    base = cooccurrence_loss(logits, ids, _frequent(5), OFFSET)
    shifted = logits.clone()
    shifted[..., 5] += 3.0  # <\v> 20x likelier
    assert cooccurrence_loss(shifted, ids, _frequent(5), OFFSET).item() == pytest.approx(
        base.item(), rel=1e-6
    )
    x = torch.randn(2, 9, 10, dtype=torch.float64, requires_grad=True)
    two = torch.tensor([[0, 4, 7, 9, 8, 5, 4, 8, 7], [0, 4, 9, 8, 5, 2, 1, 1, 1]])
    cooccurrence_loss(x, two, _frequent(5, torch.float64), OFFSET, two != 1).backward()
    assert x.grad[..., :OFFSET].abs().max().item() < 1e-15
    assert x.grad[..., OFFSET:].abs().max().item() > 1e-3


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
    assert torch.equal(terms["lm"], lm_loss(logits, labels))  # fused with cooc, bit for bit
    assert terms["age"].item() == pytest.approx(0.04, rel=1e-5)
    assert terms["sex"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms["cooc"].item() == pytest.approx(5.5 / 18, rel=1e-6)  # shares: (3 + 1.5 + 1) / 6 / 3
    expected = terms["lm"] + 0.5 * 0.04 + 0.25 * math.log(2) + 2.0 * 5.5 / 18
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert PromptBartLoss(OFFSET)(out, batch)["cooc"].item() == 0.0  # no matrix: term off
    with pytest.raises(InputError, match="code tokens"):
        PromptBartLoss(OFFSET, cooc=COUNTS, n_tokens=4)


# ----------------------------------------------------------------------------- against the dense reference


def _reference_cooccurrence_loss(logits, ids, frequent, offset, position_mask=None, v_start=4, v_end=5):
    """The original O(nnz(F) x positions) implementation: an ``[B, L, L]`` context mask and P F^T."""
    n_codes, length = frequent.shape[0], ids.shape[1]
    is_code = (ids >= offset) & (ids < offset + n_codes)
    visit = (ids == v_start).cumsum(1)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    context = causal & (visit[:, :, None] == visit[:, None, :]) & is_code[:, None, :]
    positions = torch.arange(length).expand_as(ids)
    last_start = torch.where(ids == v_start, positions, -1).cummax(1).values
    last_end = torch.where(ids == v_end, positions, -1).cummax(1).values
    context &= (last_start > last_end)[:, :, None]
    use = context.any(-1)
    if position_mask is not None:
        use &= position_mask.bool()
    rows = use.flatten().nonzero().squeeze(1)
    if rows.numel() == 0:
        return logits.sum() * 0.0
    context = context.flatten(0, 1)[rows]
    probs = logits.flatten(0, 1)[rows].softmax(-1)[:, offset : offset + n_codes]
    q = (frequent.to(probs.dtype) @ probs.T.contiguous()).T
    q_ctx = q.gather(1, (ids - offset).clamp(0, n_codes - 1)[rows // length])
    return (1 - (q_ctx * context).sum(-1) / context.sum(-1) / probs.sum(-1)).mean()


def _random_case(seed: int, batch: int = 5, length: int = 40, n_codes: int = 30, extra: int = 3):
    """Random ids with visit resets, stray tokens, repeats, padding, and a random count matrix.

    ``extra`` ids past the code range (the hierarchical vocabulary's codes beyond the categories,
    say) must be ignored like specials.
    """
    g = torch.Generator().manual_seed(seed)
    vocab = OFFSET + n_codes + extra
    # Mostly codes, with <v>, <\v>, <unk>/<mask>, </s> mixed in anywhere (also orphan <\v> and
    # codes outside any visit), then right padding.
    choice = torch.rand(batch, length, generator=g)
    ids = torch.randint(OFFSET, vocab, (batch, length), generator=g)
    ids = torch.where(choice < 0.15, 4, ids)
    ids = torch.where((choice >= 0.15) & (choice < 0.25), 5, ids)
    ids = torch.where((choice >= 0.25) & (choice < 0.28), 3, ids)
    ids[:, 0] = 0
    lengths = torch.randint(length // 3, length + 1, (batch,), generator=g)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 1
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.uniform(0, 8, size=(n_codes, 1)), size=(n_codes, n_codes))
    counts = np.triu(counts, 1)
    logits = torch.randn(batch, length, vocab, generator=g, dtype=torch.float64) * 3
    return logits, ids, sp.csr_matrix(counts + counts.T)


@pytest.mark.parametrize("seed", range(6))
def test_cooccurrence_loss_matches_dense_reference(seed: int) -> None:
    logits, ids, counts = _random_case(seed)
    frequent = frequent_pairs(counts, 5, torch.float64)
    mask = (ids != 1) & (torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed)) < 0.8)
    for position_mask in (None, ids != 1, mask):
        x = logits.clone().requires_grad_()
        y = logits.clone().requires_grad_()
        got = cooccurrence_loss(x, ids, frequent, OFFSET, position_mask)
        want = _reference_cooccurrence_loss(y, ids, frequent, OFFSET, position_mask)
        assert want.item() > 0
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        got.backward()
        want.backward()
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-14)


def test_cooccurrence_loss_float32_chunked_and_any_layout_match() -> None:
    logits, ids, counts = _random_case(7, batch=4, length=64, n_codes=50)
    frequent = frequent_pairs(counts, 3)
    want = _reference_cooccurrence_loss(logits.float(), ids, frequent, OFFSET, ids != 1)
    # Tiny chunks (one code row per chunk and less) must give the same counts as one pass.
    for chunk in (1, 7, 1 << 21):
        got = cooccurrence_loss(logits.float(), ids, frequent, OFFSET, ids != 1, chunk_elements=chunk)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    dense = cooccurrence_loss(logits.float(), ids, frequent.to_dense(), OFFSET, ids != 1)
    torch.testing.assert_close(dense, want, rtol=1e-5, atol=1e-7)


def test_cooccurrence_loss_gradcheck_random_with_resets() -> None:
    logits, ids, counts = _random_case(3, batch=2, length=12, n_codes=6, extra=0)
    frequent = frequent_pairs(counts, 4, torch.float64)
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: cooccurrence_loss(t, ids, frequent, OFFSET, ids != 1), (x,), fast_mode=True
    )


@pytest.mark.parametrize("seed", range(3))
def test_lm_and_cooccurrence_loss_fused_matches_separate_terms(seed: int) -> None:
    logits, ids, counts = _random_case(seed)
    frequent = frequent_pairs(counts, 5, torch.float64)
    labels = torch.cat([ids[:, 1:], torch.full((ids.shape[0], 1), 1)], 1)
    labels = labels.masked_fill(labels == 1, -100)
    x = logits.clone().requires_grad_()
    y = logits.clone().requires_grad_()
    lm, cooc = lm_and_cooccurrence_loss(x, labels, ids, frequent, OFFSET, labels != -100)
    want_lm = lm_loss(y, labels)
    want_cooc = _reference_cooccurrence_loss(y, ids, frequent, OFFSET, labels != -100)
    assert torch.equal(lm, want_lm)  # the LM term is the very same computation
    torch.testing.assert_close(cooc, want_cooc, rtol=1e-12, atol=1e-14)
    (lm + 0.3 * cooc).backward()
    (want_lm + 0.3 * want_cooc).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-14)


def test_lm_and_cooccurrence_loss_gradcheck_and_no_context() -> None:
    logits, ids, counts = _random_case(4, batch=2, length=10, n_codes=5, extra=0)
    frequent = frequent_pairs(counts, 4, torch.float64)
    labels = torch.cat([ids[:, 1:], torch.full((2, 1), 2)], 1).masked_fill(ids == 1, -100)
    x = logits.clone().requires_grad_()

    def both(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lm_and_cooccurrence_loss(t, labels, ids, frequent, OFFSET, labels != -100)

    assert torch.autograd.gradcheck(both, (x,), fast_mode=True)
    # Without any visit context the regulariser is 0 and the LM term is unchanged.
    flat_ids = torch.tensor([[0, 4, 5, 2]])
    logits = torch.randn(1, 4, 10, requires_grad=True)
    lm, cooc = lm_and_cooccurrence_loss(
        logits, torch.tensor([[4, 5, 2, -100]]), flat_ids, _frequent(5), OFFSET
    )
    assert cooc.item() == 0.0 and torch.equal(lm, lm_loss(logits, torch.tensor([[4, 5, 2, -100]])))


def test_blocked_in_place_cumsum_matches_torch() -> None:
    from ehrgen.models.losses import _cumsum_rows_

    x = torch.randint(-3, 4, (48, 5)).float()
    want = x.cumsum(0)
    got = _cumsum_rows_(x.clone(), block=16)
    assert torch.equal(got, want)
