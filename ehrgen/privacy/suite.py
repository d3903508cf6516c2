"""All privacy metrics of one evaluation: DCR, copies, NNAA(R), membership and attribute inference.

Record sets (seeded subsamples, see docs/metrics.md):
- ``S`` all synthetic records; ``T`` the full train split (copy rate: a copy of any train record);
- ``T'``, ``H'``: equal-size random subsets of train and holdout (``m = min(|T|, |H|, max_records)``)
  for the train-vs-holdout comparisons (DCR, share closer to train, membership inference), since
  distances to a larger set are smaller whether or not anything leaked;
- ``S'``: ``min(|S|, m)`` synthetic records for NNAA, which needs equal-size sets.
The CIs resample the records each metric averages over; reference sets stay fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ehrgen.metrics import functional as F
from ehrgen.metrics.bootstrap import BootstrapConfig, bootstrap
from ehrgen.metrics.cohort_arrays import CohortArrays, code_counts
from ehrgen.privacy import attacks
from ehrgen.privacy.neighbors import nearest
from ehrgen.privacy.vectors import binary_vectors, smooth_idf, tfidf_vectors


@dataclass(frozen=True)
class PrivacyConfig:
    distances: Sequence[str] = ("jaccard", "cosine")
    max_records: int = 10000
    known_top_k: int = 20
    attribute_targets: int = 2000
    workers: int = 2
    block: int = 512
    chunk: int = 256
    seed: int = 0


def _subset(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)


def privacy_metrics(
    synthetic: CohortArrays,
    train: CohortArrays,
    holdout: CohortArrays,
    cfg: PrivacyConfig,
    boot: BootstrapConfig,
) -> tuple[dict[str, dict], dict[str, np.ndarray], list[str]]:
    """Metric entries, distance arrays for plots, and warnings."""
    rng = np.random.default_rng([cfg.seed, 7])
    m = min(train.n_patients, holdout.n_patients, cfg.max_records)
    t_sub = _subset(rng, train.n_patients, m)
    h_sub = _subset(rng, holdout.n_patients, m)
    s_sub = _subset(rng, synthetic.n_patients, min(synthetic.n_patients, m))
    warnings: list[str] = []
    if m < 50:
        warnings.append(f"privacy: only {m} train/holdout records per side; attack metrics are noisy")
    search = {"workers": cfg.workers, "block": cfg.block, "chunk": cfg.chunk}
    results: dict[str, dict] = {}
    plots: dict[str, np.ndarray] = {}
    idf = smooth_idf(binary_vectors(train))
    for dist in cfg.distances:
        if dist == "jaccard":
            vs, vt, vh = (binary_vectors(a) for a in (synthetic, train, holdout))
        else:
            vs, vt, vh = (tfidf_vectors(a, idf) for a in (synthetic, train, holdout))
        vt_s, vh_s, vs_s = vt[t_sub], vh[h_sub], vs[s_sub]
        to_train = nearest(vs, vt, dist, **search)
        to_hold = nearest(vs, vh_s, dist, reverse=True, **search)
        to_tsub = nearest(vs, vt_s, dist, reverse=True, **search)
        if len(s_sub) == synthetic.n_patients:
            s_t, s_h = to_tsub, to_hold
        else:
            s_t = nearest(vs_s, vt_s, dist, reverse=True, **search)
            s_h = nearest(vs_s, vh_s, dist, reverse=True, **search)
        s_s = nearest(vs_s, vs_s, dist, self_match=True, **search)
        t_t = nearest(vt_s, vt_s, dist, self_match=True, **search)
        h_h = nearest(vh_s, vh_s, dist, self_match=True, **search)
        d = {
            "s_train": to_train.distance[:, 0].astype(np.float64),
            "s_hold": to_hold.distance[:, 0].astype(np.float64),
            "s_tsub": to_tsub.distance[:, 0].astype(np.float64),
            "tsub_s": to_tsub.reverse_distance.astype(np.float64),
            "hsub_s": to_hold.reverse_distance.astype(np.float64),
        }
        plots[f"{dist}/dcr_train"], plots[f"{dist}/dcr_holdout"] = d["s_tsub"], d["s_hold"]
        plots[f"{dist}/dcr_train_full"] = d["s_train"]
        exact = 1e-6 if dist == "cosine" else 0.0

        def stat(w: Mapping[str, np.ndarray], d=d, s_t=s_t, s_h=s_h, s_s=s_s, t_t=t_t, h_h=h_h, exact=exact):
            ws, wt, wh, wss = w["synthetic"], w["train_sub"], w["holdout_sub"], w["synthetic_sub"]
            out = {
                "dcr_train_median": F.weighted_quantile(d["s_tsub"], ws, 0.5),
                "dcr_train_p05": F.weighted_quantile(d["s_tsub"], ws, 0.05),
                "dcr_holdout_median": F.weighted_quantile(d["s_hold"], ws, 0.5),
                "dcr_holdout_p05": F.weighted_quantile(d["s_hold"], ws, 0.05),
                "copy_rate": F.weighted_mean((d["s_train"] <= exact).astype(float), ws),
                "copy_rate_holdout": F.weighted_mean((d["s_hold"] <= exact).astype(float), ws),
                # equal-size sets: copies of train records beyond the chance level of the holdout
                "copy_rate_excess": F.weighted_mean(
                    (d["s_tsub"] <= exact).astype(float) - (d["s_hold"] <= exact), ws
                ),
                "share_closer_to_train": F.weighted_mean(
                    (d["s_tsub"] < d["s_hold"]) + 0.5 * (d["s_tsub"] == d["s_hold"]), ws
                ),
            }
            d_ss = s_s.distance[:, 0].astype(np.float64)
            aa_t = attacks.nnaa(s_t.reverse_distance, t_t.distance[:, 0], s_t.distance[:, 0], d_ss, wt, wss)
            aa_h = attacks.nnaa(s_h.reverse_distance, h_h.distance[:, 0], s_h.distance[:, 0], d_ss, wh, wss)
            out["nnaa_train"], out["nnaa_holdout"], out["nnaar"] = aa_t, aa_h, aa_h - aa_t
            mia = attacks.membership_inference(d["tsub_s"], d["hsub_s"], wt, wh)
            out.update({f"mia_{k}": v for k, v in mia.items()})
            return out

        sizes = {
            "synthetic": synthetic.n_patients,
            "train_sub": len(t_sub),
            "holdout_sub": len(h_sub),
            "synthetic_sub": len(s_sub),
        }
        stream = 60 + list(cfg.distances).index(dist)
        results.update({f"{dist}/{k}": v for k, v in bootstrap(stat, sizes, boot, stream).items()})

    attr, attr_warn = attribute_inference(synthetic, train, holdout, t_sub, h_sub, cfg, boot, rng)
    results.update(attr)
    warnings += attr_warn
    return results, plots, warnings


def attribute_inference(
    synthetic: CohortArrays,
    train: CohortArrays,
    holdout: CohortArrays,
    t_sub: np.ndarray,
    h_sub: np.ndarray,
    cfg: PrivacyConfig,
    boot: BootstrapConfig,
    rng: np.random.Generator,
) -> tuple[dict[str, dict], list[str]]:
    """Guess each target's other codes from the synthetic record nearest on what is known.

    Known: sex, age and presence of the ``known_top_k`` most prevalent train codes. F1 over
    the remaining codes for train targets (members) against holdout targets (non-members, the
    baseline: what the synthetic data lets anyone infer about any patient).
    """
    counts = {g: code_counts(a) for g, a in (("s", synthetic), ("t", train), ("h", holdout))}
    prevalence = np.asarray((counts["t"] > 0).sum(0)).ravel()
    k = min(cfg.known_top_k, int((prevalence > 0).sum()))
    known = np.argsort(-prevalence, kind="stable")[:k]
    sensitive = np.setdiff1d(np.arange(len(train.vocab)), known)
    n_targets = min(len(t_sub), cfg.attribute_targets)
    groups = {
        "attr_train": (train, counts["t"], t_sub[_subset(rng, len(t_sub), n_targets)]),
        "attr_holdout": (holdout, counts["h"], h_sub[_subset(rng, len(h_sub), n_targets)]),
    }
    released = attacks.known_features(counts["s"], synthetic.sex, synthetic.age, known)
    per_group = {}
    for g, (arr, cnt, rows) in groups.items():
        feats = attacks.known_features(cnt[rows], arr.sex[rows], arr.age[rows], known)
        nn = attacks.attribute_neighbours(feats, released)
        per_group[g] = attacks.attribute_counts(cnt[rows], counts["s"][nn], sensitive)

    def stat(w: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        f1 = {g: attacks.micro_f1(*per_group[g], w[g]) for g in groups}
        return {
            "attribute/f1_train": f1["attr_train"],
            "attribute/f1_holdout": f1["attr_holdout"],
            "attribute/advantage": f1["attr_train"] - f1["attr_holdout"],
        }

    sizes = {g: len(v[2]) for g, v in groups.items()}
    return bootstrap(stat, sizes, boot, stream=70), []
