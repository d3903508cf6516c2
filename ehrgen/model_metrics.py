"""Model-based evaluation of a trained checkpoint on real patients (``evaluate ckpt=...``).

Kept above :mod:`ehrgen.module` (which uses the torchmetrics of :mod:`ehrgen.metrics.lm`): the
metrics package never imports the LightningModule, so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ehrgen.metrics.lm import IGNORE_INDEX, ReconstructionJaccard


def _nll_sums(
    module: torch.nn.Module, enc: list, seqs: list, targets: list, age: Tensor, sex: Tensor
) -> tuple[float, int]:
    """Summed NLL and count over the ``targets`` positions (boolean arrays over ``seq[1:]``)."""
    from ehrgen.data.datamodule import pad_stack
    from ehrgen.data.vocab import PAD

    input_ids, attention_mask = pad_stack(enc, PAD)
    dec, dec_mask = pad_stack([s[:-1] for s in seqs], PAD)
    labels, _ = pad_stack([s[1:] for s in seqs], PAD)
    want, _ = pad_stack([t.astype("int64") for t in targets], 0)
    out = module.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=dec,
        decoder_attention_mask=dec_mask,
        age=age,
        sex=sex,
    )
    nll = F.cross_entropy(out.logits.float().transpose(1, 2), labels, reduction="none")
    chosen = want.bool()
    return float(nll[chosen].sum()), int(chosen.sum())


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
    """
    import numpy as np
    import polars as pl

    from ehrgen.data.cohort import Cohort
    from ehrgen.data.datamodule import truncate_oldest
    from ehrgen.data.vocab import BOS, EOS, MASK, VISIT_START
    from ehrgen.module import PromptBartModule

    module = PromptBartModule.load(ckpt).eval()
    tok = module.tokenizer
    lo, hi = tok.content_range
    frame = pl.concat([Cohort(cohort).read(s) for s in splits]).head(max_patients)
    max_len = module.model.max_length
    seqs = [truncate_oldest(s, max_len) for s in tok.encode_batch(frame["visits"].to_arrow())]
    ages = torch.tensor(frame["age"].to_numpy(), dtype=torch.float32)
    sexes = torch.tensor(frame["sex"].to_numpy().astype("int64"))
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
    out["recon_jaccard"] = float(recon.compute()) if recon.denominator > 0 else float("nan")
    out["n_patients"] = float(len(seqs))
    return out
