"""Clinical and structural constraints as vectorised logits masks over a batch of sequences.

Each generated sequence must read ``<s> (<v> item+ <\\v>)+ </s>`` where items are the model's
content tokens (codes for the flat model, diagnosis categories for the hierarchical one):

- ``<s>`` is never generated (it is the decoder's first input), nor are ``<pad> <unk> <mask>``;
  a row that has finished (``</s>``) may only emit ``<pad>`` until the batch drops it.
- no empty visit, at most ``max_visits`` visits and ``max_codes_per_visit`` items per visit, and
  the sequence always fits into ``max_length`` tokens (``<s>`` and ``</s>`` included): a visit is
  only opened when an item, ``<\\v>`` and ``</s>`` still fit, an item only when ``<\\v> </s>`` do.
- items of one visit in event-type order (diagnoses, then procedures, then medications, as the
  cohort contract lists them): once a visit holds an item of a later type, items of earlier types
  are masked. A vocabulary of one type is unaffected.
- no item twice inside one visit, and ``validity``: no item the patient may not carry under
  :data:`ehrgen.data.rules.VALIDITY_RULES` (rule membership precomputed once over the vocabulary,
  then :func:`allowed_code_mask` per batch). Both live in one running ``blocked [B, n_items]``
  mask: reset to the patient's forbidden items at ``<v>``, extended by every item generated.

All state is a handful of ``[B]`` tensors plus the ``[B, n_items]`` masks, updated once per step
for the whole batch; rows can be gathered (``index``) when the sampler compacts the batch or
reorders beams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from ehrgen.data.codes import EVENT_TYPES, event_type
from ehrgen.data.rules import VALIDITY_RULES, ValidityRule, allowed_code_mask, rule_membership
from ehrgen.data.vocab import BOS, EOS, MASK, N_SPECIAL, PAD, UNK, VISIT_END, VISIT_START
from ehrgen.errors import InputError
from ehrgen.models.prompt_bart import advance_history

_MIN_LENGTH = 5  # <s> <v> item <\v> </s>


@dataclass
class ConstraintState:
    """Per-row decoding state; every field has the batch as its first dimension."""

    n_tokens: Tensor  # [B] tokens so far, <s> included
    n_visits: Tensor  # [B] visits opened
    n_in_visit: Tensor  # [B] items in the open visit
    in_visit: Tensor  # [B] bool: a visit is open
    done: Tensor  # [B] bool: </s> emitted
    blocked: Tensor  # [B, n_items] bool: already in the open visit, or forbidden
    type_floor: Tensor  # [B] rank of the latest event type in the open visit (0: diagnoses)
    forbidden: Tensor | None  # [B, n_items] bool: items the patient may never carry (None: none)
    seen: Tensor  # [B, vocab] bool: every item generated so far (token ids)
    history: Tensor  # [B, vocab] int8: items of earlier visits / of the open one (carry-over input)

    def index(self, idx: Tensor) -> ConstraintState:
        """Rows ``idx`` (compaction, beam reordering, repetition)."""
        return ConstraintState(
            **{
                f.name: (
                    None if getattr(self, f.name) is None else getattr(self, f.name).index_select(0, idx)
                )
                for f in fields(self)
            }
        )


class VisitConstraints:
    """Masks for a model whose content tokens are ``[lo, hi)`` of a ``hi``-sized output vocabulary.

    ``items``: the content token strings (codes or categories) in id order, for the validity
    rules; ``item_ok``: optional static ``[n_items]`` bool, items that may never be generated when
    False (e.g. categories without any code to expand into).
    """

    def __init__(
        self,
        items: Sequence[str],
        lo: int = N_SPECIAL,
        *,
        max_visits: int = 50,
        max_codes_per_visit: int | None = None,
        max_length: int = 512,
        validity: bool = True,
        rules: Sequence[ValidityRule] = VALIDITY_RULES,
        item_ok: np.ndarray | None = None,
    ) -> None:
        if max_codes_per_visit is None:  # only max_length bounds a visit
            max_codes_per_visit = max_length
        if int(max_visits) < 1 or int(max_codes_per_visit) < 1:
            raise InputError(
                f"constraints.max_visits and constraints.max_codes_per_visit must be >= 1, "
                f"got {max_visits}, {max_codes_per_visit}"
            )
        if int(max_length) < _MIN_LENGTH:
            raise InputError(
                f"constraints.max_length={max_length}: need at least {_MIN_LENGTH} tokens (<s> <v> code <\\v> </s>)"
            )
        if not items:
            raise InputError("the model's vocabulary has no code/category tokens to generate")
        self.items = list(items)
        self.lo = int(lo)
        self.hi = self.lo + len(self.items)
        self.max_visits = int(max_visits)
        self.max_codes_per_visit = int(max_codes_per_visit)
        self.max_length = int(max_length)
        self.validity = bool(validity)
        self.rules = tuple(rules)
        self.membership = rule_membership(self.items, self.rules) if self.validity else None
        ok = np.ones(len(self.items), dtype=bool) if item_ok is None else np.asarray(item_ok, dtype=bool)
        if ok.shape != (len(self.items),):
            raise ValueError(f"item_ok must have shape ({len(self.items)},), got {ok.shape}")
        self.item_ok = ok
        rank = {kind: i for i, kind in enumerate(EVENT_TYPES)}
        self.item_rank = torch.tensor([rank[event_type(str(x))] for x in self.items], dtype=torch.long)
        self.typed = bool(self.item_rank.max() > 0)

    @property
    def vocab_size(self) -> int:
        return self.hi

    # ------------------------------------------------------------------ state

    def allowed_items(self, age: np.ndarray, sex: np.ndarray) -> np.ndarray:
        """``[B, n_items]`` items each patient may carry (validity rules and ``item_ok``)."""
        sex = np.atleast_1d(np.asarray(sex))
        age = np.atleast_1d(np.asarray(age, dtype=np.float64))
        if self.validity:
            mask = allowed_code_mask(self.items, sex, age, self.rules, membership=self.membership)
            mask &= self.item_ok[None, :]
        else:
            mask = np.broadcast_to(self.item_ok, (len(sex), len(self.items))).copy()
        empty = ~mask.any(axis=1)
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise InputError(
                f"no code in the model's vocabulary may be generated for a patient with sex "
                f"{'MF'[int(sex[i])] if int(sex[i]) in (0, 1) else sex[i]} and age {age[i]:g} "
                "under the validity rules; request other demographics or set constraints.validity=false"
            )
        return mask

    def init_state(
        self, age: np.ndarray, sex: np.ndarray, device: torch.device | str = "cpu"
    ) -> ConstraintState:
        """State of rows that hold only ``<s>``."""
        n = len(np.atleast_1d(age))
        allowed = self.allowed_items(age, sex)
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        no = torch.zeros(n, dtype=torch.bool, device=device)
        forbidden = None if allowed.all() else torch.from_numpy(~allowed).to(device)
        return ConstraintState(
            n_tokens=torch.ones(n, dtype=torch.long, device=device),
            n_visits=zeros.clone(),
            n_in_visit=zeros.clone(),
            in_visit=no.clone(),
            done=no.clone(),
            blocked=torch.zeros(n, len(self.items), dtype=torch.bool, device=device)
            if forbidden is None
            else forbidden.clone(),
            forbidden=forbidden,
            type_floor=zeros.clone(),
            seen=torch.zeros(n, self.hi, dtype=torch.bool, device=device),
            history=torch.zeros(n, self.hi, dtype=torch.int8, device=device),
        )

    # ------------------------------------------------------------------ masking

    def mask_(self, logits: Tensor, state: ConstraintState) -> Tensor:
        """Set every token ``state`` forbids to ``-inf`` in ``logits [B, V]`` (in place) and return it.

        At least one token stays allowed in every row (finished rows: ``<pad>``).
        """
        if logits.shape[-1] < self.hi:
            raise ValueError(f"logits have {logits.shape[-1]} tokens, fewer than the vocabulary's {self.hi}")
        n, live = state.n_tokens, ~state.done
        item_room = (
            state.in_visit & (state.n_in_visit < self.max_codes_per_visit) & (n + 3 <= self.max_length)
        )
        open_room = ~state.in_visit & (state.n_visits < self.max_visits) & (n + 4 <= self.max_length)
        special = torch.zeros(logits.shape[0], N_SPECIAL, dtype=torch.bool, device=logits.device)
        special[:, VISIT_START] = live & open_room
        special[:, VISIT_END] = live & state.in_visit & (state.n_in_visit >= 1)
        special[:, EOS] = live & ~state.in_visit & (state.n_visits >= 1)
        special[:, PAD] = state.done
        # BOS, UNK and MASK stay False: never generated.
        logits[:, :N_SPECIAL].masked_fill_(~special, float("-inf"))
        logits[:, self.lo : self.hi].masked_fill_(state.blocked, float("-inf"))
        if self.typed:  # no item of a type earlier than one the visit already holds
            rank = self.item_rank.to(logits.device)
            logits[:, self.lo : self.hi].masked_fill_(
                rank[None, :] < state.type_floor[:, None], float("-inf")
            )
        closed = (~(live & item_room)).nonzero().squeeze(1)  # rows that may not add an item now
        if closed.numel():
            logits[closed, self.lo : self.hi] = float("-inf")
        if logits.shape[-1] > self.hi:  # output rows beyond the vocabulary (padded embeddings)
            logits[:, self.hi :] = float("-inf")
        return logits

    # ------------------------------------------------------------------ update

    def update(self, state: ConstraintState, tokens: Tensor) -> ConstraintState:
        """Advance ``state`` (in place) by one token per row (forced or generated)."""
        live = ~state.done
        is_item = (tokens >= self.lo) & (tokens < self.hi) & live
        opens = (tokens == VISIT_START) & live
        closes = (tokens == VISIT_END) & live
        rows = opens.nonzero().squeeze(1)
        if rows.numel():  # a new visit: only the patient's forbidden items stay blocked
            state.blocked[rows] = False if state.forbidden is None else state.forbidden[rows]
        col = (tokens - self.lo).clamp(0, len(self.items) - 1)[:, None]
        state.blocked.scatter_(1, col, state.blocked.gather(1, col) | is_item[:, None])
        state.n_in_visit = torch.where(opens, 0, state.n_in_visit + is_item.long())
        if self.typed:
            item_rank = self.item_rank.to(tokens.device)[col[:, 0]]
            floor = torch.where(is_item, torch.maximum(state.type_floor, item_rank), state.type_floor)
            state.type_floor = torch.where(opens, 0, floor)
        state.in_visit = (state.in_visit | opens) & ~closes
        state.n_visits = state.n_visits + opens.long()
        state.n_tokens = state.n_tokens + live.long()
        state.done = state.done | (tokens == EOS)
        advance_history(state.history, state.seen, torch.where(live, tokens, PAD))
        return state


def structure_errors(tokens: np.ndarray, lo: int, hi: int) -> list[str]:
    """Plain-Python check of one sequence (tests, debugging): what is wrong with its structure."""
    t = [int(x) for x in tokens]
    errors = []
    if not t or t[0] != BOS:
        errors.append("does not start with <s>")
    if EOS not in t:
        return [*errors, "no </s>"]
    body = t[1 : t.index(EOS)]
    if any(x != PAD for x in t[t.index(EOS) + 1 :]):
        errors.append("tokens after </s>")
    in_visit, items, n_visits = False, [], 0
    for x in body:
        if x == VISIT_START:
            if in_visit:
                errors.append("<v> inside a visit")
            in_visit, items, n_visits = True, [], n_visits + 1
        elif x == VISIT_END:
            if not in_visit or not items:
                errors.append("empty or unopened visit")
            in_visit = False
        elif lo <= x < hi:
            if not in_visit:
                errors.append("item outside a visit")
            if x in items:
                errors.append(f"item {x} twice in a visit")
            items.append(x)
        elif x in (BOS, PAD, UNK, MASK) or x >= hi or x < 0:
            errors.append(f"forbidden token {x}")
    if in_visit:
        errors.append("unclosed visit")
    if n_visits == 0:
        errors.append("no visit")
    return errors
