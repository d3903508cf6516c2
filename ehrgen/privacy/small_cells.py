"""The small-cell rule for everything that leaves the machine with a checkpoint.

A count of real patients (or their visits or codes) between 1 and ``min_cell - 1`` can describe
one person: "one 97-year-old woman", "the only visit with code X in boys under one". CMS forbids
publishing such cells from its data (cell size 11), and MIMIC's data-use agreement forbids
sharing what identifies a patient. So every count stored in a checkpoint is either 0 or at least
``min_cell`` (default 11): histograms are first *coarsened* (adjacent age bins merged until every
cell passes), and what still fails is *suppressed* (set to 0). A checkpoint also holds no real
identifier: the largest real subject id is stored as the power of ten above it, which is all
generation needs (synthetic ids start there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_CELL = 11


def suppress(counts: np.ndarray | list[int], min_cell: int = MIN_CELL) -> np.ndarray:
    """``counts`` with every cell in ``[1, min_cell)`` set to 0."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.where(counts >= min_cell, counts, 0)


def reportable(counts: np.ndarray, min_cell: int = MIN_CELL) -> np.ndarray:
    """Mask of cells that may be shown: 0 or at least ``min_cell``."""
    counts = np.asarray(counts)
    return (counts == 0) | (counts >= min_cell)


def passes(counts: np.ndarray, min_cell: int = MIN_CELL) -> bool:
    """True when every cell is 0 or at least ``min_cell``."""
    counts = np.asarray(counts)
    return bool(np.all((counts == 0) | (counts >= min_cell)))


def coarsen_age_histogram(
    edges: list[float], counts: np.ndarray, min_cell: int = MIN_CELL
) -> tuple[list[float], np.ndarray]:
    """Merge adjacent age bins of a ``counts[sex][bin]`` histogram until every cell passes.

    Bins ``[edges[i], edges[i+1])`` are merged left to right into groups whose per-sex counts are
    each 0 or >= ``min_cell``; an unfinished group at the end joins the group before it. The last
    bin (ages >= ``edges[-1]``, the clamp value) keeps its own meaning and is never merged: its
    failing cells are suppressed. Returns the new edges (a subset of ``edges``) and counts.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_bins = len(edges)
    groups: list[list[int]] = []
    current: list[int] = []
    for b in range(n_bins - 1):
        current.append(b)
        if passes(counts[:, current].sum(1), min_cell):
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    merged = np.stack([counts[:, g].sum(1) for g in groups], axis=1)
    new_edges = [float(edges[g[0]]) for g in groups] + [float(edges[-1])]
    merged = np.concatenate([merged, counts[:, -1:]], axis=1)
    return new_edges, suppress(merged, min_cell)


def safe_expansion_stats(stats: dict[str, Any], min_cell: int = MIN_CELL) -> dict[str, Any]:
    """Hierarchical stage-2 statistics with every count cell 0 or >= ``min_cell``.

    Per-stratum code counts that fail are suppressed, but their mass is kept in a per-code total
    over all strata (``code_totals``, itself suppressed below ``min_cell``), which the expander
    uses as each code's share of its category; per-visit histograms are suppressed cell-wise
    (a category left without one falls back to the pooled histogram); a category's repeat counts
    are dropped unless both its kept and its changed pairs pass (it then takes the overall rate),
    and so is a (visit-size band, category) multi-code cell unless its visits with one code and
    with several both pass (it then takes the category's overall share). Fitted age curves are
    parameters, not counts; a code whose total is suppressed keeps no curve.
    """
    cc = stats["code_counts"]
    count = np.asarray(cc["count"], dtype=np.int64)
    code = np.asarray(cc["code"], dtype=np.int64)
    totals = suppress(
        np.bincount(code, weights=count, minlength=len(stats["codes"])).astype(np.int64), min_cell
    )
    keep = count >= min_cell
    pv = stats["per_visit"]
    pv_count = np.asarray(pv["count"], dtype=np.int64)
    pv_keep = pv_count >= min_cell
    safe = {
        **stats,
        "min_cell": int(min_cell),
        "code_counts": {k: np.asarray(v)[keep].tolist() for k, v in cc.items()},
        "code_totals": totals.tolist(),
        "per_visit": {k: np.asarray(v)[pv_keep].tolist() for k, v in pv.items()},
    }
    if "curves" in stats:  # a code whose total is suppressed has no curve either
        cv = stats["curves"]
        coef = np.asarray(cv["coef"], dtype=np.float64) * (np.asarray(totals)[: len(stats["codes"])] > 0)
        safe["curves"] = {**cv, "min_count": max(int(cv["min_count"]), int(min_cell)), "coef": coef.tolist()}
    if "multi" in stats:  # a (size band, category) cell is kept only when its one- and multi-code counts pass
        mu = stats["multi"]
        visits, multi = np.asarray(mu["visits"], np.int64), np.asarray(mu["multi"], np.int64)
        ok = reportable(multi, min_cell) & reportable(visits - multi, min_cell) & (visits >= min_cell)
        safe["multi"] = {k: np.asarray(v)[ok].tolist() for k, v in mu.items()}
    if "repeat" in stats:  # a category is kept only when its kept and changed pair counts both pass
        rp = stats["repeat"]
        same, carried = np.asarray(rp["same"], np.int64), np.asarray(rp["carried"], np.int64)
        ok = reportable(same, min_cell) & reportable(carried - same, min_cell) & (carried >= min_cell)
        safe["repeat"] = {k: np.asarray(v)[ok].tolist() for k, v in rp.items()}
    return safe
