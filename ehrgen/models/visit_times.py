"""Visit timing: each visit's length of stay and the gap to the next visit, as classes over bins.

A visit's times are predicted from the decoder state at the position that closes it (its last
item, whose next token is ``<\\v>``): that state has read the demographic prompts, the earlier
visits and this visit's codes. Both times are classes over log-spaced bins (an hour to decades),
a value being drawn log-uniformly inside its bin. A categorical over log bins fits what
parametric families do not: heavy tails, a spike of same-day transfers, a bump of 30-day
readmissions, years between admissions, all with relative resolution of about 25 % per bin.

The gap is from the visit's end (discharge) to the next admission when the end is known, else
from its admission: so ``next admission = end + gap`` can never precede the discharge.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor, nn

DAY_S = 86_400.0
HOUR_DAYS = 1.0 / 24.0
# Bin edges in days. The first bin is [0, 1 hour); values past the last edge fall in the last bin.
GAP_EDGES_DAYS = np.concatenate([[0.0], np.geomspace(HOUR_DAYS, 20 * 365.25, 48)])
STAY_EDGES_DAYS = np.concatenate([[0.0], np.geomspace(HOUR_DAYS, 400.0, 40)])
N_GAP_BINS, N_STAY_BINS = len(GAP_EDGES_DAYS) - 1, len(STAY_EDGES_DAYS) - 1
GAP, STAY = 0, 1  # index of each time in ``[..., 2]`` label / support tensors
IGNORE = -100


def to_bins(days: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value (days, >= 0; NaN -> :data:`IGNORE`); values past the last edge -> last bin."""
    days = np.asarray(days, dtype=np.float64)
    bins = np.clip(np.searchsorted(edges, days, side="right") - 1, 0, len(edges) - 2)
    return np.where(np.isnan(days), IGNORE, bins).astype(np.int64)


def from_bins(bins: np.ndarray, u: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Days for bin indices and uniforms ``u`` in [0, 1): uniform in the first bin (which starts at
    0), log-uniform in the others."""
    bins = np.asarray(bins, dtype=np.int64)
    lo, hi = edges[bins], edges[bins + 1]
    log_uniform = np.exp(np.log(np.maximum(lo, 1e-300)) + u * (np.log(hi) - np.log(np.maximum(lo, 1e-300))))
    # exp(log(x)) may round just outside the bin: keep every value inside its own bin
    return np.clip(np.where(bins == 0, u * hi, log_uniform), lo, np.nextafter(hi, 0))


def visit_time_values(
    time_s: np.ndarray, end_s: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(gap, stay)`` in days of visits in patient order (NaN where unknown).

    ``time_s``/``end_s``: admission and discharge in epoch seconds (float, NaN when unknown; an
    end before its admission counts as unknown); ``last``: whether each visit is its patient's
    last (no gap). The gap runs from the end when known, else from the admission, to the next
    admission; below 0 (overlapping stays) it is 0.
    """
    time_s = np.asarray(time_s, dtype=np.float64)
    end_s = np.asarray(end_s, dtype=np.float64)
    known_end = end_s >= time_s  # False for NaN
    stay = np.where(known_end, (end_s - time_s) / DAY_S, np.nan)
    start_of_gap = np.where(known_end, end_s, time_s)
    next_time = np.roll(time_s, -1)
    gap = np.maximum(next_time - start_of_gap, 0) / DAY_S  # NaN stays NaN
    return np.where(np.asarray(last, dtype=bool), np.nan, gap), stay


def visit_time_labels(time_s: np.ndarray, end_s: np.ndarray, last: np.ndarray) -> np.ndarray:
    """``[n_visits, 2]`` (gap bin, stay bin) of :func:`visit_time_values`; unknown -> :data:`IGNORE`."""
    gap, stay = visit_time_values(time_s, end_s, last)
    return np.stack([to_bins(gap, GAP_EDGES_DAYS), to_bins(stay, STAY_EDGES_DAYS)], axis=1)


def last_visit_mask(visits_per_patient: np.ndarray) -> np.ndarray:
    """Whether each visit (patients in order) is its patient's last."""
    n = np.asarray(visits_per_patient, dtype=np.int64)
    last = np.zeros(int(n.sum()), dtype=bool)
    last[np.cumsum(n[n > 0]) - 1] = True
    return last


def visits_time_labels(visits: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Labels (:func:`visit_time_labels`) of every visit of a cohort ``visits`` column, and the
    number of visits of each patient."""
    if isinstance(visits, pa.ChunkedArray):
        visits = visits.combine_chunks()
    n = pc.fill_null(pc.list_value_length(visits), 0).to_numpy().astype(np.int64)
    inner = visits.flatten()

    time_s = epoch_seconds(pc.struct_field(inner, "time"))
    end_s = epoch_seconds(pc.struct_field(inner, "end"))
    return visit_time_labels(time_s, end_s, last_visit_mask(n)), n


def epoch_seconds(timestamps: pa.Array) -> np.ndarray:
    """Timestamps as epoch seconds (float64, NaN where null)."""
    us = timestamps.cast(pa.timestamp("us")).cast(pa.int64())
    seconds = us.fill_null(0).to_numpy(zero_copy_only=False) / 1e6
    return np.where(us.is_null().to_numpy(zero_copy_only=False), np.nan, seconds)


def time_support(labels: np.ndarray, min_cell: int) -> list[list[int]]:
    """``[[gap lo, gap hi], [stay lo, stay hi]]`` from visit labels: the bins of the
    ``min_cell``-th smallest and largest value of each time (``[-1, -1]`` when too few).

    Generated times stay inside: within the data's range, and never in a bin that only a handful
    of real patients occupy at the extremes (the small-cell rule).
    """
    out = []
    for column in (GAP, STAY):
        values = np.sort(labels[:, column][labels[:, column] != IGNORE])
        out.append(
            [-1, -1] if len(values) < 2 * min_cell else [int(values[min_cell - 1]), int(values[-min_cell])]
        )
    return out


class VisitTimeHead(nn.Module):
    """Decoder state ``[..., d_model]`` -> gap logits ``[..., N_GAP_BINS]`` and stay logits."""

    def __init__(self, d_model: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, N_GAP_BINS + N_STAY_BINS)
        )
        # Which bins generation may produce (set from the training data by ehrgen.train).
        self.register_buffer("support", torch.tensor([[0, N_GAP_BINS - 1], [0, N_STAY_BINS - 1]]))

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(hidden)
        return out[..., :N_GAP_BINS], out[..., N_GAP_BINS:]

    def masked(self, logits: Tensor, which: int) -> Tensor:
        """Logits with the bins outside the training data's support at ``-inf``."""
        lo, hi = (int(v) for v in self.support[which])
        if lo < 0:
            return logits
        bins = torch.arange(logits.shape[-1], device=logits.device)
        return logits.masked_fill((bins < lo) | (bins > hi), float("-inf"))
