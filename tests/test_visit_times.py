"""Visit times: bins, labels, support, the batch contract, the loss, and generated times."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from ehrgen.data.datamodule import CohortIterableDataset
from ehrgen.data.vocab import BOS, EOS, PAD, VISIT_END, VISIT_START, CodeVocab
from ehrgen.models.losses import visit_time_loss
from ehrgen.models.prompt_bart import PromptBart
from ehrgen.models.visit_times import (
    GAP_EDGES_DAYS,
    IGNORE,
    N_GAP_BINS,
    N_STAY_BINS,
    STAY_EDGES_DAYS,
    from_bins,
    time_support,
    to_bins,
    visit_time_labels,
    visits_time_labels,
)
from ehrgen.sampling.times import chain, closing_positions, with_times
from tests.test_datamodule import POOL, write_cohort

DAY = 86_400.0
V, E = VISIT_START, VISIT_END


def test_bins_round_trip_and_edges() -> None:
    assert GAP_EDGES_DAYS[0] == 0 and GAP_EDGES_DAYS[1] == pytest.approx(1 / 24)
    assert GAP_EDGES_DAYS[-1] == pytest.approx(20 * 365.25) and STAY_EDGES_DAYS[-1] == pytest.approx(400)
    ratio = GAP_EDGES_DAYS[2:] / GAP_EDGES_DAYS[1:-1]
    np.testing.assert_allclose(ratio, ratio[0])  # log-spaced after the first bin
    days = np.array([0.0, 0.5 / 24, 1 / 24, 30.0, 1e6, np.nan])
    bins = to_bins(days, GAP_EDGES_DAYS)
    assert bins[:3].tolist() == [0, 0, 1] and bins[4] == N_GAP_BINS - 1 and bins[5] == IGNORE
    assert GAP_EDGES_DAYS[bins[3]] <= 30.0 < GAP_EDGES_DAYS[bins[3] + 1]
    # drawn values fall in their bin: uniform in the first, log-uniform (geometric midpoint at 0.5) after
    b = np.arange(N_STAY_BINS)
    for u in (0.0, 0.5, 0.999):
        x = from_bins(b, np.full(len(b), u), STAY_EDGES_DAYS)
        assert (to_bins(x, STAY_EDGES_DAYS) == b).all()
    mid = from_bins(np.array([0, 5]), np.array([0.5, 0.5]), STAY_EDGES_DAYS)
    assert mid[0] == pytest.approx(STAY_EDGES_DAYS[1] / 2)
    assert mid[1] == pytest.approx(np.sqrt(STAY_EDGES_DAYS[5] * STAY_EDGES_DAYS[6]))


def test_labels_known_answer() -> None:
    t0 = 1_000_000_000.0
    # patient A: stay 2 d, then a gap of 10 d from the discharge; visit 2: end unknown, so its gap
    # (3 d) runs from the admission; visit 3 (last): stay 1 d, no gap.
    # patient B: one visit ending before it starts (an unknown end), last: no gap.
    time_s = np.array([t0, t0 + 12 * DAY, t0 + 15 * DAY, t0])
    end_s = np.array([t0 + 2 * DAY, np.nan, t0 + 16 * DAY, t0 - 5.0])
    last = np.array([False, False, True, True])
    got = visit_time_labels(time_s, end_s, last)
    g = lambda d: int(to_bins(np.array([d]), GAP_EDGES_DAYS)[0])  # noqa: E731
    s = lambda d: int(to_bins(np.array([d]), STAY_EDGES_DAYS)[0])  # noqa: E731
    assert got.tolist() == [[g(10), s(2)], [g(3), IGNORE], [IGNORE, s(1)], [IGNORE, IGNORE]]
    # a next admission before the discharge (overlap) is a gap of 0
    over = visit_time_labels(
        np.array([t0, t0 + DAY]), np.array([t0 + 2 * DAY, t0 + 3 * DAY]), np.array([0, 1])
    )
    assert over[0, 0] == 0
    # from a cohort column: the same, with null times and ends
    ts = lambda x: None if np.isnan(x) else datetime(1970, 1, 1) + timedelta(seconds=float(x))  # noqa: E731
    visits = pa.array(
        [
            [
                {"time": ts(a), "end": ts(b), "codes": ["x"]}
                for a, b in zip(time_s[:3], end_s[:3], strict=True)
            ],
            [{"time": ts(time_s[3]), "end": ts(end_s[3]), "codes": ["x"]}],
            [{"time": None, "end": None, "codes": ["x"]}, {"time": ts(t0), "end": None, "codes": ["x"]}],
        ]
    )
    labels, n = visits_time_labels(visits)
    assert n.tolist() == [3, 1, 2]
    assert labels[:4].tolist() == got.tolist() and labels[4:].tolist() == [[IGNORE, IGNORE], [IGNORE, IGNORE]]


def test_support_drops_the_extreme_cells() -> None:
    gap = np.array([0] * 3 + [5] * 20 + [40] * 3)
    labels = np.stack([gap, np.full(len(gap), IGNORE)], axis=1)
    assert time_support(labels, 3) == [[0, 40], [-1, -1]]
    assert time_support(labels, 4) == [[5, 5], [-1, -1]]
    assert time_support(labels[:5], 3) == [[-1, -1], [-1, -1]]  # fewer than 2 x min_cell values


def test_batch_time_labels_sit_where_the_label_closes_a_visit(tmp_path: Path) -> None:
    visits = [["4019"], ["25000", "4280"], ["V5861"]]
    patient = {"subject_id": 1, "sex": 0, "age": 50.0, "visits": visits}
    c = write_cohort(tmp_path / "c", {"test": [patient]})
    # write_cohort puts admissions 30 days apart without ends: gaps from admission, stays unknown
    vocab = CodeVocab(POOL)
    b = next(iter(CohortIterableDataset(c, "test", vocab, batch_size=1)))
    labels, times = b["labels"][0], b["time_labels"][0]
    closes = (labels == VISIT_END).nonzero().squeeze(1)
    gap30 = int(to_bins(np.array([30.0]), GAP_EDGES_DAYS)[0])
    assert times[closes].tolist() == [[gap30, IGNORE], [gap30, IGNORE], [IGNORE, IGNORE]]
    others = torch.ones(len(labels), dtype=torch.bool)
    others[closes] = False
    assert (times[others] == IGNORE).all()
    # truncation keeps the newest visits' labels
    b = next(iter(CohortIterableDataset(c, "test", vocab, batch_size=1, max_length=8)))
    closes = (b["labels"][0] == VISIT_END).nonzero().squeeze(1)
    assert b["time_labels"][0][closes].tolist() == [[IGNORE, IGNORE]]


def test_time_loss_known_answer_and_detached_head() -> None:
    gap = torch.zeros(1, 3, N_GAP_BINS)
    stay = torch.zeros(1, 3, N_STAY_BINS)
    labels = torch.full((1, 3, 2), IGNORE)
    assert visit_time_loss(gap, stay, labels).item() == 0.0
    labels[0, 1] = torch.tensor([4, IGNORE])
    labels[0, 2] = torch.tensor([7, 2])
    # uniform logits: each mean cross-entropy is log(n_bins)
    assert visit_time_loss(gap, stay, labels).item() == pytest.approx(
        np.log(N_GAP_BINS) + np.log(N_STAY_BINS)
    )

    # the time term is in the training objective, not in ``loss`` (what checkpoints monitor)
    from types import SimpleNamespace

    from ehrgen.models.losses import PromptBartLoss

    loss_fn = PromptBartLoss(token_offset=7, w_time=0.5)
    out = SimpleNamespace(
        logits=torch.zeros(1, 3, 10),
        age_pred=torch.zeros(1, 3),
        sex_logits=torch.zeros(1, 3, 2),
        gap_logits=gap,
        stay_logits=stay,
    )
    batch = {
        "labels": torch.tensor([[7, 8, 9]]),
        "decoder_input_ids": torch.tensor([[0, 7, 8]]),
        "age": torch.tensor([50.0]),
        "sex": torch.tensor([0]),
        "time_labels": labels,
    }
    terms = loss_fn(out, batch)
    assert terms["time"].item() == pytest.approx(np.log(N_GAP_BINS) + np.log(N_STAY_BINS))
    assert terms["loss"].item() == pytest.approx(
        terms["lm"].item() + 0.001 * terms["age"].item() + 0.001 * terms["sex"].item()
    )
    assert loss_fn.objective(terms).item() == pytest.approx(terms["loss"].item() + 0.5 * terms["time"].item())

    torch.manual_seed(0)
    kw = dict(vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=32)
    ids = torch.tensor([[BOS, V, 9, 10, E, V, 11, E]])
    inputs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        decoder_input_ids=ids,
        decoder_attention_mask=torch.ones_like(ids),
        age=torch.tensor([40.0]),
        sex=torch.tensor([1]),
    )
    labels = torch.full((1, ids.shape[1], 2), IGNORE)
    labels[0, 3] = torch.tensor([5, 6])
    for detach, trunk_moves in ((True, False), (False, True)):
        model = PromptBart(**kw, visit_times=True, visit_times_detach=detach)
        out = model(**inputs)
        visit_time_loss(out.gap_logits, out.stay_logits, labels).backward()
        trunk = model.bart.model.decoder.layers[0].fc1.weight.grad
        assert (trunk is not None and bool(trunk.abs().sum() > 0)) == trunk_moves
        assert model.time_head.net[0].weight.grad.abs().sum() > 0


def test_closing_positions_and_chained_times() -> None:
    tokens = np.array(
        [
            [BOS, V, 9, 10, E, V, 11, E, EOS, PAD],
            [BOS, V, 9, E, V, 10, 11, 12, 13, 14],  # second visit cut by the length limit
            [BOS, V, E, EOS, PAD, PAD, PAD, PAD, PAD, PAD],  # an empty visit: its <v>
        ]
    )
    rows, position, number = closing_positions(tokens)
    assert rows.tolist() == [0, 0, 1, 1, 2]
    assert position.tolist() == [3, 6, 2, 9, 1]
    assert number.tolist() == [0, 1, 0, 1, 0]

    first = np.array([100.0 * 60, 0.0])
    stay = np.array([2 * DAY, DAY, np.nan])
    gap = np.array([10 * DAY, 99 * DAY, 5 * DAY])
    admit, end = chain(first, stay, gap, np.array([2, 1]))
    assert admit.tolist() == [6000.0, 6000 + 12 * DAY, 0.0]
    assert end[:2].tolist() == [6000 + 2 * DAY, 6000 + 13 * DAY] and np.isnan(end[2])

    visits = pa.array([[["a"], ["b", "c"]], [["d"]]])
    from ehrgen.sampling.times import VisitTimes

    out = with_times(visits, VisitTimes(admit, end, np.array([2, 1])))
    frame = pl.from_arrow(pa.table({"visits": out}))
    first_patient = frame["visits"][0].to_list()
    assert [v["codes"] for v in first_patient] == [["a"], ["b", "c"]]
    assert first_patient[1]["time"] == datetime(1970, 1, 1) + timedelta(seconds=6000 + 12 * DAY)
    assert frame["visits"][1].to_list()[0]["end"] is None
