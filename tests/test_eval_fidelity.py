"""Per-patient statistics, fidelity metrics and the reweighting bootstrap, against known answers."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import numpy as np
import polars as pl
import pytest
from test_eval_cohorts import arrays_of, toy_patients

from ehrgen.data.codes import event_type
from ehrgen.metrics.bootstrap import BootstrapConfig, bootstrap, metric_entry, resample_weights
from ehrgen.metrics.cohort_arrays import Level, patient_stats
from ehrgen.metrics.fidelity import LevelComparison


def _arrays(tmp_path, frames: dict[str, pl.DataFrame]):
    return arrays_of(tmp_path, frames)


def _patients(rows: list[tuple[int, int, float, list[list[str]]]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subject_id": [r[0] for r in rows],
            "sex": [r[1] for r in rows],
            "age": [r[2] for r in rows],
            "visits": [[{"time": None, "codes": v} for v in r[3]] for r in rows],
        },
        schema={
            "subject_id": pl.Int64,
            "sex": pl.Int8,
            "age": pl.Float32,
            "visits": pl.List(pl.Struct({"time": pl.Datetime("us"), "codes": pl.List(pl.Utf8)})),
        },
    )


HAND = [
    (1, 0, 70.0, [["4019", "4280", "4019"], ["4280", "5849"], []]),
    (2, 1, 30.0, [["65101"]]),
    (3, 1, 80.0, [["4019", "25000", "4280"], ["25000", "E8497"]]),
    (4, 0, 50.0, []),
]


def _brute_force(rows, level_of=lambda c: c):
    """Pairs per patient, transitions per patient, visit counts, from plain Python sets."""
    pairs, trans, counts = Counter(), Counter(), Counter()
    for pid, _, _, visits in rows:
        sets = [sorted({level_of(c) for c in v}) for v in visits]
        for s in sets:
            counts.update((pid, c) for c in s)
            pairs.update((pid, a, b) for i, a in enumerate(s) for b in s[i + 1 :])
        for s, t in pairwise(sets):
            trans.update((pid, a, b) for a in s for b in t)
    return pairs, trans, counts


@pytest.mark.parametrize("level_name", ["code", "category"])
def test_patient_stats_match_brute_force(tmp_path, level_name):
    (arr,) = _arrays(tmp_path, {"hand": _patients(HAND)})
    level = Level.codes(arr.vocab) if level_name == "code" else Level.categories(arr.vocab)
    cat = (lambda c: c) if level_name == "code" else (lambda c: c[:4] if c.startswith("E") else c[:3])
    st = patient_stats(arr, level)
    pairs, trans, counts = _brute_force(HAND, cat)
    t = level.size
    pid = arr.subject_id
    got_pairs = Counter(
        (int(pid[p]), str(level.tokens[k // t]), str(level.tokens[k % t]))
        for p, k in zip(st.pair_patient, st.pair_key, strict=True)
    )
    got_trans = Counter(
        (int(pid[p]), str(level.tokens[k // t]), str(level.tokens[k % t]))
        for p, k in zip(st.trans_patient, st.trans_key, strict=True)
    )
    assert got_pairs == pairs
    assert got_trans == trans
    coo = st.visit_counts.tocoo()
    got_counts = {
        (int(pid[r]), str(level.tokens[c])): v for r, c, v in zip(coo.row, coo.col, coo.data, strict=True)
    }
    assert got_counts == dict(counts)
    np.testing.assert_array_equal(st.n_visits, [3, 1, 2, 0])
    np.testing.assert_array_equal(st.n_transitions, [2, 0, 1, 0])
    # distinct codes per visit: patient 1 has sizes 2, 2, 0 at code level
    if level_name == "code":
        np.testing.assert_array_equal(st.visit_sizes.toarray()[0, :3], [1, 0, 2])


def test_subset_keeps_patients(tmp_path):
    (arr,) = _arrays(tmp_path, {"hand": _patients(HAND)})
    sub = arr.subset(np.array([2, 0]))
    assert list(sub.subject_id) == [3, 1]
    assert [str(sub.vocab[c]) for c in sub.codes[sub.code_ptr[0] : sub.code_ptr[2]]] == [
        "4019",
        "25000",
        "4280",
        "25000",
        "E8497",
    ]


def _compare(a, b, **kw):
    level = Level.codes(a.vocab)
    return LevelComparison(patient_stats(a, level), patient_stats(b, level), level, **kw)


def _point(cmp):
    return {
        k: float(np.asarray(v)[0])
        for k, v in cmp.stats({"real": np.ones((1, cmp.n[0])), "synthetic": np.ones((1, cmp.n[1]))}).items()
    }


def test_identical_cohorts_are_ideal(tmp_path):
    df = toy_patients(300, seed=5)
    a, b = _arrays(tmp_path, {"a": df, "b": df})
    m = _point(_compare(a, b))
    assert m["jsd"] == pytest.approx(0.0, abs=1e-12)
    for key in ("prevalence_r2", "prevalence_pearson", "top100_overlap", "cooccurrence_r2", "transition_r2"):
        assert m[key] == pytest.approx(1.0), key
    assert m["ks_visits_per_patient"] == 0 and m["ks_codes_per_visit"] == 0
    assert m["cooccurrence_score_ratio"] == 1.0
    assert m["recall_head"] == m["recall_torso"] == m["recall_tail"] == 1.0


def test_disjoint_cohorts_are_worst(tmp_path):
    a = _patients([(1, 0, 40.0, [["4019", "4280"]]), (2, 1, 50.0, [["4019"], ["25000"]])])
    b = _patients([(1, 0, 40.0, [["7140", "7150"]]), (2, 1, 50.0, [["7140"]])])
    ra, rb = _arrays(tmp_path, {"a": a, "b": b})
    m = _point(_compare(ra, rb))
    assert m["jsd"] == pytest.approx(1.0)
    assert m["top100_overlap"] == 0.0
    assert m["prevalence_pearson"] < 0 and m["prevalence_r2"] < 0
    assert m["recall_head"] == m["recall_torso"] == 0.0
    assert np.isnan(m["recall_tail"])  # 4019 2x, 4280, 25000: no code in the last 10% of occurrences


def test_independent_sample_is_near_ideal(tmp_path):
    a, b = _arrays(tmp_path, {"a": toy_patients(3000, seed=1), "b": toy_patients(3000, seed=2)})
    m = _point(_compare(a, b))
    assert m["jsd"] < 0.01
    assert m["prevalence_r2"] > 0.97 and m["prevalence_pearson"] > 0.98
    assert m["cooccurrence_r2"] > 0.85 and m["transition_r2"] > 0.7
    assert m["ks_visits_per_patient"] < 0.05 and m["ks_codes_per_visit"] < 0.05
    assert 0.9 < m["cooccurrence_score_ratio"] < 1.1
    # a sample from another distribution (demographics mapped to other clusters) is clearly worse
    c, d = _arrays(
        tmp_path / "x", {"a": toy_patients(3000, seed=1), "c": toy_patients(3000, seed=2, shift=1)}
    )
    other = _point(_compare(c, d))
    assert other["jsd"] > 5 * m["jsd"]
    assert other["cooccurrence_r2"] < m["cooccurrence_r2"] - 0.2


def test_replicate_is_a_reweighting(tmp_path):
    """A weight row gives exactly the metrics of the explicitly resampled cohorts."""
    a, b = _arrays(tmp_path, {"a": toy_patients(200, seed=1), "b": toy_patients(150, seed=2)})
    cmp = _compare(a, b)
    rng = np.random.default_rng(3)
    wa, wb = resample_weights(rng, 200, 1), resample_weights(rng, 150, 1)
    got = cmp.stats({"real": wa, "synthetic": wb})
    ra = a.subset(np.repeat(np.arange(200), wa[0].astype(int)))
    rb = b.subset(np.repeat(np.arange(150), wb[0].astype(int)))
    want = _point(_compare(ra, rb))
    for key, value in want.items():
        assert float(got[key][0]) == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key


def test_resample_weights_and_seeding():
    rng = np.random.default_rng(0)
    w = resample_weights(rng, 50, 7)
    assert w.shape == (7, 50) and (w.sum(1) == 50).all()
    cfg = BootstrapConfig(n=30, seed=4, chunk=7)

    def stat(w):
        return {"mean": w["x"] @ np.arange(10.0) / w["x"].sum(1)}

    a, b = bootstrap(stat, {"x": 10}, cfg), bootstrap(stat, {"x": 10}, cfg)
    assert a == b and a["mean"]["value"] == 4.5 and a["mean"]["n_boot"] == 30
    assert a["mean"]["ci_low"] < 4.5 < a["mean"]["ci_high"]
    assert bootstrap(stat, {"x": 10}, BootstrapConfig(n=30, seed=5))["mean"] != a["mean"]


def test_metric_entry_methods():
    reps = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    pct = metric_entry(2.0, reps, 0.5, "percentile")
    basic = metric_entry(2.0, reps, 0.5, "basic")
    assert (pct["ci_low"], pct["ci_high"]) == (1.75, 3.25)
    assert (basic["ci_low"], basic["ci_high"]) == (0.75, 2.25)
    assert pct["bias"] == 0.5 and pct["n_boot"] == 4
    assert metric_entry(float("nan"), reps)["value"] is None


def test_longitudinal_metrics_known_answer(tmp_path):
    """Carry-over, means and per-code age/sex profile gaps on hand-made cohorts."""
    real = _patients(
        [
            (1, 0, 70.0, [["4019", "4280"], ["4019", "5849"], ["4019"]]),  # carried 1 of 2, then 1 of 2
            (2, 1, 30.0, [["4019"], ["25000"]]),  # carried 0 of 1
            (3, 1, 50.0, [["4280"]]),
        ]
    )
    syn = _patients(
        [
            (1, 0, 60.0, [["4019", "4280"], ["4019", "4280"]]),  # carried 2 of 2
            (2, 0, 40.0, [["4019"]]),
        ]
    )
    a, b = _arrays(tmp_path, {"real": real, "syn": syn})
    level = Level.codes(a.vocab)
    m = _point(
        LevelComparison(patient_stats(a, level), patient_stats(b, level), level, profile_min_patients=2)
    )
    assert m["carry_over_real"] == pytest.approx(2 / 5)  # (1 + 1 + 0) / (2 + 2 + 1)
    assert m["carry_over"] == pytest.approx(1.0)
    assert m["carry_over_ratio"] == pytest.approx(2.5)
    assert m["visits_per_patient_mean_real"] == pytest.approx(6 / 3)
    assert m["visits_per_patient_mean"] == pytest.approx(3 / 2)
    assert m["codes_per_visit_mean_real"] == pytest.approx(8 / 6)
    assert m["codes_per_visit_mean"] == pytest.approx(5 / 3)
    # codes held by >= 2 real patients: 4019 (patients 1, 2) and 4280 (patients 1, 3)
    # 4019: real mean age 50, female 0.5; synthetic (patients 1, 2) age 50, female 0
    # 4280: real mean age 60, female 0.5; synthetic (patient 1) age 60, female 0
    assert m["profile_tokens"] == 2
    assert m["age_profile_gap"] == pytest.approx(0.0)
    assert m["female_profile_gap"] == pytest.approx(0.5)


TYPED = [
    (1, 0, 70.0, [["4019", "ICD9PCS:3893", "RX:heparin"], ["4019", "RX:insulin"]]),
    (2, 1, 60.0, [["25000", "RX:insulin", "RX:heparin"], ["25000", "RX:insulin"]]),
    (3, 1, 50.0, [["4280", "ICD9PCS:3893"], ["4280", "RX:heparin"]]),
]


def test_restrict_keeps_visits_and_one_type(tmp_path):
    (arr,) = _arrays(tmp_path, {"typed": _patients(TYPED)})
    kinds = np.array([event_type(str(c)) for c in arr.vocab])
    meds = arr.restrict(kinds == "medication")
    assert meds.n_visits == arr.n_visits and list(meds.subject_id) == [1, 2, 3]
    per_visit = [[str(meds.vocab[c]) for c in meds.codes[a:b]] for a, b in pairwise(meds.code_ptr)]
    assert per_visit == [
        ["RX:heparin"],
        ["RX:insulin"],
        ["RX:insulin", "RX:heparin"],
        ["RX:insulin"],
        [],
        ["RX:heparin"],
    ]


def _cross_pair_frequencies(rows) -> dict[tuple[str, str], float]:
    """Per-visit frequency of every pair of codes of two event types, from plain Python sets."""
    visits = [sorted(set(v)) for _, _, _, patient in rows for v in patient]
    pairs = Counter(
        (a, b) for v in visits for i, a in enumerate(v) for b in v[i + 1 :] if event_type(a) != event_type(b)
    )
    return {k: n / len(visits) for k, n in pairs.items()}


def test_cross_type_cooccurrence_known_answer(tmp_path):
    # The same codes per visit and type, but medications moved between visits: pairs within a
    # type keep their frequencies, pairs across types change.
    moved = [
        (1, 0, 70.0, [["4019", "ICD9PCS:3893", "RX:insulin"], ["4019", "RX:heparin"]]),
        (2, 1, 60.0, [["25000", "RX:insulin", "RX:heparin"], ["25000", "RX:insulin"]]),
        (3, 1, 50.0, [["4280", "ICD9PCS:3893"], ["4280", "RX:heparin"]]),
    ]
    a, b = _arrays(tmp_path, {"a": _patients(TYPED), "b": _patients(moved)})
    level = Level.codes(a.vocab)
    kinds = np.array([event_type(str(c)) for c in level.tokens])
    same = _point(LevelComparison(patient_stats(a, level), patient_stats(a, level), level, token_type=kinds))
    assert same["cooccurrence_cross_type_r2"] == pytest.approx(1.0)
    m = _point(LevelComparison(patient_stats(a, level), patient_stats(b, level), level, token_type=kinds))
    real, other = _cross_pair_frequencies(TYPED), _cross_pair_frequencies(moved)
    keys = sorted(set(real) | set(other))
    y, x = np.array([real.get(k, 0.0) for k in keys]), np.array([other.get(k, 0.0) for k in keys])
    expected = 1 - ((y - x) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert m["cooccurrence_cross_type_r2"] == pytest.approx(expected)
    assert expected < 0.9
    # no cross-type metric when the cohorts hold one type
    diagnoses = np.array([event_type(str(c)) == "diagnosis" for c in a.vocab])
    assert "cooccurrence_cross_type_r2" not in _point(_compare(a.restrict(diagnoses), a))
