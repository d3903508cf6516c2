"""Exact nearest neighbours between sparse patient vectors, blocked, bounded memory, multi-process.

Similarities come from one sparse x dense product per reference block:
``S = Q @ R_blockᵀ`` gives ``|A ∩ B|`` for binary rows (Jaccard = |A∩B| / (|A| + |B| - |A∩B|))
and the cosine for L2-normalised rows. Blocks run over the *reference* rows so that the
per-query reduction (top-k) is along contiguous memory; each worker keeps a running top-k for
all queries over its share of reference blocks and the parent merges the shares in order.
Workers are forked after the matrices are stored in module globals, so they read the parent's
pages (copy-on-write, never written) instead of receiving copies.

Ties go to the lower index. Two empty records are identical (distance 0); an empty record is
at distance 1 from every non-empty one.

A search can also run over a contiguous range of query rows only (``rows=(a, b)``, one block of
a job array): a row's neighbours do not depend on the other query rows, and :func:`concat`
joins the parts of consecutive ranges into exactly the result of the whole search.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

METRICS = ("jaccard", "cosine")
_G: dict = {}  # read-only inputs of the current search, inherited by forked workers


@dataclass
class Neighbours:
    """``distance``/``index`` ``[n_query, k]`` ascending; ``reverse_*`` ``[n_ref]`` nearest query.

    ``reverse_similarity`` is the similarity behind ``reverse_distance``: parts of a search over
    different query rows are merged on it (two similarities can map to one float32 distance).
    """

    distance: np.ndarray
    index: np.ndarray
    reverse_distance: np.ndarray | None = None
    reverse_index: np.ndarray | None = None
    reverse_similarity: np.ndarray | None = None


def _similarity(q_chunk: sp.csr_matrix, q0: int, dense: np.ndarray, r0: int, buf: np.ndarray) -> np.ndarray:
    """``[chunk rows, block cols]`` float32 similarities; ``buf`` is scratch of the same shape."""
    sim = np.asarray(q_chunk @ dense)
    if _G["metric"] == "jaccard":
        q1, r1 = q0 + sim.shape[0], r0 + sim.shape[1]
        den = buf[: sim.shape[0], : sim.shape[1]]
        # sizes are at least 1, so the denominator never vanishes
        np.add(_G["q_size"][q0:q1, None], _G["r_size"][None, r0:r1], out=den)
        np.subtract(den, sim, out=den)
        np.divide(sim, den, out=sim)
    return sim


def _search_range(task: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Running top-k of every query over reference rows ``start:stop``, and the reverse nearest.

    Reference rows go in blocks (one dense ``[V, rb]`` slab each); queries in chunks small
    enough that a chunk's similarities stay in cache for the Jaccard transform and reductions.
    """
    start, stop = task
    query, ref, off = _G["query"], _G["ref"], _G["q_offset"]  # query rows are off + 0..nq-1
    k, rb, qc, self_match, want_rev = _G["k"], _G["rb"], _G["qc"], _G["self_match"], _G["reverse"]
    nq = query.shape[0]
    chunks = [(q0, query[q0 : q0 + qc]) for q0 in range(0, nq, qc)]
    best_v = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    rev_v = np.full(stop - start, -np.inf, dtype=np.float32)
    rev_i = np.full(stop - start, -1, dtype=np.int64)
    buf = np.empty((qc, rb), dtype=np.float32)
    for r0 in range(start, stop, rb):
        r1 = min(r0 + rb, stop)
        dense = np.ascontiguousarray(ref[r0:r1].toarray().T)
        col_v = rev_v[r0 - start : r1 - start]
        col_i = rev_i[r0 - start : r1 - start]
        for q0, q_chunk in chunks:
            sim = _similarity(q_chunk, q0, dense, r0, buf)
            rows = np.arange(sim.shape[0])
            if self_match:
                own = np.arange(max(off + q0, r0), min(off + q0 + sim.shape[0], r1))
                sim[own - off - q0, own - r0] = -np.inf
            if want_rev:
                m = sim.max(0)
                upd = np.flatnonzero(m > col_v)  # strict: an earlier (lower) query keeps a tie
                if upd.size:
                    col_i[upd] = off + q0 + (sim[:, upd] == m[upd]).argmax(0)
                    col_v[upd] = m[upd]
            kk = min(k, sim.shape[1])
            cand_v = np.full((len(rows), k), -np.inf, dtype=np.float32)
            cand_i = np.full((len(rows), k), -1, dtype=np.int64)
            for j in range(kk):
                a = sim.argmax(1)
                cand_v[:, j], cand_i[:, j] = sim[rows, a], a + r0
                if j + 1 < kk:
                    sim[rows, a] = -np.inf
            sl = slice(q0, q0 + len(rows))
            best_v[sl], best_i[sl] = _merge(best_v[sl], best_i[sl], cand_v, cand_i, k)
    return best_v, best_i, rev_v, rev_i


def _merge(v1: np.ndarray, i1: np.ndarray, v2: np.ndarray, i2: np.ndarray, k: int):
    """Top-k of two candidate lists; stable, so on ties the first list (lower indices) wins."""
    if k == 1:
        better = v2[:, 0] > v1[:, 0]
        return np.where(better[:, None], v2, v1), np.where(better[:, None], i2, i1)
    v, i = np.concatenate([v1, v2], 1), np.concatenate([i1, i2], 1)
    order = np.argsort(-v, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)


