"""Exact copies of training patients, counted by hashing each patient's set of items.

A patient is an exact copy when its set of items (codes for the flat model, categories for the
hierarchical one; visits and order ignored) equals some training patient's set: Jaccard distance
0, the quantity ``privacy/jaccard/copy_rate`` of :mod:`ehrgen.privacy.suite` measures by nearest
neighbour search. Here it is a set lookup, cheap enough to run at every validation epoch.

An independent real sample collides with the training patients too (common short patients: one
visit with one frequent code), so a copy rate means something only next to that reference: the
held-out patients' own collision rate with the same training set. :func:`excess_z` is the
two-proportion z statistic of the difference, the stopping rule of
:class:`ehrgen.callbacks.CopyRateMonitor`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def item_set_keys(seqs: Iterable[np.ndarray], lo: int, hi: int) -> list[bytes]:
    """One hashable key per token sequence: its sorted distinct content ids ``[lo, hi)``."""
    keys = []
    for seq in seqs:
        ids = np.asarray(seq, dtype=np.int64)
        keys.append(np.unique(ids[(ids >= lo) & (ids < hi)]).tobytes())
    return keys


def copies(keys: Iterable[bytes], reference: set[bytes]) -> int:
    """How many of ``keys`` are in ``reference`` (the training patients' keys)."""
    return sum(k in reference for k in keys)


def excess_z(copies_query: int, n_query: int, copies_holdout: int, n_holdout: int) -> float:
    """z statistic of ``copies_query / n_query - copies_holdout / n_holdout``.

    Unpooled standard error; each rate is moved to ``(c + 0.5) / (n + 1)`` inside the variance so
    that a zero count does not make the error zero (a z of infinity after one chance copy).
    """
    if n_query <= 0 or n_holdout <= 0:
        raise ValueError("excess_z needs at least one query and one held-out patient")
    p_q, p_h = copies_query / n_query, copies_holdout / n_holdout
    v_q, v_h = ((c + 0.5) / (n + 1) for c, n in ((copies_query, n_query), (copies_holdout, n_holdout)))
    se = math.sqrt(v_q * (1 - v_q) / n_query + v_h * (1 - v_h) / n_holdout)
    return (p_q - p_h) / se
