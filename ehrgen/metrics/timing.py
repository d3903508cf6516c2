"""Time fidelity: gaps between visits and lengths of stay, their marginals and their dependence.

Per visit: the stay (end - admission) and the gap to the patient's next admission, from the end
when known (``ehrgen.models.visit_times.visit_time_values``, the definition the model learns).
Compared between two cohorts with patient weights, so the bootstrap resamples patients:

- KS and Wasserstein-1 (days) of the gap and stay distributions, exact for weighted samples;
- the same KS within each age band x sex stratum (worst and mean over strata large enough);
- the 30-day readmission share: visits followed by an admission within 30 days, over visits;
- the gap given the previous visit's codes: per frequent category ``c``, the mean of
  ``log(1 + gap days)`` after visits holding ``c``; R^2 of the other cohort's means against the
  reference's, over the ``top_k`` categories with the most such visits in the reference.
Formulas: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ehrgen.metrics import functional as F
from ehrgen.metrics.cohort_arrays import CohortArrays, Level
from ehrgen.metrics.conditioning import strata, stratum_name
from ehrgen.models.visit_times import last_visit_mask, visit_time_values

READMISSION_DAYS = 30.0


def weighted_ks_w1(
    a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """KS distance and Wasserstein-1 between weighted samples, per weight row.

    ``a [n]`` with weights ``wa [r, n]``, ``b [m]`` with ``wb [r, m]``: the empirical CDFs
    ``F(x) = sum of weights of values <= x / total`` are compared at every pooled value;
    ``KS = max |F_a - F_b|``, ``W1 = integral |F_a - F_b| dx``. NaN for a row with no weight.
    """
    values = np.concatenate([a, b])
    order = np.argsort(values, kind="stable")
    x = values[order]
    r = wa.shape[0]
    wa, wb = np.atleast_2d(wa), np.atleast_2d(wb)
    steps = np.zeros((r, len(values)))
    with np.errstate(invalid="ignore", divide="ignore"):
        steps[:, : len(a)] = wa / wa.sum(1, keepdims=True)
        steps[:, len(a) :] = -wb / wb.sum(1, keepdims=True)
    diff = np.cumsum(steps[:, order], axis=1)
    # equal values: only the CDF after the last of them counts
    last_of_value = np.r_[x[1:] != x[:-1], True]
    ks = np.abs(diff[:, last_of_value]).max(axis=1, initial=0.0)
    w1 = (np.abs(diff[:, :-1]) * np.diff(x)).sum(axis=1)
    empty = (wa.sum(1) == 0) | (wb.sum(1) == 0)
    return np.where(empty, np.nan, ks), np.where(empty, np.nan, w1)


class CohortTimes:
    """Per-visit gap and stay (days) of one cohort, with each visit's patient."""

    def __init__(self, arr: CohortArrays, level: Level):
        n_visits = np.diff(arr.visit_ptr)
        nan = np.full(arr.n_visits, np.nan)
        time_s = arr.visit_time if arr.visit_time is not None else nan
        end_s = arr.visit_end if arr.visit_end is not None else nan
        self.gap, self.stay = visit_time_values(time_s, end_s, last_visit_mask(n_visits))
        self.patient = arr.visit_patient()
        self.has_time = ~np.isnan(time_s)
        self.n_patients = arr.n_patients
        # visit x category incidence (distinct), for the gap given the previous visit's codes
        rows = arr.code_visit()
        cols = level.token_of_code[arr.codes]
        self.categories = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(arr.n_visits, level.size)
        ).sign()

    @property
    def any_times(self) -> bool:
        return bool(np.isfinite(self.gap).any() or np.isfinite(self.stay).any())


