"""Sampler constraints: the logits mask step by step, and whole generations from untrained and
adversarial models (constraints must hold whatever the weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehrgen.data.codes import category_of, event_type
from ehrgen.data.rules import VALIDITY_RULES
from ehrgen.data.vocab import (
    BOS,
    EOS,
    MASK,
    PAD,
    UNK,
    VISIT_END,
    VISIT_START,
    CodeVocab,
    HierarchicalTokenizer,
)
from ehrgen.errors import InputError
from ehrgen.models.prompt_bart import PromptBart
from ehrgen.sampling.constraints import VisitConstraints, structure_errors
from ehrgen.sampling.hierarchical import (
    KEEP_PRIOR,
    MULTI_PRIOR,
    SIZE_EDGES,
    STATS_VERSION,
    CodeExpander,
    expansion_stats,
)
from ehrgen.sampling.sampler import Sampler

RULE_CODES = {
    "pregnancy": ["64891", "V270", "6500", "V220", "6311"],
    "perinatal": ["7707", "V3000", "7690", "7742"],
    "male_genital": ["185", "6000", "6039"],
    "female_genital": ["1830", "1820", "6262", "6140"],
}
OTHER_CODES = [
    "4019",
    "25000",
    "25001",
    "25002",
    "25013",
    "41401",
    "4280",
    "5849",
    "2724",
    "486",
    "E8497",
    "V5861",
    "99591",
    "42731",
]
CODES = sorted({c for group in RULE_CODES.values() for c in group} | set(OTHER_CODES))
VOCAB = CodeVocab(CODES)
LO, HI = VOCAB.content_range
INF = float("-inf")


def tiny_model(vocab_size: int, max_length: int = 64, seed: int = 0) -> PromptBart:
    torch.manual_seed(seed)
    model = PromptBart(
        vocab_size, d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64,
        max_length=max_length, prompt_hidden=16, dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    return model.eval()


def adversarial(model: PromptBart, favoured: list[int], bias: float = 30.0) -> PromptBart:
    """Push the output bias of ``favoured`` tokens far above everything else."""
    with torch.no_grad():
        model.bart.final_logits_bias[0, favoured] += bias
    return model


def violations(visits: list[list[str]], sex: int, age: float) -> list[str]:
    """Plain rule check of one patient, independent of the mask's code path."""
    return [
        f"{rule.name}:{code}"
        for visit in visits
        for code in visit
        for rule in VALIDITY_RULES
        if rule.covers(code) and not bool(rule.allows(sex, age))
    ]


def state_after(c: VisitConstraints, tokens: list[int], age: float = 50.0, sex: int = 0):
    state = c.init_state(np.array([age], np.float32), np.array([sex]))
    for t in tokens:
        c.update(state, torch.tensor([t]))
    return state


