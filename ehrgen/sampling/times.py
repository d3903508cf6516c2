"""Times of generated visits: stays and gaps drawn from the model's visit-time head.

After a batch is decoded, one teacher-forced pass over the generated sequences gives the decoder
state at each visit's closing position (the same states the sampler saw step by step: the KV
cache equals the full pass, tests/test_prompt_bart.py); the head's gap and stay classes are
drawn there, restricted to the bins the training data occupies, and values inside the bins.
Keeping it out of the decoding loop leaves the loop, compaction and beam search untouched.

Randomness is counter-based like the tokens': patient ``i``'s visit ``j`` uses uniforms
``4j .. 4j+3`` of the key ``(seed, i)`` on its own stream, and the first admission another
stream's first uniform, so times do not depend on the batch size or the shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from ehrgen.data.datamodule import pad_stack
from ehrgen.data.vocab import BOS, EOS, PAD, VISIT_END
from ehrgen.models.prompt_bart import PromptBart
from ehrgen.models.visit_times import (
    DAY_S,
    GAP,
    GAP_EDGES_DAYS,
    STAY,
    STAY_EDGES_DAYS,
    from_bins,
    visit_time_values,
)
from ehrgen.sampling.exporters import FIRST_ADMISSION_WINDOW, datetime_seconds
from ehrgen.sampling.sampler import counter_uniforms, inverse_cdf, patient_keys, visit_structure

_TIME_STREAM = 3
_ANCHOR_STREAM = 4
_MINUTE_S = 60


@dataclass
class KnownTimes:
    """Real times of the first ``n_known[i]`` visits of each generated patient (conditional
    generation keeps them): admission and end in epoch seconds (end NaN when unknown), flat over
    those visits in order."""

    admit_s: np.ndarray
    end_s: np.ndarray
    n_known: np.ndarray


@dataclass
class VisitTimes:
    """Per visit (one per ``<v>`` of each row, rows in order): admission and end (epoch seconds,
    end NaN when the model was trained without stays), and the number of visits of each row."""

    admit_s: np.ndarray
    end_s: np.ndarray
    n_visits: np.ndarray


def closing_positions(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, position, visit number within the row)`` of the state that closes each visit: the
    position before its ``<\\v>`` (an unclosed visit: its last position)."""
    valid, opens = visit_structure(tokens)
    rows, starts = np.nonzero(opens)
    stop = valid.sum(1)  # index of </s> (or the width)
    nxt = np.append(starts[1:], 0)
    same_row = np.append(rows[1:] == rows[:-1], False)
    boundary = np.where(same_row, nxt, stop[rows])  # next <v>, or the row's end
    last = boundary - 1
    closed = tokens[rows, last] == VISIT_END
    position = np.maximum(np.where(closed, last - 1, last), starts)
    first_of_row = np.concatenate([[0], np.flatnonzero(~same_row[:-1]) + 1]) if len(rows) else rows
    number = np.arange(len(rows)) - np.repeat(first_of_row, np.diff(np.append(first_of_row, len(rows))))
    return rows, position, number


