"""Pure metric functions and torchmetrics classes against numpy/scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
import torch
from scipy.spatial.distance import jensenshannon

from ehrgen.data.rules import VALIDITY_RULES
from ehrgen.metrics import functional as F
from ehrgen.metrics.streaming import (
    CodeFrequencyJSD,
    CooccurrenceAgreement,
    CountKS,
    PrevalenceAgreement,
    ValidityRate,
)

RNG = np.random.default_rng(0)


def test_jsd_matches_scipy_and_bounds():
    p, q = RNG.dirichlet(np.ones(50), size=4), RNG.dirichlet(np.ones(50) * 0.3, size=4)
    ref = jensenshannon(p, q, base=2, axis=1) ** 2
    np.testing.assert_allclose(F.js_divergence(p * 17, q * 3), ref, rtol=1e-10)  # unnormalised counts
    assert F.js_divergence(p[0], p[0]) == pytest.approx(0.0, abs=1e-12)
    assert F.js_divergence([1, 2, 0, 0], [0, 0, 3, 1]) == pytest.approx(1.0)
    assert np.isnan(F.js_divergence([0, 0], [1, 1]))


def test_r2_and_pearson():
    x = RNG.random(30)
    y = 2 * x + RNG.normal(0, 0.1, 30)
    ss_res, ss_tot = ((x - y) ** 2).sum(), ((x - x.mean()) ** 2).sum()
    assert F.r2_score(x, y) == pytest.approx(1 - ss_res / ss_tot)
    assert F.r2_score(x, x) == 1.0
    assert F.r2_score(x, 2 * x) < F.pearson_r(x, 2 * x) ** 2  # R^2 is about the identity line
    assert F.pearson_r(x, y) == pytest.approx(st.pearsonr(x, y).statistic)
    rows = np.stack([y, x])
    np.testing.assert_allclose(F.pearson_r(np.stack([x, x]), rows), [st.pearsonr(x, y).statistic, 1.0])
    assert np.isnan(F.pearson_r(np.ones(5), x[:5]))


def test_top_k_overlap_known_answer():
    ref = np.array([9, 8, 7, 6, 0, 0])
    other = np.array([9, 0, 7, 0, 8, 1])
    assert F.top_k_overlap(ref, other, k=2) == 0.5  # {0,1} vs {0,4}
    assert F.top_k_overlap(ref, other, k=3) == pytest.approx(2 / 3)  # {0,1,2} vs {0,4,2}
    assert F.top_k_overlap(ref, ref, k=100) == 1.0  # fewer than k present codes: all of them


def test_ks_from_histograms_matches_scipy():
    a, b = RNG.poisson(3, 400), RNG.poisson(3.4, 250)
    width = max(a.max(), b.max()) + 1
    d, p = F.ks_from_histograms(np.bincount(a, minlength=width), np.bincount(b, minlength=width))
    ref = st.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)
    # large samples: Smirnov's limit, within 0.007 of scipy's finite-n formula
    a, b = RNG.poisson(3, 20000), RNG.poisson(3.03, 15000)
    width = max(a.max(), b.max()) + 1
    d, p = F.ks_from_histograms(np.bincount(a, minlength=width), np.bincount(b, minlength=width))
    ref = st.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, abs=0.007)


def test_frequency_bands_and_recall():
    counts = np.array([50, 30, 10, 5, 3, 2, 0])  # cumulative share before: 0, .5, .8, .9, .95, .98
    np.testing.assert_array_equal(F.frequency_bands(counts), [0, 1, 1, 2, 2, 2, -1])
    other = np.array([1, 0, 4, 0, 0, 9, 7])
    np.testing.assert_allclose(F.band_recall(counts, other), [1.0, 0.5, 1 / 3])


def test_weighted_quantile_equals_quantile_of_resample():
    v = RNG.integers(0, 20, 40).astype(float)
    w = RNG.integers(0, 4, (3, 40))
    for row in range(3):
        for q in (0.05, 0.5, 0.9):
            ref = np.quantile(np.repeat(v, w[row]), q, method="inverted_cdf")
            assert F.weighted_quantile(v, w, q)[row] == ref


def test_roc_auc_matches_mann_whitney_with_ties_and_weights():
    s = RNG.integers(0, 5, 60).astype(float)  # many ties
    y = RNG.random(60) < 0.4
    u = st.mannwhitneyu(s[y], s[~y]).statistic
    assert F.roc_auc(s, y) == pytest.approx(u / (y.sum() * (~y).sum()))
    w = RNG.integers(0, 3, 60)
    sr, yr = np.repeat(s, w), np.repeat(y, w)
    u = st.mannwhitneyu(sr[yr], sr[~yr]).statistic
    assert F.roc_auc(s, y, w[None, :])[0] == pytest.approx(u / (yr.sum() * (~yr).sum()))
    assert np.isnan(F.roc_auc(s, np.ones(60, bool)))


def test_threshold_advantage_brute_force():
    d = RNG.integers(0, 6, 50) / 5
    m = RNG.random(50) < 0.5
    best = max(
        max(((d[m] <= t).mean() - (d[~m] <= t).mean()) for t in np.unique(d)),
        0.0,
    )
    assert F.threshold_advantage(d, m) == pytest.approx(best)
    assert (
        F.threshold_advantage(np.r_[np.zeros(10), np.ones(10)], np.r_[np.ones(10), np.zeros(10)] > 0) == 1.0
    )


# ----------------------------------------------------------------------------- torchmetrics classes


def _batches(x: np.ndarray, n: int = 3):
    return [torch.from_numpy(b) for b in np.array_split(x, n)]


def test_metric_classes_declare_sum_states():
    for metric in (CodeFrequencyJSD(5), PrevalenceAgreement(5), CooccurrenceAgreement(5), CountKS(4)):
        assert metric.full_state_update is False
        assert metric._reductions and all(fx is not None for fx in metric._reductions.values())


def test_code_frequency_jsd_accumulates():
    real, syn = RNG.poisson(1.0, (30, 12)), RNG.poisson(1.5, (20, 12))
    m = CodeFrequencyJSD(12)
    for r, s in zip(_batches(real), _batches(syn), strict=True):
        m.update(r, s)
    ref = jensenshannon(real.sum(0), syn.sum(0), base=2) ** 2
    assert float(m.compute()) == pytest.approx(ref)
    m.reset()
    m.update(torch.from_numpy(real), torch.from_numpy(real))
    assert float(m.compute()) == pytest.approx(0.0, abs=1e-12)


def test_prevalence_agreement_accumulates():
    real = (RNG.random((40, 15)) < np.linspace(0.05, 0.6, 15)).astype(np.float32)
    syn = (RNG.random((35, 15)) < np.linspace(0.6, 0.05, 15)).astype(np.float32)
    m = PrevalenceAgreement(15, top_k=5)
    for r, s in zip(_batches(real), _batches(syn), strict=True):
        m.update(r, s)
    out = m.compute()
    p, q = real.mean(0), syn.mean(0)
    seen = (p > 0) | (q > 0)
    assert float(out["pearson"]) == pytest.approx(st.pearsonr(p[seen], q[seen]).statistic)
    assert float(out["r2"]) == pytest.approx(
        1 - ((p - q) ** 2)[seen].sum() / ((p - p[seen].mean()) ** 2)[seen].sum()
    )
    assert float(out["top5_overlap"]) == pytest.approx(F.top_k_overlap(p, q, 5))


def test_cooccurrence_agreement_accumulates():
    real = (RNG.random((50, 8)) < 0.3).astype(np.float32)
    syn = (RNG.random((60, 8)) < 0.3).astype(np.float32)
    m = CooccurrenceAgreement(8)
    for r, s in zip(_batches(real), _batches(syn), strict=True):
        m.update(r, s)
    out = m.compute()
    iu = np.triu_indices(8, 1)
    pr, ps = (real.T @ real)[iu] / 50, (syn.T @ syn)[iu] / 60
    seen = (pr > 0) | (ps > 0)
    assert float(out["r2"]) == pytest.approx(float(F.r2_score(pr[seen], ps[seen])))
    # partners: codes co-occurring at least once with each present code
    c = real.T @ real
    np.fill_diagonal(c, 0)
    assert float(out["score_real"]) == pytest.approx((c > 0).sum(1)[real.sum(0) > 0].mean())


def test_count_ks_accumulates():
    a, b = RNG.poisson(2, 300), RNG.poisson(2.5, 200)
    m = CountKS(max_value=50)
    for r, s in zip(_batches(a), _batches(b), strict=True):
        m.update(r, s)
    out = m.compute()
    ref = st.ks_2samp(a, b, method="asymp")
    assert float(out["statistic"]) == pytest.approx(ref.statistic)
    assert float(out["pvalue"]) == pytest.approx(ref.pvalue, rel=1e-6)


def test_validity_rate_counts_violations():
    codes = ["65101", "4019", "185", "V3000"]  # pregnancy, none, male-only, perinatal
    m = ValidityRate(codes)
    x = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float32)
    sex = torch.tensor([1, 0, 1, 0])  # woman (ok), man with pregnancy (bad), woman with 185 (bad), man
    age = torch.tensor([30.0, 30.0, 50.0, 40.0])  # the last is 40 with a perinatal code (bad)
    m.update(x, sex, age)
    out = {k: float(v) for k, v in m.compute().items()}
    assert out == {r.name: v for r, v in zip(VALIDITY_RULES, [0.25, 0.25, 0.25, 0.0], strict=True)}
