"""PromptBart: prompts condition the output, the KV cache is exact, the tiny model can overfit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from ehrgen.errors import InputError
from ehrgen.models.conditional_prompt import ConditionalPrompt
from ehrgen.models.losses import lm_loss
from ehrgen.models.prompt_bart import CURRENT, EARLIER, PREVIOUS, PromptBart, advance_history, carry_history

VOCAB = 7 + 20
TINY = dict(d_model=32, encoder_layers=2, decoder_layers=2, attention_heads=4, ffn_dim=64, max_length=24)


def make_batch(n: int = 4, seed: int = 0, vocab: int = VOCAB, max_visits: int = 3) -> dict[str, torch.Tensor]:
    """Synthetic batch to the DataModule contract: ``<s> (<v> codes <\\v>)+ </s>``, right-padded."""
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(n):
        seq = [0]
        for _ in range(int(torch.randint(1, max_visits + 1, (1,), generator=g))):
            k = int(torch.randint(1, 4, (1,), generator=g))
            seq += [4, *torch.randperm(vocab - 7, generator=g)[:k].add(7).tolist(), 5]
        seqs.append([*seq, 2])
    width = max(map(len, seqs))
    clean = torch.full((n, width), 1, dtype=torch.long)
    for i, s in enumerate(seqs):
        clean[i, : len(s)] = torch.tensor(s)
    mask = (clean != 1).long()
    corrupted = clean.clone()
    corrupted[(torch.rand(clean.shape, generator=g) < 0.3) & (clean >= 7)] = 6
    labels = clean[:, 1:].masked_fill(clean[:, 1:] == 1, -100)
    return {
        "input_ids": corrupted,
        "attention_mask": mask,
        "decoder_input_ids": clean[:, :-1],
        "decoder_attention_mask": mask[:, :-1],
        "labels": labels,
        "age": torch.rand(n, generator=g) * 80 + 10,
        "sex": torch.randint(0, 2, (n,), generator=g),
    }


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.fixture
def tiny() -> PromptBart:
    torch.manual_seed(0)
    return PromptBart(VOCAB, prompt_length=3, **TINY).eval()


def test_conditional_prompt_shapes_and_offsets() -> None:
    prompt = ConditionalPrompt(
        d_model=8, prompt_length=3, d_hidden=16, numeric_scales=(100.0,), cardinalities=(2, 3)
    )
    assert prompt.cat_offsets.tolist() == [0, 2]
    out = prompt(torch.tensor([[50.0], [60.0]]), torch.tensor([[0, 2], [1, 0]]))
    assert out.shape == (2, 3, 8)
    # Categorical feature 2 value 0 uses table row 2, not row 0 (feature 1's value 0).
    rows = prompt.cat_embedding(torch.tensor([0, 1, 2, 3, 4]))
    same = prompt(torch.tensor([[60.0]]), torch.tensor([[1, 0]]))
    torch.testing.assert_close(same, out[1:2])  # float32 tolerance: batch size changes the kernels
    assert not torch.allclose(rows[0], rows[2])


def test_forward_shapes_align_with_labels(tiny: PromptBart) -> None:
    batch = make_batch()
    out = tiny(**model_inputs(batch))
    b, ld = batch["labels"].shape
    assert out.logits.shape == (b, ld, VOCAB)
    assert out.hidden.shape == (b, ld, 32)
    assert out.age_pred.shape == (b, ld)
    assert out.sex_logits.shape == (b, ld, 2)
    assert tiny.bart.config.max_position_embeddings == TINY["max_length"] + 3


def test_prompts_change_the_output(tiny: PromptBart) -> None:
    batch = make_batch()
    inputs = model_inputs(batch)
    with torch.no_grad():
        base = tiny(**inputs).logits
        older = tiny(**{**inputs, "age": inputs["age"] + 30}).logits
        flipped = tiny(**{**inputs, "sex": 1 - inputs["sex"]}).logits
        again = tiny(**inputs).logits
    assert torch.equal(base, again)
    # At initialisation attention is near-uniform and every input moves logits only a little;
    # 1e-5 is still two orders above float32 noise (the repeat is bit-identical).
    assert (older - base).abs().max() > 1e-5
    assert (flipped - base).abs().max() > 1e-5


def test_age_bands_are_the_evaluation_bands_and_a_step_in_the_prompt() -> None:
    from ehrgen.metrics.conditioning import age_band

    edges = [1.0, 18.0, 45.0]
    banded = PromptBart(VOCAB, prompt_length=2, age_bands=edges, **TINY)
    numeric = PromptBart(VOCAB, prompt_length=2, **TINY)
    ages = torch.tensor([0.0, 0.5, 0.999, 1.0, 17.9, 18.0, 44.0, 45.0, 90.0])
    band = torch.bucketize(ages, banded.age_edges, right=True)
    assert band.tolist() == age_band(ages.numpy(), edges).tolist()  # one definition of a band
    sex = torch.zeros(2, dtype=torch.long)
    like = torch.zeros(1)
    with torch.no_grad():  # either side of the newborn edge: a step with bands, a nudge without
        step = banded._prompt(banded.decoder_prompt, torch.tensor([0.999, 1.0]), sex, like)
        nudge = numeric._prompt(numeric.decoder_prompt, torch.tensor([0.999, 1.0]), sex, like)
        inside = banded._prompt(banded.decoder_prompt, torch.tensor([1.0, 1.001]), sex, like)
    assert (step[0] - step[1]).abs().max() > 100 * (nudge[0] - nudge[1]).abs().max()
    assert (step[0] - step[1]).abs().max() > 100 * (inside[0] - inside[1]).abs().max()
    with pytest.raises(InputError, match="age_bands must be increasing ages > 0"):
        PromptBart(VOCAB, age_bands=[18, 1], **TINY)


def test_encoder_and_decoder_prompts_both_act(tiny: PromptBart) -> None:
    inputs = model_inputs(make_batch())
    # Random, not constant: BART's embedding LayerNorm would erase a constant shift.
    shift = torch.randn(
        tiny.decoder_prompt.reparam[-1].bias.shape, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        base = tiny(**inputs).logits
        tiny.decoder_prompt.reparam[-1].bias.add_(shift)
        dec_changed = tiny(**inputs).logits
        tiny.decoder_prompt.reparam[-1].bias.sub_(shift)
        tiny.encoder_prompt.reparam[-1].bias.add_(shift)
        enc_changed = tiny(**inputs).logits
    assert (dec_changed - base).abs().max() > 1e-3
    assert (enc_changed - base).abs().max() > 1e-3


def test_kv_cache_decoding_equals_full_forward(tiny: PromptBart) -> None:
    batch = make_batch(seed=3)
    inputs = model_inputs(batch)
    dec, dmask = inputs["decoder_input_ids"], inputs["decoder_attention_mask"]
    with torch.no_grad():
        full = tiny(**inputs).logits
        enc = tiny.encode(inputs["input_ids"], inputs["attention_mask"], inputs["age"], inputs["sex"])
        assert enc.states.shape[1] == inputs["input_ids"].shape[1] + 3
        # First call: prompt + a 2-token prefix; then one token at a time from the cache.
        step = tiny.decode_step(
            dec[:, :2], enc.states, enc.mask, inputs["age"], inputs["sex"], None, dmask[:, :2]
        )
        pieces, cache = [step.logits], step.past_key_values
        for t in range(2, dec.shape[1]):
            step = tiny.decode_step(
                dec[:, t : t + 1],
                enc.states,
                enc.mask,
                past_key_values=cache,
                decoder_attention_mask=dmask[:, : t + 1],
            )
            pieces.append(step.logits)
            cache = step.past_key_values
        assert cache.get_seq_length() == 3 + dec.shape[1]
    incremental = torch.cat(pieces, dim=1)
    valid = dmask.bool()
    torch.testing.assert_close(incremental[valid], full[valid], atol=1e-5, rtol=1e-4)


def test_decode_step_requires_demographics_for_the_prompt(tiny: PromptBart) -> None:
    inputs = model_inputs(make_batch())
    enc = tiny.encode(inputs["input_ids"], inputs["attention_mask"], inputs["age"], inputs["sex"])
    with pytest.raises(ValueError, match="age and sex"):
        tiny.decode_step(inputs["decoder_input_ids"][:, :1], enc.states, enc.mask)


def test_too_long_sequence_is_a_clear_error(tiny: PromptBart) -> None:
    inputs = model_inputs(make_batch())
    long_ids = torch.full((1, TINY["max_length"] + 1), 7)
    with pytest.raises(InputError, match="max_length"):
        tiny.encode(long_ids, torch.ones_like(long_ids), inputs["age"][:1], inputs["sex"][:1])


def test_overfits_one_small_batch() -> None:
    torch.manual_seed(0)
    model = PromptBart(VOCAB, prompt_length=2, dropout=0.0, attention_dropout=0.0, **TINY)
    batch = make_batch(n=4, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = lm_loss(model(**model_inputs(batch)).logits, batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_pretrained_weights_are_loaded_and_resized(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=50, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40,
    )  # fmt: skip
    source = BartForConditionalGeneration(config)
    source.save_pretrained(tmp_path / "bart")
    model = PromptBart(VOCAB, max_length=30, prompt_length=4, pretrained=str(tmp_path / "bart"))
    emb = model.bart.get_input_embeddings().weight
    assert emb.shape == (VOCAB, 32)
    torch.testing.assert_close(emb, source.get_input_embeddings().weight[:VOCAB])
    assert model.bart.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # still tied
    out = model(**model_inputs(make_batch()))
    assert out.logits.shape[-1] == VOCAB
    with pytest.raises(InputError, match="positions"):
        PromptBart(VOCAB, max_length=39, prompt_length=4, pretrained=str(tmp_path / "bart"))
    with pytest.raises(InputError, match="not a directory"):
        PromptBart(VOCAB, pretrained=str(tmp_path / "missing"))


def test_carry_history_known_answer() -> None:
    # <s> <v> 7 8 <\v> <v> 9 <\v> <v> 7 <\v> </s>
    ids = torch.tensor([[0, 4, 7, 8, 5, 4, 9, 5, 4, 7, 5, 2]])
    h = carry_history(ids, 10)[0]
    E_, C_, P_ = EARLIER, CURRENT, PREVIOUS
    expected = {  # position -> {item: value}
        0: {}, 1: {}, 2: {7: C_}, 3: {7: C_, 8: C_}, 4: {7: C_, 8: C_},  # visit 1: its own items
        5: {7: P_, 8: P_}, 6: {7: P_, 8: P_, 9: C_}, 7: {7: P_, 8: P_, 9: C_},  # visit 1 is previous
        8: {7: E_, 8: E_, 9: P_}, 9: {7: C_, 8: E_, 9: P_}, 10: {7: C_, 8: E_, 9: P_}, 11: {7: C_, 8: E_, 9: P_},
    }  # fmt: skip
    for t, items in expected.items():
        want = torch.zeros(10, dtype=torch.int8)
        for v, value in items.items():
            want[v] = value
        assert torch.equal(h[t], want), t
    # the incremental form gives the same history position by position
    seen, hist = torch.zeros(1, 10, dtype=torch.bool), torch.zeros(1, 10, dtype=torch.int8)
    for t in range(ids.shape[1]):
        if t:
            advance_history(hist, seen, ids[:, t])
        assert torch.equal(hist[0], h[t]), t


def test_carry_history_equals_the_incremental_form_on_any_sequence() -> None:
    # random ids: items before any <v>, repeats inside a visit, specials and padding anywhere
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch, length, vocab = 3, int(torch.randint(1, 40, (1,), generator=g)), 12
        ids = torch.randint(0, vocab, (batch, length), generator=g)
        ids[torch.rand(batch, length, generator=g) < 0.25] = 4  # <v>
        h = carry_history(ids, vocab)
        seen, hist = torch.zeros(batch, vocab, dtype=torch.bool), torch.zeros(batch, vocab, dtype=torch.int8)
        for t in range(length):
            advance_history(hist, seen, ids[:, t])
            assert torch.equal(hist, h[:, t]), (ids, t)


def test_kv_cache_decoding_equals_full_forward_with_carry() -> None:
    torch.manual_seed(0)
    model = PromptBart(VOCAB, prompt_length=3, carry=True, **TINY).eval()
    with torch.no_grad():  # a pathway that matters: random per-item bonuses and gate
        model.carry_bias.normal_(0, 2.0)
        model.carry_gate.weight.normal_(0, 0.5)
    batch = make_batch(n=6, seed=5, max_visits=4)
    inputs = model_inputs(batch)
    dec = inputs["decoder_input_ids"]
    with torch.no_grad():
        full = model(**inputs).logits
        enc = model.encode(inputs["input_ids"], inputs["attention_mask"], inputs["age"], inputs["sex"])
        seen = torch.zeros(dec.shape[0], VOCAB, dtype=torch.bool)
        hist = torch.zeros(dec.shape[0], VOCAB, dtype=torch.int8)
        step = model.decode_step(dec[:, :1], enc.states, enc.mask, inputs["age"], inputs["sex"], history=hist)
        pieces, cache = [step.logits], step.past_key_values
        for t in range(1, dec.shape[1]):
            advance_history(hist, seen, dec[:, t])
            step = model.decode_step(
                dec[:, t : t + 1], enc.states, enc.mask, past_key_values=cache, history=hist
            )
            pieces.append(step.logits)
            cache = step.past_key_values
        with pytest.raises(ValueError, match="history"):
            model.decode_step(dec[:, :1], enc.states, enc.mask, inputs["age"], inputs["sex"])
    valid = inputs["decoder_attention_mask"].bool()
    torch.testing.assert_close(torch.cat(pieces, 1)[valid], full[valid], atol=1e-5, rtol=1e-4)


def test_carry_pathway_learns_to_repeat_earlier_visits() -> None:
    """The cause of the missing carry-over: attention alone learns to copy from the patient's
    earlier visits only after a late phase transition (here > 600 steps; in the default budget on
    real-sized data, never); the carry-over pathway learns it at once."""
    lo, n_codes = 7, 40

    def copy_probability(carry: bool, steps: int = 150) -> float:
        torch.manual_seed(0)
        rng = torch.Generator().manual_seed(0)
        model = PromptBart(lo + n_codes, prompt_length=2, carry=carry, **{**TINY, "max_length": 16})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(steps):
            # two visits with the same three codes in another order: visit 2 repeats visit 1
            codes = torch.stack([torch.randperm(n_codes, generator=rng)[:3] + lo for _ in range(32)])
            again = codes.gather(1, torch.stack([torch.randperm(3, generator=rng) for _ in range(32)]))
            n = codes.shape[0]
            seq = torch.cat([torch.full((n, 1), 0), torch.full((n, 1), 4), codes, torch.full((n, 1), 5),
                             torch.full((n, 1), 4), again, torch.full((n, 1), 5), torch.full((n, 1), 2)], 1)  # fmt: skip
            out = model(torch.tensor([[0, 2]] * n), torch.ones(n, 2, dtype=torch.long), seq[:, :-1],
                        torch.ones_like(seq[:, :-1]), torch.full((n,), 50.0), torch.zeros(n, dtype=torch.long))  # fmt: skip
            loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), seq[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # probability of the true first code of visit 2
            return float(out.logits[:, 6].softmax(-1).gather(1, seq[:, 7:8]).mean())

    assert copy_probability(carry=False) < 0.05  # chance is 1/40
    assert copy_probability(carry=True) > 0.25  # one of the three visit-1 codes: 1/3 at best


def test_age_profiles_add_a_piecewise_linear_curve_per_item_and_sex() -> None:
    """Known answer: the profile logits interpolate each sex's knot values linearly in age,
    clamp outside the knots, and add the same row to every position of a patient."""
    torch.manual_seed(0)
    model = PromptBart(VOCAB, prompt_length=2, age_profile_knots=[0, 1, 20], **TINY).eval()
    plain = PromptBart(VOCAB, prompt_length=2, **TINY).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "age_profile"})
    with torch.no_grad():
        model.age_profile.normal_(0, 1.0)
    table = model.age_profile.detach() * model.age_profile_scale
    age = torch.tensor([0.0, 0.5, 10.5, 20.0, 35.0, -3.0])
    sex = torch.tensor([0, 1, 1, 0, 1, 0])
    expected = torch.stack([
        table[0, 0],
        0.5 * table[1, 0] + 0.5 * table[1, 1],
        0.5 * table[1, 1] + 0.5 * table[1, 2],
        table[0, 2],
        table[1, 2],  # above the last knot: clamped
        table[0, 0],  # below the first: clamped
    ])  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(model._profile_logits(age, sex), expected)
        inputs = model_inputs(make_batch(n=6, seed=2))
        inputs["age"], inputs["sex"] = age, sex
        shift = model(**inputs).logits - plain(**inputs).logits
    torch.testing.assert_close(shift, expected[:, None, :].expand_as(shift), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="age_profile_knots must be >= 2 increasing ages >= 0"):
        PromptBart(VOCAB, age_profile_knots=[20, 1], **TINY)
    with pytest.raises(InputError, match="age_profile_knots"):
        PromptBart(VOCAB, age_profile_knots=[5], **TINY)


def test_kv_cache_decoding_equals_full_forward_with_age_profiles() -> None:
    torch.manual_seed(0)
    model = PromptBart(VOCAB, prompt_length=3, carry=True, age_profile_knots=[0, 18, 60, 90],
                       age_profile_gate=True, **TINY).eval()  # fmt: skip
    with torch.no_grad():
        model.age_profile.normal_(0, 2.0)
        model.profile_gate.weight.normal_(0, 0.3)  # a gate that differs from position to position
    inputs = model_inputs(make_batch(n=6, seed=7, max_visits=3))
    dec, age, sex = inputs["decoder_input_ids"], inputs["age"], inputs["sex"]
    with torch.no_grad():
        full = model(**inputs).logits
        enc = model.encode(inputs["input_ids"], inputs["attention_mask"], age, sex)
        seen = torch.zeros(dec.shape[0], VOCAB, dtype=torch.bool)
        hist = torch.zeros(dec.shape[0], VOCAB, dtype=torch.int8)
        step = model.decode_step(dec[:, :1], enc.states, enc.mask, age, sex, history=hist)
        pieces, cache = [step.logits], step.past_key_values
        for t in range(1, dec.shape[1]):
            advance_history(hist, seen, dec[:, t])
            step = model.decode_step(dec[:, t : t + 1], enc.states, enc.mask, age, sex, cache, history=hist)
            pieces.append(step.logits)
            cache = step.past_key_values
        with pytest.raises(ValueError, match="age and sex at every decode step"):
            model.decode_step(dec[:, 1:2], enc.states, enc.mask, past_key_values=cache, history=hist)
    valid = inputs["decoder_attention_mask"].bool()
    torch.testing.assert_close(torch.cat(pieces, 1)[valid], full[valid], atol=1e-5, rtol=1e-4)


def test_age_profiles_learn_a_steep_age_effect_fast() -> None:
    """The cause of blurred per-code age profiles: through the prompts alone, a code's dependence
    on age is learnt slowly (here a code per age decade, 80 steps); the age-profile pathway learns
    it at once, and only with its scale (Adam moves a zero-initialised table ~lr per step)."""
    lo, n_codes = 7, 9

    def true_code_probability(knots: list[float] | None, scale: float = 30.0, steps: int = 80) -> float:
        torch.manual_seed(0)
        rng = torch.Generator().manual_seed(0)
        model = PromptBart(lo + n_codes, prompt_length=2, age_profile_knots=knots, age_profile_scale=scale,
                           **{**TINY, "max_length": 8})  # fmt: skip
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(steps):
            age = torch.rand(64, generator=rng) * 90
            code = (age // 10).long() + lo  # one visit with the code of the patient's decade
            n = age.shape[0]
            seq = torch.stack([torch.zeros(n, dtype=torch.long), torch.full((n,), 4), code,
                               torch.full((n,), 5), torch.full((n,), 2)], 1)  # fmt: skip
            out = model(torch.tensor([[0, 2]] * n), torch.ones(n, 2, dtype=torch.long), seq[:, :-1],
                        torch.ones_like(seq[:, :-1]), age, torch.zeros(n, dtype=torch.long))  # fmt: skip
            loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), seq[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # probability of the patient's own code at the code position
            return float(out.logits[:, 1].softmax(-1).gather(1, seq[:, 2:3]).mean())

    decades = [float(10 * k + 5) for k in range(9)]
    without = true_code_probability(None)
    unscaled = true_code_probability(decades, scale=1.0)
    scaled = true_code_probability(decades)
    assert without < 0.15 and unscaled < 0.15  # chance is 1/9
    assert scaled > 0.4


def test_profile_gate_starts_as_the_plain_table() -> None:
    torch.manual_seed(0)
    gated = PromptBart(VOCAB, prompt_length=2, age_profile_knots=[0, 20, 80], age_profile_gate=True, **TINY)
    plain = PromptBart(VOCAB, prompt_length=2, age_profile_knots=[0, 20, 80], **TINY).eval()
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("profile_gate")})
    with torch.no_grad():
        gated.eval().age_profile.normal_(0, 1.0)
        plain.age_profile.copy_(gated.age_profile)
        inputs = model_inputs(make_batch(seed=3))
        torch.testing.assert_close(gated(**inputs).logits, plain(**inputs).logits)
    # without a table there is nothing to gate
    assert PromptBart(VOCAB, age_profile_gate=True, **TINY).profile_gate is None


def test_profile_gate_lets_the_age_effect_differ_by_position() -> None:
    """The cause of first-visit codes drawn towards middle age and later-visit codes pushed away
    from it: one table serves every position, so it learns a compromise between a position whose
    code depends on age alone and one whose code the history (or, here, nothing) decides. Visit 1
    holds the code of the patient's decade, visit 2 a code drawn independently of age: shared,
    the table puts as much age on visit 2 as on visit 1; gated, each position gets its own share."""
    lo, n_codes = 7, 9

    def fit(gate: bool, steps: int = 150) -> tuple[float, float]:
        torch.manual_seed(0)
        rng = torch.Generator().manual_seed(0)
        model = PromptBart(lo + n_codes, prompt_length=2, age_profile_knots=[float(10 * k + 5) for k in range(9)],
                           age_profile_gate=gate, **{**TINY, "max_length": 8})  # fmt: skip
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(steps):
            age = torch.rand(64, generator=rng) * 90
            n = age.shape[0]
            decade = (age // 10).long() + lo
            anything = torch.randint(lo, lo + n_codes, (n,), generator=rng)
            start, end = torch.full((n,), 4), torch.full((n,), 5)
            seq = torch.stack([torch.zeros(n, dtype=torch.long), start, decade, end, start, anything, end,
                               torch.full((n,), 2)], 1)  # fmt: skip
            out = model(torch.tensor([[0, 2]] * n), torch.ones(n, 2, dtype=torch.long), seq[:, :-1],
                        torch.ones_like(seq[:, :-1]), age, torch.zeros(n, dtype=torch.long))  # fmt: skip
            loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), seq[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # the decade's code: at visit 1 (should be high), at visit 2 (should be 1/9)
            p = out.logits.softmax(-1)
            return float(p[:, 1].gather(1, seq[:, 2:3]).mean()), float(p[:, 4].gather(1, seq[:, 2:3]).mean())

    shared_first, shared_second = fit(gate=False)
    gated_first, gated_second = fit(gate=True)
    assert shared_second > 0.35 and shared_first < 0.55  # the compromise: chance is 1/9
    assert gated_first > 0.65 and gated_second < 0.25


def test_type_embeddings_exist_only_for_several_event_types_and_act() -> None:
    one = [0] * 7 + [1] * 20  # specials, then diagnoses only
    assert PromptBart(VOCAB, token_types=one, **TINY).type_embedding is None
    typed = [0] * 7 + [1] * 10 + [2] * 4 + [3] * 6
    torch.manual_seed(0)
    model = PromptBart(VOCAB, prompt_length=3, token_types=typed, **TINY).eval()
    assert model.type_embedding.weight.shape == (4, TINY["d_model"])
    inputs = model_inputs(make_batch(seed=4))
    with torch.no_grad():
        before = model(**inputs).logits
        torch.manual_seed(0)
        plain = PromptBart(VOCAB, prompt_length=3, **TINY).eval()
        torch.testing.assert_close(plain(**inputs).logits, before)  # zero at init: no effect yet
        model.type_embedding.weight[3] = 1.0  # a medication now reads differently from a diagnosis
        assert not torch.allclose(model(**inputs).logits, before)
    # the KV cache still equals the full forward pass with types
    test_kv_cache_decoding_equals_full_forward(model)
    with pytest.raises(InputError, match="token_types: expected one id per token"):
        PromptBart(VOCAB, token_types=typed[:-1], **TINY)
