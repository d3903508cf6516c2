"""Stage 2 of hierarchical generation: expand generated diagnosis categories into specific codes.

Stage 1 is the ordinary :class:`~ehrgen.sampling.sampler.Sampler` over category tokens (one
category at most once per visit). Stage 2 turns every (visit, category) into codes of that
category, vectorised over a whole batch:

- how many: drawn from the train split's distribution of "codes of this category in one visit"
  (per category; a category never seen in a visit falls back to the pooled distribution), capped
  by the number of codes the patient may carry. The chance of more than one code depends on how
  many categories the visit holds (``multi`` statistics per visit-size band and category, smoothed
  towards the category's overall share): real visits with many categories hold more codes of
  each (1.07 per category at 17 or more categories, 1.01 at one or two, on the simulator), and
  one share for all visit sizes compressed the codes-per-visit distribution (KS 2.1x the floor);
- which: weighted sampling without replacement (Efraimidis-Spirakis keys ``log(u) / w``) with
  ``w(code) = share(code | category) * exp(curve(code | sex, age))``: the code's share of its
  category over all training patients, times its fitted age-and-sex curve
  (:mod:`ehrgen.sampling.code_curves`; continuous in age, so a code's age profile is not blurred
  inside an age band). Statistics without curves (older checkpoints) use
  ``w(code) = count(code | sex, age band) + prior * share(code | category)``. Codes the validity
  rules forbid for the patient get ``w = 0``.

Codes of one category are distinct and categories inside a visit are distinct, so visits never
repeat a code. The draws are keyed by (patient, category, draw number), not by position: a
category the patient carries into a later visit expands into the same codes as its last
occurrence, as chronic conditions do (a diabetic's 250.00 stays 250.00), unless it is drawn afresh,
which happens with the probability that a real patient's codes of that category change between
two consecutive visits that both hold it (``repeat`` statistics, per category, smoothed towards
all categories' rate; without them the codes always stay). Always keeping them over-carried codes:
with the real category carry-over the code-level carry-over came out 12 % high
(docs/benchmarks.md, fidelity). What stage 2 needs from the training cohort is a plain dict of aggregate counts
(:func:`expansion_stats`), small enough to ride in the checkpoint; it holds no patient rows.
Random draws are counter-based on (seed, patient index, item), like stage 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from ehrgen.data.cohort import Cohort, stable_hash
from ehrgen.data.rules import VALIDITY_RULES, ValidityRule, rule_membership
from ehrgen.data.vocab import VISIT_START, HierarchicalTokenizer
from ehrgen.errors import InputError
from ehrgen.privacy.small_cells import MIN_CELL, suppress
from ehrgen.sampling.code_curves import (
    CURVE_KNOTS,
    CURVE_RIDGE,
    category_shares,
    curve_log_weights,
    fit_code_curves,
)
from ehrgen.sampling.sampler import _offsets, counter_uniforms, patient_keys, visit_structure

STATS_VERSION = 1
DEFAULT_AGE_EDGES: tuple[float, ...] = (1.0, 18.0, 45.0, 65.0)  # bands <1, 1-17, 18-44, 45-64, 65+
_EXPANSION_STREAM = 2
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN_DRAW = np.uint64(0xD1B54A32D192ED03)  # separates a category's successive fresh draws
_FRESH_SALT = 0x5EED  # the keep-or-redraw decision's stream
KEEP_PRIOR = 10.0  # pseudo-pairs pulling a category's keep rate towards all categories' rate
# Visit-size bands (number of categories in the visit) of the ``multi`` statistics: <3, 3-4, 5-6,
# 7-9, 10-12, 13-16, 17+.
SIZE_EDGES: tuple[int, ...] = (3, 5, 7, 10, 13, 17)
MULTI_PRIOR = 20.0  # pseudo-visits pulling a (size band, category) multi share towards the category's


def _strata_expr(age_edges: Sequence[float]) -> pl.Expr:
    band = pl.sum_horizontal([(pl.col("age") >= float(e)).cast(pl.Int64) for e in age_edges])
    return (pl.col("sex").cast(pl.Int64) * (len(age_edges) + 1) + band).alias("stratum")


def strata(age: np.ndarray, sex: np.ndarray, age_edges: Sequence[float]) -> np.ndarray:
    """Stratum ``sex * n_bands + age band`` of each patient (numpy twin of the polars expression)."""
    band = np.searchsorted(np.asarray(age_edges, dtype=np.float64), np.asarray(age, np.float64), side="right")
    return np.asarray(sex, dtype=np.int64) * (len(age_edges) + 1) + band


def _keep_probability(repeat: dict[str, list[int]] | None, n_cat: int) -> np.ndarray:
    """``[n_cat]``: probability that a category seen before in the patient keeps its codes,
    ``(same_c + k q) / (carried_c + k)`` with ``q`` the rate over all categories (1 without stats)."""
    if not repeat or not repeat.get("category"):
        return np.ones(n_cat)
    carried = np.bincount(repeat["category"], weights=repeat["carried"], minlength=n_cat)
    same = np.bincount(repeat["category"], weights=repeat["same"], minlength=n_cat)
    rate = same.sum() / carried.sum() if carried.sum() > 0 else 1.0
    return (same + KEEP_PRIOR * rate) / (carried + KEEP_PRIOR)


def _draw_numbers(
    row: np.ndarray, cat: np.ndarray, visit: np.ndarray, cat_keys: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """Per item (patient ``row``, category ``cat``, the patient's ``visit``), how many fresh draws
    its category has had in the patient up to it: 0 at the first occurrence; each later one keeps
    the last draw with probability ``keep[cat]``, else counts one more (keyed by patient,
    category and visit, so independent of batch composition)."""
    order = np.lexsort((visit, cat, row))
    r, c = row[order], cat[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    with np.errstate(over="ignore"):
        decision_keys = stable_hash(cat_keys[order] ^ (visit[order].astype(np.uint64) * _GOLDEN), _FRESH_SALT)
    fresh = ~first & (counter_uniforms(decision_keys, 1)[:, 0] >= keep[c])
    total = np.cumsum(fresh)
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    out = np.empty(len(order), dtype=np.int64)
    out[order] = total - total[group_start]
    return out


def _count_cdf(hist: np.ndarray, multi: dict[str, list[int]] | None, n_sizes: int) -> np.ndarray:
    """``[n_sizes, n_cat, kmax]`` cumulative distribution of a category's code count per visit-size
    band: ``P(n >= 2)`` from the band's multi share (smoothed towards the category's share in
    ``hist``), and how many beyond one from the category's own ``hist``."""
    total = hist.sum(1)
    cdf = np.cumsum(hist / total[:, None], axis=1)
    if not multi or not multi["category"]:
        return np.broadcast_to(cdf, (n_sizes, *cdf.shape))
    share = 1.0 - hist[:, 0] / total  # [n_cat]
    tail = hist[:, 1:].sum(1)
    pooled_tail = hist[:, 1:].sum(0)
    beyond = np.where(tail[:, None] > 0, hist[:, 1:], pooled_tail[None, :])  # [n_cat, kmax - 1]
    if beyond.shape[1] == 0:  # every category has a single code: nothing to choose
        return np.broadcast_to(cdf, (n_sizes, *cdf.shape))
    beyond = beyond / np.maximum(beyond.sum(1, keepdims=True), 1e-300)
    if not pooled_tail.any():
        beyond[:, 0] = 1.0
    visits = np.zeros((n_sizes, hist.shape[0]))
    has_multi = np.zeros_like(visits)
    cell = (np.asarray(multi["size"], np.int64), np.asarray(multi["category"], np.int64))
    np.add.at(visits, cell, multi["visits"])
    np.add.at(has_multi, cell, multi["multi"])
    p = (has_multi + MULTI_PRIOR * share[None, :]) / (visits + MULTI_PRIOR)  # [n_sizes, n_cat]
    probs = np.concatenate([(1 - p)[..., None], p[..., None] * beyond[None]], axis=2)
    return np.cumsum(probs, axis=2)