def _with_empty_marker(query: sp.csr_matrix, ref: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Give empty rows one shared extra feature, so two empty records are identical and an
    empty record shares nothing with a non-empty one (for Jaccard and cosine alike)."""
    q_empty, r_empty = np.diff(query.indptr) == 0, np.diff(ref.indptr) == 0
    if not (q_empty.any() and r_empty.any()):
        return query, ref
    return tuple(
        sp.hstack([m, sp.csr_matrix(e.astype(np.float32)[:, None])], format="csr")
        for m, e in ((query, q_empty), (ref, r_empty))
    )


def _sizes(m: sp.csr_matrix, metric: str) -> np.ndarray:
    """Set sizes for Jaccard (1 for empty rows, whose similarity is then 0); unused for cosine."""
    size = np.diff(m.indptr).astype(np.float32) if metric == "jaccard" else np.ones(m.shape[0], np.float32)
    return np.maximum(size, np.float32(1.0))


def nearest(
    query: sp.csr_matrix,
    ref: sp.csr_matrix,
    metric: str = "jaccard",
    k: int = 1,
    self_match: bool = False,
    reverse: bool = False,
    workers: int = 1,
    block: int = 512,
    chunk: int = 256,
    rows: tuple[int, int] | None = None,
) -> Neighbours:
    """Exact ``k`` nearest reference rows of every query row (and optionally the reverse).

    ``self_match``: query and ref are the same matrix and a row may not be its own neighbour
    (other rows with the same content still count: exact duplicates give distance 0).
    ``block`` reference rows are densified at a time (``V x block`` float32 per worker) and
    ``chunk`` query rows are scored against them at once, so a worker's memory beyond the
    shared inputs is ``O(V * block + chunk * block + n_query * k)``.
    ``rows=(a, b)``: search query rows ``a:b`` only (``distance``/``index`` ``[b - a, k]``; the
    reverse is then the nearest among those rows; indices stay those of the whole ``query``).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; expected one of {', '.join(METRICS)}")
    if query.shape[1] != ref.shape[1]:
        raise ValueError("query and reference vectors must share the vocabulary")
    nq, nr = query.shape[0], ref.shape[0]
    if nr == 0 or nq == 0:
        raise ValueError("nearest-neighbour search needs non-empty query and reference sets")
    a, b = (0, nq) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= a <= b <= nq:
        raise ValueError(f"rows={rows}: expected 0 <= start <= stop <= {nq} query rows")
    if a == b:
        return _empty(k, nr, reverse)
    # the marker is decided on the whole query set, so that every range sees the same vectors
    query, ref = _with_empty_marker(
        sp.csr_matrix(query, dtype=np.float32), sp.csr_matrix(ref, dtype=np.float32)
    )
    rb = int(max(1, min(nr, block)))
    workers = max(1, min(workers, os.cpu_count() or 1, -(-nr // rb)))
    n_tasks = min(-(-nr // rb), 4 * workers)
    edges = np.linspace(0, nr, n_tasks + 1).astype(int)
    tasks = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    _G.update(
        query=query[a:b] if (a, b) != (0, nq) else query,
        q_offset=a,
        ref=ref,
        metric=metric,
        k=k,
        rb=rb,
        qc=int(max(1, chunk)),
        self_match=self_match,
        reverse=reverse,
        q_size=_sizes(query, metric)[a:b],
        r_size=_sizes(ref, metric),
    )
    try:
        if workers > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_search_range, tasks, chunksize=1)
        else:
            parts = [_search_range(t) for t in tasks]
    finally:
        _G.clear()
    best_v, best_i = parts[0][0], parts[0][1]
    for v, i, _, _ in parts[1:]:
        best_v, best_i = _merge(best_v, best_i, v, i, k)
    out = Neighbours(_to_distance(best_v), best_i)
    if reverse:
        out.reverse_similarity = np.concatenate([p[2] for p in parts])
        out.reverse_distance = _to_distance(out.reverse_similarity)
        out.reverse_index = np.concatenate([p[3] for p in parts])
    return out


def _empty(k: int, n_ref: int, reverse: bool) -> Neighbours:
    """The result over no query rows (a block past the end of a small query set)."""
    out = Neighbours(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
    if reverse:
        out.reverse_similarity = np.full(n_ref, -np.inf, np.float32)
        out.reverse_distance = _to_distance(out.reverse_similarity)
        out.reverse_index = np.full(n_ref, -1, np.int64)
    return out


def concat(parts: Sequence[Neighbours]) -> Neighbours:
    """One search's result from its parts over consecutive query row ranges, in row order.

    Forward results are concatenated; the reverse keeps, per reference row, the most similar
    query of all parts and, on ties, the earlier part's (the lower query index, as one search).
    """
    if not parts:
        raise ValueError("concat needs at least one part")
    out = Neighbours(np.concatenate([p.distance for p in parts]), np.concatenate([p.index for p in parts]))
    if parts[0].reverse_similarity is None:
        return out
    best_v, best_i = parts[0].reverse_similarity.copy(), parts[0].reverse_index.copy()
    for p in parts[1:]:
        better = p.reverse_similarity > best_v  # strict: the earlier part keeps a tie
        best_v[better], best_i[better] = p.reverse_similarity[better], p.reverse_index[better]
    out.reverse_similarity, out.reverse_distance, out.reverse_index = best_v, _to_distance(best_v), best_i
    return out


def _to_distance(sim: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - sim.astype(np.float64), 0.0, 1.0).astype(np.float32)
