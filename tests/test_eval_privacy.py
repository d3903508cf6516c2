"""Nearest neighbours against brute force, and privacy metrics on planted leaks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from test_eval_cohorts import arrays_of, toy_patients

from ehrgen.metrics.bootstrap import BootstrapConfig
from ehrgen.privacy import attacks
from ehrgen.privacy.neighbors import nearest
from ehrgen.privacy.suite import PrivacyConfig, privacy_metrics
from ehrgen.privacy.vectors import binary_vectors, smooth_idf, tfidf_vectors


def _random_sets(n: int, v: int, seed: int, n_empty: int = 2) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, v)) < rng.uniform(0.02, 0.2, (n, 1))).astype(np.float32)
    dense[rng.choice(n, n_empty, replace=False)] = 0.0
    return sp.csr_matrix(dense)


def _jaccard_reference(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
    d = cdist(a.toarray() > 0, b.toarray() > 0, "jaccard")
    ea, eb = np.diff(a.indptr) == 0, np.diff(b.indptr) == 0
    d[np.ix_(ea, eb)] = 0.0  # two empty records are identical (scipy says nan/0)
    d[np.ix_(ea, ~eb)] = 1.0
    d[np.ix_(~ea, eb)] = 1.0
    return d


def _cosine_reference(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
    d = cdist(a.toarray(), b.toarray(), "cosine")
    ea, eb = np.diff(a.indptr) == 0, np.diff(b.indptr) == 0
    d[np.ix_(ea, eb)] = 0.0
    d[ea] = np.where(eb[None, :], 0.0, 1.0)
    d[:, eb] = np.where(ea[:, None], 0.0, 1.0)
    return d


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("metric", ["jaccard", "cosine"])
def test_nearest_matches_brute_force(metric, workers):
    a, b = _random_sets(130, 40, 1), _random_sets(170, 40, 2)
    b = sp.vstack([b, a[7]]).tocsr()  # one exact duplicate of a query
    if metric == "cosine":
        norm = lambda m: sp.csr_matrix(m.multiply(1 / np.sqrt(np.maximum(m.multiply(m).sum(1), 1e-12))))  # noqa: E731
        a, b = norm(a), norm(b)
        ref = _cosine_reference(a, b)
    else:
        ref = _jaccard_reference(a, b)
    nn = nearest(a, b, metric, k=3, reverse=True, workers=workers, block=13, chunk=17)
    np.testing.assert_allclose(nn.distance, np.sort(ref, 1)[:, :3], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(ref, nn.index, 1), nn.distance, atol=1e-5)
    np.testing.assert_allclose(nn.reverse_distance, ref.min(0), atol=1e-5)
    np.testing.assert_allclose(ref[nn.reverse_index, np.arange(ref.shape[1])], ref.min(0), atol=1e-5)
    assert nn.distance[7, 0] == pytest.approx(0.0, abs=1e-6) and nn.index[7, 0] == 170


def test_nearest_ties_go_to_lower_index():
    rows = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32))
    nn = nearest(rows[[1]], rows, "jaccard", k=2, workers=1, block=1, chunk=1)
    np.testing.assert_array_equal(nn.index[0], [1, 2])


def test_self_match_counts_exact_duplicates():
    rows = _random_sets(60, 25, 3, n_empty=3)
    rows = sp.vstack([rows, rows[10]]).tocsr()  # record 60 duplicates record 10
    nn = nearest(rows, rows, "jaccard", k=1, self_match=True, workers=2, block=16, chunk=8)
    ref = _jaccard_reference(rows, rows)
    np.fill_diagonal(ref, np.inf)
    np.testing.assert_allclose(nn.distance[:, 0], ref.min(1), atol=1e-6)
    assert nn.distance[10, 0] == 0.0 and nn.index[10, 0] == 60  # not itself, but its duplicate
    assert (nn.index[:, 0] != np.arange(61)).all()


def test_tfidf_rows_are_unit_and_idf_smooth():
    train = _random_sets(50, 10, 4, n_empty=0)
    idf = smooth_idf(train)
    df = (train.toarray() > 0).sum(0)
    np.testing.assert_allclose(idf, np.log(51 / (1 + df)) + 1, rtol=1e-6)


CFG = PrivacyConfig(distances=("jaccard", "cosine"), max_records=400, workers=1, block=64, chunk=64)
BOOT = BootstrapConfig(n=20, seed=0)


def _value(res, key):
    return res[key]["value"]


@pytest.fixture(scope="module")
def toy_sets():
    return (
        toy_patients(400, 11),
        toy_patients(400, 12, first_id=10_000),
        toy_patients(400, 13, first_id=20_000),
    )


@pytest.fixture
def cohorts(tmp_path):
    """(synthetic, train, holdout) arrays over one vocabulary, as privacy_metrics takes them."""

    def make(train: pl.DataFrame, holdout: pl.DataFrame, synthetic: pl.DataFrame):
        t, h, s = arrays_of(
            tmp_path / str(len(list(tmp_path.iterdir()))), {"t": train, "h": holdout, "s": synthetic}
        )
        return s, t, h

    return make


def test_copy_of_train_leaks_everywhere(toy_sets, cohorts):
    train, holdout, _ = toy_sets
    syn = train.with_columns(pl.col("subject_id") + 100_000)
    res, dists, _ = privacy_metrics(*cohorts(train, holdout, syn), CFG, BOOT)
    for dist in ("jaccard", "cosine"):
        assert _value(res, f"{dist}/copy_rate") == 1.0
        assert _value(res, f"{dist}/copy_rate_excess") > 0.9
        assert _value(res, f"{dist}/dcr_train_median") == pytest.approx(0.0, abs=1e-6)
        assert _value(res, f"{dist}/share_closer_to_train") > 0.95
        assert _value(res, f"{dist}/mia_advantage") > 0.85
        assert _value(res, f"{dist}/mia_auroc") > 0.9
        assert _value(res, f"{dist}/nnaa_train") < 0.1
        assert _value(res, f"{dist}/nnaar") > 0.2
    assert _value(res, "attribute/advantage") > 0.3
    assert (dists["jaccard/dcr_train"] == 0).all()


def test_independent_sample_is_near_ideal(toy_sets, cohorts):
    train, holdout, syn = toy_sets
    res, _, _ = privacy_metrics(*cohorts(train, holdout, syn), CFG, BOOT)
    for dist in ("jaccard", "cosine"):
        assert abs(_value(res, f"{dist}/share_closer_to_train") - 0.5) < 0.06
        assert _value(res, f"{dist}/mia_advantage") < 0.12
        assert abs(_value(res, f"{dist}/mia_auroc") - 0.5) < 0.07
        assert abs(_value(res, f"{dist}/nnaar")) < 0.08
        assert abs(_value(res, f"{dist}/nnaa_train") - 0.5) < 0.08
        assert abs(_value(res, f"{dist}/copy_rate") - _value(res, f"{dist}/copy_rate_holdout")) < 0.05
        assert abs(_value(res, f"{dist}/copy_rate_excess")) < 0.03
        entry = res[f"{dist}/share_closer_to_train"]
        assert entry["ci_low"] <= 0.5 + 0.03 and entry["ci_high"] >= 0.5 - 0.03
    assert abs(_value(res, "attribute/advantage")) < 0.05


def test_planted_copy_is_found(toy_sets, cohorts):
    train, holdout, syn = toy_sets
    richest = int(np.argmax(train["visits"].list.len().to_numpy() * 100 + np.arange(400) % 7))
    visits = syn["visits"].to_list()
    visits[5] = train["visits"][richest].to_list()
    planted = syn.with_columns(pl.Series("visits", visits, dtype=syn.schema["visits"]))
    arrays = cohorts(train, holdout, planted)
    res, dists, _ = privacy_metrics(*arrays, CFG, BootstrapConfig(n=0))
    base, _, _ = privacy_metrics(*cohorts(train, holdout, syn), CFG, BootstrapConfig(n=0))
    assert dists["jaccard/dcr_train"][5] == 0.0
    assert _value(res, "jaccard/copy_rate") - _value(base, "jaccard/copy_rate") == pytest.approx(1 / 400)
    nn = nearest(binary_vectors(arrays[0])[[5]], binary_vectors(arrays[1]), "jaccard")
    assert nn.distance[0, 0] == 0.0
    same = binary_vectors(arrays[1])[nn.index[0, 0]].indices
    np.testing.assert_array_equal(same, binary_vectors(arrays[1])[richest].indices)


def test_attack_functions_known_answers():
    # NNAA: real records closer to each other than to synthetic and vice versa -> accuracy 1
    w = np.ones((1, 3))
    assert attacks.nnaa(np.full(3, 0.9), np.full(3, 0.1), np.full(3, 0.9), np.full(3, 0.1), w, w)[0] == 1.0
    # exact copies (d = 0) next to real records that are far from each other: accuracy 0
    zeros, far = np.zeros(3), np.full(3, 0.5)
    assert attacks.nnaa(zeros, far, zeros, far, w, w)[0] == 0.0
    # a copy whose source also has a duplicate in the real data is a tie: counted as one half
    assert attacks.nnaa(zeros, zeros, zeros, far, w, w)[0] == 0.25
    mia = attacks.membership_inference(np.zeros(4), np.full(4, 0.5), np.ones((1, 4)), np.ones((1, 4)))
    assert mia["advantage"][0] == 1.0 and mia["accuracy"][0] == 1.0 and mia["auroc"][0] == 1.0
    tp, fp, fn = np.array([1.0, 0.0]), np.array([1.0, 2.0]), np.array([0.0, 1.0])
    assert attacks.micro_f1(tp, fp, fn, np.ones((1, 2)))[0] == pytest.approx(2 / (2 + 3 + 1))


def test_tfidf_vectors_unit_norm(toy_sets, cohorts):
    train, holdout, syn = toy_sets
    _, arr, _ = cohorts(train, holdout, syn)
    v = tfidf_vectors(arr, smooth_idf(binary_vectors(arr)))
    norms = np.sqrt(np.asarray(v.multiply(v).sum(1)).ravel())
    np.testing.assert_allclose(norms[np.diff(v.indptr) > 0], 1.0, rtol=1e-5)
