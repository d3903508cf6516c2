"""Resolve and load the three cohorts of an evaluation (real, synthetic, holdout), with input checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ehrgen.data.cohort import SPLITS, Cohort
from ehrgen.errors import InputError
from ehrgen.metrics.cohort_arrays import CohortArrays, encode, read_cohort, shared_vocabulary, unique_sorted


@dataclass
class EvalInputs:
    real: CohortArrays
    synthetic: CohortArrays
    holdout: CohortArrays
    known_codes: np.ndarray  # bool over the vocabulary: in the real cohort's vocabulary
    sources: dict[str, dict]
    warnings: list[str]


def _splits(cohort: Cohort, splits: Sequence[str] | None, what: str) -> list[str]:
    chosen = list(cohort.splits()) if splits is None else [str(s) for s in splits]
    bad = [s for s in chosen if s not in SPLITS]
    if bad:
        raise InputError(
            f"splits.{what}: unknown split(s) {', '.join(bad)}; expected some of {', '.join(SPLITS)}"
        )
    if not chosen:
        raise InputError(f"{what} cohort {cohort.path} holds no patients (no non-empty split)")
    return chosen


def _open(path: str | None, what: str) -> Cohort:
    if path is None or str(path) in ("", "???"):
        raise InputError(
            f"{what}=PATH is required: a cohort directory written by ehrgen.prepare or ehrgen.generate"
        )
    return Cohort(path)


def load_inputs(
    real: str,
    synthetic: str,
    holdout: str | None,
    real_splits: Sequence[str] | None,
    synthetic_splits: Sequence[str] | None,
    holdout_splits: Sequence[str] | None,
) -> EvalInputs:
    """Open the cohorts, read the chosen splits over one vocabulary and check they make sense.

    ``holdout=None`` means the real cohort's ``holdout_splits``. Raises InputError for a missing
    or empty cohort, unknown splits, or a holdout that shares patients with the real selection.
    """
    real_c = _open(real, "real")
    syn_c = _open(synthetic, "synthetic")
    hold_c = real_c if holdout in (None, "") else _open(holdout, "holdout")
    for role, cohort in (("real", real_c), ("holdout", hold_c)):
        if cohort.meta.get("source") == "synthetic":
            raise InputError(
                f"{role}={cohort.path} is a synthetic cohort (its cohort.json says source synthetic); "
                f"{role}= takes real patients: are real= and synthetic= swapped?"
            )
    r_splits = _splits(real_c, real_splits, "real")
    s_splits = _splits(syn_c, synthetic_splits, "synthetic")
    h_splits = _splits(hold_c, holdout_splits, "holdout")
    if hold_c.path == real_c.path and set(r_splits) & set(h_splits):
        raise InputError(
            f"holdout overlaps real: both use split(s) {', '.join(sorted(set(r_splits) & set(h_splits)))} "
            f"of {real_c.path}; choose disjoint splits (e.g. splits.real=[train] splits.holdout=[test])"
        )
    raws = [
        read_cohort(real_c, r_splits, "real"),
        read_cohort(syn_c, s_splits, "synthetic"),
        read_cohort(hold_c, h_splits, "holdout"),
    ]
    vocab = shared_vocabulary(*raws)
    arr_r, arr_s, arr_h = (encode(r, vocab) for r in raws)
    _check_overlap(arr_r, arr_h)
    warnings: list[str] = []
    known = _known_codes(real_c, arr_r, vocab, warnings)
    shared = np.intersect1d(unique_sorted(arr_r.codes), unique_sorted(arr_s.codes), assume_unique=True)
    if len(shared) == 0:
        warnings.append(
            "real and synthetic cohorts share no codes: fidelity metrics are at their worst "
            "(JSD 1) and privacy distances are all 1; check that both use the same coding"
        )
    sources = {
        name: {"path": str(c.path), "splits": sp, "n_patients": a.n_patients, "n_visits": a.n_visits}
        for name, c, sp, a in (
            ("real", real_c, r_splits, arr_r),
            ("synthetic", syn_c, s_splits, arr_s),
            ("holdout", hold_c, h_splits, arr_h),
        )
    }
    return EvalInputs(arr_r, arr_s, arr_h, known, sources, warnings)


def _check_overlap(real: CohortArrays, holdout: CohortArrays) -> None:
    """The same subject_id with the same sex and age in both is the same patient."""
    common, ri, hi = np.intersect1d(real.subject_id, holdout.subject_id, return_indices=True)
    if len(common) == 0:
        return
    same = (real.sex[ri] == holdout.sex[hi]) & (
        (real.age[ri] == holdout.age[hi]) | (np.isnan(real.age[ri]) & np.isnan(holdout.age[hi]))
    )
    if same.any():
        raise InputError(
            f"holdout overlaps real: {int(same.sum())} patient(s) (same subject_id, sex and age) are in "
            "both; the holdout must be patients the generator never saw"
        )


def _known_codes(cohort: Cohort, real: CohortArrays, vocab: np.ndarray, warnings: list[str]) -> np.ndarray:
    """Codes of the real cohort's ``metadata/codes.parquet``; the codes seen in ``real`` if absent."""
    known = np.zeros(len(vocab), dtype=bool)
    path = Path(cohort.path) / "metadata" / "codes.parquet"
    if path.is_file():
        codes = pl.read_parquet(path, columns=["code"])["code"].drop_nulls().to_numpy().astype(str)
        idx = np.searchsorted(vocab, codes)
        ok = idx < len(vocab)
        ok[ok] = vocab[idx[ok]] == codes[ok]
        known[idx[ok]] = True
    else:
        warnings.append(f"{path} is missing; the real vocabulary is the codes seen in the real split(s)")
    known[real.codes] = True
    return known
