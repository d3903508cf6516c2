"""Time metrics: exact weighted KS / Wasserstein-1, readmissions, strata, gap given category."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ehrgen.metrics.cohort_arrays import CohortArrays
from ehrgen.metrics.timing import TimeComparison, weighted_ks_w1

DAY = 86_400.0


def test_weighted_ks_and_w1_known_answers() -> None:
    ones = lambda n: np.ones((1, n))  # noqa: E731
    ks, w1 = weighted_ks_w1(np.array([1.0, 2, 3]), ones(3), np.array([2.0, 3, 4]), ones(3))
    assert ks[0] == pytest.approx(1 / 3) and w1[0] == pytest.approx(1.0)  # a shift by 1
    # a weight of 2 is a value drawn twice
    a, b = np.array([0.0, 5.0]), np.array([1.0, 2.0, 9.0])
    ks, w1 = weighted_ks_w1(a, np.array([[2.0, 1.0]]), b, ones(3))
    ks2, w12 = weighted_ks_w1(np.array([0.0, 0.0, 5.0]), ones(3), b, ones(3))
    assert ks[0] == pytest.approx(ks2[0]) and w1[0] == pytest.approx(w12[0])
    assert w1[0] == pytest.approx(stats.wasserstein_distance(a, b, [2, 1], [1, 1, 1]))
    # unit weights: scipy's two-sample KS statistic, ties included
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, 300).astype(float), rng.integers(2, 25, 200).astype(float)
    ks, w1 = weighted_ks_w1(x, ones(300), y, ones(200))
    assert ks[0] == pytest.approx(stats.ks_2samp(x, y).statistic)
    assert w1[0] == pytest.approx(stats.wasserstein_distance(x, y))
    # several weight rows at once; an empty row is undefined
    ks, _ = weighted_ks_w1(x, np.stack([np.ones(300), np.zeros(300)]), y, np.ones((2, 200)))
    assert ks[0] == pytest.approx(stats.ks_2samp(x, y).statistic) and np.isnan(ks[1])


def cohort(patients: list[tuple[int, float, list[tuple[float, float, list[int]]]]]) -> CohortArrays:
    """``(sex, age, [(admission day, stay days or NaN, codes)])`` per patient."""
    visit_ptr, code_ptr, codes, times, ends = [0], [0], [], [], []
    for _, _, visits in patients:
        for day, stay, cs in visits:
            codes += cs
            code_ptr.append(len(codes))
            times.append(day * DAY)
            ends.append(day * DAY + stay * DAY)
        visit_ptr.append(len(times))
    n = len(patients)
    return CohortArrays(
        "x",
        np.arange(n, dtype=np.int64),
        np.array([p[0] for p in patients], dtype=np.int8),
        np.array([p[1] for p in patients], dtype=np.float64),
        np.array(visit_ptr),
        np.array(code_ptr),
        np.array(codes, dtype=np.int32),
        np.array(["4019", "25000", "4280"]),  # categories 401, 250, 428
        np.array(times, dtype=np.float64),
        np.array(ends, dtype=np.float64),
    )


def point(cmp: TimeComparison, n: tuple[int, int]) -> dict[str, float]:
    out = cmp.stats({"real": np.ones((1, n[0])), "synthetic": np.ones((1, n[1]))})
    return {k: float(v[0]) for k, v in out.items()}


def test_time_comparison_known_answers() -> None:
    # gaps run from the discharge: patient 0 stays 2 d and returns 10 d later (a readmission),
    # patient 1 stays 1 d and returns after 100 d, patient 2 has one visit
    real = cohort(
        [
            (0, 70.0, [(0, 2, [0]), (12, 3, [0, 1])]),
            (1, 70.0, [(0, 1, [1]), (101, 1, [2])]),
            (0, 30.0, [(5, 4, [2])]),
        ]
    )
    same = TimeComparison(real, real, age_edges=[65], min_stratum_patients=1, top_k=10, min_visits=1)
    m = point(same, (3, 3))
    assert m["gap/ks"] == 0 and m["gap/w1_days"] == 0 and m["stay/ks"] == 0
    assert m["readmit30/real"] == pytest.approx(1 / 5)  # one of five visits
    assert m["readmit30/ratio"] == 1.0 and m["gap_given_category_r2"] == pytest.approx(1.0)
    assert m["gap/stratum_ks_worst"] == 0

    # the synthetic twin: every gap 10 days longer, stays unchanged
    syn = cohort(
        [
            (0, 70.0, [(0, 2, [0]), (22, 3, [0, 1])]),
            (1, 70.0, [(0, 1, [1]), (111, 1, [2])]),
            (0, 30.0, [(5, 4, [2])]),
        ]
    )
    cmp = TimeComparison(real, syn, age_edges=[65], min_stratum_patients=1, top_k=10, min_visits=1)
    m = point(cmp, (3, 3))
    assert m["gap/w1_days"] == pytest.approx(10.0) and m["gap/ks"] == pytest.approx(0.5)
    assert m["stay/ks"] == 0 and m["stay/w1_days"] == 0
    assert m["readmit30/synthetic"] == pytest.approx(1 / 5) and m["readmit30/ratio"] == 1.0
    # gaps follow a visit holding 401 (10 -> 20 days) and one holding 250 (100 -> 110); the visit
    # holding both is its patient's last, no gap
    real_means = np.log1p([10.0, 100.0])
    syn_means = np.log1p([20.0, 110.0])
    r2 = 1 - ((real_means - syn_means) ** 2).sum() / ((real_means - real_means.mean()) ** 2).sum()
    assert m["gap_given_category_r2"] == pytest.approx(r2)
    # strata: the two patients aged 65+ (M and F) hold the gaps; under 65 there is none
    assert {k for k in m if k.startswith("gap/stratum/")} == {"gap/stratum/M_65+/ks", "gap/stratum/F_65+/ks"}
    assert m["gap/stratum/M_65+/ks"] == 1.0  # one gap each, 10 vs 20 days


def test_cohorts_without_ends_use_admission_gaps() -> None:
    real = cohort([(0, 50.0, [(0, np.nan, [0]), (20, np.nan, [0])])])
    t = TimeComparison(real, real, age_edges=[65], min_stratum_patients=1)
    assert t.times[0].gap[0] == pytest.approx(20.0) and np.isnan(t.times[0].stay).all()
    m = point(t, (1, 1))
    assert "stay/ks" not in m and m["gap/ks"] == 0
