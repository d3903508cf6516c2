"""Fidelity: how closely the synthetic cohort's code statistics match the real cohort's.

:class:`LevelComparison` aligns two cohorts' per-patient statistics (at code or category
level) on the union of their tokens, pairs and transitions, and evaluates every fidelity
metric for a chunk of bootstrap weight rows at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from ehrgen.metrics import functional as F
from ehrgen.metrics.cohort_arrays import Level, PatientStats, keyed_matrix, unique_sorted

BAND_NAMES = ("head", "torso", "tail")


def weighted_sum(w: np.ndarray, m: sp.csr_matrix) -> np.ndarray:
    """``w @ m`` for dense ``w [b, n]`` and sparse ``m [n, k]`` -> dense ``[b, k]``."""
    return np.asarray((m.T @ w.T).T)


def _histogram(values: np.ndarray, width: int) -> sp.csr_matrix:
    n = len(values)
    return sp.csr_matrix((np.ones(n), (np.arange(n), values)), shape=(n, width))


def _pad(m: sp.csr_matrix, width: int) -> sp.csr_matrix:
    m = m.tocsr(copy=True)
    m.resize((m.shape[0], width))
    return m


class LevelComparison:
    """Two cohorts (``groups[0]`` is the reference) compared at one level."""

    def __init__(
        self,
        ref: PatientStats,
        other: PatientStats,
        level: Level,
        groups: tuple[str, str] = ("real", "synthetic"),
        top_k: int = 100,
        band_edges: tuple[float, ...] = (0.5, 0.9),
        profile_min_patients: int = 100,
        token_type: np.ndarray | None = None,
    ):
        self.level, self.groups, self.top_k, self.band_edges = level, groups, top_k, tuple(band_edges)
        t = level.size
        # Only tokens seen in either cohort count: codes absent from both would add (0, 0)
        # points that inflate R^2 and Pearson r.
        seen = np.asarray(ref.visit_counts.sum(0)).ravel() + np.asarray(other.visit_counts.sum(0)).ravel()
        self.tokens = np.flatnonzero(seen > 0)
        self.counts = [ref.visit_counts[:, self.tokens], other.visit_counts[:, self.tokens]]
        self.present = [(m > 0).astype(np.float64) for m in self.counts]
        self.n = [ref.visit_counts.shape[0], other.visit_counts.shape[0]]

        pair_keys = unique_sorted(ref.pair_key, other.pair_key)
        self.pairs = [
            keyed_matrix(s.pair_patient, s.pair_key, pair_keys, n)
            for s, n in ((ref, self.n[0]), (other, self.n[1]))
        ]
        # pair -> its two tokens (local index), to count partners per token
        local = np.full(max(t, 1), -1, dtype=np.int64)
        local[self.tokens] = np.arange(len(self.tokens))
        a, b = local[pair_keys // max(t, 1)], local[pair_keys % max(t, 1)]
        n_pairs = len(pair_keys)
        self.incidence = sp.csr_matrix(
            (np.ones(2 * n_pairs), (np.r_[np.arange(n_pairs), np.arange(n_pairs)], np.r_[a, b])),
            shape=(n_pairs, len(self.tokens)),
        )
        # pairs of two event types (a diagnosis with a medication, ...): ``token_type`` [T] when given
        self.cross = None
        if token_type is not None and len(np.unique(np.asarray(token_type)[self.tokens])) > 1:
            kinds = np.asarray(token_type)
            self.cross = kinds[pair_keys // max(t, 1)] != kinds[pair_keys % max(t, 1)]
        trans_keys = unique_sorted(ref.trans_key, other.trans_key)
        self.trans = [
            keyed_matrix(s.trans_patient, s.trans_key, trans_keys, n)
            for s, n in ((ref, self.n[0]), (other, self.n[1]))
        ]
        self.n_visits = [ref.n_visits.astype(np.float64), other.n_visits.astype(np.float64)]
        self.n_transitions = [ref.n_transitions.astype(np.float64), other.n_transitions.astype(np.float64)]
        width_v = int(max(ref.n_visits.max(initial=0), other.n_visits.max(initial=0))) + 1
        self.visit_hist = [_histogram(s.n_visits, width_v) for s in (ref, other)]
        self.carried = [ref.carried, other.carried]
        self.carry_base = [ref.carry_base, other.carry_base]
        self.codes_total = [np.asarray(m.sum(1)).ravel() for m in self.counts]  # sum of visit sizes
        self.age = [ref.age, other.age]
        self.female = [ref.female, other.female]
        # profile gaps cover tokens held by >= profile_min_patients reference patients (fixed set)
        self.profiled = np.asarray(self.present[0].sum(0)).ravel() >= profile_min_patients
        width_s = max(ref.visit_sizes.shape[1], other.visit_sizes.shape[1])
        self.size_hist = [_pad(s.visit_sizes, width_s) for s in (ref, other)]

    @property
    def n_pairs(self) -> int:
        return self.pairs[0].shape[1]

    def _pair_metrics(
        self, w: list[np.ndarray], mats: list[sp.csr_matrix], denom: list[np.ndarray], partners: bool
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """R^2 of per-visit pair (or transition) frequencies, and partners per token if asked.

        Replicate rows go through in slices of about 2M cells: the pair axis can be long.
        """
        b, n_cols = w[0].shape[0], mats[0].shape[1]
        r2 = np.full(b, np.nan)
        found = [np.zeros((b, len(self.tokens))) for _ in (0, 1)] if partners else None
        step = max(1, (1 << 21) // max(n_cols, 1))
        for s in range(0, b, step):
            e = slice(s, min(s + step, b))
            counts = [np.asarray(mats[g].T @ w[g][e].T).T for g in (0, 1)]
            with np.errstate(invalid="ignore", divide="ignore"):
                freq = [counts[g] / (w[g][e] @ denom[g])[:, None] for g in (0, 1)]
            seen = (counts[0] > 0) | (counts[1] > 0)
            if n_cols:
                r2[e] = F.r2_score(freq[0], freq[1], seen)
            if found is not None:
                for g in (0, 1):
                    found[g][e] = np.asarray(self.incidence.T @ (counts[g] > 0).T.astype(np.float64)).T
        return r2, found

    def stats(self, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every fidelity metric for each weight row."""
        w = [weights[self.groups[0]], weights[self.groups[1]]]
        out: dict[str, np.ndarray] = {}
        counts = [weighted_sum(w[g], self.counts[g]) for g in (0, 1)]
        with np.errstate(invalid="ignore", divide="ignore"):
            prev = [weighted_sum(w[g], self.present[g]) / w[g].sum(1, keepdims=True) for g in (0, 1)]
        # codes a replicate drew in neither cohort drop out, as they would from resampled data
        seen = (counts[0] > 0) | (counts[1] > 0)
        out["jsd"] = F.js_divergence(counts[0], counts[1])
        out["prevalence_r2"] = F.r2_score(prev[0], prev[1], seen)
        out["prevalence_pearson"] = F.pearson_r(prev[0], prev[1], seen)
        out[f"top{self.top_k}_overlap"] = F.top_k_overlap(prev[0], prev[1], self.top_k)

        out["cooccurrence_r2"], partners = self._pair_metrics(w, self.pairs, self.n_visits, partners=True)
        if self.cross is not None:
            cross = [m[:, self.cross] for m in self.pairs]
            out["cooccurrence_cross_type_r2"], _ = self._pair_metrics(w, cross, self.n_visits, partners=False)
        score = []
        for g in (0, 1):
            n_codes = (counts[g] > 0).sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                score.append(np.where(n_codes > 0, partners[g].sum(1) / np.maximum(n_codes, 1), np.nan))
        out["cooccurrence_score_real"] = score[0]
        out["cooccurrence_score"] = score[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["cooccurrence_score_ratio"] = np.where(score[0] > 0, score[1] / score[0], np.nan)
        out["transition_r2"], _ = self._pair_metrics(w, self.trans, self.n_transitions, partners=False)

        for name, hists in (("visits_per_patient", self.visit_hist), ("codes_per_visit", self.size_hist)):
            d, p = F.ks_from_histograms(weighted_sum(w[0], hists[0]), weighted_sum(w[1], hists[1]))
            out[f"ks_{name}"], out[f"ks_{name}_pvalue"] = d, p

        out.update(self._longitudinal(w))

        recall = F.band_recall(counts[0], counts[1], self.band_edges)
        for i, band in enumerate(BAND_NAMES[: recall.shape[-1]]):
            out[f"recall_{band}"] = recall[..., i]
        return out

    def _longitudinal(self, w: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Carry-over, mean visits and codes, and per-token age and sex profiles (docs/metrics.md).

        ``<name>_real`` is the reference cohort's value, ``<name>`` the other cohort's.
        """
        out: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for g, suffix in ((0, "_real"), (1, "")):
                visits = w[g] @ self.n_visits[g]
                out[f"carry_over{suffix}"] = (w[g] @ self.carried[g]) / (w[g] @ self.carry_base[g])
                out[f"visits_per_patient_mean{suffix}"] = visits / w[g].sum(1)
                out[f"codes_per_visit_mean{suffix}"] = (w[g] @ self.codes_total[g]) / visits
            for key in ("carry_over", "visits_per_patient_mean", "codes_per_visit_mean"):
                out[f"{key}_ratio"] = out[key] / out[f"{key}_real"]
            holders = [weighted_sum(w[g], self.present[g]) for g in (0, 1)]  # (weighted) patients per token
            cols = self.profiled
            for name, values in (("age", self.age), ("female", self.female)):
                means = [
                    weighted_sum(w[g] * values[g][None, :], self.present[g][:, cols]) / holders[g][:, cols]
                    for g in (0, 1)
                ]
                ok = holders[1][:, cols] > 0
                weight = np.where(ok, holders[0][:, cols], 0.0)
                gap = np.where(ok, np.abs(means[0] - means[1]), 0.0)
                out[f"{name}_profile_gap"] = (weight * gap).sum(1) / weight.sum(1)
            out["profile_tokens"] = np.full(w[0].shape[0], float(cols.sum()))
        return out

    def point(self) -> dict[str, np.ndarray]:
        """Unweighted frequencies for plots: prevalence per token and per-visit pair frequency."""
        ones = [np.ones((1, n)) for n in self.n]
        prev = [weighted_sum(ones[g], self.present[g])[0] / max(self.n[g], 1) for g in (0, 1)]
        pair = [np.asarray(self.pairs[g].sum(0)).ravel() / max(self.n_visits[g].sum(), 1) for g in (0, 1)]
        return {
            "tokens": self.level.tokens[self.tokens],
            "prevalence_real": prev[0],
            "prevalence_other": prev[1],
            "pair_real": pair[0],
            "pair_other": pair[1],
            "visits_real": self.n_visits[0],
            "visits_other": self.n_visits[1],
            "codes_real": np.asarray(self.present[0].sum(1)).ravel(),
            "codes_other": np.asarray(self.present[1].sum(1)).ravel(),
        }