def expansion_stats(
    cohort: Cohort | str | os.PathLike,
    tokenizer: HierarchicalTokenizer,
    age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
    split: str = "train",
    curves: bool = True,
    min_cell: int = MIN_CELL,
) -> dict[str, Any]:
    """Aggregate counts stage 2 samples from, and the codes' fitted age curves, as plain lists
    (checkpoint-safe once passed through :func:`~ehrgen.privacy.small_cells.safe_expansion_stats`).

    ``code_counts``: occurrences of each vocabulary code per (sex, age band) stratum;
    ``per_visit``: how many visits hold ``n`` codes of a category (only vocabulary codes count);
    ``multi``: per visit-size band (:data:`SIZE_EDGES`, on the visit's number of categories) and
    category, how many visits hold the category (``visits``) and how many hold more than one of
    its codes (``multi``);
    ``repeat``: per category, how many pairs of consecutive visits of a patient both hold it
    (``carried``) and in how many of those its codes are the same (``same``);
    ``curves`` (when ``curves``): each code's age-and-sex curve inside its category
    (:mod:`ehrgen.sampling.code_curves`), fitted against the shares the expander derives from
    the small-cell-safe totals, for codes with at least ``min_cell`` occurrences.
    """
    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    edges = [float(e) for e in age_edges]
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise InputError(f"expansion age_edges must increase, got {edges}")
    lo = tokenizer.code_offset
    vocab = pl.DataFrame(
        {
            "code": tokenizer.codes,
            "code_idx": np.arange(len(tokenizer.codes), dtype=np.int64),
            "cat_idx": tokenizer.code_to_category[lo:] - tokenizer.category_offset,
        }
    )
    events = (
        cohort.scan(split)
        .select("sex", "age", "visits")
        .with_row_index("patient")
        .explode("visits")
        .with_row_index("visit")
        .select(
            "patient",
            _strata_expr(edges),
            "sex",
            "age",
            "visit",
            pl.col("visits").struct.field("codes").alias("code"),
        )
        .explode("code")
        .join(vocab.lazy(), on="code", how="inner")
        .collect()
    )
    codes = events.group_by("stratum", "code_idx").len().sort("stratum", "code_idx")
    per_cell = events.group_by("visit", "cat_idx").len("n")  # codes of a category in one visit
    per_visit = per_cell.group_by("cat_idx", "n").len("count").sort("cat_idx", "n")
    size = pl.sum_horizontal([(pl.len().over("visit") >= e).cast(pl.Int64) for e in SIZE_EDGES])
    multi = (
        per_cell.with_columns(size.alias("size"))
        .group_by("size", "cat_idx")
        .agg(pl.len().alias("visits"), (pl.col("n") > 1).sum().alias("multi"))
        .sort("size", "cat_idx")
    )
    # visits are numbered in patient order, so a patient's next visit is visit + 1
    sets = events.group_by("patient", "visit", "cat_idx").agg(pl.col("code_idx").sort().alias("set"))
    following = sets.with_columns(pl.col("visit") - 1).rename({"set": "next"})
    pairs = sets.join(following, on=["patient", "visit", "cat_idx"], how="inner")
    repeat = (
        pairs.group_by("cat_idx")
        .agg(pl.len().alias("carried"), (pl.col("set") == pl.col("next")).sum().alias("same"))
        .sort("cat_idx")
    )
    out = {
        "version": STATS_VERSION,
        "categories": list(tokenizer.categories),
        "codes": list(tokenizer.codes),
        "age_edges": edges,
        "code_counts": {
            "stratum": codes["stratum"].to_list(),
            "code": codes["code_idx"].to_list(),
            "count": codes["len"].to_list(),
        },
        "per_visit": {
            "category": per_visit["cat_idx"].to_list(),
            "n": per_visit["n"].to_list(),
            "count": per_visit["count"].to_list(),
        },
        "size_edges": list(SIZE_EDGES),
        "multi": {
            "size": multi["size"].to_list(),
            "category": multi["cat_idx"].to_list(),
            "visits": multi["visits"].to_list(),
            "multi": multi["multi"].to_list(),
        },
        "repeat": {
            "category": repeat["cat_idx"].to_list(),
            "carried": repeat["carried"].to_list(),
            "same": repeat["same"].to_list(),
        },
    }
    if curves:
        cat_of_code = vocab["cat_idx"].to_numpy()
        totals = np.bincount(events["code_idx"].to_numpy(), minlength=len(tokenizer.codes))
        shares = category_shares(suppress(totals, min_cell), cat_of_code, len(tokenizer.categories))
        coef = fit_code_curves(events, cat_of_code, shares, totals >= min_cell, CURVE_KNOTS, CURVE_RIDGE)
        out["curves"] = {
            "knots": list(CURVE_KNOTS),
            "ridge": CURVE_RIDGE,
            "min_count": int(min_cell),
            "coef": coef.tolist(),
        }
    return out


