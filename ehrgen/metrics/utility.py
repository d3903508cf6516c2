"""Utility: train on synthetic, test on real (TSTR) against train on real, test on real (TRTR).

Task: from the bag of codes of a patient's earlier visits, predict whether a chronic
condition's category appears in the patient's LAST visit. The label visit never feeds the
inputs, so the label is not a function of the features (a condition seen before is likely,
not certain, to be coded again). One sample per patient with at least two visits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ehrgen.metrics import functional as F
from ehrgen.metrics.bootstrap import BootstrapConfig, bootstrap
from ehrgen.metrics.cohort_arrays import CohortArrays, Level
from ehrgen.metrics.logreg import LogisticRegression


def next_visit_samples(arr: CohortArrays, target: str) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Features ``[m, V]`` (binary bag of codes before the last visit), labels, and patient rows."""
    n_visits = np.diff(arr.visit_ptr)
    rows = np.flatnonzero(n_visits >= 2)
    last = arr.visit_ptr[1:] - 1  # last visit of each patient (valid where n_visits > 0)
    entry_visit = arr.code_visit()
    entry_patient = arr.visit_patient()[entry_visit]
    is_last = entry_visit == last[entry_patient]
    categories = Level.categories(arr.vocab)
    is_target = categories.tokens[categories.token_of_code[arr.codes]] == target
    local = np.full(arr.n_patients, -1)
    local[rows] = np.arange(len(rows))
    keep = (~is_last) & (local[entry_patient] >= 0)
    x = sp.csr_matrix(
        (np.ones(int(keep.sum())), (local[entry_patient[keep]], arr.codes[keep])),
        shape=(len(rows), len(arr.vocab)),
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    y = np.zeros(arr.n_patients, dtype=bool)
    y[entry_patient[is_last & is_target]] = True
    return x, y[rows], rows


def tstr(
    real: CohortArrays,
    synthetic: CohortArrays,
    holdout: CohortArrays,
    targets: Sequence[str],
    boot: BootstrapConfig,
    min_class: int = 10,
    C: float = 1.0,
    max_iter: int = 200,
) -> tuple[dict[str, dict], list[str]]:
    """AUROC on ``holdout`` of classifiers trained on ``real`` (TRTR) and on ``synthetic`` (TSTR).

    Targets lacking ``min_class`` positives and negatives in any of the three cohorts are
    skipped with a warning. The CI resamples the holdout patients (classifiers held fixed).
    """
    warnings: list[str] = []
    scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for target in targets:
        data = {g: next_visit_samples(a, target) for g, a in (("real", real), ("synthetic", synthetic))}
        x_test, y_test, test_rows = next_visit_samples(holdout, target)
        counts = {g: (int(d[1].sum()), int((~d[1]).sum())) for g, d in data.items()}
        counts["holdout"] = (int(y_test.sum()), int((~y_test).sum()))
        short = [f"{g} {p}+/{n}-" for g, (p, n) in counts.items() if min(p, n) < min_class]
        if short:
            warnings.append(
                f"utility target {target}: too few next-visit samples ({', '.join(short)}; "
                f"need {min_class} of each class); skipped"
            )
            continue
        preds = []
        for g in ("real", "synthetic"):
            x, y, _ = data[g]
            model = LogisticRegression(C=C, max_iter=max_iter).fit(x, y)
            preds.append(model.decision_function(x_test) @ np.array([-1.0, 1.0]))
        scores[target] = (preds[0], preds[1], y_test, test_rows)

    def stat(w: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for t, (s_real, s_syn, y, rows) in scores.items():
            wt = w["holdout"][:, rows]
            trtr, tstr_auc = F.roc_auc(s_real, y, wt), F.roc_auc(s_syn, y, wt)
            out[f"{t}/auroc_trtr"], out[f"{t}/auroc_tstr"] = trtr, tstr_auc
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{t}/auroc_ratio"] = tstr_auc / trtr
        if scores:
            ratios = np.stack([out[f"{t}/auroc_ratio"] for t in scores])
            n_ok = np.isfinite(ratios).sum(0)
            out["mean/auroc_ratio"] = np.where(n_ok > 0, np.nansum(ratios, 0) / np.maximum(n_ok, 1), np.nan)
        return out

    if not scores:
        return {}, warnings
    return bootstrap(stat, {"holdout": holdout.n_patients}, boot, stream=80), warnings
