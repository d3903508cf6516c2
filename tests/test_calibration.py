"""Post-hoc logit offsets (ehrgen.calibration): statistics, the fit, and a calibrated checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_train import TINY

from ehrgen.calibration import (
    GROUP_END,
    GROUP_OLDER,
    GROUP_OTHER,
    GROUP_PREVIOUS,
    NEG,
    OFFSET_NAMES,
    calibrate_checkpoint,
    carry_share,
    decision_statistics,
    fit_offsets,
    items_per_visit,
    match_generation,
    offset_objective,
)
from ehrgen.model_metrics import calibration_metrics
from ehrgen.module import PromptBartModule
from ehrgen.train import run

LOG2, LOG3 = math.log(2), math.log(3)


def test_decision_statistics_known_answer() -> None:
    # items 7..11; <s> <v> 7 8 <\v> <v> 7 9 <\v> <v> 10 <\v> </s>; all logits 0, so a group's
    # log-sum-exp is the log of how many allowed items it holds
    seq = torch.tensor([[0, 4, 7, 8, 5, 4, 7, 9, 5, 4, 10, 5, 2]])
    dec, labels = seq[:, :-1], seq[:, 1:]
    stats = decision_statistics(torch.zeros(1, dec.shape[1], 12), dec, labels, (7, 12))
    assert stats["boundary"].tolist() == [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    # (visit end, previous visit's items, older visits' items, other items, label logit, group)
    want = [
        [NEG, NEG, NEG, math.log(5), 0, GROUP_OTHER],  # <v> -> 7: no <\v> in an empty visit
        [0, NEG, NEG, math.log(4), 0, GROUP_OTHER],  # 7 -> 8
        [0, NEG, NEG, LOG3, 0, GROUP_END],  # 8 -> <\v>
        [NEG, LOG2, NEG, LOG3, 0, GROUP_PREVIOUS],  # <v> -> 7 (7, 8 were in visit 1)
        [0, 0, NEG, LOG3, 0, GROUP_OTHER],  # 7 -> 9 (7 is in the open visit now)
        [0, 0, NEG, LOG2, 0, GROUP_END],  # 9 -> <\v>
        [NEG, LOG2, 0, LOG2, 0, GROUP_OTHER],  # <v> -> 10 (7, 9 previous; 8 older only)
        [0, LOG2, 0, 0, 0, GROUP_END],  # 10 -> <\v>
    ]
    got = stats["item"]
    assert got.shape == (len(want), 6)
    for row, expected in zip(got.tolist(), want, strict=True):
        assert row == pytest.approx(expected, abs=1e-9)


def test_fit_offsets_recovers_known_log_odds() -> None:
    # Every decision between equally likely choices (logits 0); the data say otherwise. The
    # maximum-likelihood offsets are log odds against the un-offset choice; the prior moves them
    # by well under 1e-3 at these counts.
    n = 100_000
    boundary = torch.zeros(4 * n, 2, dtype=torch.float64)
    boundary[:n, 1] = 1.0  # one patient in four ends: log(1/3)
    counts = {GROUP_END: n, GROUP_PREVIOUS: 2 * n, GROUP_OLDER: n // 2, GROUP_OTHER: 4 * n}
    groups = torch.cat([torch.full((c,), float(g)) for g, c in counts.items()]).double()
    item = torch.zeros(len(groups), 6, dtype=torch.float64)
    item[:, 5] = groups
    offsets = fit_offsets(boundary, item)
    want = [math.log(1 / 3), math.log(1 / 4), math.log(2 / 4), math.log(0.5 / 4)]
    assert offsets.tolist() == pytest.approx(want, abs=1e-3)
    # without the carry-over pathway the item offsets stay 0; the others are fit as before
    no_carry = fit_offsets(boundary, item, carried=False)
    assert no_carry[0] == pytest.approx(want[0], abs=1e-3)
    assert no_carry[2:].tolist() == [0.0, 0.0]


def test_prior_keeps_offsets_finite_when_every_patient_ends() -> None:
    boundary = torch.tensor([[0.0, 1.0]] * 3, dtype=torch.float64)  # three patients, all one visit
    item = torch.tensor([[0.0, NEG, NEG, 0.0, 0.0, GROUP_END]], dtype=torch.float64)
    offsets = fit_offsets(boundary, item).double()
    assert all(math.isfinite(v) for v in offsets.tolist())
    # first-order condition of the MAP: expected - observed = -b for the patient-end offset
    expected = 3 * torch.sigmoid(offsets[0])
    assert float(expected - 3) == pytest.approx(-float(offsets[0]), abs=1e-6)
    grad = torch.autograd.functional.jacobian(lambda x: offset_objective(x, boundary, item), offsets)
    assert float(grad.abs().max()) < 1e-6


def test_offsets_shift_only_eval_logits_and_match_the_kv_cache() -> None:
    from test_prompt_bart import TINY as NET
    from test_prompt_bart import VOCAB, make_batch, model_inputs

    from ehrgen.models.prompt_bart import (
        EARLIER,
        EOS_ID,
        PREVIOUS,
        VISIT_END_ID,
        PromptBart,
        advance_history,
        carry_history,
    )

    torch.manual_seed(0)
    model = PromptBart(VOCAB, prompt_length=3, carry=True, dropout=0.0, **NET).eval()
    with torch.no_grad():
        model.carry_bias.normal_(0, 1.0)  # a carry pathway that matters
    inputs = model_inputs(make_batch(n=4, seed=1, max_visits=4))
    history = carry_history(inputs["decoder_input_ids"], VOCAB)
    with torch.no_grad():
        plain = model(**inputs).logits
        model.logit_offsets.copy_(torch.tensor([0.5, -0.25, 1.0, -2.0]))
        shifted = model(**inputs).logits
        training = model.train()(**inputs).logits  # training never sees the offsets
    model.eval()
    delta = shifted - plain
    assert torch.allclose(delta[..., EOS_ID], torch.full_like(delta[..., EOS_ID], 0.5))
    assert torch.allclose(delta[..., VISIT_END_ID], torch.full_like(delta[..., VISIT_END_ID], -0.25))
    assert torch.allclose(delta[history == PREVIOUS], torch.tensor(1.0))
    assert torch.allclose(delta[history == EARLIER], torch.tensor(-2.0))
    assert torch.allclose(training, plain, atol=1e-5)
    # incremental decoding applies the same offsets as the full pass
    dec = inputs["decoder_input_ids"]
    with torch.no_grad():
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
    mask = inputs["decoder_attention_mask"].bool()
    assert torch.allclose(torch.cat(pieces, 1)[mask], shifted[mask], atol=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_cohort: Path) -> dict:
    from conftest import compose_config

    tmp = tmp_path_factory.mktemp("cal")
    cfg = compose_config("train", [*TINY, f"data.cohort_dir={demo_cohort}", "trainer.max_epochs=1"], tmp)
    return run(cfg)


def test_training_calibrates_its_checkpoints_on_the_val_split(trained: dict, demo_cohort: Path) -> None:
    record = trained["calibration"]
    assert record["splits"] == ["val"] and record["n_patients"] > 0
    for path in {trained["best_checkpoint"], trained["last_checkpoint"]}:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")  # still weights_only-safe
        offsets = ckpt["state_dict"]["model.logit_offsets"].tolist()
        assert offsets == pytest.approx([ckpt["ehrgen"]["calibration"]["offsets"][k] for k in OFFSET_NAMES])
        assert any(v != 0 for v in offsets)
        assert not any(p.name.startswith(".") for p in Path(path).parent.iterdir())  # no temp left
    # the metrics on the calibration split after the fit are those of the loaded checkpoint
    after = calibration_metrics(trained["best_checkpoint"], str(demo_cohort), ["val"], 5000)
    assert after == pytest.approx(
        record["after"], rel=1e-5, nan_ok=True
    )  # nan where a part has nothing to score


def test_calibrated_stop_meets_the_first_order_condition(
    trained: dict, demo_cohort: Path, tmp_path: Path
) -> None:
    import shutil

    ckpt = tmp_path / "model.ckpt"
    shutil.copy(trained["last_checkpoint"], ckpt)
    record = calibrate_checkpoint(ckpt, demo_cohort, ["train"], 5000)
    n_patients = record["n_patients"]  # each patient ends exactly once
    b = record["offsets"]["patient_end"]
    # expected - observed = -b at the MAP (test_prior_...), so expected / observed = 1 - b / n
    assert record["after"]["stop_calibration"] == pytest.approx(1 - b / n_patients, abs=1e-4)
    assert abs(record["after"]["stop_calibration"] - 1) < abs(record["before"]["stop_calibration"] - 1) + 1e-9


def test_checkpoints_from_before_offsets_load_uncalibrated(trained: dict, tmp_path: Path) -> None:
    ckpt = torch.load(trained["last_checkpoint"], weights_only=True, map_location="cpu")
    del ckpt["state_dict"]["model.logit_offsets"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    module = PromptBartModule.load(old)
    assert module.model.logit_offsets.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_carry_share_known_answer() -> None:
    # items 7..11: visits {7, 8, 9} -> {7, 9, 10} -> {10}: (2 + 1) / (3 + 3); one-visit patient: none
    a = torch.tensor([0, 4, 7, 8, 9, 5, 4, 7, 9, 10, 5, 4, 10, 5, 2]).numpy()
    b = torch.tensor([0, 4, 7, 5, 2, 1, 1]).numpy()
    assert carry_share([a, b], 7, 12) == (pytest.approx(0.5), 2)
    share, pairs = carry_share([b], 7, 12)
    assert math.isnan(share) and pairs == 0


def test_items_per_visit_known_answer() -> None:
    a = torch.tensor([0, 4, 7, 8, 9, 5, 4, 7, 5, 2, 4, 8, 5]).numpy()  # a visit after </s> does not count
    assert items_per_visit([a], 7, 12) == (2.0, 2)
    mean, visits = items_per_visit([torch.tensor([0, 2]).numpy()], 7, 12)
    assert math.isnan(mean) and visits == 0


@pytest.mark.parametrize("names", [["carry"], ["items_per_visit"], ["carry", "items_per_visit"]])
def test_match_generation_finds_the_offsets_of_known_statistics(names: list[str]) -> None:
    import numpy as np
    from test_prompt_bart import TINY as NET
    from test_prompt_bart import VOCAB

    from ehrgen.calibration import MATCHED, _generated_statistics
    from ehrgen.data.vocab import CodeVocab
    from ehrgen.models.prompt_bart import PromptBart

    torch.manual_seed(0)
    model = PromptBart(VOCAB, prompt_length=2, carry=True, **{**NET, "max_length": 64}).eval()
    tokenizer = CodeVocab([f"{c:03d}" for c in range(1, VOCAB - 6)])  # dummy ICD-9 codes 001-020

    class Holder(torch.nn.Module):  # what match_generation reads: .model and .tokenizer
        def __init__(self) -> None:
            super().__init__()
            self.model, self.tokenizer = model, tokenizer

    module = Holder()
    rng = np.random.default_rng(0)
    age, sex = rng.uniform(20, 80, 300).astype("float32"), rng.integers(0, 2, 300)
    known = {"carry": 0.8, "items_per_visit": -0.6}  # more carried items / longer visits than at 0
    with torch.no_grad():
        for n in names:
            model.logit_offsets[MATCHED[n][0]] = known[n]
    target = _generated_statistics(module, age, sex, seed=3, batch_size=64)
    targets = {n: target[n] for n in names}
    with torch.no_grad():
        model.logit_offsets.zero_()
    start = _generated_statistics(module, age, sex, seed=3, batch_size=64)
    assert all(start[n] < targets[n] for n in names)
    result = match_generation(module, targets, age, sex, seed=3, batch_size=64, tolerance=0.01, max_rounds=8)
    kept = next(r for r in result["rounds"] if r["offsets"] == result["offsets"])
    for n in names:
        assert abs(kept["statistics"][n] - targets[n]) <= 0.01 * targets[n], n
        assert float(model.logit_offsets[MATCHED[n][0]]) == pytest.approx(result["offsets"][n])
        assert result["rounds"][0]["statistics"][n] == pytest.approx(start[n])
    assert len(result["rounds"]) > 1  # it had to move


def test_generation_match_targets_are_the_real_statistics(
    trained: dict, demo_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import ehrgen.calibration as calibration
    from ehrgen.data.cohort import Cohort

    ckpt = tmp_path / "model.ckpt"
    shutil.copy(trained["last_checkpoint"], ckpt)
    # The demo's 100 patients are below the noise thresholds: nothing is matched by default ...
    assert "generation_match" not in calibrate_checkpoint(ckpt, demo_cohort, ["val"], 5000, match_patients=32)
    # ... and with the thresholds lowered the targets are the real train + val statistics,
    # counted here independently on the cohort's code lists
    monkeypatch.setattr(calibration, "MIN_VISITS", 1)
    monkeypatch.setattr(calibration, "MIN_PAIRS", 1)
    record = calibrate_checkpoint(ckpt, demo_cohort, ["val"], 5000, match_patients=32)
    codes = set(PromptBartModule.load(ckpt).tokenizer.codes)
    items = visits = shared = before = 0
    for split in ("train", "val"):
        for row in Cohort(demo_cohort).read(split).iter_rows(named=True):
            sets = [{c for c in v["codes"] if c in codes} for v in row["visits"]]
            items += sum(len(x) for x in sets)
            visits += len(sets)
            for a, b in zip(sets, sets[1:], strict=False):
                shared += len(a & b)
                before += len(a)
    targets = record["generation_match"]["targets"]
    assert targets["items_per_visit"] == pytest.approx(items / visits)
    assert targets["carry"] == pytest.approx(shared / before)
    stored = torch.load(ckpt, weights_only=True)["state_dict"]["model.logit_offsets"].tolist()
    assert stored == pytest.approx([record["offsets"][k] for k in OFFSET_NAMES])
