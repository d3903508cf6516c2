"""Model-based evaluation of a trained checkpoint on real patients (``evaluate ckpt=...``).

Kept above :mod:`ehrgen.module` (which uses the torchmetrics of :mod:`ehrgen.metrics.lm`): the
metrics package never imports the LightningModule, so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ehrgen.metrics.lm import IGNORE_INDEX, ReconstructionJaccard


def _teacher_forced(
    module: torch.nn.Module, enc: list, seqs: list, age: Tensor, sex: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, decoder_input_ids, labels)`` of the decoder teacher-forced on ``seqs``."""
    from ehrgen.data.datamodule import pad_stack
    from ehrgen.data.vocab import PAD

    input_ids, attention_mask = pad_stack(enc, PAD)
    dec, dec_mask = pad_stack([s[:-1] for s in seqs], PAD)
    labels, _ = pad_stack([s[1:] for s in seqs], PAD)
    out = module.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=dec,
        decoder_attention_mask=dec_mask,
        age=age,
        sex=sex,
    )
    return out.logits.float(), dec, labels


def _nll_sums(
    module: torch.nn.Module, enc: list, seqs: list, targets: list, age: Tensor, sex: Tensor
) -> tuple[float, int]:
    """Summed NLL and count over the ``targets`` positions (boolean arrays over ``seq[1:]``)."""
    from ehrgen.data.datamodule import pad_stack

    logits, _, labels = _teacher_forced(module, enc, seqs, age, sex)
    want, _ = pad_stack([t.astype("int64") for t in targets], 0)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    chosen = want.bool()
    return float(nll[chosen].sum()), int(chosen.sum())


def _previous_visit_items(dec: Tensor, lo: int, hi: int) -> Tensor:
    """``[B, L, K]`` content columns (token id - lo) of the previous visit's items at each position;
    ``hi - lo`` (a zero column appended by the caller) pads."""
    from ehrgen.data.vocab import VISIT_START

    ids = dec.numpy()
    batch, length = ids.shape
    visit = np.cumsum(ids == VISIT_START, axis=1)  # 1-based visit number of each position
    is_item = (ids >= lo) & (ids < hi) & (visit > 0)
    b, t = np.nonzero(is_item)
    # rank of each item inside its (row, visit), to place it in a [B, n_visits + 1, K] table
    key = b * (length + 1) + visit[b, t]
    rank = np.arange(len(key)) - np.searchsorted(key, key)
    width = int(rank.max()) + 1 if len(rank) else 1
    table = np.full((batch, length + 1, width), hi - lo, dtype=np.int64)
    table[b, visit[b, t], rank] = ids[b, t] - lo
    previous = np.clip(visit - 1, 0, None)  # visit 1 looks up row 0, which holds no items
    return torch.from_numpy(table[np.arange(batch)[:, None], previous])


def _calibration_sums(
    logits: Tensor, dec: Tensor, labels: Tensor, content: tuple[int, int]
) -> dict[str, list[float]]:
    """Predicted and observed events, ``name -> [sum of predicted probabilities, observed count]``.

    The probabilities are renormalised over the tokens the sampler's grammar allows there:
    ``{<v>, </s>}`` after a ``<\\v>``; ``<\\v>`` and the content tokens inside a visit.
    """
    from ehrgen.data.vocab import EOS, UNK, VISIT_END, VISIT_START

    lo, hi = content
    boundary = (dec == VISIT_END) & ((labels == VISIT_START) | (labels == EOS))
    pair = logits[..., [VISIT_START, EOS]].softmax(-1)[..., 1]
    first = boundary & (boundary.cumsum(1) == 1)

    def item(x: Tensor) -> Tensor:  # <unk> stands for a code (one the vocabulary does not hold)
        return ((x >= lo) & (x < hi)) | (x == UNK)

    in_visit = item(dec) & ((labels == VISIT_END) | item(labels))
    allowed = torch.cat([logits[..., VISIT_END : VISIT_END + 1], logits[..., lo:hi]], -1).softmax(-1)
    # Carry: every position that writes the next item of a visit after the first (from its <v>).
    writing = ((dec == VISIT_START) | item(dec)) & ((labels == VISIT_END) | item(labels))
    previous = _previous_visit_items(dec, lo, hi)
    has_previous = writing & (previous < hi - lo).any(-1)
    codes = torch.cat([allowed[..., 1:], allowed.new_zeros(*allowed.shape[:2], 1)], -1)
    carried_p = codes.gather(-1, previous).sum(-1)
    carried = (previous == (labels - lo).clamp(min=0)[..., None]).any(-1) & (labels >= lo) & (labels < hi)
    return {
        "stop": [float(pair[boundary].sum()), float((labels[boundary] == EOS).sum())],
        "first_stop": [float(pair[first].sum()), float((labels[first] == EOS).sum())],
        "visit_end": [float(allowed[..., 0][in_visit].sum()), float((labels[in_visit] == VISIT_END).sum())],
        "carry": [float(carried_p[has_previous].sum()), float(carried[has_previous].sum())],
    }


