"""Memorisation control: exact-copy counting and the CopyRateMonitor's stop-and-roll-back rule."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from test_train import TINY

from ehrgen.callbacks import EMA, CopyRateMonitor
from ehrgen.data.cohort import Cohort
from ehrgen.data.vocab import BOS, EOS, VISIT_END, VISIT_START
from ehrgen.evaluate import _memorisation_figure
from ehrgen.generate import run as generate
from ehrgen.module import OFFSETS_KEY
from ehrgen.privacy.copies import copies, excess_z, item_set_keys
from ehrgen.train import run

V, E = VISIT_START, VISIT_END


def test_item_set_keys_ignore_order_visits_and_repeats() -> None:
    lo, hi = 7, 20
    a = np.array([BOS, V, 9, 7, E, V, 9, E, EOS])
    b = np.array([BOS, V, 7, E, V, 9, E, EOS])  # same set, other visits
    c = np.array([BOS, V, 7, 8, E, EOS])
    ka, kb, kc = item_set_keys([a, b, c], lo, hi)
    assert ka == kb and ka != kc
    # ids outside [lo, hi) (specials, padded rows) do not count
    (kd,) = item_set_keys([np.array([BOS, V, 7, 9, 25, E, EOS, 1, 1])], lo, hi)
    assert kd == ka
    assert copies([ka, kc, kb], {kb}) == 2


def test_excess_z_known_answer() -> None:
    # 30/100 copies vs 10/100 held-out collisions: diff 0.2, SE from (c + 0.5) / (n + 1)
    vq, vh = 30.5 / 101, 10.5 / 101
    expected = 0.2 / math.sqrt(vq * (1 - vq) / 100 + vh * (1 - vh) / 100)
    assert excess_z(30, 100, 10, 100) == pytest.approx(expected)
    assert excess_z(30, 100, 10, 100) == pytest.approx(3.6277, abs=1e-3)
    assert excess_z(10, 100, 10, 100) == 0.0
    assert math.isfinite(excess_z(1, 100, 0, 100))  # a zero count does not give an infinite z
    with pytest.raises(ValueError):
        excess_z(0, 0, 1, 10)


class _Scripted(CopyRateMonitor):
    """Copy counts by epoch instead of generation: epoch 0 passes, epoch 1 copies everything."""

    def measure(self, model):
        epoch = len(self.history)
        return (0 if epoch == 0 else self.n_patients), self.n_patients


class _Weights(Callback):
    def __init__(self) -> None:
        self.after: list[dict[str, torch.Tensor]] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:  # the weights validated
        self.after.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def test_monitor_logs_copy_rates_every_validation(compose_cfg, demo_cohort: Path, tmp_path: Path) -> None:
    summary = run(compose_cfg("train", [*TINY, f"data.cohort_dir={demo_cohort}", "trainer.max_epochs=2", "memorisation.z=null"]))  # fmt: skip
    history = summary["memorisation"]["history"]
    assert [h["epoch"] for h in history] == [0.0, 1.0]
    for h in history:
        assert 0.0 <= h["copy_rate"] <= 1.0 and 0.0 <= h["copy_rate_holdout"] <= 1.0
        assert h["copy_excess"] == pytest.approx(h["copy_rate"] - h["copy_rate_holdout"])
    assert summary["memorisation"]["stopped_epoch"] is None
    assert "val/copy_rate" in summary["metrics"] and "val/copy_excess_z" in summary["metrics"]

    # the history travels: checkpoint -> generated cohort's metadata -> report figure
    out = tmp_path / "gen"
    generate(compose_cfg("generate", [f"ckpt={summary['last_checkpoint']}", "n_patients=8", f"out_dir={out}", "constraints.max_length=40", "progress=false"]))  # fmt: skip
    carried = Cohort(out / "cohort").meta["generation"]["memorisation"]
    assert carried["history"] == history and carried["stopped_epoch"] is None
    figs: dict[str, bytes] = {}
    _memorisation_figure(SimpleNamespace(sources={"synthetic": {"path": str(out / "cohort")}}), figs)
    assert figs["copy_rate_by_epoch"].startswith(b"\x89PNG")


@pytest.mark.parametrize("ema", ["null", "0.9"])
def test_monitor_rolls_back_and_stops_when_copies_pass_the_holdout(
    compose_cfg, demo_cohort: Path, monkeypatch: pytest.MonkeyPatch, ema: str
) -> None:
    from ehrgen.data.vocab import build_tokenizer

    cohort = Cohort(demo_cohort)
    monitor = _Scripted(cohort, build_tokenizer(demo_cohort), n_patients=50, z=2.0)
    weights = _Weights()
    cfg = compose_cfg("train", [*TINY, f"data.cohort_dir={demo_cohort}", "trainer.max_epochs=4", "memorisation.n_patients=0", f"ema.decay={ema}"])  # fmt: skip

    import ehrgen.train as train_module

    original = train_module.instantiate

    def with_callbacks(node, *args, **kwargs):  # add the scripted monitor to the real trainer
        if kwargs.get("callbacks") is not None:
            # train.py's order: the monitor before the average, which swaps in for validation
            # before _Weights records what is validated
            averages = [c for c in kwargs["callbacks"] if isinstance(c, EMA)]
            rest = [c for c in kwargs["callbacks"] if not isinstance(c, EMA)]
            kwargs["callbacks"] = [*rest, monitor, *averages, weights]
        return original(node, *args, **kwargs)

    monkeypatch.setattr(train_module, "instantiate", with_callbacks)
    summary = run(cfg)
    assert monitor.stopped_epoch == 1 and len(monitor.history) == 2  # stopped after epoch 1 of 4
    assert monitor.history[1]["copy_excess_z"] > 2.0
    saved = torch.load(summary["last_checkpoint"], weights_only=True, map_location="cpu")["state_dict"]
    epoch0, epoch1 = weights.after
    name = next(k for k in epoch0 if k.endswith("lm_head.weight") or "embed_tokens" in k)
    assert not torch.equal(epoch0[name], epoch1[name])  # epoch 1 trained on
    for k, v in epoch0.items():  # but the checkpoint holds epoch 0's weights
        if k != OFFSETS_KEY:  # fit for those weights after training (ehrgen.calibration)
            assert torch.equal(saved[k], v), k
