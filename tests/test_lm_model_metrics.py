"""Model-based evaluation metrics (ehrgen.model_metrics.model_metrics) against known answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_train import TINY

from ehrgen.model_metrics import model_metrics
from ehrgen.train import run


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory, demo_cohort: Path) -> Path:
    from conftest import compose_config

    tmp = tmp_path_factory.mktemp("mm")
    # carry off: its repeat mask makes a zeroed output layer non-uniform (fewer allowed tokens)
    cfg = compose_config("train", [*TINY, f"data.cohort_dir={demo_cohort}", "trainer.max_epochs=2", "model.net.carry=false"], tmp)  # fmt: skip
    return Path(run(cfg)["last_checkpoint"])


def test_uniform_model_has_perplexity_equal_to_vocab_size(
    demo_checkpoint: Path, demo_cohort: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(demo_checkpoint, weights_only=True, map_location="cpu")
    state = ckpt["state_dict"]
    # Zero output weights and bias: every next-token distribution is uniform over the vocabulary.
    state["model.bart.lm_head.weight"].zero_()
    state["model.bart.final_logits_bias"].zero_()
    uniform = tmp_path / "uniform.ckpt"
    torch.save(ckpt, uniform)
    vocab = ckpt["ehrgen"]["layout"]["vocab_size"]
    out = model_metrics(str(uniform), str(demo_cohort), ["test"])
    for name in ("perplexity", "temporal_perplexity", "spatial_perplexity"):
        assert out[name] == pytest.approx(vocab, rel=1e-4), name
    assert out["n_patients"] == 11


def test_trained_model_beats_uniform(demo_checkpoint: Path, demo_cohort: Path) -> None:
    vocab = torch.load(demo_checkpoint, weights_only=True)["ehrgen"]["layout"]["vocab_size"]
    out = model_metrics(str(demo_checkpoint), str(demo_cohort), ["val", "test"])
    assert out["perplexity"] < vocab
    assert 0.0 <= out["recon_jaccard"] <= 1.0
    assert all(math.isfinite(v) for v in out.values())
