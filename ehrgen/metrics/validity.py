"""Clinical validity: rule violations (the sampler's own table), duplicates, unknown codes, empty visits.

Every metric is a ratio of per-patient sums, so its bootstrap is ``(w @ num) / (w @ den)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ehrgen.data.codes import is_diagnosis_code, is_known_code
from ehrgen.data.rules import VALIDITY_RULES, ValidityRule, rule_membership
from ehrgen.metrics.cohort_arrays import CohortArrays, unique_sorted


def membership(codes: Sequence[str], rules: Sequence[ValidityRule] = VALIDITY_RULES) -> np.ndarray:
    """``[R, V]`` rule coverage; strings that are not diagnosis codes are covered by no rule."""
    codes = [str(c) for c in codes]
    ok = np.array([is_diagnosis_code(c) for c in codes], dtype=bool)
    out = np.zeros((len(rules), len(codes)), dtype=bool)
    out[:, ok] = rule_membership([c for c, good in zip(codes, ok, strict=True) if good], rules)
    return out


def violations(
    arr: CohortArrays, rules: Sequence[ValidityRule] = VALIDITY_RULES
) -> tuple[np.ndarray, np.ndarray]:
    """Per patient and rule: ``[n, R]`` counts of code occurrences breaking the rule, and of codes it covers.

    Unknown sex or age never counts as a violation (the rule cannot be checked).
    """
    member = membership(arr.vocab, rules)  # [R, V]
    patient = np.repeat(arr.visit_patient(), np.diff(arr.code_ptr))
    broken = np.zeros((arr.n_patients, len(rules)))
    covered = np.zeros((arr.n_patients, len(rules)))
    for r, rule in enumerate(rules):
        sex = np.where(arr.sex < 0, 0 if rule.sex is None else rule.sex, arr.sex)
        age = np.where(np.isnan(arr.age), rule.min_age, arr.age)
        forbidden = ~rule.allows(sex, age)
        hit = member[r, arr.codes]
        covered[:, r] = np.bincount(patient[hit], minlength=arr.n_patients)
        broken[:, r] = np.where(forbidden, covered[:, r], 0.0)
    return broken, covered


def per_patient_quantities(
    arr: CohortArrays, known: np.ndarray, rules: Sequence[ValidityRule] = VALIDITY_RULES
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (numerator, denominator)`` per patient; the metric is ``sum(num) / sum(den)``.

    ``known``: boolean over the vocabulary, True for codes of the real vocabulary.
    """
    n = arr.n_patients
    visit_patient = arr.visit_patient()
    entry_visit = arr.code_visit()
    entry_patient = visit_patient[entry_visit]
    raw = np.bincount(entry_patient, minlength=n).astype(np.float64)
    # distinct (visit, code) pairs per patient; the rest are within-visit duplicates
    v = max(len(arr.vocab), 1)
    distinct_keys = unique_sorted(entry_visit.astype(np.int64) * v + arr.codes)
    distinct = np.bincount(visit_patient[distinct_keys // v], minlength=n)
    unknown = np.bincount(entry_patient[~known[arr.codes]], minlength=n).astype(np.float64)
    well_formed = np.array([is_known_code(str(c)) for c in arr.vocab], dtype=bool)
    invalid = np.bincount(entry_patient[~well_formed[arr.codes]], minlength=n).astype(np.float64)
    n_visits = np.diff(arr.visit_ptr).astype(np.float64)
    empty = np.bincount(visit_patient[np.diff(arr.code_ptr) == 0], minlength=n).astype(np.float64)
    broken, _ = violations(arr, rules)
    ones = np.ones(n)
    out = {
        "duplicate_rate": (raw - distinct, raw),
        "unknown_code_rate": (unknown, raw),
        "invalid_format_rate": (invalid, raw),
        "empty_visit_rate": (empty, n_visits),
        "empty_patient_rate": ((raw == 0).astype(np.float64), ones),
        "violating_code_rate": (broken.sum(1), raw),
        "violation_rate_any": ((broken.sum(1) > 0).astype(np.float64), ones),
    }
    for r, rule in enumerate(rules):
        out[f"violation_rate/{rule.name}"] = ((broken[:, r] > 0).astype(np.float64), ones)
    return out


def ratio_stat(
    quantities: Mapping[str, tuple[np.ndarray, np.ndarray]], group: str
) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """Bootstrap statistic of ratio-of-sums metrics over one resampled group."""
    num = np.stack([q[0] for q in quantities.values()], 1)
    den = np.stack([q[1] for q in quantities.values()], 1)
    names = list(quantities)

    def stat(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        w = weights[group]
        top, bottom = w @ num, w @ den
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)
        return {name: ratio[:, i] for i, name in enumerate(names)}

    return stat
