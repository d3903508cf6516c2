"""PromptBart's training loss: LM + auxiliary age/sex heads + a co-occurrence regulariser.

``loss = lm + w_age * age + w_sex * sex + w_cooc * cooc``; every term is a mean over the non-padding
label positions (``labels != -100``) so the weights do not depend on batch shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrgen.errors import InputError
from ehrgen.models.prompt_bart import PromptBartOutput

IGNORE_INDEX = -100
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


def cooccurrence_loss(
    logits: Tensor,
    decoder_input_ids: Tensor,
    frequent: Tensor,
    token_offset: int,
    position_mask: Tensor | None = None,
    visit_start_id: int = VISIT_START_ID,
    visit_end_id: int = VISIT_END_ID,
) -> Tensor:
    r"""Expected probability mass on rare partners of the codes already in the current visit.

    With ``C`` code tokens (ids ``token_offset .. token_offset + C - 1``), ``F`` the sparse ``C x C``
    indicator of frequent pairs (:func:`frequent_pairs`), ``P_t`` the softmax over the full
    vocabulary at decoder position ``t`` restricted to the code columns, and ``S_t`` the context:
    the code tokens of ``decoder_input_ids[:t+1]`` in the visit open at ``t`` (the running visit
    resets at ``<v>``; positions from ``<\v>`` up to the next ``<v>`` have an empty context)::

        rare_t(c) = sum_j P_t[j] (1 - F[c, j]) = m_t - (P_t F^T)[c],   m_t = sum_j P_t[j]
        loss      = mean_{t : |S_t| > 0, position_mask_t}  (1 / |S_t|) sum_{c in S_t} rare_t(c)

    Vectorised over batch and positions: the ``[B, L, L]`` same-visit context mask selects the K
    positions with context, ``Q = P F^T`` is one sparse matmul over those rows (``[K, C]``), and
    ``Q[k, x_s]`` is gathered for every earlier position ``s``.
    Used unchanged at category level for the hierarchical model (a category co-occurrence matrix,
    ``token_offset`` = category offset). Returns 0 (with a graph) when no position has context.
    """
    n_codes = frequent.shape[0]
    length = logits.shape[1]
    ids = decoder_input_ids
    is_code = (ids >= token_offset) & (ids < token_offset + n_codes)
    visit = (ids == visit_start_id).cumsum(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
    # context[b, t, s]: position s holds a code of the visit still open at t (s <= t).
    context = causal & (visit[:, :, None] == visit[:, None, :]) & is_code[:, None, :]
    context &= _in_open_visit(ids, visit_start_id, visit_end_id)[:, :, None]
    use = context.any(-1)
    if position_mask is not None:
        use &= position_mask.bool()
    # Only positions with context enter the matmul (markers and padding are skipped).
    rows = use.flatten().nonzero().squeeze(1)
    if rows.numel() == 0:
        return logits.sum() * 0.0
    batch_of = rows // length
    context = context.flatten(0, 1)[rows]  # [K, L]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        selected = _at_least_fp32(logits.flatten(0, 1)[rows])  # [K, V]
        probs = selected.softmax(-1)[:, token_offset : token_offset + n_codes]  # [K, C]
        q = (frequent.to(probs.dtype) @ probs.T.contiguous()).T  # [K, C] = P F^T
        # q_ctx[k, s] = (P_t F^T)[x_s]: frequent-partner mass of the code at position s.
        code_idx = (ids - token_offset).clamp(0, n_codes - 1)
        q_ctx = q.gather(1, code_idx[batch_of])
        rare = probs.sum(-1) - (q_ctx * context).sum(-1) / context.sum(-1)
        return rare.mean()


def _in_open_visit(ids: Tensor, visit_start_id: int, visit_end_id: int) -> Tensor:
    """True at positions after a ``<v>`` whose ``<\\v>`` has not been seen yet (inclusive cummax)."""
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    last_start = torch.where(ids == visit_start_id, positions, -1).cummax(1).values
    last_end = torch.where(ids == visit_end_id, positions, -1).cummax(1).values
    return last_start > last_end


# ----------------------------------------------------------------------------- the combined loss


class PromptBartLoss(nn.Module):
    """``lm + w_age * age + w_sex * sex + w_cooc * cooc`` from a :class:`PromptBartOutput` and a batch."""

    def __init__(
        self,
        token_offset: int,
        w_age: float = 0.001,
        w_sex: float = 0.001,
        w_cooc: float = 0.05,
        tau: float = 5.0,
        age_scale: float = 100.0,
        cooc: sp.spmatrix | None = None,
        n_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.token_offset = int(token_offset)
        self.w_age, self.w_sex, self.w_cooc = float(w_age), float(w_sex), float(w_cooc)
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
        self.frequent_crow = frequent.crow_indices().to(device)
        self.frequent_col = frequent.col_indices().to(device)
        self.n_codes = n

    def frequent(self) -> Tensor:
        """Sparse CSR ``[C, C]`` frequent-pair indicator on the loss module's device."""
        return _csr_tensor(self.frequent_crow, self.frequent_col, self.n_codes)

    def forward(self, out: PromptBartOutput, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        labels = batch["labels"]
        terms = {
            "lm": lm_loss(out.logits, labels),
            "age": age_loss(out.age_pred, batch["age"], labels, self.age_scale),
            "sex": sex_loss(out.sex_logits, batch["sex"], labels),
        }
        if self.n_codes and self.w_cooc:
            terms["cooc"] = cooccurrence_loss(
                out.logits,
                batch["decoder_input_ids"],
                self.frequent(),
                self.token_offset,
                position_mask=labels != IGNORE_INDEX,
            )
        else:
            terms["cooc"] = terms["lm"].new_zeros(())
        loss = (
            terms["lm"] + self.w_age * terms["age"] + self.w_sex * terms["sex"] + self.w_cooc * terms["cooc"]
        )
        return {"loss": loss, **terms}
