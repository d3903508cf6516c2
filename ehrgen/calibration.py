"""Post-hoc calibration of a trained checkpoint: three logit offsets fit on held-out patients.

A model trained for the default budget decides *within* a visit nearly as the data do but is
biased at the decisions that shape a patient *across* visits: teacher-forced on its own training
patients, it ends patients 3 % more often than they end and writes 5 % fewer of the previous
visit's codes (``model_metrics.calibration_metrics``; docs/benchmarks.md, fidelity). The bias is
in the learnt conditionals, so the sampler cannot remove it; four scalars can:

- ``patient_end``: added to the ``</s>`` logit (decided after each ``<\\v>``, against ``<v>``);
- ``visit_end``: added to the ``<\\v>`` logit (decided after each item, against the items);
- ``previous``: added to the logit of every item of the previous visit (carry-over pathway);
- ``older``: added to the logit of every item of an older visit only.

The last two are apart because the model's bias differs in sign: it writes too few of the previous
visit's items and too many of older visits' ones.

They are the maximum-likelihood offsets on real patients of a split the weights were not fit to
(``val`` by default), with the demographics-only encoder that generation uses and the sampler's
grammar (each decision renormalised over the tokens allowed there). The problem is convex in the
offsets; four parameters cannot memorise patients.

Teacher-forced calibration is not the whole story: fed real histories the fitted model writes the
previous visit's codes as often as real patients do, but fed its own visits it writes about 6 %
fewer of them, and its visits come out 2-3 % short (the exposure gap of an autoregressive model;
docs/benchmarks.md). :func:`match_generation` then moves the ``previous`` and ``visit_end``
offsets until patients *generated* from the training demographics carry the same share of a
visit's items into the next visit, and hold as many items per visit, as the real patients of the
training and calibration splits (Newton steps over generations with common random numbers). Two scalars matched to two aggregates of the
training data; every other metric stays an independent check. ``python -m ehrgen.train``
calibrates its best and last checkpoints when training ends (``calibration.split``);
:func:`calibrate_checkpoint` does it for an existing one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ehrgen.data.vocab import BOS, EOS, VISIT_END, VISIT_START
from ehrgen.errors import InputError
from ehrgen.model_metrics import _calibration, _load, _teacher_forced
from ehrgen.models.prompt_bart import (
    CURRENT,
    EARLIER,
    N_OFFSETS,
    OFFSET_PREVIOUS,
    OFFSET_VISIT_END,
    PREVIOUS,
    carry_history,
)

OFFSET_NAMES = ("patient_end", "visit_end", "previous", "older")  # order of PromptBart.logit_offsets
GROUP_END, GROUP_PREVIOUS, GROUP_OLDER, GROUP_OTHER = 0, 1, 2, 3  # what a within-visit label is
NEG = -1.0e30  # log of an empty group
# Real data below which a generation-match target is noisier than the match's 1 % tolerance:
# visits for the items per visit (sd about 6 items), consecutive visit pairs for the carry share.
MIN_VISITS = 2000
MIN_PAIRS = 500

log = logging.getLogger(__name__)


def decision_statistics(
    logits: Tensor, dec: Tensor, labels: Tensor, content: tuple[int, int]
) -> dict[str, Tensor]:
    """Per-decision sufficient statistics of the offset likelihood (raw, uncalibrated ``logits``).

    ``boundary``: ``[n, 2]`` of (``</s>`` logit - ``<v>`` logit, 1 if the patient ended).
    ``item``: ``[n, 6]`` of (``<\\v>`` logit or :data:`NEG` where the grammar forbids it, log-sum-exp
    over the allowed items of the previous visit, of older visits only, over the other allowed
    items, the label's logit, the label's ``GROUP_*``). Items already in the open visit are not
    allowed (the grammar); ``<unk>`` labels are not scored (the sampler never writes it).
    """
    lo, hi = content
    logits = logits.double()
    boundary = (dec == VISIT_END) & ((labels == VISIT_START) | (labels == EOS))
    gap = logits[..., EOS] - logits[..., VISIT_START]
    stats = {"boundary": torch.stack([gap[boundary], (labels[boundary] == EOS).double()], 1)}

    is_item = (labels >= lo) & (labels < hi)
    writing = ((dec == VISIT_START) | ((dec >= lo) & (dec < hi))) & ((labels == VISIT_END) | is_item)
    history = carry_history(dec, hi)[..., lo:hi]  # the model's own PREVIOUS / EARLIER / CURRENT marks
    items = logits[..., lo:hi]
    previous = torch.where(history == PREVIOUS, items, NEG).logsumexp(-1)
    older = torch.where(history == EARLIER, items, NEG).logsumexp(-1)
    other = torch.where(history == 0, items, NEG).logsumexp(-1)
    end = torch.where(dec == VISIT_START, NEG, logits[..., VISIT_END])  # a visit holds >= 1 item
    column = (labels - lo).clamp(0, hi - lo - 1)
    label_mark = history.gather(-1, column[..., None]).squeeze(-1)
    item_group = torch.full_like(label_mark, GROUP_OTHER, dtype=torch.long)
    item_group[label_mark == PREVIOUS] = GROUP_PREVIOUS
    item_group[label_mark == EARLIER] = GROUP_OLDER
    group = torch.where(is_item, item_group, GROUP_END)
    label_logit = torch.where(is_item, items.gather(-1, column[..., None]).squeeze(-1), end)
    valid = writing & ~(is_item & (label_mark == CURRENT))  # a malformed repeat cannot be scored
    stats["item"] = torch.stack(
        [x[valid] for x in (end, previous, older, other, label_logit, group.double())], 1
    )
    return stats


def offset_nll(offsets: Tensor, boundary: Tensor, item: Tensor) -> Tensor:
    """Summed negative log-likelihood of all decisions under ``offsets [4]`` (module docstring)."""
    gap, ended = boundary[:, 0] + offsets[0], boundary[:, 1]
    nll_boundary = torch.nn.functional.softplus(gap) - ended * gap  # -log p(</s> or <v>)
    by_group = torch.cat([offsets[1:], offsets.new_zeros(1)])  # GROUP_END, _PREVIOUS, _OLDER, _OTHER
    nll_item = (item[:, :4] + by_group).logsumexp(1) - (item[:, 4] + by_group[item[:, 5].long()])
    return nll_boundary.sum() + nll_item.sum()


def offset_objective(offsets: Tensor, boundary: Tensor, item: Tensor) -> Tensor:
    """:func:`offset_nll` plus a standard-normal prior on each offset (in logits).

    With thousands of decisions the prior moves nothing; on a tiny split, where every patient
    may end after one visit, it keeps the estimate finite. At the optimum, for each offset ``b``:
    ``expected - observed = -b`` (so ``*_calibration = 1 - b / observed``).
    """
    return offset_nll(offsets, boundary, item) + 0.5 * offsets.square().sum()


def fit_offsets(boundary: Tensor, item: Tensor, carried: bool = True) -> Tensor:
    """Maximum a-posteriori offsets (:func:`offset_objective`; strictly convex: Newton's method
    converges in a few steps).

    ``carried=False`` (a model without the carry-over pathway) keeps the item offsets at 0.
    """
    free = torch.tensor([1.0, 1.0, float(carried), float(carried)], dtype=torch.float64)
    offsets = torch.zeros(N_OFFSETS, dtype=torch.float64)

    def objective(x: Tensor) -> Tensor:
        return offset_objective(x, boundary, item)

    for _ in range(50):
        grad = torch.autograd.functional.jacobian(objective, offsets)
        hess = torch.autograd.functional.hessian(objective, offsets)
        grad, hess = grad * free, hess * free[:, None] * free[None, :] + torch.diag(1.0 - free)
        step = torch.linalg.solve(hess, grad)  # the prior makes the Hessian positive definite
        # Backtracking keeps every step a descent step (the objective is convex, not quadratic).
        scale, before = 1.0, float(objective(offsets))
        while scale > 1e-4 and float(objective(offsets - scale * step)) > before:
            scale /= 2
        offsets = offsets - scale * step
        if float(step.abs().max()) * scale < 1e-7:
            break
    return offsets.float()


@torch.no_grad()
def collect_statistics(
    module: torch.nn.Module, seqs: Sequence[np.ndarray], ages: Tensor, sexes: Tensor, batch_size: int = 32
) -> tuple[Tensor, Tensor]:
    """:func:`decision_statistics` over ``seqs``, teacher-forced with the uncalibrated model."""
    module.model.logit_offsets.zero_()
    content = module.tokenizer.content_range
    empty = np.array([BOS, EOS], dtype=np.int64)
    boundary, item = [], []
    for start in range(0, len(seqs), batch_size):
        chunk = list(seqs[start : start + batch_size])
        part = slice(start, start + batch_size)
        logits, dec, labels = _teacher_forced(module, [empty] * len(chunk), chunk, ages[part], sexes[part])
        stats = decision_statistics(logits, dec, labels, content)
        boundary.append(stats["boundary"])
        item.append(stats["item"])
    return torch.cat(boundary), torch.cat(item)


def carry_share(seqs: Sequence[np.ndarray], lo: int, hi: int) -> tuple[float, int]:
    """``(Σ |v ∩ v+1| / Σ |v|, number of consecutive visit pairs)`` over the token sequences: the
    share of a visit's items ``[lo, hi)`` that the patient's next visit holds again (the
    ``carry_over`` of docs/metrics.md, on tokens)."""
    shared = total = pairs = 0
    for seq in seqs:
        seq = np.asarray(seq)
        visits = np.split(seq, np.flatnonzero(seq == VISIT_START))[1:]
        items = [set(v[(v >= lo) & (v < hi)].tolist()) for v in visits]
        for before, after in zip(items, items[1:], strict=False):
            shared += len(before & after)
            total += len(before)
            pairs += 1
    return (shared / total if total else float("nan")), pairs


def items_per_visit(seqs: Sequence[np.ndarray], lo: int, hi: int) -> tuple[float, int]:
    """``(mean number of items [lo, hi) per visit, number of visits)`` over the token sequences
    (up to each ``</s>``)."""
    items = visits = 0
    for seq in seqs:
        seq = np.asarray(seq)
        end = np.flatnonzero(seq == EOS)
        seq = seq[: end[0]] if len(end) else seq
        items += int(((seq >= lo) & (seq < hi)).sum())
        visits += int((seq == VISIT_START).sum())
    return (items / visits if visits else float("nan")), visits


def _carry_slope(value: float) -> float:
    return 0.15  # d share / d logit near the fit, measured on the simulator (docs/benchmarks.md)


def _length_slope(value: float) -> float:
    return -0.15 * value  # items per visit L per logit of <\v>: -1.5 at L = 11 (docs/benchmarks.md)


# What the generation match moves, and the prior slope (statistic per logit) of its Newton steps.
MATCHED = {"carry": (OFFSET_PREVIOUS, _carry_slope), "items_per_visit": (OFFSET_VISIT_END, _length_slope)}


def _generated_statistics(
    module: torch.nn.Module, age: np.ndarray, sex: np.ndarray, seed: int, batch_size: int
) -> dict[str, float]:
    from ehrgen.sampling.sampler import sample_for_check

    seqs = sample_for_check(module.model, module.tokenizer, age, sex, seed, batch_size)
    lo, hi = module.tokenizer.content_range
    return {"carry": carry_share(seqs, lo, hi)[0], "items_per_visit": items_per_visit(seqs, lo, hi)[0]}


@torch.no_grad()
def match_generation(
    module: torch.nn.Module,
    targets: dict[str, float],
    age: np.ndarray,
    sex: np.ndarray,
    seed: int = 0,
    batch_size: int = 256,
    tolerance: float = 0.01,
    max_rounds: int = 5,
) -> dict[str, Any]:
    """Move the offsets of :data:`MATCHED` (in place) until patients generated for ``(age, sex)``
    have the ``targets`` (``carry`` share, ``items_per_visit``) within relative ``tolerance``.

    Every round generates once and takes a Newton step on each offset (capped at 0.5 logits);
    the same patient keys every round. Returns the rounds (offsets and statistics) and
    the offsets kept: those of the round with the smallest largest relative error.
    """
    offsets = module.model.logit_offsets
    names = [name for name in MATCHED if name in targets]
    rounds: list[dict[str, dict[str, float]]] = []

    def error(r: dict[str, dict[str, float]]) -> float:
        gaps = [abs(r["statistics"][n] - targets[n]) / abs(targets[n]) for n in names]
        return max(gaps) if all(math.isfinite(g) for g in gaps) else math.inf

    # Newton steps. The slope of each statistic is the one it showed over the whole way from the
    # first round (a long baseline) once its offset has moved by 0.1 logit, within a factor of 4
    # of the prior slope of :data:`MATCHED`; before that, the prior. A round-to-round secant
    # chases noise: a small logit change flips a few sampled tokens, after which a patient's
    # remaining tokens differ, so even with common random numbers the statistics of 4,000
    # generated patients carry about 1 % of noise, as much as the last steps move them.
    for _ in range(max_rounds):
        current = {n: float(offsets[MATCHED[n][0]]) for n in names}
        statistics = _generated_statistics(module, age, sex, seed, batch_size)
        rounds.append({"offsets": current, "statistics": {n: statistics[n] for n in names}})
        if error(rounds[-1]) <= tolerance or not math.isfinite(error(rounds[-1])):
            break
        for n in names:
            index, prior = MATCHED[n]
            slope = prior(statistics[n])
            moved = current[n] - rounds[0]["offsets"][n]
            if abs(moved) >= 0.1:
                seen = (statistics[n] - rounds[0]["statistics"][n]) / moved
                if 0.25 <= seen / slope <= 4.0:
                    slope = seen
            step = (targets[n] - statistics[n]) / slope
            offsets[index] = current[n] + max(-0.5, min(0.5, step))
    best = min(rounds, key=error)
    for n in names:
        offsets[MATCHED[n][0]] = best["offsets"][n]
    return {"targets": dict(targets), "rounds": rounds, "offsets": best["offsets"]}


def calibrate_checkpoint(
    ckpt: str | os.PathLike,
    cohort: str | os.PathLike,
    splits: Sequence[str] = ("val",),
    max_patients: int = 5000,
    batch_size: int = 32,
    match_patients: int = 4000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the logit offsets of ``ckpt`` on ``splits`` of ``cohort`` and write them into it.

    ``match_patients > 0``: then :func:`match_generation` with that many generated patients, the
    targets being the items per visit (from at least :data:`MIN_VISITS` real visits) and, with
    the carry-over pathway, the carry share (from at least :data:`MIN_PAIRS` consecutive visit
    pairs) of the ``train`` split and ``splits``. The checkpoint is rewritten through a temp file and a rename. Returns what was
    done (also stored in the checkpoint under ``ehrgen.calibration``, aggregates only): the
    offsets, the patients used, the ``*_calibration`` metrics on them before and after the
    teacher-forced fit, and the matching rounds.
    """
    import polars as pl

    from ehrgen.data.cohort import Cohort
    from ehrgen.sampling.demographics import DemographicsModel

    path = Path(ckpt)
    module, seqs, ages, sexes = _load(str(path), str(cohort), splits, max_patients)
    if not seqs:
        raise InputError(
            f"calibration: split(s) {list(splits)} of {cohort} hold no patients; set calibration.split"
        )
    boundary, item = collect_statistics(module, seqs, ages, sexes, batch_size)
    with torch.no_grad():
        before = _calibration(module, seqs, ages, sexes, batch_size)
        module.model.logit_offsets.copy_(fit_offsets(boundary, item, carried=bool(module.model.carry)))
        after = _calibration(module, seqs, ages, sexes, batch_size)
    record: dict[str, Any] = {
        "splits": list(splits),
        "n_patients": len(seqs),
        "before": before,
        "after": after,
    }
    if match_patients > 0:
        real = Cohort(cohort)
        frame = pl.concat([real.read(s).select("visits") for s in dict.fromkeys(["train", *splits])])
        lo, hi = module.tokenizer.content_range
        real_seqs = module.tokenizer.encode_batch(frame["visits"].to_arrow())
        targets: dict[str, float] = {}
        mean_items, visits = items_per_visit(real_seqs, lo, hi)
        share, pairs = carry_share(real_seqs, lo, hi)
        if visits >= MIN_VISITS:
            targets["items_per_visit"] = mean_items
        if module.model.carry and pairs >= MIN_PAIRS:
            targets["carry"] = share
        if len(targets) < 1 + int(module.model.carry):
            log.info(
                "calibration: %d real visits and %d consecutive pairs (fewer than %d / %d are too noisy "
                "a target): matched %s",
                visits,
                pairs,
                MIN_VISITS,
                MIN_PAIRS,
                sorted(targets) or "nothing",
            )
        if targets:
            age, sex = DemographicsModel.from_cohort(real).sample(match_patients, np.random.default_rng(seed))
            record["generation_match"] = match_generation(module, targets, age, sex, seed)
    offsets = module.model.logit_offsets.detach().cpu().clone()
    record["offsets"] = dict(zip(OFFSET_NAMES, offsets.tolist(), strict=True))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["model.logit_offsets"] = offsets
    checkpoint.setdefault("ehrgen", {})["calibration"] = record
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    log.info("calibrated %s on %d patients: %s", path.name, len(seqs), record["offsets"])
    return record
