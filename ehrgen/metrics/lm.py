"""Language-model metrics for PromptBart (torchmetrics; sum states, so DDP reduces them exactly).

"Code tokens" are ids ``token_offset .. token_offset + n_tokens - 1``: diagnosis codes for the flat
model, categories for the hierarchical one (``n_tokens=None``: every id from ``token_offset`` up).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

IGNORE_INDEX = -100


def code_positions(labels: Tensor, token_offset: int, n_tokens: int | None = None) -> Tensor:
    """Boolean mask of label positions holding a code token."""
    mask = labels >= token_offset
    if n_tokens is not None:
        mask &= labels < token_offset + n_tokens
    return mask


def jaccard(pred: Iterable[int], target: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B| of two code sets; two empty sets agree perfectly (1.0)."""
    a, b = set(pred), set(target)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


class _RatioMetric(Metric):
    """``numerator / denominator`` accumulated as two summed scalars."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("numerator", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("denominator", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def compute(self) -> Tensor:
        return (self.numerator / self.denominator).float()


class Perplexity(_RatioMetric):
    """``exp(mean NLL)`` over code-token positions: the mean over all tokens, never a median."""

    higher_is_better = False

    def __init__(self, token_offset: int = 7, n_tokens: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.token_offset, self.n_tokens = token_offset, n_tokens

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """``logits [B, L, V]``, ``labels [B, L]`` (-100 at padding)."""
        mask = code_positions(labels, self.token_offset, self.n_tokens)
        target = labels.masked_fill(~mask, IGNORE_INDEX)
        nll = F.cross_entropy(
            logits.flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        self.numerator += nll.double()
        self.denominator += mask.sum()

    def compute(self) -> Tensor:
        return torch.exp(self.numerator / self.denominator).float()


class TokenAccuracy(_RatioMetric):
    """Share of non-padding label positions where the argmax token is the label."""

    higher_is_better = True

    def update(self, logits: Tensor, labels: Tensor) -> None:
        mask = labels != IGNORE_INDEX
        self.numerator += ((logits.argmax(-1) == labels) & mask).sum()
        self.denominator += mask.sum()


class CodeAccuracy(_RatioMetric):
    """Share of code-label positions where the argmax over the whole vocabulary is the label."""

    higher_is_better = True

    def __init__(self, token_offset: int = 7, n_tokens: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.token_offset, self.n_tokens = token_offset, n_tokens

    def update(self, logits: Tensor, labels: Tensor) -> None:
        mask = code_positions(labels, self.token_offset, self.n_tokens)
        self.numerator += ((logits.argmax(-1) == labels) & mask).sum()
        self.denominator += mask.sum()


class ReconstructionJaccard(_RatioMetric):
    """Mean per-patient Jaccard index between predicted and true code sets."""

    higher_is_better = True

    def update(self, preds: Sequence[Iterable[int]], targets: Sequence[Iterable[int]]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predicted code sets for {len(targets)} targets")
        self.numerator += sum(jaccard(p, t) for p, t in zip(preds, targets, strict=True))
        self.denominator += len(targets)