def allowed_after(c: VisitConstraints, tokens: list[int], **kwargs) -> set[int]:
    logits = torch.zeros(1, c.vocab_size)
    c.mask_(logits, state_after(c, tokens, **kwargs))
    return set(torch.isfinite(logits[0]).nonzero().squeeze(1).tolist())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU: one thread avoids oversubscription stalls (several-fold faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the mask, step by step


def test_mask_enforces_visit_grammar() -> None:
    c = VisitConstraints(VOCAB.codes, LO, max_visits=2, max_codes_per_visit=2, max_length=64, validity=False)
    items = set(range(LO, HI))
    a, b, d = LO, LO + 1, LO + 2
    assert allowed_after(c, []) == {VISIT_START}  # after <s>: a visit must open (no empty patient)
    assert allowed_after(c, [VISIT_START]) == items  # no empty visit
    assert allowed_after(c, [VISIT_START, a]) == (items - {a}) | {VISIT_END}  # no duplicate
    assert allowed_after(c, [VISIT_START, a, b]) == {VISIT_END}  # max_codes_per_visit
    assert allowed_after(c, [VISIT_START, a, VISIT_END]) == {VISIT_START, EOS}
    assert allowed_after(c, [VISIT_START, a, VISIT_END, VISIT_START]) == items  # used mask reset at <v>
    assert allowed_after(c, [VISIT_START, a, VISIT_END, VISIT_START, d, VISIT_END]) == {EOS}  # max_visits
    assert allowed_after(c, [VISIT_START, a, VISIT_END, EOS]) == {PAD}  # finished rows only pad
    for forbidden in (BOS, PAD, UNK, MASK):
        assert all(forbidden not in allowed_after(c, p) for p in ([], [VISIT_START], [VISIT_START, a]))


def test_mask_orders_a_visit_by_event_type() -> None:
    typed = ["4019", "25000", "ICD9PCS:3893", "RX:heparin", "RX:insulin"]
    c = VisitConstraints(typed, LO, max_length=64, validity=False)
    dx, px, rx = {LO, LO + 1}, {LO + 2}, {LO + 3, LO + 4}
    assert allowed_after(c, [VISIT_START]) == dx | px | rx
    assert allowed_after(c, [VISIT_START, LO + 2]) == rx | {VISIT_END}  # after a procedure: no diagnosis
    assert allowed_after(c, [VISIT_START, LO, LO + 3]) == {
        LO + 4,
        VISIT_END,
    }  # after a medication: medications
    assert allowed_after(c, [VISIT_START, LO + 3, VISIT_END, VISIT_START]) == dx | px | rx  # reset at <v>
    # an adversarial model that wants medications first still writes each visit in type order
    model = adversarial(tiny_model(LO + len(typed), max_length=64), [LO + 3, LO + 4])
    tokens, _, _ = generate(model, c, 200)
    rank = {"diagnosis": 0, "procedure": 1, "medication": 2}
    for row in tokens:
        for visit in CodeVocab(typed).decode(row):
            kinds = [rank[event_type(x)] for x in visit]
            assert kinds == sorted(kinds)
    assert VisitConstraints(VOCAB.codes, LO, validity=False).typed is False  # one type: no masking
    assert c.max_codes_per_visit == 64  # null: only max_length bounds a visit


def test_mask_keeps_room_to_finish_within_max_length() -> None:
    c = VisitConstraints(VOCAB.codes, LO, max_length=7, validity=False)
    # <s> <v> a : 3 tokens; one more item still leaves room for <\v> </s> (total 6 <= 7)
    assert LO + 1 in allowed_after(c, [VISIT_START, LO])
    # 4 tokens: an item would need 7 + ... no: 5th item -> <\v> </s> = 7 tokens, allowed; then full
    assert allowed_after(c, [VISIT_START, LO, LO + 1, LO + 2]) == {VISIT_END}
    # after a closed visit, a new one would need <v> item <\v> </s>: 5 + 4 > 7
    assert allowed_after(c, [VISIT_START, LO, VISIT_END]) == {EOS}
    with pytest.raises(InputError, match="max_length"):
        VisitConstraints(VOCAB.codes, LO, max_length=4)


def test_validity_mask_per_patient() -> None:
    c = VisitConstraints(VOCAB.codes, LO, validity=True)
    ids = {code: VOCAB.code_id(code) for code in CODES}
    cases = [  # (sex, age, groups that must be forbidden)
        (1, 28.0, {"perinatal", "male_genital"}),
        (0, 28.0, {"perinatal", "pregnancy", "female_genital"}),
        (1, 0.3, {"pregnancy", "male_genital"}),
        (0, 80.0, {"perinatal", "pregnancy", "female_genital"}),
        (1, 70.0, {"perinatal", "pregnancy", "male_genital"}),
    ]
    for sex, age, forbidden_groups in cases:
        allowed = allowed_after(c, [VISIT_START], age=age, sex=sex)
        for group, codes in RULE_CODES.items():
            for code in codes:
                assert (ids[code] in allowed) == (group not in forbidden_groups), (sex, age, code)
        assert {ids[code] for code in OTHER_CODES} <= allowed


def test_patient_without_any_valid_code_is_an_input_error() -> None:
    c = VisitConstraints(RULE_CODES["pregnancy"], LO, validity=True)
    with pytest.raises(InputError, match="sex M and age 70"):
        c.init_state(np.array([30.0, 70.0], np.float32), np.array([1, 0]))
    # without validity the same request is fine
    VisitConstraints(RULE_CODES["pregnancy"], LO, validity=False).init_state(np.array([70.0]), np.array([0]))


def test_state_rows_can_be_gathered() -> None:
    c = VisitConstraints(VOCAB.codes, LO, validity=True)
    state = c.init_state(np.array([30.0, 0.5, 70.0], np.float32), np.array([1, 0, 0]))
    c.update(state, torch.tensor([VISIT_START, VISIT_START, VISIT_START]))
    c.update(state, torch.tensor([LO, LO + 1, LO + 2]))
    sub = state.index(torch.tensor([2, 0]))
    used = sub.blocked & ~sub.forbidden
    assert used[0, 2] and used[1, 0] and used.sum() == 2
    assert torch.equal(sub.forbidden, state.forbidden[[2, 0]])
    assert bool((sub.blocked >= sub.forbidden).all())
    assert sub.n_tokens.tolist() == [3, 3]


# ----------------------------------------------------------------------------- whole generations


def demographics_mix(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pregnant-age women, newborns, old men, and everyone else."""
    rng = np.random.default_rng(0)
    kind = np.arange(n) % 4
    age = np.select([kind == 0, kind == 1, kind == 2], [rng.uniform(14, 50, n), rng.uniform(0, 0.9, n), rng.uniform(65, 90, n)], rng.uniform(0, 90, n))  # fmt: skip
    sex = np.select([kind == 0, kind == 1, kind == 2], [1, rng.integers(0, 2, n), 0], rng.integers(0, 2, n))
    return age.astype(np.float32), sex.astype(np.int64)


def generate(model: PromptBart, constraints: VisitConstraints, n: int, **sampling) -> tuple:
    """``n`` patients of :func:`demographics_mix` in batches of 250, padded to ``max_length``."""
    age, sex = demographics_mix(n)
    sampler = Sampler(model, constraints, {"compact_fraction": 0.1, **sampling}, seed=3)
    chunks = []
    for i in range(0, n, 250):
        out = sampler.sample(age[i : i + 250], sex[i : i + 250], np.arange(i, min(i + 250, n)))
        chunks.append(np.pad(out, ((0, 0), (0, constraints.max_length - out.shape[1])), constant_values=PAD))
    return np.concatenate(chunks), age, sex


@pytest.mark.parametrize("bias", [False, True], ids=["untrained", "adversarial"])
def test_zero_violations_over_1000_patients(bias: bool) -> None:
    model = tiny_model(VOCAB.vocab_size, max_length=40)
    if bias:
        rule_ids = [VOCAB.code_id(c) for group in RULE_CODES.values() for c in group]
        adversarial(model, [*rule_ids, BOS, PAD, UNK, MASK])
    c = VisitConstraints(VOCAB.codes, LO, max_visits=4, max_codes_per_visit=6, max_length=40, validity=True)
    tokens, age, sex = generate(model, c, 1000)
    n_violations, n_rule_codes = 0, 0
    for row, a, s in zip(tokens, age, sex, strict=True):
        assert structure_errors(row, LO, HI) == [], row
        visits = VOCAB.decode(row)
        assert 1 <= len(visits) <= 4 and all(1 <= len(v) <= 6 for v in visits)
        n_violations += len(violations(visits, int(s), float(a)))
        n_rule_codes += sum(any(r.covers(code) for r in VALIDITY_RULES) for v in visits for code in v)
    assert n_violations == 0
    assert n_rule_codes > (1000 if bias else 50)  # the rules were exercised, not avoided by chance


def test_adversarial_model_violates_without_validity_mask() -> None:
    """The previous test can fail: the same biased model breaks the rules once the mask is off."""
    model = adversarial(
        tiny_model(VOCAB.vocab_size, max_length=40), [VOCAB.code_id(c) for c in RULE_CODES["pregnancy"]]
    )
    c = VisitConstraints(VOCAB.codes, LO, max_visits=4, max_codes_per_visit=6, max_length=40, validity=False)
    tokens, age, sex = generate(model, c, 250)
    bad = sum(
        len(violations(VOCAB.decode(r), int(s), float(a))) for r, a, s in zip(tokens, age, sex, strict=True)
    )
    assert bad > 100
    assert all(structure_errors(r, LO, HI) == [] for r in tokens)  # structure still holds


# ----------------------------------------------------------------------------- hierarchical


def expansion_fixture() -> tuple[HierarchicalTokenizer, dict]:
    tok = HierarchicalTokenizer(sorted({category_of(c) for c in CODES}), CODES)
    n_codes = len(tok.codes)
    return tok, {
        "version": STATS_VERSION,
        "categories": list(tok.categories),
        "codes": list(tok.codes),
        "age_edges": [1.0, 18.0, 45.0, 65.0],
        # every code seen once in every stratum
        "code_counts": {
            "stratum": [s for s in range(10) for _ in range(n_codes)],
            "code": [i for _ in range(10) for i in range(n_codes)],
            "count": [1] * (10 * n_codes),
        },
        # visits hold 1, 2 or 3 codes of a category
        "per_visit": {
            "category": [k for k in range(len(tok.categories)) for _ in range(3)],
            "n": [1, 2, 3] * len(tok.categories),
            "count": [5, 3, 2] * len(tok.categories),
        },
    }


@pytest.mark.parametrize("bias", [False, True], ids=["untrained", "adversarial"])
def test_hierarchical_expansion_valid_and_within_categories(bias: bool) -> None:
    tok, stats = expansion_fixture()
    expander = CodeExpander(tok, stats)
    model = tiny_model(tok.code_offset, max_length=40)
    if bias:
        bad_cats = [tok.category_id(category_of(c)) for group in RULE_CODES.values() for c in group]
        adversarial(model, bad_cats)
    c = VisitConstraints(
        tok.categories, tok.category_offset, max_length=40, max_codes_per_visit=5, item_ok=expander.item_ok
    )
    tokens, age, sex = generate(model, c, 500)
    visits = expander.expand(tokens, age, sex, np.arange(500), seed=3).to_pylist()
    multi = 0
    for row, patient, a, s in zip(tokens, visits, age, sex, strict=True):
        assert structure_errors(row, tok.category_offset, tok.code_offset) == []
        categories = tok.decode(row)
        assert len(categories) == len(patient)
        for cats, codes in zip(categories, patient, strict=True):
            assert len(codes) == len(set(codes))  # no duplicate within a visit
            assert {category_of(x) for x in codes} == set(cats)
            multi += len(codes) > len(cats)
        assert violations(patient, int(s), float(a)) == []
    assert multi > 0  # some categories expanded into several codes


def test_expansion_follows_the_statistics() -> None:
    tok, stats = expansion_fixture()
    single, diabetes = tok.category_id("V30"), tok.category_id("250")  # V3000 only; 25000-25013
    favoured = tok.codes.index("25002")
    counts = stats["code_counts"]
    for i, (s, code) in enumerate(zip(counts["stratum"], counts["code"], strict=True)):
        if s == 0 and code == favoured:  # boys under 1 year: 25002 is 50x more frequent
            counts["count"][i] = 50
    expander = CodeExpander(tok, stats, prior=0.0)  # no smoothing towards the all-patient shares
    n = 4000
    tokens = np.tile([BOS, VISIT_START, single, diabetes, VISIT_END, EOS], (n, 1))
    age, sex = np.full(n, 0.5, np.float32), np.arange(n) % 2
    visits = [v[0] for v in expander.expand(tokens, age, sex, np.arange(n), seed=0).to_pylist()]
    assert all(v[0] == "V3000" for v in visits)  # capped by the category's single code
    n_diabetes = np.array([len(v) - 1 for v in visits])
    assert set(n_diabetes) == {1, 2, 3}
    share = np.bincount(n_diabetes, minlength=4)[1:] / n  # per_visit counts 5:3:2
    np.testing.assert_allclose(share, [0.5, 0.3, 0.2], atol=0.03)
    has = np.array(["25002" in v for v in visits])
    # boys: 25002 in nearly every visit; girls: each code has the same weight
    assert has[sex == 0].mean() > 0.9
    expected_girls = float(np.mean([k / 4 for k in n_diabetes[sex == 1]]))
    assert abs(has[sex == 1].mean() - expected_girls) < 0.04
    # counter-based: the same seed and patient give the same codes, whatever the batch
    again = expander.expand(tokens[10:20], age[10:20], sex[10:20], np.arange(10, 20), seed=0).to_pylist()
    assert [v[0] for v in again] == visits[10:20]
    other = expander.expand(tokens, age, sex, np.arange(n), seed=1).to_pylist()
    assert [v[0] for v in other] != visits
    with pytest.raises(InputError, match="another vocabulary"):
        CodeExpander(tok, {**stats, "codes": stats["codes"][:-1]})


def test_a_category_carried_to_a_later_visit_keeps_its_codes() -> None:
    tok, stats = expansion_fixture()
    expander = CodeExpander(tok, stats, prior=0.0)
    diabetes, single = tok.category_id("250"), tok.category_id("V30")
    n = 300
    tokens = np.tile(
        [BOS, VISIT_START, diabetes, VISIT_END, VISIT_START, single, diabetes, VISIT_END, EOS], (n, 1)
    )
    age, sex = np.full(n, 60.0, np.float32), np.arange(n) % 2
    visits = expander.expand(tokens, age, sex, np.arange(n), seed=0).to_pylist()
    assert all(v[0] == [c for c in v[1] if c.startswith("250")] for v in visits)
    # while different patients draw different codes for it
    assert len({tuple(v[0]) for v in visits}) > 5


def test_a_carried_category_is_redrawn_at_its_real_change_rate() -> None:
    tok, stats = expansion_fixture()
    diabetes, single = tok.category_id("250"), tok.category_id("V30")
    # 250 kept its codes in 30 of 100 real consecutive-visit pairs; V30 (one code) always
    stats["repeat"] = {"category": [diabetes - tok.category_offset], "carried": [100], "same": [30]}
    expander = CodeExpander(tok, stats, prior=0.0)
    keep = (30 + KEEP_PRIOR * 0.3) / (100 + KEEP_PRIOR)  # the overall rate is 250's own here
    n = 6000
    visit = [VISIT_START, single, diabetes, VISIT_END]
    tokens = np.tile([BOS, *visit, *visit, *visit, EOS], (n, 1))
    age, sex = np.full(n, 60.0, np.float32), np.arange(n) % 2
    visits = expander.expand(tokens, age, sex, np.arange(n), seed=0).to_pylist()
    sets = [[tuple(c for c in v if c.startswith("250")) for v in p] for p in visits]
    kept = np.array([[p[1] == p[0], p[2] == p[1]] for p in sets])
    # kept = not redrawn, or redrawn into the same codes by chance (the draw's own collision rate)
    fresh = expander.expand(tokens[:, :6].copy(), age, sex, np.arange(n, 2 * n), seed=0).to_pylist()
    first = [tuple(c for c in p[0] if c.startswith("250")) for p in fresh]
    collide = np.mean([a == b for a, b in zip(first, first[1:] + first[:1], strict=True)])
    want = keep + (1 - keep) * collide
    np.testing.assert_allclose(kept.mean(0), [want, want], atol=0.03)
    # keyed by (patient, category, visit): the same codes whatever the batch
    again = expander.expand(tokens[7:9], age[7:9], sex[7:9], np.arange(7, 9), seed=0).to_pylist()
    assert again == visits[7:9]
    # without repeat statistics a carried category always keeps its codes (older checkpoints)
    del stats["repeat"]
    always = CodeExpander(tok, stats, prior=0.0).expand(tokens, age, sex, np.arange(n), seed=0).to_pylist()
    assert all(
        v[0] == v[1] == v[2] for v in ([[c for c in w if c.startswith("250")] for w in p] for p in always)
    )


def test_repeat_statistics_count_real_consecutive_visits(demo_cohort) -> None:
    from ehrgen.data.cohort import Cohort
    from ehrgen.data.vocab import build_tokenizer

    tok = build_tokenizer(demo_cohort, level="category")
    stats = expansion_stats(demo_cohort, tok)
    # independent count over the train split's patients, in plain Python
    carried, same = {}, {}
    for row in Cohort(demo_cohort).read("train").iter_rows(named=True):
        per_visit = []
        for visit in row["visits"]:
            cats: dict[str, set[str]] = {}
            for code in visit["codes"]:
                if code in tok.codes:
                    cats.setdefault(category_of(code), set()).add(code)
            per_visit.append(cats)
        for a, b in zip(per_visit, per_visit[1:], strict=False):
            for c in a.keys() & b.keys():
                carried[c] = carried.get(c, 0) + 1
                same[c] = same.get(c, 0) + (a[c] == b[c])
    rp = stats["repeat"]
    got = {
        tok.categories[k]: (n, s) for k, n, s in zip(rp["category"], rp["carried"], rp["same"], strict=True)
    }
    assert got == {c: (carried[c], same[c]) for c in carried}
    assert sum(carried.values()) > 20 and 0 < sum(same.values()) < sum(carried.values())


def test_the_code_count_follows_the_visit_size() -> None:
    """Known answer: with ``multi`` statistics, a category holds more than one code with the
    smoothed share of its visit-size band; how many beyond one follows the category's own 3:2."""
    tok, stats = expansion_fixture()
    diabetes = tok.category_id("250")
    fillers = [tok.category_id(c) for c in ("401", "428", "V58", "V45", "276", "427", "584", "V30")]
    big = len(fillers) + 1  # categories in the large visits
    small_band, big_band = 0, int(np.searchsorted(SIZE_EDGES, big, side="right"))
    cat = diabetes - tok.category_offset
    # 250 has 2+ codes in 5 % of the 200 one-category visits and 60 % of the 100 large ones
    stats["size_edges"] = list(SIZE_EDGES)
    stats["multi"] = {
        "size": [small_band, big_band],
        "category": [cat, cat],
        "visits": [200, 100],
        "multi": [10, 60],
    }
    expander = CodeExpander(tok, stats, prior=0.0)
    overall = 0.5  # per_visit 5:3:2
    want = [
        (10 + MULTI_PRIOR * overall) / (200 + MULTI_PRIOR),
        (60 + MULTI_PRIOR * overall) / (100 + MULTI_PRIOR),
    ]
    n = 6000
    age, sex = np.full(n, 60.0, np.float32), np.arange(n) % 2
    got = []
    for visit in ([diabetes], [*fillers, diabetes]):
        tokens = np.tile([BOS, VISIT_START, *visit, VISIT_END, EOS], (n, 1))
        codes = [
            [c for c in p[0] if c.startswith("250")]
            for p in expander.expand(tokens, age, sex, np.arange(n), 0).to_pylist()
        ]
        k = np.array([len(c) for c in codes])
        got.append((k > 1).mean())
        np.testing.assert_allclose(
            np.bincount(k, minlength=4)[2:] / max((k > 1).sum(), 1), [0.6, 0.4], atol=0.05
        )
    np.testing.assert_allclose(got, want, atol=0.02)
    # without multi statistics the share is the category's own whatever the size (older checkpoints)
    del stats["multi"]
    plain = CodeExpander(tok, stats, prior=0.0)
    for visit in ([diabetes], [*fillers, diabetes]):
        tokens = np.tile([BOS, VISIT_START, *visit, VISIT_END, EOS], (n, 1))
        codes = [
            [c for c in p[0] if c.startswith("250")]
            for p in plain.expand(tokens, age, sex, np.arange(n), 0).to_pylist()
        ]
        assert abs(np.mean([len(c) > 1 for c in codes]) - overall) < 0.02


def test_multi_statistics_count_real_visits(demo_cohort) -> None:
    from ehrgen.data.cohort import Cohort
    from ehrgen.data.vocab import build_tokenizer
    from ehrgen.privacy.small_cells import safe_expansion_stats

    tok = build_tokenizer(demo_cohort, level="category")
    stats = expansion_stats(demo_cohort, tok)
    visits, multi = {}, {}  # independent count over the train split's visits, in plain Python
    for row in Cohort(demo_cohort).read("train").iter_rows(named=True):
        for visit in row["visits"]:
            cats: dict[str, set[str]] = {}
            for code in visit["codes"]:
                if code in tok.codes:
                    cats.setdefault(category_of(code), set()).add(code)
            band = sum(len(cats) >= e for e in SIZE_EDGES)
            for c, codes in cats.items():
                visits[band, c] = visits.get((band, c), 0) + 1
                multi[band, c] = multi.get((band, c), 0) + (len(codes) > 1)
    m = stats["multi"]
    got = {
        (b, tok.categories[k]): (v, x)
        for b, k, v, x in zip(m["size"], m["category"], m["visits"], m["multi"], strict=True)
    }
    assert got == {key: (visits[key], multi[key]) for key in visits}
    assert len({b for b, _ in visits}) > 3 and sum(multi.values()) > 10
    # the small-cell rule keeps a cell only when its visits, multi and single counts all pass
    safe = safe_expansion_stats(stats)["multi"]
    for v, x in zip(safe["visits"], safe["multi"], strict=True):
        assert v >= 11 and x in range(0, v + 1) and (x == 0 or x >= 11) and (v - x == 0 or v - x >= 11)
    assert 0 < len(safe["visits"]) < len(m["visits"])
