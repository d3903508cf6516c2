"""Model-based evaluation metrics (ehrgen.model_metrics.model_metrics) against known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import TINY

from ehrgen.model_metrics import model_metrics
from ehrgen.train import run


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory, demo_cohort: Path) -> Path:
    from conftest import compose_config

    tmp = tmp_path_factory.mktemp("mm")
    # carry off: its repeat mask makes a zeroed output layer non-uniform (fewer allowed tokens)
    cfg = compose_config("train", [*TINY, f"data.cohort_dir={demo_cohort}", "trainer.max_epochs=2", "model.net.carry=false"], tmp)  # fmt: skip
    return Path(run(cfg)["last_checkpoint"])


def test_uniform_model_has_perplexity_equal_to_vocab_size(
    demo_checkpoint: Path, demo_cohort: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(demo_checkpoint, weights_only=True, map_location="cpu")
    state = ckpt["state_dict"]
    # Zero output weights and bias: every next-token distribution is uniform over the vocabulary.
    state["model.bart.lm_head.weight"].zero_()
    state["model.bart.final_logits_bias"].zero_()
    state["model.logit_offsets"].zero_()  # training calibrated the checkpoint (ehrgen.calibration)
    if "model.age_profile" in state:  # and the age-profile logits, when the model has them
        state["model.age_profile"].zero_()
    uniform = tmp_path / "uniform.ckpt"
    torch.save(ckpt, uniform)
    vocab = ckpt["ehrgen"]["layout"]["vocab_size"]
    out = model_metrics(str(uniform), str(demo_cohort), ["test"])
    for name in ("perplexity", "temporal_perplexity", "spatial_perplexity"):
        assert out[name] == pytest.approx(vocab, rel=1e-4), name
    assert out["n_patients"] == 11
    # Uniform over what the grammar allows: 1/2 for </s> after each visit, 1/(C+1) for <\v> after
    # each code. Expected over observed ends, counted on the patients as the model reads them.
    uniform_ends = _uniform_end_calibration(demo_checkpoint, demo_cohort, ["test"])
    for name, want in uniform_ends.items():
        assert out[name] == pytest.approx(want, rel=1e-5), name


def _uniform_end_calibration(ckpt: Path, cohort: Path, splits: list[str]) -> dict[str, float]:
    import polars as pl

    from ehrgen.data.cohort import Cohort
    from ehrgen.data.datamodule import truncate_oldest
    from ehrgen.data.vocab import UNK, VISIT_START
    from ehrgen.module import PromptBartModule

    tok = PromptBartModule.load(str(ckpt)).tokenizer
    lo, hi = tok.content_range
    frame = pl.concat([Cohort(cohort).read(s) for s in splits])
    seqs = [truncate_oldest(x, 256) for x in tok.encode_batch(frame["visits"].to_arrow())]
    visits = [int((x == VISIT_START).sum()) for x in seqs]
    codes = sum(int((((x >= lo) & (x < hi)) | (x == UNK)).sum()) for x in seqs)
    # Carry: each visit after the first writes (its items + 1) tokens, each putting 1/(C+1) on
    # every in-vocabulary item of the visit before; observed: the items the two visits share.
    expected_carry, observed_carry = 0.0, 0
    for x in seqs:
        parts = np.split(x, np.flatnonzero(x == VISIT_START))[1:]
        items = [[int(t) for t in v if lo <= t < hi or t == UNK] for v in parts]
        for before, now in zip(items, items[1:], strict=False):
            known = {t for t in before if t != UNK}
            expected_carry += (len(now) + 1) * len(known) / (hi - lo + 1)
            observed_carry += len(known & set(now))
    return {
        "stop_calibration": 0.5 * sum(visits) / len(seqs),
        "first_stop_calibration": 0.5 * len(seqs) / visits.count(1),
        "visit_end_calibration": codes / (hi - lo + 1) / sum(visits),
        "carry_calibration": expected_carry / observed_carry,
    }


def test_trained_model_beats_uniform(demo_checkpoint: Path, demo_cohort: Path) -> None:
    vocab = torch.load(demo_checkpoint, weights_only=True)["ehrgen"]["layout"]["vocab_size"]
    out = model_metrics(str(demo_checkpoint), str(demo_cohort), ["val", "test"])
    assert out["perplexity"] < vocab
    assert 0.0 <= out["recon_jaccard"] <= 1.0
    # Training moves the visit ends towards their real rate (1) from the uniform model's.
    uniform = _uniform_end_calibration(demo_checkpoint, demo_cohort, ["val", "test"])
    uniform = uniform["visit_end_calibration"]
    assert abs(math.log(out["visit_end_calibration"])) < abs(math.log(uniform))
    assert all(math.isfinite(v) for v in out.values())


def test_typical_ages_leave_each_patient_out() -> None:
    """Known answer: a token's typical age for a patient is the mean age over the other patients'
    occurrences of it; a token nobody else has gets the mean age of all occurrences."""
    from ehrgen.model_metrics import _item_age_totals, _typical_age_rows

    seqs = [np.array(s) for s in ([0, 4, 7, 8, 5, 2], [0, 4, 7, 5, 4, 7, 5, 2], [0, 4, 9, 5, 2])]
    rows = _typical_age_rows(seqs, np.array([20.0, 50.0, 80.0]), 7, 10)
    fill = (20 + 20 + 50 + 50 + 80) / 5
    np.testing.assert_allclose(rows, [[50, fill, 80], [20, 20, 80], [40, 20, fill]])
    # a batch at a time, with every patient's totals: the same rows
    totals = _item_age_totals(seqs, np.array([20.0, 50.0, 80.0]), 7, 10)
    np.testing.assert_allclose(_typical_age_rows(seqs[1:], np.array([50.0, 80.0]), 7, 10, totals), rows[1:])


def test_age_calibration_is_the_models_share_of_the_datas_age_spread() -> None:
    """Known answer: a model that puts ``λ`` on the true code and spreads the rest evenly over the
    content tokens scores ``λ`` (the even part does not depend on age), separately for the first
    visit and the later ones; positions that write no code do not count."""
    from ehrgen.data.datamodule import pad_stack
    from ehrgen.data.vocab import PAD
    from ehrgen.model_metrics import _age_calibration, _age_sums

    lo, hi, vocab = 7, 10, 12
    seqs = [np.array([0, 4, 7, 8, 5, 4, 8, 5, 2]), np.array([0, 4, 9, 5, 4, 9, 8, 5, 2])]
    dec, _ = pad_stack([s[:-1] for s in seqs], PAD)
    labels, _ = pad_stack([s[1:] for s in seqs], PAD)
    share = {1: 0.7, 2: 0.2}  # on the true code, in visit 1 and in visit 2
    torch.manual_seed(0)
    logits = torch.randn(*labels.shape, vocab) * 3  # whatever the model says elsewhere
    visit = (dec == 4).cumsum(1)
    for b, t in zip(*torch.nonzero((labels >= lo) & (labels < hi), as_tuple=True), strict=True):
        lam = share[int(visit[b, t])]
        p = torch.full((hi - lo,), (1 - lam) / (hi - lo))
        p[labels[b, t] - lo] += lam
        logits[b, t, lo:hi] = p.log() + 5.0  # any shift: renormalised over the content tokens
    typical = torch.tensor([[20.0, 50.0, 80.0]] * 2)
    sums = _age_sums(logits, dec, labels, (lo, hi), torch.tensor([30.0, 70.0]), typical)
    assert sums["first_visit"][5] == 3 and sums["later_visits"][5] == 3  # code positions
    assert _age_calibration(sums["first_visit"]) == pytest.approx(0.7, rel=1e-5)
    assert _age_calibration(sums["later_visits"]) == pytest.approx(0.2, rel=1e-5)
    assert math.isnan(_age_calibration(np.zeros(6)))
