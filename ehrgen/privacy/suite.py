"""All privacy metrics of one evaluation: DCR, copies, NNAA(R), membership and attribute inference.

Record sets (seeded subsamples, see docs/metrics.md):
- ``S`` all synthetic records; ``T`` the full train split (copy rate: a copy of any train record);
- ``T'``, ``H'``: equal-size random subsets of train and holdout (``m = min(|T|, |H|, max_records)``)
  for the train-vs-holdout comparisons (DCR, share closer to train, membership inference), since
  distances to a larger set are smaller whether or not anything leaked;
- ``S'``: ``min(|S|, m)`` synthetic records for NNAA, which needs equal-size sets.
The CIs resample the records each metric averages over; reference sets stay fixed.

The nearest-neighbour searches behind the metrics (:func:`searches`) run in this process, or
beforehand as blocks of query rows (:mod:`ehrgen.privacy.blocks`, the tasks of a job array) that
are verified and joined into the same results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ehrgen.errors import InputError
from ehrgen.metrics import functional as F
from ehrgen.metrics.bootstrap import BootstrapConfig, bootstrap
from ehrgen.metrics.cohort_arrays import CohortArrays, code_counts
from ehrgen.privacy import attacks
from ehrgen.privacy.neighbors import METRICS, Neighbours, nearest
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

    def __post_init__(self) -> None:
        bad = [d for d in self.distances if d not in METRICS]
        if bad or not self.distances:
            raise InputError(
                f"privacy.distances={list(self.distances)}: expected some of {', '.join(METRICS)}"
            )


# ----------------------------------------------------------------------------- record sets, searches


@dataclass(frozen=True)
class RecordSets:
    """Row indices of the seeded subsamples (``T'``, ``H'``, ``S'``) and attribute targets."""

    t_sub: np.ndarray
    h_sub: np.ndarray
    s_sub: np.ndarray
    attr_train: np.ndarray  # rows of train
    attr_holdout: np.ndarray  # rows of holdout


def _subset(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)


def record_sets(n_synthetic: int, n_train: int, n_holdout: int, cfg: PrivacyConfig) -> RecordSets:
    rng = np.random.default_rng([cfg.seed, 7])
    m = min(n_train, n_holdout, cfg.max_records)
    t_sub = _subset(rng, n_train, m)
    h_sub = _subset(rng, n_holdout, m)
    s_sub = _subset(rng, n_synthetic, min(n_synthetic, m))
    n_targets = min(len(t_sub), cfg.attribute_targets)
    attr_t = t_sub[_subset(rng, len(t_sub), n_targets)]
    attr_h = h_sub[_subset(rng, len(h_sub), n_targets)]
    return RecordSets(t_sub, h_sub, s_sub, attr_t, attr_h)


@dataclass(frozen=True)
class SearchSpec:
    """One search by record-set names: S, T, T', H', S' (above); AT / AH attribute targets."""

    name: str  # "jaccard/s_tsub", "attribute/train"
    metric: str  # jaccard | cosine | attribute
    query: str
    ref: str
    self_match: bool = False  # leave-one-out within one set
    reverse: bool = False  # also the nearest query of every reference record


# Per distance: (name, query, reference, self_match, reverse).
_DISTANCE_SEARCHES = (
    ("s_train", "S", "T", False, False),  # copy rate (a copy of any train record)
    ("s_hold", "S", "H'", False, True),  # DCR holdout; reverse d(h, S): membership inference
    ("s_tsub", "S", "T'", False, True),  # DCR train; reverse d(t, S): membership inference
    ("ssub_tsub", "S'", "T'", False, True),  # NNAA, only when S' is a proper subsample of S
    ("ssub_hsub", "S'", "H'", False, True),
    ("ssub_ssub", "S'", "S'", True, False),  # NNAA leave-one-out terms
    ("tsub_tsub", "T'", "T'", True, False),
    ("hsub_hsub", "H'", "H'", True, False),
)


def _set_sizes(n_synthetic: int, n_train: int, n_holdout: int, cfg: PrivacyConfig) -> dict[str, int]:
    m = min(n_train, n_holdout, cfg.max_records)
    targets = min(m, cfg.attribute_targets)
    return {"S": n_synthetic, "T": n_train, "T'": m, "H'": m, "S'": min(n_synthetic, m), "AT": targets,
            "AH": targets}  # fmt: skip


def search_specs(n_synthetic: int, n_train: int, n_holdout: int, cfg: PrivacyConfig) -> list[SearchSpec]:
    """Every search the metrics need, in a fixed order (the order of the block files' arrays)."""
    proper_subsample = _set_sizes(n_synthetic, n_train, n_holdout, cfg)["S'"] < n_synthetic
    specs = []
    for dist in cfg.distances:
        for name, q, r, self_match, reverse in _DISTANCE_SEARCHES:
            if q == "S'" and not self_match and not proper_subsample:
                continue  # S' is S: s_tsub and s_hold are these searches
            specs.append(SearchSpec(f"{dist}/{name}", dist, q, r, self_match, reverse))
    specs += [
        SearchSpec("attribute/train", "attribute", "AT", "S"),
        SearchSpec("attribute/holdout", "attribute", "AH", "S"),
    ]
    return specs


def search_shapes(n_synthetic: int, n_train: int, n_holdout: int, cfg: PrivacyConfig) -> dict[str, tuple]:
    """``name -> (query rows, reference rows)`` from the cohort sizes alone (for plans, estimates)."""
    size = _set_sizes(n_synthetic, n_train, n_holdout, cfg)
    return {s.name: (size[s.query], size[s.ref]) for s in search_specs(n_synthetic, n_train, n_holdout, cfg)}


@dataclass
class _AttributeSetup:
    """What the attribute-inference attacker knows: known-code bits, sex and age of every record."""

    counts: dict[str, sp.csr_matrix]  # "s" / "t" / "h": patient x code visit counts
    sensitive: np.ndarray  # codes the attacker guesses
    released: tuple[np.ndarray, np.ndarray, np.ndarray]  # synthetic records' known features
    targets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # "AT" / "AH"


def _attribute_setup(
    synthetic: CohortArrays, train: CohortArrays, holdout: CohortArrays, cfg: PrivacyConfig, sets: RecordSets
) -> _AttributeSetup:
    counts = {g: code_counts(a) for g, a in (("s", synthetic), ("t", train), ("h", holdout))}
    prevalence = np.asarray((counts["t"] > 0).sum(0)).ravel()
    k = min(cfg.known_top_k, int((prevalence > 0).sum()))
    known = np.argsort(-prevalence, kind="stable")[:k]
    sensitive = np.setdiff1d(np.arange(len(train.vocab)), known)
    released = attacks.known_features(counts["s"], synthetic.sex, synthetic.age, known)
    targets = {
        group: attacks.known_features(counts[g][rows], arr.sex[rows], arr.age[rows], known)
        for group, g, arr, rows in (
            ("AT", "t", train, sets.attr_train),
            ("AH", "h", holdout, sets.attr_holdout),
        )
    }
    return _AttributeSetup(counts, sensitive, released, targets)


@dataclass
class Search:
    """One search with its data: sparse vectors, or the attribute features (a tuple of arrays)."""

    spec: SearchSpec
    query: Any
    ref: Any

    @property
    def n_query(self) -> int:
        return self.query[0].shape[0] if isinstance(self.query, tuple) else self.query.shape[0]

    @property
    def n_ref(self) -> int:
        return self.ref[0].shape[0] if isinstance(self.ref, tuple) else self.ref.shape[0]


def searches(
    synthetic: CohortArrays,
    train: CohortArrays,
    holdout: CohortArrays,
    cfg: PrivacyConfig,
    sets: RecordSets | None = None,
    attribute: _AttributeSetup | None = None,
) -> list[Search]:
    """The searches of :func:`search_specs` with their vectors (TF-IDF's IDF from train)."""
    specs = search_specs(synthetic.n_patients, train.n_patients, holdout.n_patients, cfg)
    sets = sets or record_sets(synthetic.n_patients, train.n_patients, holdout.n_patients, cfg)
    attribute = attribute or _attribute_setup(synthetic, train, holdout, cfg, sets)
    data: dict[str, dict[str, Any]] = {"attribute": {"S": attribute.released, **attribute.targets}}
    idf = smooth_idf(binary_vectors(train)) if "cosine" in cfg.distances else None
    for dist in cfg.distances:
        if dist == "jaccard":
            vs, vt, vh = (binary_vectors(a) for a in (synthetic, train, holdout))
        else:
            vs, vt, vh = (tfidf_vectors(a, idf) for a in (synthetic, train, holdout))
        data[dist] = {"S": vs, "T": vt, "T'": vt[sets.t_sub], "H'": vh[sets.h_sub], "S'": vs[sets.s_sub]}
    return [Search(s, data[s.metric][s.query], data[s.metric][s.ref]) for s in specs]


def run_search(search: Search, cfg: PrivacyConfig, rows: tuple[int, int] | None = None) -> Neighbours:
    """One search over all query rows, or rows ``a:b`` (attribute searches: index only, no distance)."""
    s = search.spec
    if s.metric == "attribute":
        a, b = rows or (0, search.n_query)
        index = attacks.attribute_neighbours(tuple(x[a:b] for x in search.query), search.ref)
        return Neighbours(np.zeros((b - a, 0), np.float32), index[:, None])
    return nearest(
        search.query, search.ref, s.metric, self_match=s.self_match, reverse=s.reverse,
        workers=cfg.workers, block=cfg.block, chunk=cfg.chunk, rows=rows,
    )  # fmt: skip


def compute_neighbours(todo: Sequence[Search], cfg: PrivacyConfig) -> dict[str, Neighbours]:
    return {s.spec.name: run_search(s, cfg) for s in todo}


# ----------------------------------------------------------------------------- metrics


def privacy_metrics(
    synthetic: CohortArrays,
    train: CohortArrays,
    holdout: CohortArrays,
    cfg: PrivacyConfig,
    boot: BootstrapConfig,
    neighbours: Mapping[str, Neighbours] | None = None,
) -> tuple[dict[str, dict], dict[str, np.ndarray], list[str]]:
    """Metric entries, distance arrays for plots, and warnings.

    ``neighbours``: the searches' results computed beforehand (:func:`read_blocks`); None runs them.
    """
    sets = record_sets(synthetic.n_patients, train.n_patients, holdout.n_patients, cfg)
    attribute = _attribute_setup(synthetic, train, holdout, cfg, sets)
    if neighbours is None:
        neighbours = compute_neighbours(searches(synthetic, train, holdout, cfg, sets, attribute), cfg)
    m = len(sets.t_sub)
    warnings: list[str] = []
    if m < 50:
        warnings.append(f"privacy: only {m} train/holdout records per side; attack metrics are noisy")
    results: dict[str, dict] = {}
    plots: dict[str, np.ndarray] = {}
    for dist in cfg.distances:
        nn = {name.split("/", 1)[1]: v for name, v in neighbours.items() if name.startswith(f"{dist}/")}
        to_train, to_hold, to_tsub = nn["s_train"], nn["s_hold"], nn["s_tsub"]
        s_t, s_h = nn.get("ssub_tsub", to_tsub), nn.get("ssub_hsub", to_hold)
        s_s, t_t, h_h = nn["ssub_ssub"], nn["tsub_tsub"], nn["hsub_hsub"]
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
            "train_sub": len(sets.t_sub),
            "holdout_sub": len(sets.h_sub),
            "synthetic_sub": len(sets.s_sub),
        }
        stream = 60 + list(cfg.distances).index(dist)
        results.update({f"{dist}/{k}": v for k, v in bootstrap(stat, sizes, boot, stream).items()})

    attr, attr_warn = attribute_inference(attribute, sets, neighbours, boot)
    results.update(attr)
    warnings += attr_warn
    return results, plots, warnings


