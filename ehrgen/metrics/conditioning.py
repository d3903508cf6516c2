"""Conditioning: does each synthetic patient look like its stated demographics?

Two views: the fidelity metrics within each age band x sex stratum, and the accuracy of
demographic classifiers trained on real bags of codes when applied to synthetic patients
(compared with their accuracy on real held-out patients, the attainable reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ehrgen.metrics.bootstrap import BootstrapConfig, bootstrap, metric_entry
from ehrgen.metrics.cohort_arrays import CohortArrays, Level, code_counts, patient_stats
from ehrgen.metrics.fidelity import LevelComparison
from ehrgen.metrics.logreg import LogisticRegression

SEX_NAMES = ("M", "F")


def age_band(age: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Band index per patient (``len(edges) + 1`` bands), -1 where age is unknown."""
    band = np.searchsorted(np.asarray(edges, dtype=np.float64), age, side="right")
    return np.where(np.isnan(age), -1, band)


def band_names(edges: Sequence[float]) -> list[str]:
    """``["<18", "18-44", "45-64", "65+"]`` for edges ``[18, 45, 65]``."""
    e = [float(x) for x in edges]
    fmt = [f"{x:g}" for x in e]
    names = [f"<{fmt[0]}"] if e else ["all"]
    names += [f"{fmt[i]}-{e[i + 1] - 1:g}" for i in range(len(e) - 1)]
    return names + [f"{fmt[-1]}+"] if e else names


def strata(arr: CohortArrays, edges: Sequence[float]) -> np.ndarray:
    """Stratum id ``band * 2 + sex`` per patient; -1 where age or sex is unknown."""
    band = age_band(arr.age, edges)
    return np.where((band < 0) | (arr.sex < 0), -1, band * 2 + arr.sex)


def stratum_name(stratum: int, edges: Sequence[float]) -> str:
    return f"{SEX_NAMES[stratum % 2]}_{band_names(edges)[stratum // 2]}"


def stratum_fidelity(
    real: CohortArrays,
    synthetic: CohortArrays,
    edges: Sequence[float],
    min_patients: int,
    boot: BootstrapConfig,
    top_k: int = 100,
    band_edges: Sequence[float] = (0.5, 0.9),
) -> tuple[dict[str, dict], list[str]]:
    """Code-level fidelity metrics per stratum (stratified bootstrap within each stratum).

    Returns ``{"<stratum>/<metric>": entry}`` and warnings for strata too small to compare.
    """
    level = Level.codes(real.vocab)
    s_real, s_syn = strata(real, edges), strata(synthetic, edges)
    out: dict[str, dict] = {}
    warnings: list[str] = []
    for s in range(2 * (len(edges) + 1)):
        name = stratum_name(s, edges)
        rows_r, rows_s = np.flatnonzero(s_real == s), np.flatnonzero(s_syn == s)
        if min(len(rows_r), len(rows_s)) < min_patients:
            warnings.append(
                f"stratum {name}: {len(rows_r)} real / {len(rows_s)} synthetic patients "
                f"(< {min_patients}); its fidelity metrics are not computed"
            )
            continue
        cmp = LevelComparison(
            patient_stats(real.subset(rows_r), level),
            patient_stats(synthetic.subset(rows_s), level),
            level,
            top_k=top_k,
            band_edges=tuple(band_edges),
        )
        res = bootstrap(cmp.stats, {"real": len(rows_r), "synthetic": len(rows_s)}, boot, stream=100 + s)
        out.update({f"{name}/{k}": v for k, v in res.items()})
        out[f"{name}/n_real"] = metric_entry(float(len(rows_r)), np.zeros(0))
        out[f"{name}/n_synthetic"] = metric_entry(float(len(rows_s)), np.zeros(0))
    return out, warnings


def classifier_accuracy(
    real: CohortArrays,
    targets: Mapping[str, CohortArrays],
    edges: Sequence[float],
    boot: BootstrapConfig,
    C: float = 1.0,
    max_iter: int = 200,
) -> tuple[dict[str, dict], list[str]]:
    """Accuracy of sex and age-band classifiers (trained on ``real``) on each target cohort.

    The classifiers are held fixed; the CI resamples the target patients.
    """
    x_real = (code_counts(real) > 0).astype(np.float64)
    labels = {"sex": real.sex.astype(np.int64), "age_band": age_band(real.age, edges)}
    correct: dict[str, np.ndarray] = {}
    warnings: list[str] = []
    for task, y in labels.items():
        ok = y >= 0
        if len(np.unique(y[ok])) < 2:
            warnings.append(f"conditioning classifier for {task}: the real cohort has one class only")
            continue
        model = LogisticRegression(C=C, max_iter=max_iter).fit(x_real[ok], y[ok])
        for group, arr in targets.items():
            truth = arr.sex.astype(np.int64) if task == "sex" else age_band(arr.age, edges)
            pred = model.predict((code_counts(arr) > 0).astype(np.float64))
            correct[f"{task}_accuracy/{group}"] = np.where(truth >= 0, pred == truth, np.nan)

    sizes = {g: a.n_patients for g, a in targets.items()}

    def stat(w: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = {}
        for key, c in correct.items():
            group = key.split("/")[1]
            known = ~np.isnan(c)
            ww = w[group][:, known]
            with np.errstate(invalid="ignore", divide="ignore"):
                res[key] = ww @ c[known] / ww.sum(1)
        if "holdout" in targets and "synthetic" in targets:
            for task in labels:
                s, h = res.get(f"{task}_accuracy/synthetic"), res.get(f"{task}_accuracy/holdout")
                if s is not None and h is not None:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        res[f"{task}_accuracy/ratio"] = s / h
        return res

    return bootstrap(stat, sizes, boot, stream=90), warnings
