"""The batched KV-cached sampler: equals a no-cache loop, token choice distributions, determinism,
batch-size independence, forced prefixes, beam search, decoding to visits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from ehrgen.data.vocab import BOS, EOS, PAD, VISIT_END, VISIT_START, CodeVocab
from ehrgen.errors import InputError
from ehrgen.models.prompt_bart import PromptBart, carry_history
from ehrgen.sampling.constraints import VisitConstraints, structure_errors
from ehrgen.sampling.sampler import (
    Sampler,
    SamplingConfig,
    choose_tokens,
    counter_uniforms,
    inverse_cdf,
    patient_keys,
    tokens_to_visits,
)

CODES = [f"{400 + i}" for i in range(90)]  # 90 codes: more than one 64-token block
VOCAB = CodeVocab(CODES)
LO, HI = VOCAB.content_range


def tiny_model(
    vocab_size: int = VOCAB.vocab_size,
    max_length: int = 48,
    seed: int = 0,
    carry: bool = False,
    profile: bool = False,
) -> PromptBart:
    torch.manual_seed(seed)
    model = PromptBart(
        vocab_size, d_model=32, encoder_layers=1, decoder_layers=2, attention_heads=2, ffn_dim=64,
        max_length=max_length, prompt_hidden=16, dropout=0.0, attention_dropout=0.0, carry=carry,
        age_profile_knots=[0, 30, 90] if profile else None,
    )  # fmt: skip
    with torch.no_grad():  # visits of a few codes, a few visits: realistic, varied lengths
        model.bart.final_logits_bias[0, VISIT_END] += 3.0
        model.bart.final_logits_bias[0, EOS] += 1.0
        if carry:  # earlier visits' codes strongly favoured: the history must reach every step
            model.carry_bias.normal_(3.0, 1.0)
        if profile:  # each patient's own code preferences: age and sex must reach every step
            model.age_profile.normal_(0.0, 3.0)
    return model.eval()


def constraints(max_length: int = 48, **kwargs) -> VisitConstraints:
    return VisitConstraints(VOCAB.codes, LO, max_length=max_length, **{"validity": False, **kwargs})


def demographics(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 90, n).astype(np.float32), rng.integers(0, 2, n)


def pad_to(tokens: np.ndarray, width: int) -> np.ndarray:
    return np.pad(tokens, ((0, 0), (0, width - tokens.shape[1])), constant_values=PAD)


@torch.no_grad()
def decode_without_cache(
    model: PromptBart, c: VisitConstraints, age, sex, cfg: SamplingConfig, seed: int
) -> np.ndarray:
    """The reference: recompute the whole decoder over the sequence at every step, never compact."""
    n = len(age)
    age_t, sex_t = torch.as_tensor(age), torch.as_tensor(sex)
    enc = model.encode(torch.tensor([[BOS, EOS]] * n), torch.ones(n, 2, dtype=torch.long), age_t, sex_t)
    uniforms = torch.from_numpy(counter_uniforms(patient_keys(np.arange(n), seed), c.max_length))
    seq, state = torch.full((n, 1), BOS), c.init_state(age, sex)
    while not bool(state.done.all()):
        history = carry_history(seq, model.vocab_size)[:, -1] if model.carry else None
        logits, _ = model.decode_step(seq, enc.states, enc.mask, age_t, sex_t, None, history=history)
        nxt = choose_tokens(c.mask_(logits[:, -1].float(), state), uniforms[:, seq.shape[1]], cfg)
        nxt = torch.where(state.done, PAD, nxt)
        c.update(state, nxt)
        seq = torch.cat([seq, nxt[:, None]], 1)
    return seq.numpy()


@torch.no_grad()
def constrained_logprob(model: PromptBart, c: VisitConstraints, tokens: np.ndarray, age, sex) -> np.ndarray:
    """Teacher-forced sum of masked log-probabilities of each sequence (what beam search maximises)."""
    n = len(age)
    age_t, sex_t = torch.as_tensor(age), torch.as_tensor(sex)
    enc = model.encode(torch.tensor([[BOS, EOS]] * n), torch.ones(n, 2, dtype=torch.long), age_t, sex_t)
    seq = torch.as_tensor(tokens)
    logits, _ = model.decode_step(seq[:, :-1], enc.states, enc.mask, age_t, sex_t, None)
    state, total = c.init_state(age, sex), torch.zeros(n, dtype=torch.float64)
    for t in range(1, seq.shape[1]):
        logp = torch.log_softmax(c.mask_(logits[:, t - 1].float().clone(), state), -1)
        total += torch.where(state.done, 0.0, logp.gather(1, seq[:, t : t + 1]).squeeze(1).double())
        c.update(state, seq[:, t])
    return total.numpy()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU: one thread avoids oversubscription stalls (several-fold faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize(
    ("strategy", "carry", "profile"),
    [("greedy", False, False), ("sample", False, False), ("sample", True, False), ("sample", True, True)],
)
def test_kv_cached_decoding_equals_no_cache_loop(strategy: str, carry: bool, profile: bool) -> None:
    model, c = tiny_model(carry=carry, profile=profile), constraints()
    age, sex = demographics(12)
    cfg = SamplingConfig(strategy=strategy, compact_fraction=0.2)
    cached = Sampler(model, c, cfg, seed=4).sample(age, sex, np.arange(12))
    reference = decode_without_cache(model, c, age, sex, cfg, seed=4)
    width = max(cached.shape[1], reference.shape[1])
    np.testing.assert_array_equal(pad_to(cached, width), pad_to(reference, width))
    assert all(structure_errors(r, LO, HI) == [] for r in cached)
    if strategy == "sample":  # rows finished at different steps: the batch was compacted on the way
        assert len(set((cached != PAD).sum(1).tolist())) > 3
    if carry:  # and later visits repeat earlier ones
        visits = [[set(v) for v in VOCAB.decode(r)] for r in cached]
        repeated = [len(v[1] & v[0]) / len(v[1]) for v in visits if len(v) > 1]
        assert len(repeated) >= 3 and np.mean(repeated) > 0.5, repeated


# ----------------------------------------------------------------------------- token choice


def stratified(n: int) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({}, lambda p, x: p),
        ({"temperature": 0.5}, lambda p, x: torch.softmax(2 * x, -1)),
        ({"top_k": 3}, lambda p, x: torch.where(p >= p.topk(3).values[-1], p, 0.0)),
        (
            {"top_p": 0.6},
            lambda p, x: torch.where(
                p.sort(descending=True).values.cumsum(0)[(p[:, None] < p[None, :]).sum(1)] - p < 0.6, p, 0.0
            ),
        ),  # fmt: skip
    ],
    ids=["plain", "temperature", "top_k", "top_p"],
)
def test_choice_frequencies_match_the_filtered_softmax(cfg: dict, expected) -> None:
    torch.manual_seed(1)
    x = torch.randn(150) * 2
    x[[5, 70, 149]] = float("-inf")  # masked tokens, one per block
    p = torch.softmax(x, -1)
    target = expected(p, x)
    target = target / target.sum()
    n = 40_000
    picks = choose_tokens(x.expand(n, -1).clone(), stratified(n), SamplingConfig(**cfg))
    counts = torch.bincount(picks, minlength=150).double()
    # stratified uniforms: every token gets its share of draws up to rounding
    assert (counts - n * target).abs().max() <= 2.0
    assert counts[[5, 70, 149]].sum() == 0


def test_inverse_cdf_edges_and_row_independence() -> None:
    x = torch.full((3, 130), float("-inf"))
    x[0, 0] = 0.0  # a single allowed token, first
    x[1, 129] = 0.0  # a single allowed token, last (in the last, partly padded block)
    x[2, 60:70] = 0.0  # straddles a block boundary
    for u in (0.0, 0.5, 1.0 - 1e-12, 1.0):
        pick = inverse_cdf(x, torch.full((3,), u, dtype=torch.float64))
        assert pick[0] == 0 and pick[1] == 129 and 60 <= pick[2] < 70
    # a row's draw does not depend on the other rows
    torch.manual_seed(0)
    y, u = torch.randn(8, 130), torch.rand(8, dtype=torch.float64)
    full = inverse_cdf(y, u)
    assert all(inverse_cdf(y[i : i + 1], u[i : i + 1]).item() == full[i].item() for i in range(8))
    assert torch.equal(choose_tokens(y, u, SamplingConfig(strategy="greedy")), y.argmax(-1))
    assert torch.equal(choose_tokens(y, u, SamplingConfig(top_k=1)), y.argmax(-1))


def test_counter_uniforms_are_uniform_and_keyed() -> None:
    keys = patient_keys(np.arange(2000), seed=7)
    u = counter_uniforms(keys, 50)
    assert u.shape == (2000, 50) and u.min() >= 0 and u.max() < 1
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.1
    # entry (b, t) depends on patient b's key and t only
    np.testing.assert_array_equal(counter_uniforms(keys[[5, 3]], 20, start=30), u[[5, 3], 30:50])
    assert not np.array_equal(counter_uniforms(patient_keys(np.arange(3), seed=8), 5), u[:3, :5])


def test_sampling_options_are_checked() -> None:
    for bad in ({"temperature": 0}, {"top_p": 0}, {"top_k": -1}, {"strategy": "nucleus"}, {"num_beams": 0}):
        with pytest.raises(InputError, match="sampling"):
            SamplingConfig.coerce(bad)
    with pytest.raises(InputError, match="unknown option"):
        SamplingConfig.coerce({"temprature": 1.0})
    with pytest.raises(InputError, match="max_length"):
        Sampler(tiny_model(max_length=32), constraints(max_length=48))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_patients_whatever_the_batching() -> None:
    model, c = tiny_model(), constraints()
    age, sex = demographics(20)
    one = Sampler(model, c, {"top_p": 0.95}, seed=5).sample(age, sex, np.arange(20))
    again = Sampler(model, c, {"top_p": 0.95}, seed=5).sample(age, sex, np.arange(20))
    np.testing.assert_array_equal(one, again)
    # batches of 8 (indices carry the identity), never compacted vs always compacted
    for compact in (0.0, 1.0):
        sampler = Sampler(model, c, {"top_p": 0.95, "compact_fraction": compact}, seed=5)
        parts = [
            sampler.sample(age[i : i + 8], sex[i : i + 8], np.arange(i, min(i + 8, 20)))
            for i in range(0, 20, 8)
        ]
        np.testing.assert_array_equal(np.concatenate([pad_to(p, one.shape[1]) for p in parts]), one)
    other = Sampler(model, c, {"top_p": 0.95}, seed=6).sample(age, sex, np.arange(20))
    assert not np.array_equal(pad_to(other, 48), pad_to(one, 48))
    assert len({tuple(r) for r in one.tolist()}) > 15  # patients differ from each other


def test_forced_prefix_is_kept_and_continued() -> None:
    model, c = tiny_model(), constraints()
    age, sex = demographics(4)
    prefixes = [
        np.array([BOS]),
        np.array([BOS, VISIT_START, LO + 3]),
        np.array([BOS, VISIT_START, LO + 3, LO + 4, VISIT_END, VISIT_START, LO + 9]),
        np.array([BOS, VISIT_START, LO + 1, VISIT_END]),
    ]
    for strategy in ("sample", "greedy", "beam"):
        out = Sampler(model, c, {"strategy": strategy, "num_beams": 3}, seed=1).sample(
            age, sex, np.arange(4), prefix=prefixes
        )
        for row, prefix in zip(out, prefixes, strict=True):
            np.testing.assert_array_equal(row[: len(prefix)], prefix)
            assert structure_errors(row, LO, HI) == []
        # the prefix's visit state carries over: LO + 9 is not repeated in the open visit
        second = out[2]
        first_close = int(np.flatnonzero(second == VISIT_END)[1])
        assert list(second[5:first_close]).count(LO + 9) == 1
    with pytest.raises(InputError, match="start with <s>"):
        Sampler(model, c).sample(age[:1], sex[:1], np.arange(1), prefix=[np.array([VISIT_START])])


# ----------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("profile", [False, True])
def test_beam_of_one_is_greedy(profile: bool) -> None:
    model, c = tiny_model(profile=profile), constraints()
    age, sex = demographics(6)
    greedy = Sampler(model, c, {"strategy": "greedy"}).sample(age, sex, np.arange(6))
    beam = Sampler(model, c, {"strategy": "beam", "num_beams": 1}).sample(age, sex, np.arange(6))
    np.testing.assert_array_equal(pad_to(beam, 48), pad_to(greedy, 48))


def test_wide_beam_finds_the_best_sequence() -> None:
    """With more beams than hypotheses, beam search is exhaustive: compare with enumeration."""
    vocab = CodeVocab(["4010", "4011", "4012"])
    lo, hi = vocab.content_range
    model = tiny_model(vocab.vocab_size, max_length=12, seed=3)
    c = VisitConstraints(vocab.codes, lo, max_visits=1, max_codes_per_visit=2, max_length=12, validity=False)
    candidates = [
        [BOS, VISIT_START, *items, VISIT_END, EOS]
        for k in (1, 2)
        for items in itertools.permutations(range(lo, hi), k)
    ]
    tokens = np.array([s + [PAD] * (6 - len(s)) for s in candidates])
    age, sex = demographics(3, seed=4)
    for lp in (0.0, 1.0):
        beam = Sampler(model, c, {"strategy": "beam", "num_beams": 16, "length_penalty": lp}).sample(
            age, sex, np.arange(3)
        )
        for i in range(3):
            scores = constrained_logprob(
                model, c, tokens, np.repeat(age[i], len(tokens)), np.repeat(sex[i], len(tokens))
            )
            lengths = (tokens != PAD).sum(1)  # the sampler's length: every token, <s> and </s> included
            best = tokens[np.argmax(scores / lengths**lp)]
            np.testing.assert_array_equal(pad_to(beam[i : i + 1], 6)[0], best)


# ----------------------------------------------------------------------------- decoding


def test_tokens_to_visits_matches_tokenizer_decode() -> None:
    model, c = tiny_model(), constraints()
    age, sex = demographics(20)
    tokens = Sampler(model, c, seed=2).sample(age, sex, np.arange(20))
    visits = tokens_to_visits(tokens, VOCAB.codes, LO).to_pylist()
    assert visits == [VOCAB.decode(r) for r in tokens]
    # unknown / out-of-vocabulary items are dropped, an emptied visit stays (the writer counts it)
    odd = np.array([[BOS, VISIT_START, 3, VISIT_END, VISIT_START, LO, VISIT_END, EOS, PAD]])
    assert tokens_to_visits(odd, VOCAB.codes, LO).to_pylist() == [[[], [CODES[0]]]]