def attribute_inference(
    setup: _AttributeSetup, sets: RecordSets, neighbours: Mapping[str, Neighbours], boot: BootstrapConfig
) -> tuple[dict[str, dict], list[str]]:
    """Guess each target's other codes from the synthetic record nearest on what is known.

    Known: sex, age and presence of the ``known_top_k`` most prevalent train codes. F1 over
    the remaining codes for train targets (members) against holdout targets (non-members, the
    baseline: what the synthetic data lets anyone infer about any patient).
    """
    groups = {
        "attr_train": (setup.counts["t"][sets.attr_train], neighbours["attribute/train"].index[:, 0]),
        "attr_holdout": (setup.counts["h"][sets.attr_holdout], neighbours["attribute/holdout"].index[:, 0]),
    }
    per_group = {
        g: attacks.attribute_counts(target, setup.counts["s"][nn], setup.sensitive)
        for g, (target, nn) in groups.items()
    }

    def stat(w: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        f1 = {g: attacks.micro_f1(*per_group[g], w[g]) for g in groups}
        return {
            "attribute/f1_train": f1["attr_train"],
            "attribute/f1_holdout": f1["attr_holdout"],
            "attribute/advantage": f1["attr_train"] - f1["attr_holdout"],
        }

    sizes = {g: len(v[1]) for g, v in groups.items()}
    return bootstrap(stat, sizes, boot, stream=70), []
