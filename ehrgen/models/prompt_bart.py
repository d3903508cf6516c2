"""PromptBart: BART whose encoder and decoder each see learned demographic prompts.

Read top to bottom: construction (random init from ``BartConfig`` or local pretrained weights),
``encode`` (prompt + tokens through the encoder), ``decode_step`` (prompt + tokens through the
decoder, incrementally with a KV cache), ``forward`` (teacher-forced training pass + auxiliary
age/sex heads + the visit-time head), ``visit_time_logits`` (times of generated sequences).

Layout of one sequence inside BART (P = prompt_length):
```
encoder: [p_1 .. p_P | <s> <v> c c <mask> ... </s> <pad>..]   positions 0 .. P+Le-1
decoder: [q_1 .. q_P | <s> <v> c c <\\v> ...             ]   positions 0 .. P+Ld-1
```
The prompt vectors are fed as ``inputs_embeds`` ahead of the token embeddings and always
attended to; every output for a prompt position is dropped, so logits line up with ``labels``.
Only public transformers APIs are used (``inputs_embeds``, attention masks, Cache objects).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from transformers import BartConfig, BartForConditionalGeneration
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.models.bart.modeling_bart import BartDecoder

from ehrgen.errors import InputError
from ehrgen.models.conditional_prompt import ConditionalPrompt
from ehrgen.models.visit_times import VisitTimeHead

PAD_ID, BOS_ID, EOS_ID = 1, 0, 2
# <v>, <\v>; ids from 7 are codes / categories (ehrgen.data.vocab)
VISIT_START_ID, VISIT_END_ID, FIRST_CONTENT_ID = 4, 5, 7
# Carry-history values of an item: in an older visit only / already in the open visit / in the
# visit just closed (and maybe older ones too).
EARLIER, CURRENT, PREVIOUS = 1, 2, 3
REPEAT_LOGIT = -1.0e4  # finite, so a (malformed) repeated code in training data costs, never NaNs
# Indices of PromptBart.logit_offsets (fit after training by ehrgen.calibration).
OFFSET_PATIENT_END, OFFSET_VISIT_END, OFFSET_PREVIOUS, OFFSET_OLDER = 0, 1, 2, 3
N_OFFSETS = 4
N_SEX = 2  # 0=M, 1=F
# transformers 5.x renamed the decoder's KV-cache argument and output field past_key_values -> cache
# (the old name warns, and goes in 5.40); use whichever this installation has.
DECODER_CACHE_ARG = (
    "cache" if "cache" in inspect.signature(BartDecoder.forward).parameters else "past_key_values"
)


class EncoderOutput(NamedTuple):
    """Encoder states including the prompt positions, and the matching (extended) mask."""

    states: Tensor  # [B, P + Le, d_model]
    mask: Tensor  # [B, P + Le]


class DecodeOutput(NamedTuple):
    """Logits for the tokens fed in this step (prompt positions removed) and the updated cache."""

    logits: Tensor  # [B, n_new, vocab]
    past_key_values: Cache


@dataclass
class PromptBartOutput:
    """Teacher-forced outputs aligned with ``labels [B, Ld]``."""

    logits: Tensor  # [B, Ld, vocab]
    hidden: Tensor  # [B, Ld, d_model] last decoder layer
    age_pred: Tensor  # [B, Ld] age / age_scale, one prediction per token
    sex_logits: Tensor  # [B, Ld, 2]
    gap_logits: Tensor | None = None  # [B, Ld, N_GAP_BINS] time to the next visit (visit-closing positions)
    stay_logits: Tensor | None = None  # [B, Ld, N_STAY_BINS] length of the visit being closed


def age_hat_weights(age: Tensor, knots: Tensor) -> Tensor:
    """``[N, K]`` piecewise-linear (hat-function) weights of each age on increasing ``knots``:
    the two knots around an age share 1 linearly; ages outside the knots take the end knot."""
    age = age.to(knots.dtype).clamp(knots[0], knots[-1])
    right = torch.searchsorted(knots, age, right=True).clamp(1, knots.numel() - 1)
    left = right - 1
    frac = (age - knots[left]) / (knots[right] - knots[left])
    weights = age.new_zeros(age.shape[0], knots.numel())
    rows = torch.arange(age.shape[0], device=age.device)
    weights[rows, left] = 1 - frac
    weights[rows, right] += frac
    return weights


class PromptBart(nn.Module):
    """BART encoder-decoder conditioned on (age, sex) through encoder and decoder prompts."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        attention_heads: int = 4,
        ffn_dim: int = 1024,
        max_length: int = 512,
        prompt_length: int = 4,
        prompt_hidden: int = 128,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_function: str = "gelu",
        age_scale: float = 100.0,
        pretrained: str | None = None,
        carry: bool = False,
        age_bands: Sequence[float] | None = None,
        age_profile_knots: Sequence[float] | None = None,
        age_profile_scale: float = 30.0,
        age_profile_gate: bool = False,
        visit_times: bool = False,
        visit_times_detach: bool = True,
        token_types: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.prompt_length = prompt_length
        self.age_scale = float(age_scale)
        # Age band edges (years): the band is a categorical prompt feature beside the numeric age.
        # Through the tanh bottleneck the numeric age is a smooth signal, and newborns (age 0,
        # their own codes) sit only 0.16 from a 16-year-old on the age / age_scale axis; a band
        # gives such steps a feature of their own.
        edges = [float(e) for e in (age_bands or [])]
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or any(e <= 0 for e in edges):
            raise InputError(f"model.net.age_bands must be increasing ages > 0, got {list(age_bands or [])}")
        self.register_buffer("age_edges", torch.tensor(edges, dtype=torch.float32), persistent=False)
        knots = [float(k) for k in (age_profile_knots or [])]
        if knots and (
            len(knots) < 2 or knots[0] < 0 or any(b <= a for a, b in zip(knots, knots[1:], strict=False))
        ):
            raise InputError(
                f"model.net.age_profile_knots must be >= 2 increasing ages >= 0, got {list(age_profile_knots or [])}"
            )
        self.register_buffer("profile_knots", torch.tensor(knots, dtype=torch.float32), persistent=False)
        n_positions = max_length + prompt_length  # prompts occupy the first positions
        if pretrained:
            self.bart = _load_pretrained(pretrained, vocab_size, n_positions)
        else:
            self.bart = BartForConditionalGeneration(
                BartConfig(
                    vocab_size=vocab_size,
                    max_position_embeddings=n_positions,
                    d_model=d_model,
                    encoder_layers=encoder_layers,
                    decoder_layers=decoder_layers,
                    encoder_attention_heads=attention_heads,
                    decoder_attention_heads=attention_heads,
                    encoder_ffn_dim=ffn_dim,
                    decoder_ffn_dim=ffn_dim,
                    dropout=dropout,
                    attention_dropout=attention_dropout,
                    activation_function=activation_function,
                    pad_token_id=PAD_ID,
                    bos_token_id=BOS_ID,
                    eos_token_id=EOS_ID,
                    decoder_start_token_id=BOS_ID,
                    forced_eos_token_id=None,
                )
            )
        d = self.bart.config.d_model
        self.d_model = d

        def prompt() -> ConditionalPrompt:
            bands = (len(edges) + 1,) if edges else ()
            return ConditionalPrompt(d, prompt_length, prompt_hidden, (self.age_scale,), (N_SEX, *bands))

        self.encoder_prompt = prompt()
        self.decoder_prompt = prompt()
        self.age_head = nn.Linear(d, 1)
        self.sex_head = nn.Linear(d, N_SEX)
        # Carry-over pathway: a logit bonus for the items of the patient's earlier visits, per item
        # (chronic codes recur, acute ones do not) and scaled by the decoder state. Attention alone
        # can copy from the history, but learning to do so is a late phase transition that the
        # default training budget did not reach: teacher-forced, the flat model put 7 % of its mass
        # on earlier-visit codes where the data has 46 % (docs/benchmarks.md, fidelity).
        self.carry = bool(carry)
        if self.carry:
            self.carry_bias = nn.Parameter(torch.zeros(vocab_size))
            self.carry_gate = nn.Linear(d, 1)
            nn.init.zeros_(self.carry_gate.weight)
            nn.init.zeros_(self.carry_gate.bias)
        # Logit offsets for the decisions that shape a patient across visits: end the patient
        # (``</s>``), end the visit (``<\\v>``), write an item of the previous visit, or of an older
        # one only. A model trained for the default CPU budget ends patients 3 % too often and
        # carries 6 % too few of the previous visit's codes on its own training patients
        # (docs/benchmarks.md, fidelity): these scalars are fit on held-out patients after training
        # (:mod:`ehrgen.calibration`). Zero while training and applied only in eval mode, so they
        # never shape the weights.
        self.register_buffer("logit_offsets", torch.zeros(N_OFFSETS))
        # Age profiles: per sex, each output token's logit gets a curve in age, piecewise linear
        # between the knots, added at every position. The prompts reach the logits only through
        # attention and the decoder's hidden state, and trained for the default CPU budget they
        # blurred each code's age profile (mean age of its patients off by 1.8x the noise floor,
        # docs/benchmarks.md, fidelity): this direct path gives each code its own age and sex
        # main effect. Zero at init (no effect until learnt). The table is multiplied by
        # ``age_profile_scale``: Adam moves each parameter by at most about the learning rate per
        # step, so an unscaled zero-initialised table could move a logit only ~0.3 in 1,900 steps
        # of the default schedule, far less than real codes' age effects (several logits).
        self.age_profile_scale = float(age_profile_scale)
        self.age_profile = (
            nn.Parameter(torch.zeros(N_SEX, len(knots), self.bart.get_output_embeddings().weight.shape[0]))
            if knots
            else None
        )
        # Profile gate: the table's curves are scaled at each position by exp(linear(decoder state)),
        # 1 at init. How much age a code needs on top of what the network knows depends on the
        # position: the first visit has only the prompts, a later one also the history, whose codes
        # already tell the age. A table shared by every position learnt a compromise: teacher-forced,
        # the flat model spread its later-visit codes over ages 13 % more than the data, its
        # first-visit codes 1 % less (docs/benchmarks.md, fidelity: visit items in a random order,
        # and an age-profile gate).
        self.profile_gate = None
        if age_profile_gate and self.age_profile is not None:
            self.profile_gate = nn.Linear(d, 1)
            nn.init.zeros_(self.profile_gate.weight)
            nn.init.zeros_(self.profile_gate.bias)

        # Visit times: each visit's stay and the gap to the next, from the decoder state that closes
        # it (ehrgen.models.visit_times). Detached by default: the codes' model then gets the
        # gradients it gets without times (the module clips the two apart), so time cannot cost
        # code fidelity.
        self.time_head = VisitTimeHead(d) if visit_times else None
        self.visit_times_detach = bool(visit_times_detach)

        # Event types (the PromptEHR way): with diagnoses, procedures and medications in one
        # vocabulary, each input token also gets its type's embedding (``token_types``: one id per
        # token, 0 for specials), so a layer can tell "the visit's medications have started" from
        # the type alone rather than learn it per token. Zero at init; absent for a vocabulary of
        # one type, so diagnosis-only models and their checkpoints are unchanged.
        types = None if token_types is None else torch.as_tensor(list(token_types), dtype=torch.long)
        if types is not None and types.shape != (vocab_size,):
            raise InputError(
                f"token_types: expected one id per token ({vocab_size}), got {tuple(types.shape)}"
            )
        self.type_embedding = None
        if types is not None and len(types[types > 0].unique()) > 1:
            self.register_buffer("token_type_ids", types, persistent=False)
            self.type_embedding = nn.Embedding(int(types.max()) + 1, d)
            nn.init.zeros_(self.type_embedding.weight)

    # ------------------------------------------------------------------ pieces

    def _embed(self, ids: Tensor) -> Tensor:
        """Token embeddings (BART's scaled ones), plus the event type's when the vocabulary has types."""
        tokens = self.bart.get_input_embeddings()(ids)
        if self.type_embedding is not None:
            tokens = tokens + self.type_embedding(self.token_type_ids[ids]).to(tokens.dtype)
        return tokens

    def _prompt(self, module: ConditionalPrompt, age: Tensor, sex: Tensor, like: Tensor) -> Tensor:
        age = age.reshape(-1, 1)
        categorical = sex.reshape(-1, 1).long()
        if self.age_edges.numel():
            band = torch.bucketize(age.float(), self.age_edges, right=True)  # [edges[i-1], edges[i])
            categorical = torch.cat([categorical, band], dim=1)
        return module(age, categorical).to(like.dtype)

    def _profile_logits(self, age: Tensor | None, sex: Tensor | None) -> Tensor | None:
        """``[B, V]`` age-profile logits of each patient, or None when the model has none."""
        if self.age_profile is None:
            return None
        if age is None or sex is None:
            raise ValueError("a model with age profiles needs age and sex at every decode step")
        knots = self.profile_knots
        hat = age_hat_weights(age.reshape(-1).float(), knots)  # [B, K]
        # one block of knots per sex: a patient's row is its hat weights in its sex's block
        weights = hat.new_zeros(hat.shape[0], N_SEX, knots.numel())
        weights[torch.arange(hat.shape[0], device=hat.device), sex.reshape(-1).long()] = hat
        table = self.age_profile.flatten(0, 1) * self.age_profile_scale
        return weights.flatten(1).to(table.dtype) @ table

    def _check_length(self, ids: Tensor, what: str) -> None:
        if ids.shape[1] > self.max_length:
            raise InputError(
                f"{what} has {ids.shape[1]} tokens, more than model max_length={self.max_length}; "
                "raise model.net.max_length or shorten data sequences"
            )

    def _logits(self, hidden: Tensor, history: Tensor | None = None, profile: Tensor | None = None) -> Tensor:
        """Output logits; ``history [B, L, V]`` (or ``[B, V]`` for every position) holds each item's
        place in the patient so far (:data:`PREVIOUS`, :data:`EARLIER`, :data:`CURRENT`, 0), for the
        carry pathway; ``profile [B, V]`` the patients' age-profile logits."""
        # One fused matmul-plus-bias: a separate bias add is another full pass over [B, L, V].
        weight = self.bart.get_output_embeddings().weight
        logits = nn.functional.linear(hidden, weight, self.bart.final_logits_bias[0].to(hidden.dtype))
        if profile is not None:
            profile = profile[:, None, :].to(logits.dtype)
            if self.profile_gate is None:
                logits = logits + profile
            else:
                logits = torch.addcmul(logits, self.profile_gate(hidden).exp(), profile)
        calibrated = not self.training and bool(self.logit_offsets.any())
        if calibrated:
            offsets = self.logit_offsets.to(logits.dtype)
            logits[..., EOS_ID] += offsets[OFFSET_PATIENT_END]
            logits[..., VISIT_END_ID] += offsets[OFFSET_VISIT_END]
        if not self.carry:
            return logits
        if history is None:
            raise ValueError("a model with the carry-over pathway needs the history of earlier visits")
        if history.dim() == 2:
            history = history[:, None, :]
        if history.shape[-1] < logits.shape[-1]:  # padded output rows are never items
            history = nn.functional.pad(history, (0, logits.shape[-1] - history.shape[-1]))
        history = history[..., : logits.shape[-1]]
        bonus = self.carry_bias.to(hidden.dtype) + self.carry_gate(hidden)  # [B, L, V]
        if calibrated:
            recency = torch.where(history == PREVIOUS, offsets[OFFSET_PREVIOUS], offsets[OFFSET_OLDER])
            bonus = bonus + recency
        logits = torch.where((history == EARLIER) | (history == PREVIOUS), logits + bonus, logits)
        # An item already in the open visit cannot come again (the sampler's grammar); training
        # under the same rule keeps the model from learning to spend mass on it.
        return logits.masked_fill(history == CURRENT, REPEAT_LOGIT)

    # ------------------------------------------------------------------ encoder

    def encode(self, input_ids: Tensor, attention_mask: Tensor, age: Tensor, sex: Tensor) -> EncoderOutput:
        """Encoder states ``[B, P + Le, d]`` with the prompt first, and the extended mask."""
        self._check_length(input_ids, "encoder input")
        tokens = self._embed(input_ids)
        prompt = self._prompt(self.encoder_prompt, age, sex, tokens)
        mask = torch.cat([attention_mask.new_ones(prompt.shape[:2]), attention_mask], dim=1)
        states = self.bart.get_encoder()(
            inputs_embeds=torch.cat([prompt, tokens], dim=1), attention_mask=mask
        ).last_hidden_state
        return EncoderOutput(states, mask)

    # ------------------------------------------------------------------ decoder

    def _decode(
        self,
        decoder_input_ids: Tensor,
        encoder: EncoderOutput,
        age: Tensor | None,
        sex: Tensor | None,
        past_key_values: Cache | None,
        decoder_attention_mask: Tensor | None,
        use_cache: bool,
    ) -> tuple[Tensor, Cache | None]:
        """Decoder hidden states for the new tokens; the prompt goes in when the cache is empty."""
        tokens = self._embed(decoder_input_ids)
        at_start = past_key_values is None or past_key_values.get_seq_length() == 0
        if at_start:
            if age is None or sex is None:
                raise ValueError("age and sex are required for the first decoder step (the prompt)")
            tokens = torch.cat([self._prompt(self.decoder_prompt, age, sex, tokens), tokens], dim=1)
        if use_cache and past_key_values is None:
            config = self.bart.config
            past_key_values = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        mask = None
        if decoder_attention_mask is not None:
            # The caller's mask covers token positions only (past + new); the prompt is always visible.
            ones = decoder_attention_mask.new_ones(decoder_attention_mask.shape[0], self.prompt_length)
            mask = torch.cat([ones, decoder_attention_mask], dim=1)
        out = self.bart.get_decoder()(
            inputs_embeds=tokens,
            attention_mask=mask,
            encoder_hidden_states=encoder.states,
            encoder_attention_mask=encoder.mask,
            use_cache=use_cache,
            **{DECODER_CACHE_ARG: past_key_values},
        )
        hidden = out.last_hidden_state
        if at_start:
            hidden = hidden[:, self.prompt_length :]
        return hidden, getattr(out, DECODER_CACHE_ARG)

    def decode_step(
        self,
        decoder_input_ids: Tensor,
        encoder_states: Tensor,
        encoder_mask: Tensor,
        age: Tensor | None = None,
        sex: Tensor | None = None,
        past_key_values: Cache | None = None,
        decoder_attention_mask: Tensor | None = None,
        history: Tensor | None = None,
    ) -> DecodeOutput:
        """Logits for ``decoder_input_ids`` (the tokens not yet in the cache) and the updated cache.

        First call: ``past_key_values=None`` (or an empty cache), ``age``/``sex`` given; the decoder
        prompt is fed once, ahead of the tokens. Later calls: only the new tokens. The optional
        ``decoder_attention_mask [B, n_past_tokens + n_new]`` covers tokens only, not the prompt.
        ``history [B, V]`` int8: :func:`carry_history` of the sequence so far at its last position
        (kept by :func:`advance_history`), for the carry-over pathway. A model with age profiles
        needs ``age``/``sex`` at every step.
        """
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past + decoder_input_ids.shape[1] > self.max_length + self.prompt_length:
            raise InputError(
                f"decoding past max_length={self.max_length} tokens; stop generation earlier "
                "or raise model.net.max_length"
            )
        encoder = EncoderOutput(encoder_states, encoder_mask)
        hidden, cache = self._decode(
            decoder_input_ids, encoder, age, sex, past_key_values, decoder_attention_mask, use_cache=True
        )
        return DecodeOutput(self._logits(hidden, history, self._profile_logits(age, sex)), cache)

    # ------------------------------------------------------------------ training pass

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor,
        decoder_attention_mask: Tensor,
        age: Tensor,
        sex: Tensor,
    ) -> PromptBartOutput:
        """Teacher-forced pass; every output is aligned with ``decoder_input_ids`` / ``labels``."""
        self._check_length(decoder_input_ids, "decoder input")
        encoder = self.encode(input_ids, attention_mask, age, sex)
        hidden, _ = self._decode(
            decoder_input_ids, encoder, age, sex, None, decoder_attention_mask, use_cache=False
        )
        history = carry_history(decoder_input_ids, self.vocab_size) if self.carry else None
        gap_logits, stay_logits = self._time_logits(hidden)
        return PromptBartOutput(
            logits=self._logits(hidden, history, self._profile_logits(age, sex)),
            hidden=hidden,
            age_pred=self.age_head(hidden).squeeze(-1),
            sex_logits=self.sex_head(hidden),
            gap_logits=gap_logits,
            stay_logits=stay_logits,
        )

    def _time_logits(self, hidden: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if self.time_head is None:
            return None, None
        return self.time_head(hidden.detach() if self.visit_times_detach else hidden)

    def visit_time_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor,
        decoder_attention_mask: Tensor,
        age: Tensor,
        sex: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Gap and stay logits at every decoder position of (generated) sequences, teacher-forced:
        one pass after decoding, equal to the states the sampler saw step by step."""
        if self.time_head is None:
            raise ValueError("this model has no visit-time head (model.net.visit_times=false)")
        encoder = self.encode(input_ids, attention_mask, age, sex)
        hidden, _ = self._decode(
            decoder_input_ids, encoder, age, sex, None, decoder_attention_mask, use_cache=False
        )
        gap, stay = self.time_head(hidden)
        return self.time_head.masked(gap, 0), self.time_head.masked(stay, 1)


def carry_history(ids: Tensor, vocab_size: int) -> Tensor:
    """``[B, L, V]`` int8: per position ``t`` and item ``v``, :data:`CURRENT` when ``v`` is already
    in the visit ``t`` is in (at or before ``t``), else :data:`PREVIOUS` when it occurs in the visit
    before that one, else :data:`EARLIER` when it occurs in an older visit, else 0.

    A position's visit is the last ``<v>`` at or before it (items before the first ``<v>``, which a
    well-formed sequence does not have, form a visit 0). Only content ids (codes, categories)
    count. Equal, position by position, to :func:`advance_history` run over ``ids``.
    """
    b, length = ids.shape
    visit = (ids == VISIT_START_ID).long().cumsum(1)  # 1-based visit of each position, 0 before any
    n_visits = int(visit.max()) + 1
    content = ids >= FIRST_CONTENT_ID
    rows = torch.arange(b, device=ids.device)[:, None].expand(b, length)
    # Per visit (not per position, which would be L times larger): where each item first occurs
    # in it (``length`` if it does not), and whether it occurs in any earlier visit.
    first = torch.full((b, n_visits + 1, vocab_size), length, dtype=torch.int16, device=ids.device)
    positions = torch.arange(length, device=ids.device, dtype=torch.int16).expand(b, length)
    flat_index = ((rows * (n_visits + 1) + visit) * vocab_size + ids)[content]
    first.view(-1).scatter_reduce_(0, flat_index, positions[content], reduce="amin")
    present = first < length
    earlier = present.cumsum(1, dtype=torch.int16).gt(0)  # union of visits 1..k
    earlier = torch.cat([earlier.new_zeros(b, 1, vocab_size), earlier[:, :-1]], 1)  # ... 1..k-1
    previous = torch.cat([present.new_zeros(b, 1, vocab_size), present[:, :-1]], 1)  # visit k-1
    # Each position reads its own visit's row: one [B, L, V] gather per table.
    history = earlier[rows, visit].to(torch.int8)
    history.masked_fill_(previous[rows, visit], PREVIOUS)
    current = first[rows, visit] <= positions[..., None]
    return history.masked_fill_(current, CURRENT)


def advance_history(history: Tensor, seen: Tensor, tokens: Tensor) -> None:
    """Incremental :func:`carry_history`: update ``history [B, V]`` (int8) and ``seen [B, V]``
    (bool, every item so far) in place after one token per row."""
    opens = (tokens == VISIT_START_ID).nonzero().squeeze(1)
    if opens.numel():  # the open visit's items become the previous visit's; the rest seen, older
        closing = history[opens]
        history[opens] = torch.where(closing == CURRENT, PREVIOUS, seen[opens].to(history.dtype) * EARLIER)
    items = (tokens >= FIRST_CONTENT_ID) & (tokens < seen.shape[1])
    rows = items.nonzero().squeeze(1)
    if rows.numel():
        seen[rows, tokens[rows]] = True
        history[rows, tokens[rows]] = CURRENT


def _load_pretrained(path: str, vocab_size: int, n_positions: int) -> BartForConditionalGeneration:
    """Local BART weights (never downloaded), token embeddings resized to the ehrgen vocabulary.

    BART's ids 0-3 (``<s> <pad> </s> <unk>``) coincide with ehrgen's, so those rows keep their
    pretrained meaning; the remaining rows are reused or resized arbitrarily and learned anew.
    """
    if not Path(path).expanduser().is_dir():
        raise InputError(f"model.net.pretrained={path}: not a directory with BART weights (config.json)")
    bart = BartForConditionalGeneration.from_pretrained(str(Path(path).expanduser()), local_files_only=True)
    if bart.config.max_position_embeddings < n_positions:
        raise InputError(
            f"pretrained BART at {path} has {bart.config.max_position_embeddings} positions, fewer than "
            f"max_length + prompt_length = {n_positions}; lower model.net.max_length"
        )
    bart.resize_token_embeddings(vocab_size)
    bart.config.decoder_start_token_id = BOS_ID
    return bart
