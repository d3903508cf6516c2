"""The small-cell rule: no count of 1..10 real patients and no real id leaves in a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ehrgen.callbacks import GENERATION_KEY, GenerationContext
from ehrgen.data.cohort import Cohort
from ehrgen.data.vocab import build_tokenizer
from ehrgen.errors import InputError
from ehrgen.privacy.small_cells import coarsen_age_histogram, passes, safe_expansion_stats, suppress
from ehrgen.sampling.demographics import DemographicsModel
from ehrgen.sampling.hierarchical import CodeExpander, expansion_stats


def test_suppress_and_passes_known_answer() -> None:
    assert suppress([0, 1, 10, 11, 500]).tolist() == [0, 0, 0, 11, 500]
    assert passes(np.array([0, 11, 12])) and not passes(np.array([0, 3, 40]))


def test_coarsen_age_histogram_known_answer() -> None:
    edges = [0.0, 10.0, 20.0, 30.0, 40.0, 90.0]  # last bin: age >= 90
    counts = np.array([[5, 6, 20, 0, 3, 2], [12, 0, 11, 4, 9, 30]])
    new_edges, new = coarsen_age_histogram(edges, counts)
    # [0,10)+[10,20): M 11, F 12 pass; [20,30): 20, 11 pass; [30,40)+[40,90) left over: M 3 F 13 ->
    # merged into the group before; the >= 90 bin keeps its meaning, its 2 men are suppressed
    assert new_edges == [0.0, 20.0, 90.0]
    assert new.tolist() == [[11, 23, 0], [12, 24, 30]]
    assert passes(new)


def test_coarsened_demographics_on_the_demo_pass_the_rule(demo_cohort: Path) -> None:
    model = DemographicsModel.from_cohort(demo_cohort)
    assert not passes(model.counts)  # single years: cells of 1 patient
    safe = model.coarsened()
    assert passes(safe.counts) and safe.counts.sum() <= model.counts.sum()
    assert safe.counts.sum() >= 0.8 * model.counts.sum()  # coarsening keeps most of the mass
    age, sex = safe.sample(2000, np.random.default_rng(0))
    assert 0.2 < sex.mean() < 0.8 and age.min() >= 0 and age.max() <= 90
    with pytest.raises(InputError, match="fewer than 11 training patients per sex"):
        DemographicsModel.fit(np.array([30.0, 40.0]), np.array([0, 1])).coarsened()


def test_safe_expansion_stats_keep_totals_and_drop_small_cells(demo_cohort: Path) -> None:
    tokenizer = build_tokenizer(demo_cohort, level="category")
    stats = expansion_stats(demo_cohort, tokenizer)
    safe = safe_expansion_stats(stats)
    assert passes(np.asarray(safe["code_counts"]["count"])) and passes(np.asarray(safe["code_totals"]))
    assert passes(np.asarray(safe["per_visit"]["count"]))
    assert min(stats["code_counts"]["count"]) < 11  # the raw statistics did hold small cells
    totals = np.bincount(stats["code_counts"]["code"], weights=stats["code_counts"]["count"])
    big = totals >= 11
    assert np.array_equal(np.asarray(safe["code_totals"])[: len(totals)][big], totals[big])
    CodeExpander(tokenizer, safe)  # still a valid expander


def _ints(value) -> list[int]:
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, list | tuple):
        return [i for v in value for i in _ints(v)]
    if isinstance(value, torch.Tensor):
        return value.flatten().tolist() if not value.is_floating_point() else []
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def test_generation_context_holds_no_small_cell_and_no_real_id(demo_cohort: Path) -> None:
    cohort = Cohort(demo_cohort)
    tokenizer = build_tokenizer(demo_cohort, level="category")
    checkpoint: dict = {}
    GenerationContext(cohort, tokenizer).on_save_checkpoint(None, None, checkpoint)
    payload = checkpoint[GENERATION_KEY]
    assert payload["synthetic_id_offset"] == 100_000 and "max_real_subject_id" not in payload
    real_ids = set(cohort.read()["subject_id"].to_list())
    assert not real_ids & set(_ints(payload))
    assert passes(np.asarray(payload["demographics"]["counts"]))
    assert passes(np.asarray(payload["expansion"]["code_counts"]["count"]))


def test_report_figures_hide_small_cells() -> None:
    from ehrgen.privacy.small_cells import reportable
    from ehrgen.report import plots

    assert reportable(np.array([0, 1, 10, 11])).tolist() == [True, False, False, True]
    n = 200
    real = np.array([0.0, 1 / n, 10 / n, 11 / n, 0.5])  # held by 0, 1, 10, 11, 100 patients
    assert plots.prevalence_scatter(real, real[::-1], n)[:4] == b"\x89PNG"
    assert plots.cooccurrence_scatter(real, real, n)[:4] == b"\x89PNG"
    visits = np.r_[np.ones(180), np.full(15, 2), np.full(4, 3), [30]]  # 4 patients with 3, 1 with 30
    assert plots.count_histograms({"visits": (visits, visits)})[:4] == b"\x89PNG"
