"""BART-style corruptions: each task against what it must preserve, with seeded generators."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ehrgen.data.corruption import (
    TASKS,
    CorruptionConfig,
    apply_task,
    corrupt,
    corrupt_batch,
    delete_tokens,
    keep_first_visits,
    mask_spans,
    replace_tokens,
    shuffle_visits,
)
from ehrgen.data.vocab import BOS, EOS, MASK, UNK, VISIT_END, VISIT_START, CodeVocab
from ehrgen.errors import InputError

V, E = VISIT_START, VISIT_END
CONTENT = (7, 1007)


def _patient(rng: np.random.Generator, n_visits: int, first: int = 7) -> np.ndarray:
    """A sequence of distinct increasing code ids, so every code identifies its position."""
    ids, code = [BOS], first
    for _ in range(n_visits):
        n = int(rng.integers(1, 12))
        ids += [V, *range(code, code + n), E]
        code += n
    return np.array([*ids, EOS], dtype=np.int64)


def compose_defaults() -> CorruptionConfig:
    """The corruption options of the real conf/ (what ``python -m ehrgen.train`` uses)."""
    from conftest import compose_config

    return CorruptionConfig.coerce(dict(compose_config("train").data.datamodule.corruption))


def _visits(ids: np.ndarray) -> list[list[int]]:
    """Visit contents (between markers) of a well-formed sequence."""
    out, cur = [], None
    for t in ids.tolist():
        if t == V:
            cur = []
        elif t == E:
            out.append(cur)
            cur = None
        elif cur is not None:
            cur.append(t)
    return out


def _structure(ids: np.ndarray) -> list[int]:
    return [t for t in ids.tolist() if t in (BOS, EOS, V, E)]


@pytest.fixture
def patients() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [_patient(rng, int(rng.integers(1, 6))) for _ in range(300)]


def test_mask_spans_replace_each_span_by_one_mask(patients: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    span_counts = []
    for ids in patients:
        out = mask_spans(ids, rng, ratio=0.3, lam=3.0)
        assert _structure(out) == _structure(ids)  # markers intact
        n = int((ids >= 7).sum())
        kept = out[out >= 7]
        assert n - len(kept) == max(1, round(0.3 * n))  # exactly the target number of codes masked
        for before, after in zip(_visits(ids), _visits(out), strict=True):
            # kept codes are an ordered subsequence; each gap of removed codes holds 1..len(gap) masks
            survivors = [t for t in after if t != MASK]
            assert survivors == [t for t in before if t in set(survivors)]
            bounds = [before[0] - 1, *survivors, before[-1] + 1]
            groups, masks = [], 0
            for t in after + [None]:
                if t == MASK:
                    masks += 1
                else:
                    groups.append(masks)
                    masks = 0
            for lo, hi, m in zip(bounds[:-1], bounds[1:], groups, strict=True):
                removed = hi - lo - 1
                assert (m == 0) if removed == 0 else (1 <= m <= removed)
                if removed:
                    span_counts.append(removed / m)
    # Poisson(3) spans cut at visit boundaries: mean codes per <mask> well above 1
    assert 1.8 < np.mean(span_counts) < 3.5


def test_mask_spans_reproducible_and_no_growth(patients: list[np.ndarray]) -> None:
    a = [mask_spans(p, np.random.default_rng(5)) for p in patients[:20]]
    b = [mask_spans(p, np.random.default_rng(5)) for p in patients[:20]]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(len(x) <= len(p) for x, p in zip(a, patients[:20], strict=True))
    empty = np.array([BOS, V, E, EOS])
    assert mask_spans(empty, np.random.default_rng(0)).tolist() == empty.tolist()


def test_delete_removes_about_p_of_codes(patients: list[np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    n_codes = n_deleted = 0
    for ids in patients:
        out = delete_tokens(ids, rng, p=0.15)
        assert _structure(out) == _structure(ids)
        for before, after in zip(_visits(ids), _visits(out), strict=True):
            assert after == [t for t in before if t in set(after)]
            n_codes += len(before)
            n_deleted += len(before) - len(after)
    rate = n_deleted / n_codes
    assert abs(rate - 0.15) < 4 * np.sqrt(0.15 * 0.85 / n_codes)


def test_replace_keeps_length_and_structure(patients: list[np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    n_codes = n_changed = 0
    for ids in patients:
        out = replace_tokens(ids, rng, CONTENT, p=0.15)
        assert len(out) == len(ids)
        specials = ids < 7
        assert (out[specials] == ids[specials]).all()
        assert ((out[~specials] >= CONTENT[0]) & (out[~specials] < CONTENT[1])).all()
        n_codes += int((~specials).sum())
        n_changed += int((out != ids).sum())
    # a replacement may draw the same id (1 in 1000): the change rate is just below p
    assert abs(n_changed / n_codes - 0.15 * 0.999) < 4 * np.sqrt(0.15 * 0.85 / n_codes)


def test_shuffle_keeps_per_visit_multisets(patients: list[np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    moved = 0
    for ids in patients:
        out = shuffle_visits(ids, rng)
        assert _structure(out) == _structure(ids)
        for before, after in zip(_visits(ids), _visits(out), strict=True):
            assert Counter(before) == Counter(after)
            moved += before != after
    assert moved > 100  # visits with >= 2 codes do get reordered


def test_next_visit_keeps_a_prefix_of_visits(patients: list[np.ndarray]) -> None:
    rng = np.random.default_rng(4)
    seen_k = Counter()
    for ids in patients:
        n = len(_visits(ids))
        out = keep_first_visits(ids, rng)
        k = len(_visits(out))
        assert 0 <= k <= n - 1
        cut = np.flatnonzero(ids == V)[k]  # where visit k (0-based) began
        assert out.tolist() == [*ids[:cut].tolist(), EOS]
        seen_k[k] += 1
    assert seen_k[0] > 0  # the demographics-only prompt <s> </s> occurs
    one_visit = np.array([BOS, V, 9, E, EOS])
    assert keep_first_visits(one_visit, rng).tolist() == [BOS, EOS]


def test_unk_counts_as_a_code() -> None:
    ids = np.array([BOS, V, UNK, UNK, UNK, UNK, E, EOS])
    assert delete_tokens(ids, np.random.default_rng(0), p=1.0).tolist() == [BOS, V, E, EOS]
    masked = mask_spans(ids, np.random.default_rng(0), ratio=1.0)
    assert masked[:2].tolist() == [BOS, V] and masked[-2:].tolist() == [E, EOS]
    assert 1 <= len(masked) - 4 <= 4 and (masked[2:-2] == MASK).all()


def test_corrupt_applies_with_probability_p_and_mixes_tasks(patients: list[np.ndarray]) -> None:
    cfg = CorruptionConfig(prompt_p=0.0)
    rng = np.random.default_rng(11)
    changed = sum(not np.array_equal(corrupt(p, rng, cfg, CONTENT), p) for p in patients * 4)
    # p = 0.5, and a task leaves a sequence unchanged only rarely (e.g. shuffling a 1-code visit)
    assert 0.35 < changed / (len(patients) * 4) < 0.55
    never = CorruptionConfig(p=0.0, prompt_p=0.0)
    assert all(np.array_equal(corrupt(p, rng, never, CONTENT), p) for p in patients)
    only_next = CorruptionConfig(p=1.0, prompt_p=0.0, tasks=("next_visit",))
    for p in patients[:50]:
        out = corrupt(p, rng, only_next, CONTENT)
        assert out[-1] == EOS and len(_visits(out)) < len(_visits(p))
    # the same seed gives the same encoder inputs
    a = [corrupt(p, np.random.default_rng(3), cfg, CONTENT) for p in patients[:30]]
    b = [corrupt(p, np.random.default_rng(3), cfg, CONTENT) for p in patients[:30]]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_prompt_p_gives_the_generation_prompt_to_patients_of_every_length() -> None:
    """next_visit alone reaches the empty encoder for 1 / n_visits of the patients it corrupts."""
    rng = np.random.default_rng(5)
    by_length = {n: [_patient(rng, n) for _ in range(400)] for n in (1, 3, 6)}
    prompt = [BOS, EOS]

    def empty_share(cfg: CorruptionConfig, seqs: list[np.ndarray]) -> float:
        out = corrupt_batch(seqs, np.random.default_rng(9), cfg, CONTENT)
        return float(np.mean([o.tolist() == prompt for o in out]))

    only_next = CorruptionConfig(p=1.0, prompt_p=0.0, tasks=("next_visit",))
    assert empty_share(only_next, by_length[1]) == 1.0
    assert 0.1 < empty_share(only_next, by_length[6]) < 0.25  # ~1/6
    with_prompt = CorruptionConfig(p=0.5, prompt_p=0.3)
    for n, seqs in by_length.items():
        assert 0.24 < empty_share(with_prompt, seqs) < 0.4, n  # ~0.3 (+ next_visit's own k = 0)
    assert CorruptionConfig().prompt_p == compose_defaults().prompt_p  # one default
    with pytest.raises(InputError, match="prompt_p must lie in"):
        CorruptionConfig(prompt_p=1.5)


def test_task_weights_select_tasks() -> None:
    cfg = CorruptionConfig(
        p=1.0, prompt_p=0.0, tasks=("delete", "shuffle"), task_weights=(1.0, 0.0), delete_p=1.0
    )
    ids = np.array([BOS, V, 7, 8, E, EOS])
    assert corrupt(ids, np.random.default_rng(0), cfg, CONTENT).tolist() == [BOS, V, E, EOS]


def test_config_coercion_and_validation() -> None:
    cfg = CorruptionConfig.coerce({"p": 1.0, "tasks": ["mask", "delete"], "mask_ratio": 0.5})
    assert cfg.tasks == ("mask", "delete") and cfg.p == 1.0 and cfg.mask_ratio == 0.5
    assert CorruptionConfig.coerce(None) == CorruptionConfig()
    assert CorruptionConfig.coerce(cfg) is cfg
    assert CorruptionConfig.coerce(cfg.to_dict()) == cfg
    assert set(TASKS) == {"mask", "delete", "replace", "shuffle", "next_visit"}
    with pytest.raises(InputError, match="unknown"):
        CorruptionConfig(tasks=("rotate",))
    with pytest.raises(InputError, match="unknown option"):
        CorruptionConfig.coerce({"ratio": 0.3})
    with pytest.raises(InputError, match="mask_ratio"):
        CorruptionConfig(mask_ratio=1.5)
    with pytest.raises(InputError, match="task_weights"):
        CorruptionConfig(task_weights=(1.0,))
    with pytest.raises(InputError, match="unknown corruption task"):
        apply_task("rotate", np.array([BOS, EOS]), np.random.default_rng(0), CorruptionConfig(), CONTENT)


def test_replacement_range_follows_the_tokenizer_level() -> None:
    from ehrgen.data.vocab import HierarchicalTokenizer

    tok = HierarchicalTokenizer.from_counts(["4019", "25000", "E8497"], [1, 1, 1])
    ids = tok.encode([["4019", "25000", "E8497"]])
    out = replace_tokens(ids, np.random.default_rng(0), tok.content_range, p=1.0)
    content = out[(out >= 7)]
    assert len(content) == 3 and ((content >= 7) & (content < tok.code_offset)).all()
    flat = CodeVocab(["4019"])
    assert flat.content_range == (7, 8)


def test_default_training_writes_patients_of_every_length_from_the_generation_prompt() -> None:
    """Cause of too few visits and lost carry-over (docs/benchmarks.md, fidelity): generation
    writes whole patients from ``<s> </s>``, so the training examples with that encoder input
    must hold patients with the data's number of visits. With ``prompt_p=0`` they came almost
    only from ``next_visit`` at k = 0, i.e. weighted by 1 / n_visits: mostly one-visit patients."""
    default = compose_defaults()
    rng = np.random.default_rng(11)
    # MIMIC-like visit counts: most patients once, a long tail
    lengths = rng.choice([1, 2, 3, 5, 8], size=6000, p=[0.72, 0.15, 0.07, 0.04, 0.02])
    seqs = [_patient(rng, int(n)) for n in lengths]

    def multi_visit_share_of_empty(c: CorruptionConfig) -> tuple[float, float]:
        out = corrupt_batch(seqs, np.random.default_rng(2), c, CONTENT)
        empty = np.array([o.tolist() == [BOS, EOS] for o in out])
        return float((lengths[empty] > 1).mean()), float(empty.mean())

    data_share = float((lengths > 1).mean())
    share, used = multi_visit_share_of_empty(default)
    assert abs(share - data_share) < 0.03, (share, data_share)
    assert used >= 0.25  # and a sizeable part of training runs in the generation condition
    old, old_used = multi_visit_share_of_empty(
        CorruptionConfig.coerce({**default.to_dict(), "prompt_p": 0.0})
    )
    assert old < 0.6 * data_share and old_used < 0.1  # the bias this default removes


# ----------------------------------------------------------------------------- event types

# token ids 7..1006 in three types, interleaved as a frequency-sorted vocabulary would be
TYPES = np.array([0] * CONTENT[0] + [1 + (i % 7 == 0) + (i % 3 == 0) for i in range(CONTENT[1] - CONTENT[0])])


def _typed_patient(rng: np.random.Generator, n_visits: int) -> np.ndarray:
    """Visits of distinct codes listed by type (diagnoses, procedures, medications), as prepared."""
    ids = [BOS]
    for _ in range(n_visits):
        codes = rng.choice(np.arange(*CONTENT), size=int(rng.integers(2, 20)), replace=False)
        ids += [V, *sorted(codes.tolist(), key=lambda c: TYPES[c]), E]
    return np.array([*ids, EOS], dtype=np.int64)


def test_replace_and_shuffle_stay_within_each_event_type() -> None:
    rng = np.random.default_rng(5)
    replaced = reordered = 0
    for _ in range(200):
        ids = _typed_patient(rng, int(rng.integers(1, 4)))
        out = replace_tokens(ids, rng, CONTENT, p=0.3, token_type=TYPES)
        assert (TYPES[out] == TYPES[ids]).all(), "a code is replaced by a code of its own type"
        assert ((out[ids >= 7] >= CONTENT[0]) & (out[ids >= 7] < CONTENT[1])).all()
        replaced += int((out != ids).sum())
        out = shuffle_visits(ids, rng, TYPES)
        assert (TYPES[out] == TYPES[ids]).all(), "each visit keeps its type blocks in order"
        for before, after in zip(_visits(ids), _visits(out), strict=True):
            assert Counter(before) == Counter(after)
        reordered += int((out != ids).sum())
    assert replaced > 100 and reordered > 100
    # every type's codes are drawn, each uniformly within its own type
    draws = Counter(replace_tokens(np.array([BOS, V, 14, E, EOS]), np.random.default_rng(i), CONTENT, 1.0, TYPES)[2] for i in range(3000))  # fmt: skip
    pool = np.flatnonzero(TYPES[14] == TYPES)
    assert set(draws) <= set(pool.tolist()) and len(draws) > 0.9 * len(pool)


def test_one_event_type_draws_as_before(patients: list[np.ndarray]) -> None:
    """A diagnosis-only vocabulary corrupts exactly as without types (seeded runs unchanged)."""
    one = np.array([0] * CONTENT[0] + [1] * (CONTENT[1] - CONTENT[0]))
    for task in ("replace", "shuffle"):
        cfg = CorruptionConfig(p=1.0, tasks=(task,))
        a = corrupt_batch(patients, np.random.default_rng(9), cfg, CONTENT)
        b = corrupt_batch(patients, np.random.default_rng(9), cfg, CONTENT, one)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), task