@torch.inference_mode()
def sample_visit_times(
    model: PromptBart,
    tokens: np.ndarray,
    age: np.ndarray,
    sex: np.ndarray,
    index: np.ndarray,
    seed: int,
    encoder_ids: Sequence[np.ndarray] | None = None,
    known: KnownTimes | None = None,
) -> VisitTimes:
    """Admission and end times of every visit in ``tokens [B, L]`` (sampler output).

    ``known``: real times of each patient's first visits (a conditional prefix), kept as they
    are; the generated visits after them follow from the last one's end and generated gap.
    """
    head = model.time_head
    assert head is not None
    device = next(model.parameters()).device
    n = tokens.shape[0]
    rows, position, number = closing_positions(tokens)
    n_visits = np.bincount(rows, minlength=n)
    if len(rows) == 0:
        empty = np.zeros(0)
        return VisitTimes(empty, empty, n_visits)

    enc = encoder_ids if encoder_ids is not None else [np.array([BOS, EOS])] * n
    enc_ids, enc_mask = pad_stack([np.asarray(e, dtype=np.int64) for e in enc], PAD)
    dec = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    width = int(position.max()) + 1
    dec = dec[:, :width]
    gap_logits, stay_logits = model.visit_time_logits(
        enc_ids.to(device),
        enc_mask.to(device),
        dec.to(device),
        (dec != PAD).long().to(device),
        torch.as_tensor(np.array(age, dtype=np.float32), device=device),
        torch.as_tensor(np.array(sex, dtype=np.int64), device=device),
    )
    r, p = torch.from_numpy(rows).to(device), torch.from_numpy(position).to(device)
    keys = patient_keys(np.asarray(index, dtype=np.int64), seed, _TIME_STREAM)
    u = counter_uniforms(keys, 4 * int(number.max() + 1)).reshape(n, -1, 4)[rows, number]  # [V, 4]
    u_t = torch.from_numpy(u).to(device)

    def draw(logits: torch.Tensor, which: int, edges: np.ndarray) -> np.ndarray:
        picked = inverse_cdf(logits[r, p].float(), u_t[:, 2 * which])
        return from_bins(picked.cpu().numpy(), u[:, 2 * which + 1], edges) * DAY_S

    gap_s = draw(gap_logits, GAP, GAP_EDGES_DAYS)
    with_stays = int(head.support[STAY][0]) >= 0
    stay_s = draw(stay_logits, STAY, STAY_EDGES_DAYS) if with_stays else np.full(len(rows), np.nan)

    lo, hi = (datetime_seconds(d) for d in FIRST_ADMISSION_WINDOW)
    anchor = counter_uniforms(patient_keys(np.asarray(index, dtype=np.int64), seed, _ANCHOR_STREAM), 1)[:, 0]
    first_s = lo + np.floor(anchor * (hi - lo) / _MINUTE_S) * _MINUTE_S
    if known is not None:
        first_s, stay_s, gap_s = _keep_known(known, n_visits, number, first_s, stay_s, gap_s)
    admit, end = chain(first_s, stay_s, gap_s, n_visits)
    return VisitTimes(admit, end, n_visits)


def _keep_known(
    known: KnownTimes,
    n_visits: np.ndarray,
    number: np.ndarray,
    first_s: np.ndarray,
    stay_s: np.ndarray,
    gap_s: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First admissions, stays and gaps with the real ones where visits are known: their stays,
    the gaps between known visits; the last known visit's gap stays generated."""
    n_known = np.minimum(known.n_known, n_visits)
    rows = np.repeat(np.arange(len(n_visits)), n_visits)
    is_known = number < n_known[rows]
    # the known visits of each row, in order, from the flat real arrays
    starts = np.cumsum(known.n_known) - known.n_known
    src = starts[rows[is_known]] + number[is_known]
    admit, end = known.admit_s[src], known.end_s[src]
    last_known = number[is_known] == n_known[rows[is_known]] - 1
    real_gap, real_stay = visit_time_values(admit, end, last_known)
    stay_s, gap_s, first_s = stay_s.copy(), gap_s.copy(), first_s.copy()
    stay_s[is_known] = real_stay * DAY_S
    gap_s[np.flatnonzero(is_known)[~last_known]] = real_gap[~last_known] * DAY_S
    has = n_known > 0
    first_s[has] = known.admit_s[starts[has]]
    return first_s, stay_s, gap_s


def chain(
    first_s: np.ndarray, stay_s: np.ndarray, gap_s: np.ndarray, n_visits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Admissions and ends (whole minutes) from each patient's first admission, each visit's stay
    (NaN: unknown, the gap then runs from the admission) and the gap after it."""
    stay_m = np.round(stay_s / _MINUTE_S)
    gap_m = np.round(gap_s / _MINUTE_S)
    starts = np.cumsum(n_visits) - n_visits
    step = np.nan_to_num(stay_m) + gap_m  # from this admission to the next
    step_before = np.concatenate([[0.0], step[:-1]])
    step_before[starts[n_visits > 0]] = 0.0
    offset = np.cumsum(step_before)
    offset -= np.repeat(offset[starts[n_visits > 0]], n_visits[n_visits > 0])
    admit = np.repeat(first_s, n_visits) + offset * _MINUTE_S
    return admit, admit + stay_m * _MINUTE_S


def with_times(visits: pa.ListArray, times: VisitTimes) -> pa.ListArray:
    """``list<list<string>>`` visits -> ``list<struct<time, end, codes>>`` with the given times."""
    inner = visits.values
    to_ts = lambda s: pa.array(  # noqa: E731
        np.where(np.isnan(s), 0, s * 1e6).astype(np.int64), type=pa.timestamp("us"), mask=np.isnan(s)
    )
    structs = pa.StructArray.from_arrays(
        [to_ts(times.admit_s), to_ts(times.end_s), inner], names=["time", "end", "codes"]
    )
    return pa.ListArray.from_arrays(visits.offsets, structs)
