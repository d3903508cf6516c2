"""Validity rates, demographic conditioning, logistic regression and TSTR utility on known answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize
from test_eval_cohorts import arrays_of, toy_patients
from test_eval_fidelity import _patients

from ehrgen.metrics.bootstrap import BootstrapConfig, bootstrap
from ehrgen.metrics.conditioning import band_names, classifier_accuracy, stratum_fidelity
from ehrgen.metrics.logreg import LogisticRegression
from ehrgen.metrics.utility import next_visit_samples, tstr
from ehrgen.metrics.validity import per_patient_quantities, ratio_stat

BOOT = BootstrapConfig(n=20, seed=0)


def test_validity_rates_on_planted_errors(tmp_path):
    real = _patients([(1, 0, 40.0, [["4019", "4280"]]), (2, 1, 30.0, [["65101"]])])
    syn = _patients(
        [
            (1, 1, 30.0, [["65101", "4019"]]),  # valid pregnancy
            (2, 0, 30.0, [["65101", "65101"], []]),  # man, pregnancy code twice in a visit; empty visit
            (3, 1, 40.0, [["XYZ1", "185"]]),  # unknown + malformed code; woman with prostate cancer
            (4, 0, 5.0, [["V3000"]]),  # perinatal code at 5 years
            (5, 1, 60.0, []),  # no visits
        ]
    )
    _, s = arrays_of(tmp_path, {"r": real, "s": syn})
    known = np.isin(s.vocab, ["4019", "4280", "65101"])
    res = bootstrap(ratio_stat(per_patient_quantities(s, known), "x"), {"x": 5}, BOOT)
    v = {k: e["value"] for k, e in res.items()}
    # 7 code occurrences: 65101 4019 | 65101 65101 | XYZ1 185 | V3000
    assert v["duplicate_rate"] == pytest.approx(1 / 7)
    assert v["unknown_code_rate"] == pytest.approx(3 / 7)  # XYZ1, 185, V3000
    assert v["invalid_format_rate"] == pytest.approx(1 / 7)
    assert v["empty_visit_rate"] == pytest.approx(1 / 5)  # 5 visits
    assert v["empty_patient_rate"] == pytest.approx(1 / 5)
    assert v["violation_rate/pregnancy"] == pytest.approx(1 / 5)
    assert v["violation_rate/male_genital"] == pytest.approx(1 / 5)
    assert v["violation_rate/perinatal"] == pytest.approx(1 / 5)
    assert v["violation_rate/female_genital"] == 0.0
    assert v["violation_rate_any"] == pytest.approx(3 / 5)
    assert v["violating_code_rate"] == pytest.approx(4 / 7)  # 65101 x2, 185, V3000


def test_unknown_demographics_are_not_violations(tmp_path):
    syn = _patients([(1, 0, 30.0, [["65101"]])]).with_columns(
        pl.lit(None, dtype=pl.Int8).alias("sex"), pl.lit(None, dtype=pl.Float32).alias("age")
    )
    (s,) = arrays_of(tmp_path, {"s": syn})
    q = per_patient_quantities(s, np.ones(len(s.vocab), bool))
    assert q["violation_rate_any"][0].sum() == 0


def test_logistic_regression_matches_scipy_reference():
    rng = np.random.default_rng(0)
    x = (rng.random((200, 6)) < 0.4).astype(float)
    y = (x @ np.array([2.0, -1.0, 0.5, 0.0, 1.0, -2.0]) + rng.normal(0, 1, 200) > 0).astype(int)
    C = 0.5
    model = LogisticRegression(C=C, max_iter=500, tol=1e-10).fit(sp.csr_matrix(x), y)

    def objective(theta):  # sklearn's binary objective: sum log-loss + ||w||^2 / (2C)
        w, b = theta[:6], theta[6]
        z = x @ w + b
        return np.logaddexp(0, -z)[y == 1].sum() + np.logaddexp(0, z)[y == 0].sum() + (w @ w) / (2 * C)

    ref = minimize(objective, np.zeros(7), method="BFGS", options={"gtol": 1e-9}).x
    # softmax with two classes: the logit difference is the binary model
    w = model.coef_[:, 1] - model.coef_[:, 0]
    b = model.intercept_[1] - model.intercept_[0]
    # (the softmax parametrisation puts half the L2 penalty on each class: coefficient w/2 each,
    # so its penalty on the difference is ||w||^2 / (4C): compare with the reference at C' = 2C)
    ref2 = minimize(
        lambda t: objective(t) - (t[:6] @ t[:6]) / (2 * C) + (t[:6] @ t[:6]) / (4 * C),
        np.zeros(7),
        method="BFGS",
        options={"gtol": 1e-9},
    ).x
    np.testing.assert_allclose(np.r_[w, b], ref2, atol=1e-4)
    assert not np.allclose(np.r_[w, b], ref, atol=1e-3)  # the penalty does matter
    assert (model.predict(sp.csr_matrix(x)) == y).mean() > 0.8
    np.testing.assert_allclose(model.predict_proba(sp.csr_matrix(x)).sum(1), 1.0)


def test_logistic_regression_three_classes():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    x = sp.csr_matrix(np.eye(3)[y] * (rng.random((300, 1)) < 0.9))
    model = LogisticRegression().fit(x, y + 10)
    assert list(model.classes_) == [10, 11, 12]
    assert (model.predict(x) == y + 10).mean() > 0.85


def test_band_names():
    assert band_names([18, 45, 65]) == ["<18", "18-44", "45-64", "65+"]


def test_classifier_accuracy_reads_demographics(tmp_path):
    real, hold = toy_patients(1500, 1), toy_patients(500, 2, first_id=5000)
    syn = toy_patients(500, 3, first_id=9000)
    # a generator that ignores the prompt: demographics shuffled against the codes
    rng = np.random.default_rng(0)
    perm = rng.permutation(500)
    ignored = syn.with_columns(
        pl.Series("sex", syn["sex"].to_numpy()[perm]), pl.Series("age", syn["age"].to_numpy()[perm])
    )
    r, h, s, i = arrays_of(tmp_path, {"r": real, "h": hold, "s": syn, "i": ignored})
    res, _ = classifier_accuracy(r, {"synthetic": s, "holdout": h, "ignored": i}, [18, 45, 65], BOOT)
    v = {k: e["value"] for k, e in res.items()}
    assert v["sex_accuracy/holdout"] > 0.65
    assert abs(v["sex_accuracy/ratio"] - 1) < 0.1
    assert v["sex_accuracy/ignored"] < v["sex_accuracy/synthetic"] - 0.1
    assert v["age_band_accuracy/ignored"] < v["age_band_accuracy/synthetic"] - 0.1


def test_stratum_fidelity_identical_and_small(tmp_path):
    df = toy_patients(600, 4)
    a, b = arrays_of(tmp_path, {"a": df, "b": df})
    res, warnings = stratum_fidelity(a, b, [18, 45, 65], 40, BOOT)
    strata = {k.split("/")[0] for k in res}
    assert "M_65+" in strata and "F_45-64" in strata
    assert all(res[f"{s}/jsd"]["value"] == pytest.approx(0, abs=1e-12) for s in strata)
    assert all(res[f"{s}/prevalence_r2"]["value"] == pytest.approx(1) for s in strata)
    # <18 holds ~ 0.05 * 600 / 2 + (17/89) * 0.95 * 600 / 2 patients per sex, some below 40
    n_small = 8 - len(strata)
    assert len(warnings) == n_small


def _visit_frame(rows):
    return _patients(rows)


def test_next_visit_samples_use_only_earlier_visits(tmp_path):
    df = _visit_frame(
        [
            (1, 0, 60.0, [["4280", "4019"], ["5849"], ["42831"]]),  # HF in last visit
            (2, 1, 60.0, [["4019"], ["4019"]]),  # no HF in last visit
            (3, 1, 60.0, [["42831"]]),  # one visit: no sample
        ]
    )
    (arr,) = arrays_of(tmp_path, {"a": df})
    x, y, rows = next_visit_samples(arr, "428")
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_array_equal(y, [True, False])
    feats = [sorted(str(arr.vocab[j]) for j in x[i].indices) for i in range(2)]
    assert feats == [["4019", "4280", "5849"], ["4019"]]  # 42831 (the label visit) never leaks


def test_tstr_copy_matches_trtr_and_noise_does_not(tmp_path):
    real = toy_patients(1500, 1, mean_visits=3)
    hold = toy_patients(800, 2, first_id=5000, mean_visits=3)
    # destroy the signal: each patient's last visit comes from another random patient
    rng = np.random.default_rng(0)
    visits = real["visits"].to_list()
    multi = [i for i, v in enumerate(visits) if len(v) >= 2]
    lasts = [visits[i][-1] for i in multi]
    for i, j in zip(multi, rng.permutation(len(multi)), strict=True):
        visits[i] = visits[i][:-1] + [lasts[j]]
    noise = real.with_columns(pl.Series("visits", visits, dtype=real.schema["visits"]))
    r, h, s, n = arrays_of(tmp_path, {"r": real, "h": hold, "s": real, "n": noise})
    # the toy generator's chronic codes recur: pick the most common category as target
    cats = [str(c)[:3] for c in r.vocab[np.bincount(r.codes).argsort()[::-1][:3]]]
    res, _ = tstr(r, s, h, cats, BOOT, min_class=10)
    assert res, "no target had enough samples"
    for t in {k.split("/")[0] for k in res if k != "mean/auroc_ratio"}:
        assert res[f"{t}/auroc_ratio"]["value"] == pytest.approx(1.0)
        assert res[f"{t}/auroc_trtr"]["value"] > 0.6
    res_noise, _ = tstr(r, n, h, cats, BOOT, min_class=10)
    assert res_noise["mean/auroc_ratio"]["value"] < res["mean/auroc_ratio"]["value"]


def test_bootstrap_ci_coverage_on_simulated_rates(tmp_path):
    """95% percentile CIs of ratio metrics cover the generator's true value in most repetitions."""
    p_violation, n, reps = 0.2, 300, 60
    covered = {"violation_rate_any": 0, "empty_patient_rate": 0}
    truth = {"violation_rate_any": p_violation, "empty_patient_rate": 0.1}
    for rep in range(reps):
        rng = np.random.default_rng(rep)
        bad = rng.random(n) < p_violation
        empty = rng.random(n) < 0.1
        rows = [
            (i, 0, 40.0, [] if e else [["65101" if b else "4019", "4280"]])
            for i, (b, e) in enumerate(zip(bad & ~empty, empty, strict=True))
        ]
        # the violation only shows when the patient has codes: condition the truth accordingly
        (arr,) = arrays_of(tmp_path / str(rep), {"s": _patients(rows)})
        res = bootstrap(
            ratio_stat(per_patient_quantities(arr, np.ones(len(arr.vocab), bool)), "x"),
            {"x": n},
            BootstrapConfig(n=200, seed=rep),
        )
        for key in covered:
            t = truth[key] * (0.9 if key == "violation_rate_any" else 1.0)
            covered[key] += res[key]["ci_low"] <= t <= res[key]["ci_high"]
    for key, hits in covered.items():
        assert hits >= 0.85 * reps, (key, hits)
