"""Privacy attacks as functions of nearest-neighbour distances, under bootstrap weight rows.

All take distances already computed by :mod:`ehrgen.privacy.neighbors` and weights
``[b, n]`` over the records they average (see :mod:`ehrgen.metrics.bootstrap`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ehrgen.metrics import functional as F


def nnaa(
    d_real_syn: np.ndarray,
    d_real_real: np.ndarray,
    d_syn_real: np.ndarray,
    d_syn_syn: np.ndarray,
    w_real: np.ndarray,
    w_syn: np.ndarray,
) -> np.ndarray:
    """Nearest-neighbour adversarial accuracy (Yale et al. 2020).

    ``0.5 * mean_real[d_RS > d_RR] + 0.5 * mean_syn[d_SR > d_SS]`` where ``d_RR``/``d_SS`` are
    leave-one-out distances (the record itself excluded by index, so an exact duplicate counts
    as distance 0: matches are counted, not skipped). A tie counts one half, which keeps 0.5
    the value for exchangeable cohorts even with the discrete distances of code sets. 0.5 is
    ideal; near 0 means synthetic records sit on top of real ones; near 1 that they are easy
    to tell apart.
    """

    def farther(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a > b) + 0.5 * (a == b)

    real_term = F.weighted_mean(farther(d_real_syn, d_real_real), w_real)
    syn_term = F.weighted_mean(farther(d_syn_real, d_syn_syn), w_syn)
    return 0.5 * real_term + 0.5 * syn_term


def membership_inference(
    d_members: np.ndarray, d_nonmembers: np.ndarray, w_members: np.ndarray, w_nonmembers: np.ndarray
) -> dict[str, np.ndarray]:
    """Distance-based membership inference: "member" when the nearest synthetic record is close.

    ``advantage`` = best TPR - FPR over thresholds; ``accuracy`` = balanced accuracy at that
    threshold (0.5 + advantage / 2); ``auroc`` of the score -distance. 0 / 0.5 / 0.5 are ideal.
    """
    d = np.r_[d_members, d_nonmembers]
    labels = np.r_[np.ones(len(d_members), bool), np.zeros(len(d_nonmembers), bool)]
    w = np.concatenate([w_members, w_nonmembers], -1)
    adv = F.threshold_advantage(d, labels, w)
    return {"advantage": adv, "accuracy": 0.5 + adv / 2.0, "auroc": F.roc_auc(-d, labels, w)}


def known_features(
    codes: sp.csr_matrix, sex: np.ndarray, age: np.ndarray, known_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``[n, k]`` presence of the known codes, plus sex and age (NaN age -> -1)."""
    bits = (codes[:, known_codes] > 0).toarray().astype(np.float32)
    return bits, sex.astype(np.float32), np.nan_to_num(age, nan=-1.0).astype(np.float32)


def attribute_neighbours(
    target: tuple[np.ndarray, np.ndarray, np.ndarray],
    released: tuple[np.ndarray, np.ndarray, np.ndarray],
    chunk: int = 256,
) -> np.ndarray:
    """Index of the released record closest on the known attributes, for each target.

    Lexicographic: same sex first, then fewest differing known codes, then closest age
    (ages differ by < 1000 years, so ``|d age| / 1000 < 1`` never outweighs one code).
    """
    tb, ts, ta = target
    rb, rs, ra = released
    r_count = rb.sum(1)
    out = np.empty(len(tb), dtype=np.int64)
    k = tb.shape[1]
    for s in range(0, len(tb), chunk):
        e = slice(s, s + chunk)
        d = tb[e].sum(1)[:, None] + r_count[None, :] - 2.0 * (tb[e] @ rb.T)
        d += (ts[e][:, None] != rs[None, :]) * np.float32(k + 1)
        d += np.abs(ta[e][:, None] - ra[None, :]) / np.float32(1000.0)
        out[e] = d.argmin(1)
    return out


def attribute_counts(
    target_codes: sp.csr_matrix, guess_codes: sp.csr_matrix, sensitive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per target: true positives, false positives, false negatives over the sensitive codes."""
    t = (target_codes[:, sensitive] > 0).astype(np.float64)
    g = (guess_codes[:, sensitive] > 0).astype(np.float64)
    tp = np.asarray(t.multiply(g).sum(1)).ravel()
    return tp, np.asarray(g.sum(1)).ravel() - tp, np.asarray(t.sum(1)).ravel() - tp


def micro_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``2 TP / (2 TP + FP + FN)`` of weighted sums; NaN when there is nothing to find or guess."""
    a, b, c = w @ tp, w @ fp, w @ fn
    den = 2 * a + b + c
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * a / np.where(den > 0, den, 1.0), np.nan)
