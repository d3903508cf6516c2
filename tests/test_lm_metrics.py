"""LM torchmetrics against plain numpy on known values; states reduce by sum across batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehrgen.metrics.lm import CodeAccuracy, Perplexity, ReconstructionJaccard, TokenAccuracy, jaccard

OFFSET = 7
VOCAB = 10


def _case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(size=(3, 6, VOCAB)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, VOCAB, size=(3, 6)))
    labels[2, 4:] = -100
    # Make some positions correct so the accuracies are neither 0 nor 1.
    labels[0, :3] = logits[0, :3].argmax(-1)
    return logits, labels


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_perplexity_is_exp_of_mean_code_nll_over_batches() -> None:
    metric = Perplexity(OFFSET)
    nlls = []
    for seed in (0, 1):
        logits, labels = _case(seed)
        metric.update(logits, labels)
        lp, lab = _log_softmax(logits.numpy()), labels.numpy()
        for b, t in zip(*np.nonzero(lab >= OFFSET), strict=True):
            nlls.append(-lp[b, t, lab[b, t]])
    assert len(nlls) > 3
    assert metric.compute().item() == pytest.approx(float(np.exp(np.mean(nlls))), rel=1e-5)
    # The mean, not the median, of per-token NLL.
    assert not np.isclose(np.exp(np.mean(nlls)), np.exp(np.median(nlls)))


def test_perplexity_restricted_to_a_token_range() -> None:
    logits, labels = _case(2)
    metric = Perplexity(OFFSET, n_tokens=2)  # ids 7, 8 only
    metric.update(logits, labels)
    lp, lab = _log_softmax(logits.numpy()), labels.numpy()
    sel = (lab >= 7) & (lab < 9)
    nll = [-lp[b, t, lab[b, t]] for b, t in zip(*np.nonzero(sel), strict=True)]
    assert metric.compute().item() == pytest.approx(float(np.exp(np.mean(nll))), rel=1e-5)


def test_token_and_code_accuracy() -> None:
    token, code = TokenAccuracy(), CodeAccuracy(OFFSET)
    hits_t, n_t, hits_c, n_c = 0, 0, 0, 0
    for seed in (0, 1):
        logits, labels = _case(seed)
        token.update(logits, labels)
        code.update(logits, labels)
        pred, lab = logits.numpy().argmax(-1), labels.numpy()
        valid, codes = lab != -100, lab >= OFFSET
        hits_t += int(((pred == lab) & valid).sum())
        n_t += int(valid.sum())
        hits_c += int(((pred == lab) & codes).sum())
        n_c += int(codes.sum())
    assert 0 < hits_t < n_t
    assert token.compute().item() == pytest.approx(hits_t / n_t)
    assert code.compute().item() == pytest.approx(hits_c / n_c)


def test_reconstruction_jaccard() -> None:
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)
    assert jaccard(set(), set()) == 1.0
    assert jaccard({1}, set()) == 0.0
    metric = ReconstructionJaccard()
    metric.update([{1, 2, 3}, {5}], [{2, 3, 4}, {6}])
    metric.update([[7, 7, 8]], [[8, 7]])  # duplicates do not count
    assert metric.compute().item() == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    with pytest.raises(ValueError, match="targets"):
        metric.update([{1}], [])


def test_states_are_summed_and_reset() -> None:
    metric = TokenAccuracy()
    assert metric.full_state_update is False
    assert all(fx is not None and fx.__name__ == "dim_zero_sum" for fx in metric._reductions.values())
    logits, labels = _case(0)
    metric.update(logits, labels)
    metric.reset()
    assert metric.numerator.item() == 0.0 and metric.denominator.item() == 0.0


def test_metrics_do_not_import_the_lightning_module() -> None:
    """metrics/lm.py imported the LightningModule, which imports the metrics: a cycle."""
    import subprocess
    import sys

    code = "import sys, ehrgen.metrics.lm, ehrgen.metrics; print('ehrgen.module' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