class GivenCodes(NamedTuple):
    """Real codes behind the forced category prefixes of a batch (conditional generation).

    ``codes``: each patient's code-level token sequence (``HierarchicalTokenizer.encode_codes``);
    ``prefix_len``: tokens of the category-level prefix; ``dropped_visits``: oldest visits cut
    from the category sequence before the prefix was taken (``truncate_oldest``).
    """

    codes: list[np.ndarray]
    prefix_len: np.ndarray
    dropped_visits: np.ndarray


class CodeExpander:
    """Category-level sequences -> visits of specific codes (see the module docstring)."""

    def __init__(
        self,
        tokenizer: HierarchicalTokenizer,
        stats: dict[str, Any],
        prior: float = 1.0,
        rules: Sequence[ValidityRule] = VALIDITY_RULES,
    ) -> None:
        if not isinstance(stats, dict) or stats.get("version") != STATS_VERSION:
            raise InputError(f"expansion statistics: expected a dict with version {STATS_VERSION}")
        if stats["categories"] != list(tokenizer.categories) or stats["codes"] != list(tokenizer.codes):
            raise InputError(
                "expansion statistics were computed for another vocabulary than the checkpoint's tokenizer"
            )
        if prior < 0:
            raise InputError(f"hierarchical.prior must be >= 0, got {prior}")
        self.tokenizer = tokenizer
        self.age_edges = [float(e) for e in stats["age_edges"]]
        n_strata = 2 * (len(self.age_edges) + 1)
        n_cat, n_codes = len(tokenizer.categories), len(tokenizer.codes)
        self.cat_lo, self.code_lo = tokenizer.category_offset, tokenizer.code_offset

        cc = stats["code_counts"]
        counts = np.zeros((n_strata, n_codes), dtype=np.float64)
        np.add.at(
            counts, (np.asarray(cc["stratum"], np.int64), np.asarray(cc["code"], np.int64)), cc["count"]
        )
        cat_of_code = tokenizer.code_to_category[self.code_lo :] - self.cat_lo
        # per-code totals over all strata: kept apart when small per-stratum cells were suppressed
        totals = np.asarray(stats["code_totals"], np.float64) if "code_totals" in stats else counts.sum(0)
        share = category_shares(totals, cat_of_code, n_cat)
        # fitted age curves (newer checkpoints) replace the per-band counts and their prior
        self.curves = stats.get("curves")
        self.weights = counts + float(prior) * share[None, :] if self.curves is None else None
        if self.curves is not None:
            self.log_share = np.log(share)
            self.coef = np.asarray(self.curves["coef"], np.float64)
            if self.coef.shape[2] != n_codes:
                raise InputError("expansion statistics: curve coefficients for another vocabulary")

        sizes = np.bincount(cat_of_code, minlength=n_cat)
        self.item_ok = sizes > 0  # a category without vocabulary codes cannot be expanded
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # codes are contiguous per category
        kmax = max(int(sizes.max()) if n_cat else 1, 1)
        offsets = np.arange(kmax)
        self.cand_valid = offsets[None, :] < sizes[:, None]  # [n_cat, kmax]
        self.candidates = np.where(self.cand_valid, starts[:, None] + offsets[None, :], 0)

        pv = stats["per_visit"]
        hist = np.zeros((n_cat, kmax), dtype=np.float64)
        n_idx = np.clip(np.asarray(pv["n"], np.int64), 1, kmax) - 1
        np.add.at(hist, (np.asarray(pv["category"], np.int64), n_idx), pv["count"])
        pooled = hist.sum(0) if hist.sum() > 0 else np.eye(1, kmax).ravel()
        hist = np.where(hist.sum(1, keepdims=True) > 0, hist, pooled[None, :])
        self.size_edges = [int(e) for e in stats.get("size_edges", [])] if "multi" in stats else []
        self.n_cdf = _count_cdf(hist, stats.get("multi"), len(self.size_edges) + 1)  # [size, cat, kmax]

        self.keep = _keep_probability(stats.get("repeat"), n_cat)

        self.rules = tuple(rules)
        self.membership = rule_membership(tokenizer.codes, self.rules)  # [R, n_codes]
        self._codes_arrow = pa.array(tokenizer.codes, type=pa.string())

    @classmethod
    def from_cohort(
        cls,
        cohort: Cohort | str | os.PathLike,
        tokenizer: HierarchicalTokenizer,
        age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
        prior: float = 1.0,
    ) -> CodeExpander:
        """Statistics computed from the train split of ``cohort`` (when the checkpoint lacks them)."""
        return cls(tokenizer, expansion_stats(cohort, tokenizer, age_edges), prior)

    def expand(
        self,
        tokens: np.ndarray,
        age: np.ndarray,
        sex: np.ndarray,
        index: np.ndarray,
        seed: int,
        validity: bool = True,
        given: GivenCodes | None = None,
    ) -> pa.ListArray:
        """Category sequences ``[B, L]`` -> ``list<list<string>>`` code visits, one row per patient.

        ``given`` (conditional generation): the categories inside each patient's forced prefix
        take the patient's real codes of that category and visit instead of drawn ones.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        valid, opens = visit_structure(tokens)
        is_cat = (tokens >= self.cat_lo) & (tokens < self.code_lo) & valid
        row, col = np.nonzero(is_cat)
        cat = tokens[is_cat] - self.cat_lo
        visit_of = np.cumsum(opens.ravel())[is_cat.ravel()] - 1
        keys = patient_keys(np.asarray(index, dtype=np.int64), seed, _EXPANSION_STREAM)
        local_visit = visit_of - (np.cumsum(opens.sum(1)) - opens.sum(1))[row]
        with np.errstate(over="ignore"):  # (patient, category, draw): a kept category repeats its codes
            cat_keys = keys[row] ^ ((cat.astype(np.uint64) + np.uint64(1)) * _GOLDEN)
            draw = _draw_numbers(row, cat, local_visit, cat_keys, self.keep).astype(np.uint64)
            item_keys = stable_hash(cat_keys + draw * _GOLDEN_DRAW, 0)  # draw 0: the first occurrence's

        kmax = self.candidates.shape[1]
        u = counter_uniforms(item_keys, kmax + 1)  # column 0: how many; 1..: which

        cand = self.candidates[cat]  # [M, kmax]
        if self.curves is not None:
            log_w = self.log_share[None, :] + curve_log_weights(self.coef, self.curves["knots"], age, sex)
            log_w = log_w[row[:, None], cand]
            # relative to the item's best code: the weights only rank draws, and exp stays finite
            best = np.where(self.cand_valid[cat], log_w, -np.inf).max(1, keepdims=True)
            log_w = log_w - np.where(np.isfinite(best), best, 0.0)
            w = np.exp(log_w) * self.cand_valid[cat]
        else:
            w = self.weights[strata(age, sex, self.age_edges)[row][:, None], cand] * self.cand_valid[cat]
        if validity:
            sex_arr = np.asarray(sex)
            for rule, member in zip(self.rules, self.membership, strict=True):
                forbidden = ~rule.allows(sex_arr, np.asarray(age, dtype=np.float64))  # [B]
                w[forbidden[row][:, None] & member[cand]] = 0.0
        categories_in_visit = np.bincount(visit_of, minlength=int(opens.sum()))[visit_of]
        size = np.searchsorted(np.asarray(self.size_edges, np.int64), categories_in_visit, side="right")
        howmany = 1 + (self.n_cdf[size, cat] <= u[:, :1]).sum(1)
        howmany = np.minimum(howmany, (w > 0).sum(1))
        is_given = np.zeros(len(row), dtype=bool) if given is None else col < given.prefix_len[row]
        howmany[is_given] = 0
        with np.errstate(divide="ignore"):
            key = np.where(w > 0, np.log(np.maximum(u[:, 1:], 1e-300)) / w, -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")
        take = np.arange(kmax)[None, :] < howmany[:, None]
        chosen = np.take_along_axis(cand, order, axis=1)[take]  # items in order, codes by draw
        item_of = np.repeat(np.arange(len(row)), howmany)
        if given is not None and is_given.any():
            real_item, real_code = self._given_codes(given, row, local_visit, cat, is_given)
            item_of = np.concatenate([item_of, real_item])
            chosen = np.concatenate([chosen, real_code])
            order = np.argsort(item_of, kind="stable")  # items in sequence order, codes in source order
            item_of, chosen = item_of[order], chosen[order]

        codes_per_visit = np.bincount(visit_of[item_of], minlength=int(opens.sum())).astype(np.int64)
        inner = pa.ListArray.from_arrays(_offsets(codes_per_visit), self._codes_arrow.take(pa.array(chosen)))
        return pa.ListArray.from_arrays(_offsets(opens.sum(1)), inner)

    def _given_codes(
        self, given: GivenCodes, row: np.ndarray, visit: np.ndarray, cat: np.ndarray, is_given: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item, code index) of the real codes that fill the given items, matched on (patient, visit, category)."""
        lengths = np.array([len(s) for s in given.codes], dtype=np.int64)
        seq = np.concatenate(given.codes) if len(given.codes) else np.zeros(0, np.int64)
        seq_row = np.repeat(np.arange(len(given.codes)), lengths)
        opens = seq == VISIT_START
        starts = np.cumsum(lengths) - lengths
        visits_before = np.cumsum(opens) - opens  # exclusive count over the whole batch
        local_visit = np.cumsum(opens) - 1 - visits_before[starts][seq_row] - given.dropped_visits[seq_row]
        is_code = (seq >= self.code_lo) & (local_visit >= 0)
        code_cat = self.tokenizer.code_to_category[np.where(is_code, seq, 0)] - self.cat_lo
        n_vis = int(max(local_visit.max(initial=0), visit.max(initial=0))) + 1
        n_cat = len(self.tokenizer.categories)

        def cell(r: np.ndarray, v: np.ndarray, c: np.ndarray) -> np.ndarray:
            return (r * n_vis + v) * n_cat + c

        items = np.flatnonzero(is_given)
        item_cells = cell(row[items], visit[items], cat[items])
        sort = np.argsort(item_cells, kind="stable")
        code_cells = cell(seq_row[is_code], local_visit[is_code], code_cat[is_code])
        pos = np.clip(np.searchsorted(item_cells[sort], code_cells), 0, max(len(items) - 1, 0))
        hit = (item_cells[sort][pos] == code_cells) if len(items) else np.zeros(len(code_cells), dtype=bool)
        return items[sort][pos][hit], (seq[is_code] - self.code_lo)[hit]
