"""Age-and-sex curves of each code inside its category, for stage 2 of hierarchical generation.

Stage 2 chooses which codes of a generated category a patient gets. Frequencies per sex and
coarse age band (<1, 1-17, 18-44, 45-64, 65+) blur every code's age dependence inside a band, and
finer bands do not survive the small-cell rule: at 20,000 patients most (code, sex, 10-year band)
counts are below 11 and are suppressed, so rare codes lose their age information altogether
(docs/benchmarks.md, fidelity: age profiles). A code's curve is instead a fitted model, like
the network's weights: within a category,

    P(code | category, sex, age)  ∝  share(code) * exp(sum_k hat_k(age) * coef[sex, k, code])

with ``share`` the code's share of its category over all training patients (the expander's own
shares, from small-cell-safe totals), ``hat_k`` the piecewise-linear weights of the age on
:data:`CURVE_KNOTS` (:func:`~ehrgen.models.prompt_bart.age_hat_weights`), and ``coef`` fitted by
maximum likelihood on the training split's (code, sex, age) occurrences with a ridge penalty
``ridge * sum(coef**2)`` that pulls every curve towards flat (the all-patient share). Codes with
fewer than ``min_cell`` occurrences get no curve (their coefficients are 0), as their counts get
no stratum. The fit works on occurrences aggregated on an age grid, so its cost depends on the
vocabulary and the grid, not on the number of patients.

The same fit, with the whole content vocabulary as one category, gives the network's age-profile
table its starting point (:func:`token_age_curves`, ``model.age_profile_init=data``): each output
token's age-and-sex main effect as the data show it, rather than zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from ehrgen.models.prompt_bart import N_SEX, age_hat_weights
from ehrgen.privacy.small_cells import MIN_CELL

if TYPE_CHECKING:
    from ehrgen.data.cohort import Cohort
    from ehrgen.data.vocab import CodeVocab, HierarchicalTokenizer

CURVE_KNOTS: tuple[float, ...] = (0.0, 1.0, 5.0, 18.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)
CURVE_RIDGE = 1.0  # docs/benchmarks.md (fidelity: stage-2 age curves) for how it was chosen
_GRID_FINE_UNTIL, _GRID_FINE, _GRID_COARSE = 2.0, 0.1, 1.0  # age grid of the aggregated occurrences (years)


def category_shares(totals: np.ndarray, cat_of_code: np.ndarray, n_cat: int) -> np.ndarray:
    """Each code's share of its category from per-code ``totals``; every code keeps a tiny share
    (a suppressed total of 0 still leaves the code possible)."""
    overall = np.asarray(totals, np.float64) + 1e-3
    return overall / np.bincount(cat_of_code, weights=overall, minlength=n_cat)[cat_of_code]


def _age_grid(age: pl.Expr) -> pl.Expr:
    fine = (age / _GRID_FINE).floor() * _GRID_FINE
    return pl.when(age < _GRID_FINE_UNTIL).then(fine).otherwise(age.floor()).alias("grid")


def fit_code_curves(
    occurrences: pl.DataFrame,
    cat_of_code: np.ndarray,
    shares: np.ndarray,
    curve_ok: np.ndarray,
    knots: Sequence[float] = CURVE_KNOTS,
    ridge: float = CURVE_RIDGE,
    max_iter: int = 200,
) -> np.ndarray:
    """``[N_SEX, len(knots), n_codes]`` curve coefficients (see the module docstring).

    ``occurrences``: one row per code occurrence with ``code_idx``, ``sex`` (0/1) and ``age``;
    ``shares``: each code's share of its category (the offsets the expander will use);
    ``curve_ok``: codes that may have a curve (the others keep coefficients 0).
    """
    n_codes, n_knots = len(cat_of_code), len(knots)
    coef = np.zeros((N_SEX, n_knots, n_codes))
    if occurrences.is_empty() or not np.any(curve_ok):
        return coef
    cells = (
        occurrences.select("code_idx", pl.col("sex").cast(pl.Int64), "age", _age_grid(pl.col("age")))
        .group_by("sex", "grid", "code_idx")
        .agg(pl.len().alias("n"), pl.col("age").sum().alias("age_sum"))
    )
    groups = (  # one (sex, grid age) group per row of the logit table, at its occurrences' mean age
        cells.group_by("sex", "grid")
        .agg((pl.col("age_sum").sum() / pl.col("n").sum()).alias("age"))
        .sort("sex", "grid")
        .with_row_index("group")
    )
    cells = cells.join(groups.select("sex", "grid", "group"), on=["sex", "grid"])
    n_groups = groups.height
    counts = torch.zeros(n_groups, n_codes, dtype=torch.float64)
    column = {k: torch.tensor(cells[k].to_numpy().astype(np.int64)) for k in ("group", "code_idx", "n")}
    counts.index_put_((column["group"], column["code_idx"]), column["n"].double(), accumulate=True)
    knots_t = torch.tensor([float(k) for k in knots], dtype=torch.float64)
    hat = age_hat_weights(torch.tensor(groups["age"].to_numpy(), dtype=torch.float64), knots_t)  # [G, K]
    sex = torch.tensor(groups["sex"].to_numpy())
    cat = torch.tensor(np.asarray(cat_of_code, np.int64))
    n_cat = int(cat.max()) + 1
    offset = torch.log(torch.as_tensor(shares, dtype=torch.float64))[None, :]
    mask = torch.as_tensor(np.asarray(curve_ok, bool), dtype=torch.float64)[None, None, :]
    total = counts.sum()
    params = torch.zeros(N_SEX, n_knots, n_codes, dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        curves = params * mask
        logits = offset + torch.einsum("gk,gkv->gv", hat, curves[sex])
        # log-normaliser inside each (group, category): a segment log-sum-exp over the codes
        peak = torch.full((n_groups, n_cat), -torch.inf, dtype=torch.float64)
        peak = peak.scatter_reduce(1, cat.expand(n_groups, -1), logits.detach(), "amax")
        norm = torch.zeros(n_groups, n_cat, dtype=torch.float64).index_add(
            1, cat, torch.exp(logits - peak[:, cat])
        )
        log_p = logits - (torch.log(norm) + peak)[:, cat]
        return (-(counts * log_p).sum() + ridge * (curves**2).sum()) / total

    opt = torch.optim.LBFGS(
        [params],
        max_iter=max_iter,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)
    return (params.detach() * mask).numpy()


def token_age_curves(
    cohort: Cohort | str,
    tokenizer: CodeVocab | HierarchicalTokenizer,
    knots: Sequence[float],
    min_cell: int = MIN_CELL,
    ridge: float = CURVE_RIDGE,
) -> np.ndarray:
    """``[N_SEX, len(knots), tokenizer.vocab_size]`` age-and-sex logit curves of every content
    token (codes, or categories at category level) on the train split.

    One :func:`fit_code_curves` fit with the content vocabulary as a single category, counting
    the tokens the model is trained to emit (``tokenizer.encode_batch``: a category once per
    visit). Special tokens and tokens with fewer than ``min_cell`` occurrences keep 0, and each
    (sex, knot) row of the others is shifted so that ``sum_v share_v * exp(curve_v) = 1`` over the
    content tokens: the curves move mass between content tokens, not between content and the
    visit-end / end-of-record tokens (exactly at the knots, nearly in between).
    """
    from ehrgen.data.cohort import Cohort

    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    lo, hi = tokenizer.content_range
    train = cohort.read("train").select("sex", "age", "visits")
    ids = tokenizer.encode_batch(train["visits"].to_arrow())
    per_patient = np.fromiter((len(x) for x in ids), np.int64, count=len(ids))
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    row = np.repeat(np.arange(len(ids)), per_patient)
    content = (flat >= lo) & (flat < hi)
    occurrences = pl.DataFrame(
        {
            "code_idx": flat[content] - lo,
            "sex": train["sex"].to_numpy()[row[content]],
            "age": train["age"].cast(pl.Float64).to_numpy()[row[content]],
        }
    )
    totals = np.bincount(occurrences["code_idx"].to_numpy(), minlength=hi - lo)
    one_category = np.zeros(hi - lo, np.int64)
    shares = category_shares(totals, one_category, 1)
    curved = totals >= min_cell
    coef = fit_code_curves(occurrences, one_category, shares, curved, knots, ridge)
    # per (sex, knot), over the tokens with a curve: sum share * exp(coef) = sum share, so the
    # others (coefficient 0) keep their share and the content mass is unchanged
    kept = shares * curved
    peak = coef.max(axis=2, keepdims=True)
    shift = peak + np.log((kept * np.exp(coef - peak)).sum(axis=2, keepdims=True) / max(kept.sum(), 1e-300))
    out = np.zeros((N_SEX, len(knots), hi))
    out[..., lo:] = np.where(curved, coef - shift, 0.0)
    return out


def curve_log_weights(
    coef: np.ndarray, knots: Sequence[float], age: np.ndarray, sex: np.ndarray
) -> np.ndarray:
    """``[B, n_codes]`` curve term ``sum_k hat_k(age) * coef[sex, k, code]`` of each patient."""
    hat = age_hat_weights(
        torch.as_tensor(np.asarray(age, np.float64)),
        torch.tensor([float(k) for k in knots], dtype=torch.float64),
    ).numpy()  # [B, K]
    sex = np.asarray(sex, np.int64)
    out = np.empty((len(hat), coef.shape[2]))
    for s in range(N_SEX):  # one matrix product per sex
        rows = sex == s
        out[rows] = hat[rows] @ coef[s]
    return out
