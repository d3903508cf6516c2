"""Pure numpy/scipy metric functions shared by the torchmetrics classes and the evaluation.

Every function reduces the last axis, so a 2-D input ``[replicates, items]`` gives one value per
bootstrap replicate and a 1-D input gives a scalar. Inputs are unnormalised counts or frequencies
(the functions normalise where the formula needs it). Undefined values (an empty sample, zero
variance) are NaN, never an exception: the caller flags them.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import distributions

KS_EXACT_MAX_N = 2000  # effective sample size up to which KS p-values use scipy's kstwo


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = _f64(x)
    total = x.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, x / np.where(total > 0, total, 1.0), np.nan)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (base 2, no smoothing) between two count vectors; in [0, 1]."""
    p, q = _normalise(p), _normalise(q)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            term = np.where(a > 0, a * np.log2(a / np.where(m > 0, m, 1.0)), 0.0)
        return np.where(np.isnan(a), np.nan, term).sum(-1)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


def _mask(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return np.ones_like(x) if mask is None else np.broadcast_to(np.asarray(mask, dtype=np.float64), x.shape)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Coefficient of determination of ``y_pred`` against the identity line: 1 - SS_res / SS_tot.

    ``mask`` (same shape, boolean) restricts the items, row by row.
    """
    y_true, y_pred = _f64(y_true), _f64(y_pred)
    m = _mask(y_true, mask)
    n = m.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (m * y_true).sum(-1, keepdims=True) / n
    ss_res = (m * (y_true - y_pred) ** 2).sum(-1)
    ss_tot = (m * (y_true - mean) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def pearson_r(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation coefficient; NaN when either side has zero variance."""
    x, y = _f64(x), _f64(y)
    m = _mask(x, mask)
    n = m.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = x - (m * x).sum(-1, keepdims=True) / n
        yc = y - (m * y).sum(-1, keepdims=True) / n
    den = np.sqrt((m * xc**2).sum(-1) * (m * yc**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (m * xc * yc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def top_k_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest positive entries (ties broken by lower index)."""
    x = _f64(x)
    order = np.argsort(-x, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(x.shape[-1]), x.shape), axis=-1)
    return (ranks < k) & (x > 0)


def top_k_overlap(reference: np.ndarray, other: np.ndarray, k: int = 100) -> np.ndarray:
    """Share of the reference's top-``k`` codes that are also in the other's top-``k``."""
    ref_top, other_top = top_k_mask(reference, k), top_k_mask(other, k)
    n_ref = ref_top.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_ref > 0, (ref_top & other_top).sum(-1) / np.maximum(n_ref, 1), np.nan)


def ks_from_histograms(h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS statistic and asymptotic p-value from counts over the same sorted support.

    Equals ``scipy.stats.ks_2samp(a, b, method="asymp")`` when ``h1``/``h2`` are the value
    histograms of ``a``/``b`` (ties handled as scipy does: right-continuous ECDFs), up to an
    effective size ``en = n1 n2 / (n1 + n2)`` of 2000; above it, where scipy's ``kstwo.sf``
    costs ~1-20 ms a value, Smirnov's limit ``kstwobign.sf(D sqrt(en))`` (within 0.007).
    """
    h1, h2 = _f64(h1), _f64(h2)
    n1, n2 = h1.sum(-1), h2.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf1 = np.cumsum(h1, -1) / n1[..., None]
        cdf2 = np.cumsum(h2, -1) / n2[..., None]
        d = np.abs(cdf1 - cdf2).max(-1)
        en = np.round(n1 * n2 / (n1 + n2))
    ok = (n1 > 0) & (n2 > 0)
    d = np.where(ok, d, np.nan)
    d0, en = np.nan_to_num(d), np.maximum(np.nan_to_num(en), 1)
    small = en <= KS_EXACT_MAX_N
    p = np.asarray(distributions.kstwobign.sf(d0 * np.sqrt(en)), dtype=np.float64)
    if np.any(small):
        p = np.where(small, distributions.kstwo.sf(d0, np.where(small, en, 1)), p)
    p = np.where(ok, np.clip(p, 0, 1), np.nan)
    return d, p


def frequency_bands(reference: np.ndarray, edges: tuple[float, ...] = (0.5, 0.9)) -> np.ndarray:
    """Band index per code (0=head, 1=torso, 2=tail, -1=absent) from the reference's counts.

    Codes are ranked by count (ties by index); a code's band is set by the share of all
    occurrences held by the codes ranked strictly above it: head below ``edges[0]``, torso
    below ``edges[1]``, tail above.
    """
    ref = _f64(reference)
    order = np.argsort(-ref, axis=-1, kind="stable")
    sorted_counts = np.take_along_axis(ref, order, -1)
    total = sorted_counts.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        before = (np.cumsum(sorted_counts, -1) - sorted_counts) / np.where(total > 0, total, 1.0)
    band_sorted = np.searchsorted(np.asarray(edges), before, side="right").astype(np.int64)
    band_sorted[sorted_counts <= 0] = -1
    bands = np.empty_like(band_sorted)
    np.put_along_axis(bands, order, band_sorted, axis=-1)
    return bands


def band_recall(
    reference: np.ndarray, other: np.ndarray, edges: tuple[float, ...] = (0.5, 0.9)
) -> np.ndarray:
    """Share of the reference's codes in each frequency band that occur at least once in ``other``.

    Returns ``[..., n_bands]`` (head, torso, tail for two edges).
    """
    bands = frequency_bands(reference, edges)
    hit = _f64(other) > 0
    out = []
    for b in range(len(edges) + 1):
        in_band = bands == b
        n = in_band.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(n > 0, (in_band & hit).sum(-1) / np.maximum(n, 1), np.nan))
    return np.stack(out, -1)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """Inverse-CDF quantile of ``values`` under row weights ``[..., n]``.

    Equals ``np.quantile(np.repeat(values, w), q, method="inverted_cdf")`` for integer weights.
    """
    values = _f64(values)
    order = np.argsort(values, kind="stable")
    sv = values[order]
    w = _f64(weights)[..., order]
    cum = np.cumsum(w, -1)
    total = cum[..., -1:]
    idx = (cum < q * total).sum(-1)
    out = sv[np.minimum(idx, len(sv) - 1)]
    return np.where(total[..., 0] > 0, out, np.nan)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum(w * v) / sum(w)`` per row of weights; NaN for zero total weight."""
    w = _f64(weights)
    total = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w @ _f64(values)) / np.where(total > 0, total, 1.0), np.nan)


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Area under the ROC curve (ties count one half), optionally under row weights ``[..., n]``.

    Equals the Mann-Whitney U statistic / (n_pos * n_neg); NaN without both classes.
    """
    scores, labels = _f64(scores), np.asarray(labels).astype(bool)
    w = np.ones_like(scores) if weights is None else _f64(weights)
    order, starts = _tie_groups(scores)
    wp = np.where(labels[order], w[..., order], 0.0)
    wn = np.where(labels[order], 0.0, w[..., order])
    gp = np.add.reduceat(wp, starts, axis=-1)
    gn = np.add.reduceat(wn, starts, axis=-1)
    neg_below = np.cumsum(gn, -1) - gn
    tp, tn = gp.sum(-1), gn.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (gp * (neg_below + 0.5 * gn)).sum(-1) / (tp * tn)
    return np.where((tp > 0) & (tn > 0), auc, np.nan)


def threshold_advantage(
    distances: np.ndarray, is_member: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Best ``TPR - FPR`` of the rule "member when distance <= t" over all thresholds t (>= 0).

    This is the membership advantage of an attacker who knows the best threshold; the balanced
    accuracy of that attacker is ``0.5 + advantage / 2``.
    """
    d, m = _f64(distances), np.asarray(is_member).astype(bool)
    w = np.ones_like(d) if weights is None else _f64(weights)
    order, starts = _tie_groups(d)
    wp = np.add.reduceat(np.where(m[order], w[..., order], 0.0), starts, axis=-1)
    wn = np.add.reduceat(np.where(m[order], 0.0, w[..., order]), starts, axis=-1)
    tp, tn = wp.sum(-1, keepdims=True), wn.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.cumsum(wp, -1) / tp - np.cumsum(wn, -1) / tn
    adv = np.maximum(gap.max(-1), 0.0)
    return np.where((tp[..., 0] > 0) & (tn[..., 0] > 0), adv, np.nan)
