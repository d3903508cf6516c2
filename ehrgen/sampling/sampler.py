"""Batched, KV-cached decoding of PromptBart under visit/validity constraints.

One call of :meth:`Sampler.sample` generates a batch of patients:

1. the encoder runs once on the batch (``<s> </s>`` plus the demographic prompt, or a
   conditional prompt), and its cross-attention keys/values are cached by the first decoder step;
2. the decoder is fed the forced prefix (``<s>``, or a real patient's first codes) and then one
   token per step, with the self-attention KV cache (transformers ``EncoderDecoderCache``);
3. every step masks the logits with :class:`~ehrgen.sampling.constraints.VisitConstraints`, picks
   one token per row (greedy, or sampling with temperature / top-k / top-p) and updates the
   constraint state: all of it vectorised over the batch, no Python work per patient;
4. rows finish independently (``</s>``); once ``compact_fraction`` of the live rows are done,
   the batch is compacted: finished rows leave the KV cache (``Cache.reorder_cache`` =
   ``index_select`` on every layer), the encoder states and the constraint state.

Why compaction and not refilling finished rows with new patients: BART's decoder derives positions
from the cache length, shared by all rows, so a patient swapped into a running batch would start
at the wrong position. Compaction keeps the cost proportional to the live rows.

Randomness is counter-based: the uniform that picks the token of patient ``i`` at position ``t``
is a splitmix64 hash of ``(seed, i, t)`` (inverse-CDF sampling), so a patient's sequence does
not depend on the batch size, on which rows it shares a batch with, or on the shard that
generates it. The only caveat is floating point: a batched matmul may round differently for
different batch shapes, which can flip a draw that falls within ~1e-7 of a CDF boundary (not seen
in the tests, on CPU). Beam search (``strategy="beam"``) is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from ehrgen.config import coerce_options
from ehrgen.data.cohort import stable_hash
from ehrgen.data.datamodule import pad_stack
from ehrgen.data.vocab import BOS, EOS, PAD, VISIT_START
from ehrgen.errors import InputError
from ehrgen.models.prompt_bart import PromptBart
from ehrgen.sampling.constraints import ConstraintState, VisitConstraints

STRATEGIES = ("sample", "greedy", "beam")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TOKEN_STREAM = 1  # salt of the token-choice uniforms (other streams: hierarchical expansion)


@dataclass
class SamplingConfig:
    """How tokens are chosen; ``top_k=0`` and ``top_p=1`` switch those filters off."""

    strategy: str = "sample"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 4
    length_penalty: float = 1.0
    compact_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"sampling.strategy={self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if not float(self.temperature) > 0:
            raise InputError(f"sampling.temperature must be > 0, got {self.temperature}")
        if int(self.top_k) < 0:
            raise InputError(f"sampling.top_k must be >= 0 (0: off), got {self.top_k}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise InputError(f"sampling.top_p must lie in (0, 1] (1: off), got {self.top_p}")
        if int(self.num_beams) < 1:
            raise InputError(f"sampling.num_beams must be >= 1, got {self.num_beams}")
        if not 0.0 <= float(self.compact_fraction) <= 1.0:
            raise InputError(f"sampling.compact_fraction must lie in [0, 1], got {self.compact_fraction}")

    @classmethod
    def coerce(cls, value: SamplingConfig | dict[str, Any] | None) -> SamplingConfig:
        return coerce_options(cls, value, "sampling")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- counter-based noise


def patient_keys(index: np.ndarray, seed: int, stream: int = _TOKEN_STREAM) -> np.ndarray:
    """64-bit key of each patient (global index) for one random stream of one seed."""
    base = stable_hash(np.asarray(index, dtype=np.int64), int(seed))
    return stable_hash(base, int(stream))


def counter_uniforms(keys: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """``[len(keys), n]`` uniforms in [0, 1): entry ``(b, j)`` depends only on ``keys[b]`` and ``start + j``."""
    with np.errstate(over="ignore"):
        counters = np.arange(start, start + n, dtype=np.uint64) * _GOLDEN
        z = stable_hash(np.asarray(keys, dtype=np.uint64)[:, None] ^ counters[None, :], 0)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ----------------------------------------------------------------------------- token choice


def choose_tokens(logits: Tensor, u: Tensor, cfg: SamplingConfig, inplace: bool = False) -> Tensor:
    """One token per row from masked logits ``[B, V]`` (``-inf`` = forbidden) and uniforms ``u [B]``.

    Greedy takes the arg-max; sampling applies temperature, then top-k, then top-p (nucleus) and
    inverts the CDF at ``u``. A forbidden token is never returned while a row allows any.
    ``inplace``: ``logits`` may be overwritten (saves a vocabulary-sized copy per step).
    """
    if cfg.strategy == "greedy":
        return logits.argmax(-1)
    scale = 1.0 / float(cfg.temperature)
    idx = None
    if 0 < cfg.top_k < logits.shape[-1]:
        logits, idx = logits.topk(int(cfg.top_k), dim=-1)  # temperature keeps the order
        inplace = True
    if cfg.top_p < 1.0:
        if idx is None:
            logits, idx = logits.sort(dim=-1, descending=True)
        p = torch.softmax(logits * scale, dim=-1)
        # drop a token when the more likely ones already reach top_p (the first always stays)
        logits = logits.masked_fill(p.cumsum(-1) - p >= float(cfg.top_p), float("-inf"))
        inplace = True
    pick = inverse_cdf(logits, u, scale, inplace=inplace)
    return pick if idx is None else idx.gather(1, pick[:, None]).squeeze(1)


def inverse_cdf(
    logits: Tensor, u: Tensor, scale: float = 1.0, block: int = 64, inplace: bool = False
) -> Tensor:
    """Index ``i`` with ``F(i-1) <= u < F(i)`` under ``softmax(scale * logits)``, per row.

    Two levels instead of one cumulative sum over the vocabulary (a slow sequential scan): block
    totals pick the block, a cumulative sum inside that block picks the token. Each row's result
    depends on that row alone.
    """
    n, width = logits.shape
    w = logits if inplace else logits.clone()
    if scale != 1.0:
        w.mul_(scale)
    w.sub_(w.amax(-1, keepdim=True)).exp_()  # unnormalised probabilities
    whole = width // block
    mass = w[:, : whole * block].unflatten(1, (whole, block)).sum(-1)  # [n, n_blocks], a view's sum
    if width % block:
        mass = torch.cat([mass, w[:, whole * block :].sum(-1, keepdim=True)], 1)
    totals = mass.cumsum(-1)
    target = u.to(totals.dtype) * totals[:, -1]
    # u * total may round up to the total: never step past the last block / token with mass
    b = torch.searchsorted(totals, target[:, None], right=True).minimum(_last_positive(mass))
    before = torch.where(b > 0, totals.gather(1, (b - 1).clamp(min=0)), 0.0)
    cols = b * block + torch.arange(block, device=w.device)  # the chosen block's columns [n, block]
    inner = torch.where(cols < width, w.gather(1, cols.clamp(max=width - 1)), 0.0)
    rest = (target[:, None] - before).clamp_(min=0.0)
    j = torch.searchsorted(inner.cumsum(-1), rest, right=True).minimum(_last_positive(inner))
    return (b * block + j).squeeze(1)


def _last_positive(x: Tensor) -> Tensor:
    """``[n, 1]`` index of the last positive entry of each row."""
    positions = torch.arange(x.shape[-1], device=x.device).expand_as(x)
    return torch.where(x > 0, positions, 0).amax(-1, keepdim=True)


# ----------------------------------------------------------------------------- the sampler


def _stack(seqs: Sequence[np.ndarray] | None, default: list[int], n: int, device) -> tuple[Tensor, Tensor]:
    if seqs is None:
        seqs = [np.asarray(default, dtype=np.int64)] * n
    if len(seqs) != n:
        raise ValueError(f"expected {n} sequences, got {len(seqs)}")
    ids, mask = pad_stack([np.asarray(s, dtype=np.int64) for s in seqs], PAD)
    return ids.to(device), mask.to(device)


class Sampler:
    """Generates token sequences for batches of prompts with one PromptBart."""

    def __init__(
        self,
        model: PromptBart,
        constraints: VisitConstraints,
        sampling: SamplingConfig | dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.constraints = constraints
        self.cfg = SamplingConfig.coerce(sampling)
        self.seed = int(seed)
        if constraints.vocab_size > model.vocab_size:
            raise InputError(
                f"constraints cover {constraints.vocab_size} tokens but the model outputs {model.vocab_size}"
            )
        if constraints.max_length > model.max_length:
            raise InputError(
                f"constraints.max_length={constraints.max_length} exceeds the model's max_length={model.max_length}"
            )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def sample(
        self,
        age: np.ndarray,
        sex: np.ndarray,
        index: np.ndarray,
        encoder_ids: Sequence[np.ndarray] | None = None,
        prefix: Sequence[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Token sequences ``[B, L]`` (``<s> ... </s>`` then ``<pad>``) for one batch.

        ``index``: global patient indices (the noise keys); ``encoder_ids``: encoder inputs
        (default ``<s> </s>``: demographics only); ``prefix``: forced decoder prefixes starting
        with ``<s>`` (default ``<s>``), kept verbatim in the output.
        """
        age = np.array(age, dtype=np.float32)  # copies: inputs may be read-only views (polars)
        sex = np.array(sex, dtype=np.int64)
        n = len(age)
        if n == 0:
            return np.zeros((0, 0), dtype=np.int64)
        device = self.device
        enc_ids, enc_mask = _stack(encoder_ids, [BOS, EOS], n, device)
        prefix_ids, prefix_mask = _stack(prefix, [BOS], n, device)
        prefix_len = prefix_mask.sum(1)
        if bool((prefix_ids[:, 0] != BOS).any()):
            raise InputError("every decoder prefix must start with <s>")
        if int(prefix_len.max()) > self.constraints.max_length - 3:
            raise InputError(
                f"a decoder prefix has {int(prefix_len.max())} tokens; at most max_length - 3 = "
                f"{self.constraints.max_length - 3} leave room to finish the patient"
            )
        age_t = torch.as_tensor(age, device=device)
        sex_t = torch.as_tensor(sex, device=device)
        encoder = self.model.encode(enc_ids, enc_mask, age_t, sex_t)
        state = self.constraints.init_state(age, sex, device)
        if self.cfg.strategy == "beam":
            return self._beam(encoder.states, encoder.mask, age_t, sex_t, prefix_ids, prefix_len, state)
        keys = patient_keys(np.asarray(index, dtype=np.int64), self.seed)
        uniforms = torch.from_numpy(counter_uniforms(keys, self.constraints.max_length)).to(device)
        return self._sample(
            encoder.states, encoder.mask, age_t, sex_t, prefix_ids, prefix_len, state, uniforms
        )

    # ------------------------------------------------------------------ sampling / greedy

    def _first_step(self, states, mask, age, sex, prefix_ids, prefix_len, state) -> tuple[Tensor, Any, int]:
        """Feed the prefix part every row shares (at least ``<s>``); logits of its last position."""
        m = int(prefix_len.min())
        for j in range(1, m):
            self.constraints.update(state, prefix_ids[:, j])
        logits, cache = self.model.decode_step(
            prefix_ids[:, :m], states, mask, age, sex, None, history=state.history
        )
        return logits[:, -1].float(), cache, m

    def _sample(self, states, mask, age, sex, prefix_ids, prefix_len, state, uniforms) -> np.ndarray:
        n, L = prefix_ids.shape[0], self.constraints.max_length
        out = torch.full((n, L), PAD, dtype=torch.long, device=prefix_ids.device)
        out[:, : prefix_ids.shape[1]] = prefix_ids
        logits, cache, t = self._first_step(states, mask, age, sex, prefix_ids, prefix_len, state)
        rows = torch.arange(n, device=prefix_ids.device)
        longest_prefix = int(prefix_len.max())
        while True:
            self.constraints.mask_(logits, state)
            nxt = choose_tokens(logits, uniforms[:, t], self.cfg, inplace=True)
            if t < longest_prefix:
                nxt = torch.where(t < prefix_len, prefix_ids[:, t], nxt)
            out[rows, t] = torch.where(state.done, PAD, nxt)
            self.constraints.update(state, nxt)
            t += 1
            n_done = int(state.done.sum())
            if n_done == rows.shape[0] or t >= L:
                break
            if n_done and n_done >= self.cfg.compact_fraction * rows.shape[0]:
                keep = (~state.done).nonzero().squeeze(1)
                cache.reorder_cache(keep)
                states, mask, state = (
                    states.index_select(0, keep),
                    mask.index_select(0, keep),
                    state.index(keep),
                )
                age, sex = age.index_select(0, keep), sex.index_select(0, keep)
                rows, uniforms, nxt = rows[keep], uniforms[keep], nxt[keep]
                prefix_ids, prefix_len = prefix_ids[keep], prefix_len[keep]
            logits, cache = self.model.decode_step(
                nxt[:, None], states, mask, age, sex, past_key_values=cache, history=state.history
            )
            logits = logits[:, -1].float()
        return _trim(out)

    # ------------------------------------------------------------------ beam search

    def _beam(self, states, mask, age, sex, prefix_ids, prefix_len, state: ConstraintState) -> np.ndarray:
        """Beam search per patient (``num_beams`` rows each) under the same constraints.

        Beams are ranked by summed log-probability; a finished beam keeps its score and may only
        emit ``<pad>`` (log-probability 0), so it stays in the beam until better live hypotheses
        push it out. A patient is done when all its beams are; the answer is the beam with the best
        ``score / length ** length_penalty``. Forced prefix tokens do not add to the score.
        """
        k, L = int(self.cfg.num_beams), self.constraints.max_length
        n, device = prefix_ids.shape[0], prefix_ids.device
        rep = torch.arange(n, device=device).repeat_interleave(k)
        states, mask, age, sex = states[rep], mask[rep], age[rep], sex[rep]
        prefix_ids, prefix_len, state = prefix_ids[rep], prefix_len[rep], state.index(rep)
        scores = torch.full((n, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # identical beams at the start: expand from the first only
        hist = torch.full((n * k, L), PAD, dtype=torch.long, device=device)
        hist[:, : prefix_ids.shape[1]] = prefix_ids
        logits, cache, t = self._first_step(states, mask, age, sex, prefix_ids, prefix_len, state)
        patients = torch.arange(n, device=device)  # original index of each live patient
        best = torch.full((n, L), PAD, dtype=torch.long, device=device)
        longest_prefix = int(prefix_len.max())
        while True:
            m = patients.shape[0]
            self.constraints.mask_(logits, state)
            logp = torch.log_softmax(logits, dim=-1)
            vocab = logp.shape[-1]
            cand = (scores.reshape(-1, 1) + logp).reshape(m, k * vocab)
            top, flat = cand.topk(k, dim=-1)
            origin, token = flat // vocab, flat % vocab
            if t < longest_prefix:  # forced rows: every beam keeps its place and takes the prefix token
                forced = (t < prefix_len).reshape(m, k)[:, :1]
                keep_order = torch.arange(k, device=device).expand(m, k)
                origin = torch.where(forced, keep_order, origin)
                token = torch.where(forced, prefix_ids[:, t].reshape(m, k), token)
                top = torch.where(forced, scores, top)
            src = (torch.arange(m, device=device)[:, None] * k + origin).reshape(-1)
            cache.reorder_cache(src)
            state, hist = state.index(src), hist.index_select(0, src)
            # A beam picked with score -inf (fewer allowed continuations than beams) is dead: it
            # counts as finished and can never be the answer.
            dead = torch.isinf(top).reshape(-1)
            state.done |= dead
            token = torch.where(state.done, PAD, token.reshape(-1))
            hist[:, t] = token
            self.constraints.update(state, token)
            scores = top
            t += 1
            finished = state.done.reshape(m, k).all(1)
            if bool(finished.any()) or t >= L:
                ended = finished | (t >= L)
                lengths = state.n_tokens.reshape(m, k).float()
                normed = scores / lengths.pow(float(self.cfg.length_penalty))
                pick = normed.argmax(1)
                rows = (torch.arange(m, device=device) * k + pick)[ended]
                best[patients[ended]] = hist[rows]
                if bool(ended.all()):
                    break
                live = (~ended).nonzero().squeeze(1)
                beam_rows = (live[:, None] * k + torch.arange(k, device=device)).reshape(-1)
                cache.reorder_cache(beam_rows)
                states, mask = states.index_select(0, beam_rows), mask.index_select(0, beam_rows)
                age, sex = age.index_select(0, beam_rows), sex.index_select(0, beam_rows)
                state, hist = state.index(beam_rows), hist.index_select(0, beam_rows)
                prefix_ids, prefix_len = prefix_ids[beam_rows], prefix_len[beam_rows]
                token, scores, patients = token[beam_rows], scores[live], patients[live]
            logits, cache = self.model.decode_step(
                token[:, None], states, mask, age, sex, past_key_values=cache, history=state.history
            )
            logits = logits[:, -1].float()
        return _trim(best)


def sample_for_check(
    model: PromptBart, tokenizer: Any, age: np.ndarray, sex: np.ndarray, seed: int, batch_size: int
) -> list[np.ndarray]:
    """Token sequences of patients ``0 .. len(age)-1`` generated with the sampler's defaults and
    the model's own length limit: the quick in-process generation that training-time checks use
    (copy rate, calibration), as opposed to ``ehrgen.generate``'s configured runs."""
    items = tokenizer.categories if tokenizer.level == "category" else tokenizer.codes
    lo = tokenizer.content_range[0]
    sampler = Sampler(model, VisitConstraints(items, lo, max_length=model.max_length), seed=seed)
    seqs: list[np.ndarray] = []
    for start in range(0, len(age), batch_size):
        index = np.arange(start, min(start + batch_size, len(age)))
        seqs.extend(sampler.sample(age[index], sex[index], index))
    return seqs


def _trim(tokens: Tensor) -> np.ndarray:
    """Drop the all-``<pad>`` columns at the end; to numpy."""
    used = (tokens != PAD).any(0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 0
    return tokens[:, :width].cpu().numpy()


# ----------------------------------------------------------------------------- decoding


def tokens_to_visits(tokens: np.ndarray, items: Sequence[str] | pa.Array, lo: int) -> pa.ListArray:
    """``[B, L]`` sequences -> ``list<list<string>>`` visits of item strings, vectorised.

    Items outside ``[lo, lo + len(items))`` (``<unk>``, markers) are dropped; a visit left empty
    stays empty (the cohort writer drops and counts it).
    """
    table = items if isinstance(items, pa.Array) else pa.array(list(items), type=pa.string())
    tokens = np.asarray(tokens, dtype=np.int64)
    valid, opens = visit_structure(tokens)
    is_item = (tokens >= lo) & (tokens < lo + len(table)) & valid
    visits_per_patient = opens.sum(1)
    visit_of = np.cumsum(opens.ravel())[is_item.ravel()] - 1  # items always follow their <v>
    codes_per_visit = np.bincount(visit_of, minlength=int(visits_per_patient.sum()))
    values = table.take(pa.array(tokens[is_item] - lo))
    inner = pa.ListArray.from_arrays(_offsets(codes_per_visit), values)
    return pa.ListArray.from_arrays(_offsets(visits_per_patient), inner)


def visit_structure(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, opens)`` for ``[B, L]`` sequences: positions before each row's ``</s>``, and the
    ``<v>`` markers among them."""
    width = tokens.shape[1]
    ended = tokens == EOS
    stop = np.where(ended.any(1), ended.argmax(1), width)
    valid = np.arange(width)[None, :] < stop[:, None]
    return valid, (tokens == VISIT_START) & valid


def _offsets(counts: np.ndarray) -> pa.Array:
    out = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=out[1:])
    return pa.array(out)