class TimeComparison:
    """Time metrics of ``other`` against ``ref`` (bootstrap statistic: :meth:`stats`)."""

    def __init__(
        self,
        ref: CohortArrays,
        other: CohortArrays,
        age_edges: Sequence[float],
        min_stratum_patients: int,
        top_k: int = 50,
        min_visits: int = 100,
        groups: tuple[str, str] = ("real", "synthetic"),
    ):
        level = Level.categories(ref.vocab)
        self.groups = groups
        self.times = [CohortTimes(ref, level), CohortTimes(other, level)]
        s = [strata(ref, age_edges), strata(other, age_edges)]
        self.strata = []
        for k in range(2 * (len(age_edges) + 1)):
            if min((s[0] == k).sum(), (s[1] == k).sum()) >= min_stratum_patients:
                self.strata.append((stratum_name(k, age_edges), [s[0] == k, s[1] == k]))
        # the categories followed by the most gaps in the reference
        ref_t = self.times[0]
        with_gap = np.isfinite(ref_t.gap)
        counts = np.asarray(ref_t.categories[with_gap].sum(0)).ravel()
        ranked = np.argsort(-counts, kind="stable")
        self.top = ranked[: int(top_k)][counts[ranked[: int(top_k)]] >= min_visits]
        self.log_gap = [np.log1p(np.nan_to_num(t.gap)) for t in self.times]

    def _values(self, which: str, g: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.times[g]
        v = t.gap if which == "gap" else t.stay
        keep = np.isfinite(v)
        return v[keep], t.patient[keep]

    def stats(self, w: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        wr, wo = w[self.groups[0]], w[self.groups[1]]
        out: dict[str, np.ndarray] = {}
        for which in ("gap", "stay"):
            (va, pa_), (vb, pb) = self._values(which, 0), self._values(which, 1)
            if len(va) == 0 or len(vb) == 0:
                continue
            ks, w1 = weighted_ks_w1(va, wr[:, pa_], vb, wo[:, pb])
            out[f"{which}/ks"], out[f"{which}/w1_days"] = ks, w1
            for name, (ma, mb) in self.strata:
                ka, kb = ma[pa_], mb[pb]
                if ka.any() and kb.any():
                    out[f"{which}/stratum/{name}/ks"] = weighted_ks_w1(
                        va[ka], wr[:, pa_[ka]], vb[kb], wo[:, pb[kb]]
                    )[0]
            per = [v for k, v in out.items() if k.startswith(f"{which}/stratum/")]
            if per:
                stacked = np.stack(per)
                out[f"{which}/stratum_ks_worst"] = np.nanmax(stacked, axis=0)
                out[f"{which}/stratum_ks_mean"] = np.nanmean(stacked, axis=0)
        shares = []
        for g, wg in ((0, wr), (1, wo)):
            t = self.times[g]
            visits = wg[:, t.patient[t.has_time]]
            readmit = (t.gap[t.has_time] <= READMISSION_DAYS).astype(np.float64)  # NaN -> False
            with np.errstate(invalid="ignore", divide="ignore"):
                shares.append(visits @ readmit / visits.sum(1))
        if np.isfinite(self.times[0].gap).any():
            out[f"readmit{READMISSION_DAYS:g}/{self.groups[0]}"] = shares[0]
            out[f"readmit{READMISSION_DAYS:g}/{self.groups[1]}"] = shares[1]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"readmit{READMISSION_DAYS:g}/ratio"] = shares[1] / shares[0]
        if len(self.top) >= 2:
            means = []
            for g, wg in ((0, wr), (1, wo)):
                t = self.times[g]
                keep = np.isfinite(t.gap)
                inc = t.categories[keep][:, self.top]
                wv = wg[:, t.patient[keep]]
                with np.errstate(invalid="ignore", divide="ignore"):
                    means.append(
                        np.asarray((inc.T @ (wv * self.log_gap[g][keep]).T).T) / np.asarray((inc.T @ wv.T).T)
                    )
            seen = np.isfinite(means[0]) & np.isfinite(means[1])
            out["gap_given_category_r2"] = F.r2_score(np.nan_to_num(means[0]), np.nan_to_num(means[1]), seen)
        return out
