"""PromptBart's training loss: LM + auxiliary age/sex heads + a co-occurrence regulariser.

``loss = lm + w_age * age + w_sex * sex + w_cooc * cooc``; every term is a mean over the non-padding
label positions (``labels != -100``) so the weights do not depend on batch shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrgen.errors import InputError
from ehrgen.metrics.lm import IGNORE_INDEX
from ehrgen.models.prompt_bart import PromptBartOutput

VISIT_START_ID, VISIT_END_ID = 4, 5


# ----------------------------------------------------------------------------- LM and auxiliary heads


def _at_least_fp32(x: Tensor) -> Tensor:
    """Half-precision activations are upcast for the loss; float64 (gradcheck) is kept."""
    return x if x.dtype == torch.float64 else x.float()


def lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over positions with ``labels != -100``."""
    return F.cross_entropy(_at_least_fp32(logits.flatten(0, 1)), labels.flatten(), ignore_index=IGNORE_INDEX)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def age_loss(age_pred: Tensor, age: Tensor, labels: Tensor, age_scale: float = 100.0) -> Tensor:
    """Token-level MSE between ``age_pred [B, L]`` and the patient's ``age / age_scale``."""
    pred = _at_least_fp32(age_pred)
    target = (age.to(pred.dtype) / age_scale)[:, None].expand_as(pred)
    return _masked_mean((pred - target) ** 2, labels != IGNORE_INDEX)


def sex_loss(sex_logits: Tensor, sex: Tensor, labels: Tensor) -> Tensor:
    """Token-level cross-entropy of ``sex_logits [B, L, 2]`` against the patient's sex."""
    target = sex.long()[:, None].expand(labels.shape)
    ce = F.cross_entropy(_at_least_fp32(sex_logits).transpose(1, 2), target, reduction="none")
    return _masked_mean(ce, labels != IGNORE_INDEX)


# ----------------------------------------------------------------------------- co-occurrence


def visit_time_loss(gap_logits: Tensor, stay_logits: Tensor, time_labels: Tensor) -> Tensor:
    """Cross-entropy of the gap bins plus that of the stay bins, each a mean over the visits whose
    time is known (``time_labels [B, L, 2]``, -100 elsewhere); 0 when none is."""
    total = gap_logits.new_zeros((), dtype=torch.float32)
    for logits, target in ((gap_logits, time_labels[..., 0]), (stay_logits, time_labels[..., 1])):
        keep = target != IGNORE_INDEX
        if bool(keep.any()):
            total = total + nn.functional.cross_entropy(_at_least_fp32(logits[keep]), target[keep])
    return total