AGE_PARTS = ("first_visit", "later_visits")


def _item_age_totals(
    seqs: Sequence[np.ndarray], ages: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Occurrences of each content token over ``seqs`` and the sum of their patients' ages."""
    items = [s[(s >= lo) & (s < hi)] - lo for s in seqs]
    flat = np.concatenate(items) if items else np.zeros(0, np.int64)
    age = np.repeat(np.asarray(ages, np.float64), [len(x) for x in items])
    return np.bincount(flat, minlength=hi - lo).astype(np.float64), np.bincount(flat, age, minlength=hi - lo)


def _typical_age_rows(
    seqs: Sequence[np.ndarray],
    ages: np.ndarray,
    lo: int,
    hi: int,
    totals: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``[B, hi - lo]`` each content token's typical age for each patient of ``seqs``, leave-one-out:
    the mean age over the token's occurrences in the *other* patients' sequences (so a patient's
    own age never scores its own codes); the mean age of all occurrences where no other patient
    has it. ``totals``: :func:`_item_age_totals` of every patient (default: of ``seqs``), so a batch
    at a time needs ``[batch, vocabulary]`` memory only."""
    width = hi - lo
    total_n, total_age = _item_age_totals(seqs, ages, lo, hi) if totals is None else totals
    counts = np.zeros((len(seqs), width))
    for i, seq in enumerate(seqs):
        counts[i] = np.bincount(seq[(seq >= lo) & (seq < hi)] - lo, minlength=width)
    fill = total_age.sum() / max(total_n.sum(), 1.0)
    others_n = total_n[None, :] - counts
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = (total_age[None, :] - counts * np.asarray(ages, np.float64)[:, None]) / others_n
    return np.where(others_n > 0, rows, fill)


def _age_sums(
    logits: Tensor, dec: Tensor, labels: Tensor, content: tuple[int, int], ages: Tensor, typical: Tensor
) -> dict[str, np.ndarray]:
    """Sums for the ``age_*_calibration`` metrics, ``part -> [Σ a·m, Σ m, Σ a·o, Σ o, Σ a, N]``
    over the positions whose label is a content token, in the patient's first visit or later ones:
    ``a`` the patient's age, ``m = Σ_c p(c) typical[c]`` with ``p`` renormalised over the content
    tokens (which item, given that one comes), ``o = typical[label]``."""
    from ehrgen.data.vocab import VISIT_START

    lo, hi = content
    is_code = (labels >= lo) & (labels < hi)
    visit = (dec == VISIT_START).cumsum(1)
    p = logits[..., lo:hi].float().softmax(-1)
    model = (p * typical[:, None, :].to(p.dtype)).sum(-1)
    observed = typical.gather(1, (labels - lo).clamp(0, hi - lo - 1)).to(p.dtype)
    age = ages.to(p.dtype)[:, None].expand_as(model)
    out = {}
    for part, where in zip(AGE_PARTS, (is_code & (visit == 1), is_code & (visit > 1)), strict=True):
        a, m, o = age[where].double(), model[where].double(), observed[where].double()
        out[part] = np.array([float((a * m).sum()), float(m.sum()), float((a * o).sum()), float(o.sum()),
                              float(a.sum()), float(where.sum())])  # fmt: skip
    return out


def _age_calibration(sums: np.ndarray) -> float:
    """``Σ (a - ā) m / Σ (a - ā) o`` from :func:`_age_sums` (1: codes spread over ages as the data's do)."""
    am, m, ao, o, a, n = sums
    if n == 0:
        return float("nan")
    mean = a / n
    den = ao - mean * o
    return float((am - mean * m) / den) if den else float("nan")  # a plain float: checkpoints keep it


def _load(
    ckpt: str, cohort: str, splits: Sequence[str], max_patients: int
) -> tuple[torch.nn.Module, list[np.ndarray], Tensor, Tensor]:
    """The checkpoint's module and up to ``max_patients`` real patients as it reads them."""
    import polars as pl

    from ehrgen.data.cohort import Cohort
    from ehrgen.data.datamodule import truncate_oldest
    from ehrgen.module import PromptBartModule

    module = PromptBartModule.load(ckpt).eval()
    tok = module.tokenizer
    frame = pl.concat([Cohort(cohort).read(s) for s in splits]).head(max_patients)
    seqs = [truncate_oldest(s, module.model.max_length) for s in tok.encode_batch(frame["visits"].to_arrow())]
    ages = torch.tensor(frame["age"].to_numpy(), dtype=torch.float32)
    sexes = torch.tensor(frame["sex"].to_numpy().astype("int64"))
    return module, seqs, ages, sexes


def _calibration(
    module: torch.nn.Module, seqs: list[np.ndarray], ages: Tensor, sexes: Tensor, batch_size: int
) -> dict[str, float]:
    """The ``*_calibration`` metrics (see :func:`model_metrics`), demographics-only encoder."""
    from ehrgen.data.vocab import BOS, EOS

    content = module.tokenizer.content_range
    empty = np.array([BOS, EOS], dtype=np.int64)
    age_years = ages.double().numpy()
    totals = _item_age_totals(seqs, age_years, *content)
    sums: dict[str, list[float]] = {}
    age_sums = {part: np.zeros(6) for part in AGE_PARTS}
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        part = slice(start, start + batch_size)
        logits, dec, labels = _teacher_forced(module, [empty] * len(chunk), chunk, ages[part], sexes[part])
        for name, (p, n) in _calibration_sums(logits, dec, labels, content).items():
            sums.setdefault(name, [0.0, 0.0])
            sums[name][0] += p
            sums[name][1] += n
        typical = torch.from_numpy(_typical_age_rows(chunk, age_years[part], *content, totals))
        for name, values in _age_sums(logits, dec, labels, content, ages[part], typical).items():
            age_sums[name] += values
    out = {f"{name}_calibration": p / n if n else float("nan") for name, (p, n) in sums.items()}
    out.update({f"age_{part}_calibration": _age_calibration(v) for part, v in age_sums.items()})
    return out


@torch.no_grad()
def calibration_metrics(
    ckpt: str, cohort: str, splits: Sequence[str] = ("test",), max_patients: int = 2000, batch_size: int = 32
) -> dict[str, float]:
    """Only the ``*_calibration`` metrics of :func:`model_metrics` (one forward pass per batch)."""
    module, seqs, ages, sexes = _load(ckpt, cohort, splits, max_patients)
    return _calibration(module, seqs, ages, sexes, batch_size)


@torch.no_grad()
def model_metrics(
    ckpt: str, cohort: str, splits: Sequence[str] = ("test",), max_patients: int = 2000, batch_size: int = 32
) -> dict[str, float]:
    """Model-based metrics of a checkpoint on real patients (``splits`` of ``cohort``).

    All perplexities are ``exp(mean NLL)`` over the scored code tokens (the mean, not a median):

    - ``perplexity``: every code token, encoder given demographics only (``<s> </s>``): how
      likely the model finds real patients when it writes them from scratch.
    - ``temporal_perplexity``: codes of visit ``t`` given visits ``< t`` in the encoder (every
      ``t >= 1`` of every patient), the PromptEHR next-visit task.
    - ``spatial_perplexity``: in each visit with >= 2 codes, every other code is replaced by
      ``<mask>`` in the encoder and those codes are scored (the PromptEHR within-visit task).
    - ``recon_jaccard``: first half of the codes given, rest generated greedily (as in validation).

    And, with the demographics-only encoder of generation, whether the model ends patients and
    visits as often as the real ones end (the expected count of ends over the observed count;
    1 = calibrated, > 1 ends too early): ``stop_calibration`` (``</s>`` after each visit),
    ``first_stop_calibration`` (after the first visit only) and ``visit_end_calibration``
    (``<\\v>`` after each code); and ``carry_calibration``, the expected number of the previous
    visit's codes written again over the observed number (> 1 carries too much). And whether the
    codes it writes spread over ages as the data's do, in the first visit and in later ones:
    ``age_first_visit_calibration`` / ``age_later_visits_calibration`` (1 = calibrated; < 1 codes
    drawn towards middle age, > 1 pushed away from it; docs/metrics.md).
    """
    from ehrgen.data.vocab import BOS, EOS, MASK, VISIT_START

    module, seqs, ages, sexes = _load(ckpt, cohort, splits, max_patients)
    lo, hi = module.tokenizer.content_range
    empty = np.array([BOS, EOS], dtype=np.int64)
    totals = {"perplexity": [0.0, 0], "temporal_perplexity": [0.0, 0], "spatial_perplexity": [0.0, 0]}
    recon = ReconstructionJaccard()

    def add(name: str, jobs: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            idx = torch.tensor([j[0] for j in chunk])
            s, n = _nll_sums(
                module,
                [j[1] for j in chunk],
                [seqs[j[0]] for j in chunk],
                [j[2] for j in chunk],
                ages[idx],
                sexes[idx],
            )
            totals[name][0] += s
            totals[name][1] += n

    full, temporal, spatial = [], [], []
    for i, seq in enumerate(seqs):
        is_code = (seq >= lo) & (seq < hi)
        full.append((i, empty, is_code[1:]))
        visit_of = np.cumsum(seq == VISIT_START)  # visit number (1-based) of every position
        starts = np.flatnonzero(seq == VISIT_START)
        for t in range(1, len(starts)):
            encoder = np.concatenate([seq[: starts[t]], [EOS]])
            temporal.append((i, encoder, (is_code & (visit_of == t + 1))[1:]))
        for v in range(1, len(starts) + 1):
            pos = np.flatnonzero(is_code & (visit_of == v))
            if len(pos) >= 2:
                hidden = np.zeros(len(seq), dtype=bool)
                hidden[pos[1::2]] = True
                encoder = np.where(hidden, MASK, seq)
                spatial.append((i, encoder, hidden[1:]))
    add("perplexity", full)
    add("temporal_perplexity", temporal)
    add("spatial_perplexity", spatial)

    from ehrgen.data.datamodule import pad_stack
    from ehrgen.data.vocab import PAD

    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        dec, dec_mask = pad_stack([s[:-1] for s in chunk], PAD)
        labels, label_mask = pad_stack([s[1:] for s in chunk], PAD)
        batch = {
            "decoder_input_ids": dec,
            "decoder_attention_mask": dec_mask,
            "labels": labels.masked_fill(label_mask == 0, IGNORE_INDEX),
            "age": ages[start : start + batch_size],
            "sex": sexes[start : start + batch_size],
        }
        preds, targets = module.reconstruct(batch)
        if preds:
            recon.update(preds, targets)

    out = {name: float(np.exp(s / n)) if n else float("nan") for name, (s, n) in totals.items()}
    out.update(_calibration(module, seqs, ages, sexes, batch_size))
    out["recon_jaccard"] = float(recon.compute()) if recon.denominator > 0 else float("nan")
    out["n_patients"] = float(len(seqs))
    return out
