"""Stage-2 age curves: the fit recovers a known age and sex dependence, the expander draws from
it, and the checkpoint statistics keep no curve for a code below the small-cell rule."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from test_gen_constraints import expansion_fixture

from ehrgen.data.vocab import BOS, EOS, VISIT_END, VISIT_START, build_tokenizer
from ehrgen.models.prompt_bart import age_hat_weights
from ehrgen.privacy.small_cells import safe_expansion_stats
from ehrgen.sampling.code_curves import category_shares, curve_log_weights, fit_code_curves, token_age_curves
from ehrgen.sampling.hierarchical import CodeExpander, expansion_stats

KNOTS = (0.0, 40.0, 60.0, 90.0)


def true_share_a(age: np.ndarray, sex: np.ndarray) -> np.ndarray:
    """Men: code A is 4:1 before 40 and 1:4 after 60, log-odds linear in between (exactly a
    hat-basis curve on KNOTS); women: 1:1 at every age."""
    log_odds = np.interp(age, [0, 40, 60, 90], [np.log(4), np.log(4), -np.log(4), -np.log(4)])
    return np.where(sex == 0, 1 / (1 + np.exp(-log_odds)), 0.5)


def test_hat_weights_interpolate_between_knots() -> None:
    knots = torch.tensor([0.0, 1.0, 18.0, 90.0])
    w = age_hat_weights(torch.tensor([0.0, 0.25, 9.5, 18.0, 95.0, -1.0]), knots)
    want = [[1, 0, 0, 0], [0.75, 0.25, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    torch.testing.assert_close(w, torch.tensor(want))


def test_the_fit_recovers_a_known_age_and_sex_dependence() -> None:
    rng = np.random.default_rng(0)
    n = 40_000
    age, sex = rng.uniform(0, 90, n), rng.integers(0, 2, n)
    code = (rng.random(n) >= true_share_a(age, sex)).astype(np.int64)  # 0 = A, 1 = B (one category)
    occurrences = pl.DataFrame({"code_idx": code, "sex": sex, "age": age})
    cat_of_code = np.array([0, 0, 1])  # code 2: alone in its category, never seen
    totals = np.bincount(code, minlength=3)
    shares = category_shares(totals, cat_of_code, 2)
    coef = fit_code_curves(occurrences, cat_of_code, shares, totals >= 11, KNOTS, ridge=1.0)
    grid = np.array([10.0, 50.0, 75.0, 10.0, 50.0, 75.0])
    grid_sex = np.array([0, 0, 0, 1, 1, 1])
    logits = np.log(shares)[None, :] + curve_log_weights(coef, KNOTS, grid, grid_sex)
    p_a = 1 / (1 + np.exp(logits[:, 1] - logits[:, 0]))
    np.testing.assert_allclose(p_a, true_share_a(grid, grid_sex), atol=0.03)
    assert not coef[..., 2].any()  # no occurrences, no curve

    flat = fit_code_curves(occurrences, cat_of_code, shares, totals >= 11, KNOTS, ridge=1e7)
    assert np.abs(flat).max() < 1e-2  # a huge ridge leaves every code at its all-patient share
    few = fit_code_curves(occurrences, cat_of_code, shares, np.array([True, False, False]), KNOTS)
    assert few[..., 0].any() and not few[..., 1:].any()  # only codes allowed a curve get one


def test_the_expander_draws_codes_from_their_curves() -> None:
    tok, stats = expansion_fixture()
    diabetes = tok.category_id("250")  # codes 25000, 25001, 25002, 25013
    young_code, old_code = tok.codes.index("25001"), tok.codes.index("25013")
    knots = [0.0, 30.0, 70.0, 90.0]
    coef = np.zeros((2, len(knots), len(tok.codes)))
    coef[:, :2, young_code] = 3.0  # 25001 e^3 times as likely up to 30, fading out by 70
    coef[:, 2:, old_code] = 3.0  # 25013 e^3 times as likely from 70, fading in from 30
    # curves replace the per-band counts: the counts favour 25002 everywhere, and are ignored
    stats["code_counts"]["count"] = [
        50 if c == tok.codes.index("25002") else 1 for c in stats["code_counts"]["code"]
    ]
    stats["code_totals"] = [10] * len(tok.codes)  # equal shares inside every category
    stats["per_visit"] = {"category": [diabetes - tok.category_offset], "n": [1], "count": [10]}
    stats["curves"] = {"knots": knots, "ridge": 1.0, "min_count": 11, "coef": coef.tolist()}
    expander = CodeExpander(tok, stats)
    n = 6000
    tokens = np.tile([BOS, VISIT_START, diabetes, VISIT_END, EOS], (n, 1))
    sex = np.arange(n) % 2
    e3 = np.exp(3.0)
    for age, want_young, want_old in (
        (10.0, e3 / (e3 + 3), 1 / (e3 + 3)),
        (80.0, 1 / (e3 + 3), e3 / (e3 + 3)),
    ):
        drawn = [p[0][0] for p in expander.expand(tokens, np.full(n, age), sex, np.arange(n), 0).to_pylist()]
        got = np.array([np.mean([c == "25001" for c in drawn]), np.mean([c == "25013" for c in drawn])])
        np.testing.assert_allclose(got, [want_young, want_old], atol=0.02)
    # age 50, half way: both curves at 1.5 -> 25001 and 25013 each e^1.5 times the others
    e15 = np.exp(1.5)
    drawn = [p[0][0] for p in expander.expand(tokens, np.full(n, 50.0), sex, np.arange(n), 0).to_pylist()]
    assert abs(np.mean([c == "25001" for c in drawn]) - e15 / (2 * e15 + 2)) < 0.02
    with pytest.raises(Exception, match="another vocabulary"):
        CodeExpander(tok, {**stats, "curves": {**stats["curves"], "coef": coef[..., :-1].tolist()}})


def test_checkpoint_statistics_keep_no_curve_below_the_small_cell_rule(demo_cohort) -> None:
    tok = build_tokenizer(demo_cohort, level="category")
    stats = expansion_stats(demo_cohort, tok)
    coef = np.asarray(stats["curves"]["coef"])
    assert coef.shape == (2, len(stats["curves"]["knots"]), len(tok.codes))
    totals = np.bincount(
        stats["code_counts"]["code"], weights=stats["code_counts"]["count"], minlength=len(tok.codes)
    )
    has_curve = np.abs(coef).sum((0, 1)) > 0
    assert has_curve.any() and not has_curve[totals < 11].any()
    # a stricter rule afterwards removes the curves of codes its totals suppress
    safe = safe_expansion_stats(stats, min_cell=30)
    safe_coef = np.asarray(safe["curves"]["coef"])
    assert not (np.abs(safe_coef).sum((0, 1)) > 0)[totals < 30].any()
    assert safe["curves"]["min_count"] == 30
    CodeExpander(tok, safe)  # still a valid expander
    without = expansion_stats(demo_cohort, tok, curves=False)
    assert "curves" not in without  # older checkpoints' statistics: per-band counts only


def _one_code_cohort(path, n: int, seed: int) -> None:
    """Patients with one visit of one code: 4019 or 2724 by :func:`true_share_a` (4019 is A),
    and 5 patients with 25000 (below the small-cell rule)."""
    from datetime import datetime

    from test_eval_cohorts import write_cohort

    rng = np.random.default_rng(seed)
    age, sex = rng.uniform(0, 90, n).astype(np.float32), rng.integers(0, 2, n).astype(np.int8)
    code = np.where(rng.random(n) < true_share_a(age, sex), "4019", "2724")
    code[:5] = "25000"
    visits = [[{"time": datetime(2100, 1, 1), "codes": [c]}] for c in code]
    frame = pl.DataFrame(
        {"subject_id": np.arange(n, dtype=np.int64), "sex": sex, "age": age, "visits": visits}
    )
    write_cohort(path, {"train": frame})


def test_token_curves_give_the_networks_table_the_datas_age_and_sex_effects(tmp_path) -> None:
    _one_code_cohort(tmp_path / "cohort", 20_000, seed=1)
    tok = build_tokenizer(tmp_path / "cohort", level="code")
    curves = token_age_curves(tmp_path / "cohort", tok, KNOTS)
    assert curves.shape == (2, len(KNOTS), tok.vocab_size)
    lo, _ = tok.content_range
    assert not curves[..., :lo].any()  # specials keep 0
    assert not curves[..., tok.code_id("25000")].any()  # below the small-cell rule: no curve
    a, b = tok.code_id("4019"), tok.code_id("2724")
    counts = pl.read_parquet(tmp_path / "cohort" / "metadata" / "codes.parquet")
    share = {c: n for c, n in zip(counts["code"], counts["train_count"], strict=True)}
    totals = np.array([share[tok.id_to_token(i)] for i in range(lo, tok.vocab_size)], np.float64)
    shares = (totals + 1e-3) / (totals + 1e-3).sum()
    # the curves move mass between content tokens only: sum_v share_v * exp(curve_v) = 1
    np.testing.assert_allclose((shares * np.exp(curves[..., lo:])).sum(-1), 1.0, atol=1e-9)
    # the model's P(A | A or B) from the table alone is the truth's (one hat-basis curve)
    grid, grid_sex = np.array([10.0, 50.0, 75.0, 10.0, 50.0, 75.0]), np.array([0, 0, 0, 1, 1, 1])
    term = curve_log_weights(curves, KNOTS, grid, grid_sex)
    log_odds = np.log(share["4019"] / share["2724"]) + term[:, a] - term[:, b]
    np.testing.assert_allclose(1 / (1 + np.exp(-log_odds)), true_share_a(grid, grid_sex), atol=0.03)