def frequent_pairs(cooc: sp.spmatrix, tau: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sparse CSR ``F = [count >= tau]`` (``C x C``, ones), with the diagonal set.

    The diagonal is marked frequent on purpose: a code is never its own "rare partner" (repeats
    within a visit are the sampler's constraint, not a co-occurrence question), and the cohort's
    matrix stores a zero diagonal. CSR, not COO: CPU sparse @ dense is ~30x faster in CSR.
    """
    if tau <= 0:
        raise InputError(f"model.loss.tau must be > 0 (a count threshold), got {tau}")
    n = _check_square(cooc)
    frequent = ((sp.csr_matrix(cooc) >= tau) + sp.identity(n, dtype=bool, format="csr")).tocsr()
    frequent.sort_indices()
    return _csr_tensor(
        torch.from_numpy(frequent.indptr.astype(np.int64)),
        torch.from_numpy(frequent.indices.astype(np.int64)),
        n,
        dtype,
    )


def _csr_tensor(crow: Tensor, col: Tensor, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    values = torch.ones(col.shape[0], dtype=dtype, device=col.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


def _check_square(cooc: sp.spmatrix) -> int:
    if cooc.ndim != 2 or cooc.shape[0] != cooc.shape[1]:
        raise InputError(f"co-occurrence matrix must be square (codes x codes), got shape {cooc.shape}")
    return int(cooc.shape[0])


def cooc_to_tensors(cooc: sp.spmatrix) -> dict[str, object]:
    """Checkpoint-safe form of a count matrix: index/value tensors and a plain shape list."""
    coo = sp.coo_matrix(cooc)
    return {
        "indices": torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64)),
        "values": torch.from_numpy(np.asarray(coo.data)),
        "shape": [int(s) for s in coo.shape],
    }


def cooc_from_tensors(payload: Mapping[str, object]) -> sp.csr_matrix:
    """Inverse of :func:`cooc_to_tensors`."""
    idx = payload["indices"].numpy()  # type: ignore[union-attr]
    values = payload["values"].numpy()  # type: ignore[union-attr]
    return sp.csr_matrix((values, (idx[0], idx[1])), shape=tuple(payload["shape"]))  # type: ignore[arg-type]


# Elements (code token x frequent partner) expanded at once; ~30 bytes each while in flight.
PARTNER_CHUNK_ELEMENTS = 1 << 21
# Rows per block of the blocked in-place cumulative sum over positions.
CUMSUM_BLOCK = 16


def cooccurrence_loss(
    logits: Tensor,
    decoder_input_ids: Tensor,
    frequent: Tensor,
    token_offset: int,
    position_mask: Tensor | None = None,
    visit_start_id: int = VISIT_START_ID,
    visit_end_id: int = VISIT_END_ID,
    *,
    chunk_elements: int = PARTNER_CHUNK_ELEMENTS,
) -> Tensor:
    r"""Expected share, among the codes, of rare partners of the codes already in the current visit.

    With ``C`` code tokens (ids ``token_offset .. token_offset + C - 1``), ``F`` the sparse ``C x C``
    0/1 indicator of frequent pairs (:func:`frequent_pairs`), ``P_t`` the softmax over the full
    vocabulary at decoder position ``t`` restricted to the code columns, and ``S_t`` the context:
    the code tokens of ``decoder_input_ids[:t+1]`` in the visit open at ``t`` (the running visit
    resets at ``<v>``; positions from ``<\v>`` up to the next ``<v>`` have an empty context; a
    repeated code counts once per occurrence)::

        rare_t(c) = sum_j (P_t[j] / m_t) (1 - F[c, j]) = 1 - (P_t F^T)[c] / m_t,   m_t = sum_j P_t[j]
        loss      = mean_{t : |S_t| > 0, position_mask_t}  (1 / |S_t|) sum_{c in S_t} rare_t(c)

    A share, not a mass: the mass ``m_t - (P_t F^T)[c]`` can also be lowered by moving probability
    from every code to ``<\v>``, which rewards ending a visit early. As a share it is a function of
    the code distribution alone and its gradient on every logit outside the code block is exactly
    0 (at 20,000 patients the change left codes per visit within noise: docs/benchmarks.md).

    How, without ``nnz(F) x positions`` work: ``sum_c (P_t F^T)[c] = P_t . N_t`` with
    ``N_t[j] = #{c in S_t : F[c, j]}``, the frequent-partner counts of the context. ``N`` depends
    only on the ids (:func:`_partner_counts`: each code token is expanded once by its CSR row of
    ``F``, and a cumulative sum over positions, reset per visit, accumulates the rows), so the
    loss is ``sum_t (1 - P_t . N_t / (|S_t| m_t)) / K``, K the positions used, with an analytic
    gradient (:class:`_LmRareShare`). Cost: ``sum over code tokens of deg_F(code)`` scattered
    elements plus a few passes over ``B*L x V`` arrays, the size of the logits.
    Used unchanged at category level for the hierarchical model (a category co-occurrence
    matrix, ``token_offset`` = category offset). Returns 0 (with a graph) when no position has
    context.
    """
    return _lm_and_rare_share(
        logits,
        None,
        decoder_input_ids,
        frequent,
        token_offset,
        position_mask,
        visit_start_id,
        visit_end_id,
        chunk_elements,
    )[1]


def lm_and_cooccurrence_loss(
    logits: Tensor,
    labels: Tensor,
    decoder_input_ids: Tensor,
    frequent: Tensor,
    token_offset: int,
    position_mask: Tensor | None = None,
    visit_start_id: int = VISIT_START_ID,
    visit_end_id: int = VISIT_END_ID,
    *,
    chunk_elements: int = PARTNER_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """``(lm_loss(logits, labels), cooccurrence_loss(logits, ...))`` from one softmax.

    The same values (the LM term bit for bit), but the two terms share the ``[B*L, V]``
    log-softmax and write one gradient for the logits instead of two that autograd then adds.
    """
    lm, cooc = _lm_and_rare_share(
        logits,
        labels,
        decoder_input_ids,
        frequent,
        token_offset,
        position_mask,
        visit_start_id,
        visit_end_id,
        chunk_elements,
    )
    assert lm is not None
    return lm, cooc


def _lm_and_rare_share(
    logits: Tensor,
    labels: Tensor | None,
    ids: Tensor,
    frequent: Tensor,
    token_offset: int,
    position_mask: Tensor | None,
    visit_start_id: int,
    visit_end_id: int,
    chunk_elements: int,
) -> tuple[Tensor | None, Tensor]:
    """Both terms (the LM one only with ``labels``) through :class:`_LmRareShare`."""
    n_codes = frequent.shape[0]
    context = _visit_context(ids, token_offset, n_codes, position_mask, visit_start_id, visit_end_id)
    if context.n_used == 0:
        return (None if labels is None else lm_loss(logits, labels)), logits.sum() * 0.0
    with torch.autocast(device_type=logits.device.type, enabled=False):
        flat = _at_least_fp32(logits.flatten(0, 1))
        counts = _partner_counts(frequent, context, flat.dtype, chunk_elements)
        used = context.size > 0
        base = used.to(flat.dtype) / context.n_used  # 1/K on used positions
        scale = base / context.size.clamp(min=1).to(flat.dtype)  # 1/(K |S_t|)
        flat_labels = None if labels is None else labels.flatten()
        lm, cooc = _LmRareShare.apply(flat, flat_labels, counts, base, scale, token_offset)
    return (None if labels is None else lm), cooc


class _LmRareShare(torch.autograd.Function):
    """LM cross-entropy and ``sum_t base_t - scale_t P_t . N_t / m_t``, with a hand-written gradient.

    ``P = softmax(x)``, ``m_t`` its code mass, ``N`` the partner counts (code columns). Written out
    so that the only ``[rows, V]`` arrays are the probabilities (saved) and the one gradient:
    autograd would also materialise the weights, two products, a second softmax for the
    cross-entropy and the sum of the two terms' gradients. Without labels the LM output is 0.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, labels: Tensor | None, counts: Tensor, base: Tensor, scale: Tensor, offset: int
    ) -> tuple[Tensor, Tensor]:
        if labels is None:
            lm, probs = x.new_zeros(()), x.softmax(-1)
        else:
            log_probs = x.log_softmax(-1)
            lm = F.nll_loss(log_probs, labels, ignore_index=IGNORE_INDEX)  # = F.cross_entropy(x, labels)
            probs = log_probs.exp_()
        codes = probs[:, offset : offset + counts.shape[1]]
        # Clamped so that a row with (numerically) no code mass has share 0, not 0/0.
        mass = codes.sum(-1).clamp_min(torch.finfo(codes.dtype).tiny)
        # Row-wise dot without a [rows, C] temporary (exact fp32 unless CUDA TF32 matmuls are enabled).
        share = torch.bmm(codes.unsqueeze(1), counts.unsqueeze(2)).view(-1) / mass
        per_row = base - scale * share
        ctx.save_for_backward(probs, counts, scale, share, mass, labels)
        ctx.offset = offset
        return lm, per_row.sum()

    @staticmethod
    def backward(ctx, grad_lm: Tensor, grad_cooc: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        probs, counts, scale, share, mass, labels = ctx.saved_tensors
        lo, hi = ctx.offset, ctx.offset + counts.shape[1]
        # Through the softmax: dx = P * (dP - P . dP). The LM part: dP = lm_t - onehot * lm_t, with
        # lm_t = grad_lm / n_labels on labelled rows. The regulariser, a function of the code
        # columns' *shares* P_j / m: dCooc/dP_j = c_t (N_j - share_t) with c_t = -scale_t / m_t on
        # code columns and 0 elsewhere, so P . dCooc/dP = 0 and it moves no logit outside the code
        # block. Each column block is written once, straight into the output; the one-hot part
        # is a scatter at the end.
        if labels is None:
            lm_row = torch.zeros_like(share)
        else:
            labelled = labels != IGNORE_INDEX
            lm_row = labelled.to(probs.dtype) * (grad_lm / labelled.sum().clamp(min=1))
        shift = lm_row[:, None]
        coef = -scale * grad_cooc / mass
        out = torch.empty_like(probs)
        torch.mul(probs[:, :lo], shift, out=out[:, :lo])
        torch.mul(probs[:, hi:], shift, out=out[:, hi:])
        code_grad = out[:, lo:hi]  # in-place passes: no [rows, C] temporaries
        torch.mul(counts, coef[:, None], out=code_grad)
        code_grad.add_(shift - (coef * share)[:, None]).mul_(probs[:, lo:hi])
        if labels is not None:
            rows = labelled.nonzero().squeeze(1)
            out[rows, labels[rows]] -= lm_row[rows]
        return out, None, None, None, None, None


class _VisitContext(NamedTuple):
    """Per flat position (``B * L``) of the decoder input: its context and its visit's code tokens."""

    size: Tensor  # [B*L] |S_t| at used positions, 0 elsewhere
    n_used: int  # K: positions with context (and inside position_mask)
    code_pos: Tensor  # [M] flat positions of code tokens inside an open visit
    code: Tensor  # [M] their code index (0 .. C-1)
    close_pos: Tensor  # [M] flat position where that visit closes (B*L past the last one)


def _visit_context(
    ids: Tensor,
    token_offset: int,
    n_codes: int,
    position_mask: Tensor | None,
    visit_start_id: int,
    visit_end_id: int,
) -> _VisitContext:
    """The context structure from running counts and cumulative maxima: no ``L x L`` mask.

    An open position's context is the codes after its visit's ``<v>`` up to itself, so ``|S_t|``
    is a difference of the running code count. A visit closes at its ``<\\v>``, at the next
    ``<v>`` or at the end of the row, whichever comes first.
    """
    batch, length = ids.shape
    is_code = (ids >= token_offset) & (ids < token_offset + n_codes)
    positions = torch.arange(length, device=ids.device).expand_as(ids)
    is_start = ids == visit_start_id
    last_start = torch.where(is_start, positions, -1).cummax(1).values
    last_end = torch.where(ids == visit_end_id, positions, -1).cummax(1).values
    is_open = last_start > last_end  # after a <v> whose <\v> has not been seen yet
    row_start = torch.arange(batch, device=ids.device)[:, None] * length
    code_count = is_code.flatten().cumsum(0).view(batch, length)  # inclusive, over the flat batch
    count_at_start = code_count.flatten()[(row_start + last_start.clamp(min=0)).flatten()].view(batch, length)
    size = torch.where(is_open, code_count - count_at_start, 0)
    use = size > 0
    if position_mask is not None:
        use &= position_mask.bool()
    size = torch.where(use, size, 0).flatten()
    # First position >= p that is not in p's visit: reversed running minimum of the breaks.
    breaks = torch.where(~is_open | is_start, positions, length)
    next_break = breaks.flip(1).cummin(1).values.flip(1) + row_start
    in_visit = (is_code & is_open).flatten()
    return _VisitContext(
        size=size,
        n_used=int(use.sum()),
        code_pos=in_visit.nonzero().squeeze(1),
        code=ids.flatten()[in_visit] - token_offset,
        close_pos=next_break.flatten()[in_visit],
    )


def _partner_counts(
    frequent: Tensor, context: _VisitContext, dtype: torch.dtype, chunk_elements: int
) -> Tensor:
    """``N [B*L, C]``: at each position, how many codes of its visit so far have ``j`` as a partner.

    Each code token is expanded by its CSR row of ``F`` (``repeat_interleave`` over the degrees,
    gather of the column indices), in chunks of at most ``chunk_elements`` elements (plus one
    row), and counted +1 at its position and -1 where its visit closes (spare rows catch visits
    that run to the end of the batch), so a cumulative sum over positions gives ``N``. The counts
    are small integers, exact in any float type and summation order. Positions outside every
    open visit get zeros; masked positions inside a visit get its counts (the caller weights them
    by 0).
    """
    if frequent.layout != torch.sparse_csr:
        frequent = frequent.to_sparse_csr()
    n_pos, n_codes = context.size.numel(), frequent.shape[1]
    n_rows = -(-(n_pos + 1) // CUMSUM_BLOCK) * CUMSUM_BLOCK
    crow, col, code = frequent.crow_indices(), frequent.col_indices(), context.code
    degree = (crow[1:] - crow[:-1]).long()[code]
    ends = degree.cumsum(0)
    total = int(ends[-1]) if ends.numel() else 0
    # int32 element indices when every index fits: the element arrays are the memory traffic.
    index = torch.int32 if max(n_rows * n_codes, col.numel(), total) < 2**31 else torch.int64
    crow, col = crow.to(index), col.to(index)
    device = col.device
    counts = torch.zeros(n_rows * n_codes, dtype=dtype, device=device)
    n_chunks = -(-total // max(1, chunk_elements))
    cuts = torch.searchsorted(ends, torch.arange(1, max(n_chunks, 1), device=device) * chunk_elements)
    bounds = [0, *cuts.tolist(), code.numel()]
    # Per code token: where its partners start in `col`, minus its first element's number (so
    # element e reads col[shift + e]), and its +1 / -1 rows in `counts`.
    shift = (crow[code] - (ends - degree)).to(index)
    plus_at, minus_at = (context.code_pos * n_codes).to(index), (context.close_pos * n_codes).to(index)
    one = torch.ones((), dtype=dtype, device=device)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi <= lo:
            continue
        first = int(ends[lo - 1]) if lo else 0
        size = int(ends[hi - 1]) - first
        owner = torch.repeat_interleave(
            torch.arange(lo, hi, device=device, dtype=index), degree[lo:hi], output_size=size
        )
        element = torch.arange(first, first + size, device=device, dtype=index)
        partner = col[shift[owner] + element]
        counts.index_add_(0, plus_at[owner].add_(partner), one.expand(size))
        counts.index_add_(0, minus_at[owner].add_(partner), (-one).expand(size))
    return _cumsum_rows_(counts.view(n_rows, n_codes))[:n_pos]


def _cumsum_rows_(x: Tensor, block: int = CUMSUM_BLOCK) -> Tensor:
    """In-place ``x.cumsum(0)`` for ``x [M, C]``, M a multiple of ``block``; returns ``x``.

    torch's CPU cumsum over dim 0 walks each column with a stride of C and writes a new tensor
    (3x the cost of a copy for wide rows). Here each block's first row first takes the sum of all
    earlier blocks (an exclusive cumsum of the block totals), then a fixed ``block - 1`` steps
    add row ``i - 1`` into row ``i`` of every block at once: one read pass and one in-place
    read-write pass, with contiguous rows. Exact for integer-valued inputs (sums below 2^24).
    """
    blocks = x.view(-1, block, x.shape[1])
    totals = blocks.sum(1)
    blocks[1:, 0] += totals.cumsum(0)[:-1]
    for i in range(1, block):
        blocks[:, i] += blocks[:, i - 1]
    return x


# ----------------------------------------------------------------------------- the combined loss


class PromptBartLoss(nn.Module):
    """``loss = lm + w_age * age + w_sex * sex + w_cooc * cooc`` from a :class:`PromptBartOutput`
    and a batch, and ``time`` when the model has a visit-time head (:meth:`objective` adds it)."""

    def __init__(
        self,
        token_offset: int,
        w_age: float = 0.001,
        w_sex: float = 0.001,
        w_cooc: float = 0.05,
        w_time: float = 1.0,
        tau: float = 5.0,
        age_scale: float = 100.0,
        cooc: sp.spmatrix | None = None,
        n_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.token_offset = int(token_offset)
        self.w_age, self.w_sex, self.w_cooc = float(w_age), float(w_sex), float(w_cooc)
        self.w_time = float(w_time)
        self.tau = float(tau)
        self.age_scale = float(age_scale)
        self.n_tokens = n_tokens
        # F in CSR parts, derived from the count matrix (which the LightningModule checkpoints).
        self.register_buffer("frequent_crow", torch.zeros(1, dtype=torch.long), persistent=False)
        self.register_buffer("frequent_col", torch.zeros(0, dtype=torch.long), persistent=False)
        self.n_codes = 0
        if cooc is not None:
            self.set_cooccurrence(cooc)

    def set_cooccurrence(self, cooc: sp.spmatrix) -> None:
        """Install the code x code count matrix (rows/cols = token id - token_offset)."""
        n = _check_square(cooc)
        if self.n_tokens is not None and n != self.n_tokens:
            raise InputError(
                f"co-occurrence matrix is {n} x {n} but the model has {self.n_tokens} code tokens; "
                "build it over the tokenizer's codes (in token order) on the train split"
            )
        frequent = frequent_pairs(cooc, self.tau)
        device = self.frequent_col.device
        # int32 indices when they fit: the co-occurrence loss gathers from them every step.
        index = torch.int32 if frequent.col_indices().numel() < 2**31 else torch.int64
        self.frequent_crow = frequent.crow_indices().to(device, index)
        self.frequent_col = frequent.col_indices().to(device, index)
        self.n_codes = n

    def frequent(self) -> Tensor:
        """Sparse CSR ``[C, C]`` frequent-pair indicator on the loss module's device."""
        return _csr_tensor(self.frequent_crow, self.frequent_col, self.n_codes)

    def forward(self, out: PromptBartOutput, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        labels = batch["labels"]
        if self.n_codes and self.w_cooc:
            lm, cooc = lm_and_cooccurrence_loss(
                out.logits,
                labels,
                batch["decoder_input_ids"],
                self.frequent(),
                self.token_offset,
                position_mask=labels != IGNORE_INDEX,
            )
        else:
            lm = lm_loss(out.logits, labels)
            cooc = lm.new_zeros(())
        terms = {
            "lm": lm,
            "age": age_loss(out.age_pred, batch["age"], labels, self.age_scale),
            "sex": sex_loss(out.sex_logits, batch["sex"], labels),
            "cooc": cooc,
        }
        loss = (
            terms["lm"] + self.w_age * terms["age"] + self.w_sex * terms["sex"] + self.w_cooc * terms["cooc"]
        )
        gap, stay = getattr(out, "gap_logits", None), getattr(out, "stay_logits", None)
        if gap is not None and stay is not None and "time_labels" in batch:
            terms["time"] = visit_time_loss(gap, stay, batch["time_labels"])
        return {"loss": loss, **terms}

    def objective(self, losses: Mapping[str, Tensor]) -> Tensor:
        """What training minimises: ``loss`` (the code model's, which checkpoints monitor as
        ``val/loss``) plus ``w_time * time``. Time stays out of ``loss`` so that adding the time
        head does not change which epoch is kept."""
        if "time" not in losses:
            return losses["loss"]
        return losses["loss"] + self.w_time * losses["time"]
