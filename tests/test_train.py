"""ehrgen.train end to end: composed from the real conf/, shrunk to a tiny model and a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ehrgen.callbacks import EMA, GENERATION_KEY
from ehrgen.errors import InputError
from ehrgen.module import CHECKPOINT_KEY, PromptBartModule
from ehrgen.sampling.code_curves import token_age_curves
from ehrgen.train import run

TINY = [
    "examples=0",
    "model/size=tiny",
    "model.warmup_steps=2",
    "model.lr=1e-3",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "data.datamodule.batch_size=8",
    "memorisation.n_patients=64",
]


class StopAtStep(Callback):
    """Simulates a preemption: stop cleanly after ``step`` optimiser steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class PeekLastCheckpoint(Callback):
    """At ``step``, records (epoch, global_step) of last.ckpt on disk, then stops the run."""

    seen: list[tuple[int, int]] = []

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            if path.is_file():
                ckpt = torch.load(path, weights_only=True)
                self.seen.append((ckpt["epoch"], ckpt["global_step"]))
            trainer.should_stop = True


def _train(compose_cfg, overrides: list[str]) -> dict:
    return run(compose_cfg("train", [*TINY, *overrides]))


def _metrics_csv(run_dir: str) -> pl.DataFrame:
    return pl.read_csv(Path(run_dir) / "csv" / "metrics.csv")


def test_flat_on_mimic3_demo(compose_cfg, mimic3_demo: Path, tmp_path: Path) -> None:
    summary = _train(
        compose_cfg,
        [
            "data=mimic3",
            f"data.raw_dir={mimic3_demo}",
            f"data.cohort_dir={tmp_path / 'demo'}",
            "trainer.max_epochs=2",
        ],
    )
    assert Path(summary["best_checkpoint"]).is_file() and Path(summary["last_checkpoint"]).is_file()
    assert summary["global_step"] == 2 * 11  # 81 train patients / batch 8 -> 11 batches per epoch
    for key in ("val/loss", "val/lm", "val/perplexity", "val/code_acc", "val/recon_jaccard"):
        assert key in summary["metrics"], key
    ckpt = torch.load(summary["best_checkpoint"], weights_only=True, map_location="cpu")
    assert ckpt[GENERATION_KEY]["synthetic_id_offset"] == 100_000  # above the demo's largest SUBJECT_ID 44228
    assert ckpt[GENERATION_KEY]["code_descriptions"]["4019"] == "Unspecified essential hypertension"
    module = PromptBartModule.load(summary["best_checkpoint"])
    assert module.tokenizer.level == "code"
    logged = _metrics_csv(summary["run_dir"])
    assert {"train/loss", "train/cooc", "val/loss"} <= set(logged.columns)
    assert any(c.startswith("lr-AdamW") for c in logged.columns)


def test_hierarchical_on_simulator(compose_cfg) -> None:
    summary = _train(compose_cfg, ["model=hierarchical", "data.n_patients=300", "trainer.max_steps=6"])
    module = PromptBartModule.load(summary["best_checkpoint"] or summary["last_checkpoint"])
    assert module.tokenizer.level == "category"
    assert module.layout.vocab_size == module.tokenizer.content_range[1]
    ckpt = torch.load(summary["last_checkpoint"], weights_only=True)
    assert ckpt[GENERATION_KEY]["expansion"]  # stage-2 statistics travel with the checkpoint
    assert summary["global_step"] == 6


def test_age_profile_table_starts_at_the_datas_curves(compose_cfg) -> None:
    # lr ~ 0: the table after one step is its starting point
    overrides = ["model=hierarchical", "data.n_patients=300", "trainer.max_steps=1", "model.lr=1e-12"]
    summary = _train(compose_cfg, [*overrides, "model.age_profile_init=data"])
    module = PromptBartModule.load(summary["last_checkpoint"])
    net = module.model
    want = token_age_curves(summary["cohort_dir"], module.tokenizer, net.profile_knots.tolist())
    assert np.abs(want).max() > 0.5  # the simulator's categories depend on age
    got = (net.age_profile * net.age_profile_scale).detach().double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_loss_goes_down_on_simulator(compose_cfg) -> None:
    summary = _train(
        compose_cfg,
        [
            "data.n_patients=250",
            "trainer.max_epochs=3",
            "data.datamodule.corruption.p=0",
            "+trainer.limit_val_batches=1",
        ],
    )
    losses = _metrics_csv(summary["run_dir"]).drop_nulls("train/loss")["train/loss"].to_list()
    assert len(losses) >= 20
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5  # from ~ln(V) at init


@pytest.mark.parametrize("ema", ["null", "0.9"])
def test_resume_from_last_ckpt_continues_exactly(compose_cfg, tmp_path: Path, ema: str) -> None:
    common = [
        "data.n_patients=300",
        f"data.cohort_dir={tmp_path / 'cohort'}",
        "trainer.max_steps=8",
        "+trainer.limit_val_batches=0",
        "callbacks.step_checkpoint.every_n_train_steps=4",
        f"ema.decay={ema}",
    ]
    straight = _train(compose_cfg, [*common, f"paths.run_dir={tmp_path / 'a'}"])
    # Killed after 6 steps (last.ckpt at step 4), then resumed in the same run dir.
    stop = ["+callbacks.stop._target_=test_train.StopAtStep", "+callbacks.stop.step=6"]
    first = _train(compose_cfg, [*common, *stop, f"paths.run_dir={tmp_path / 'b'}"])
    assert first["global_step"] == 6
    resumed = _train(compose_cfg, [*common, f"paths.run_dir={tmp_path / 'b'}"])
    assert resumed["global_step"] == straight["global_step"] == 8
    a = _metrics_csv(straight["run_dir"]).drop_nulls("train/loss")
    b = _metrics_csv(resumed["run_dir"]).drop_nulls("train/loss")
    # The whole history is kept (Lightning's CSV logger deleted it on resume); the steps the
    # killed run logged past its checkpoint appear once, from the resumed run.
    assert b["step"].to_list() == a["step"].to_list() and len(a) == 8
    assert b["train/loss"].to_list() == pytest.approx(a["train/loss"].to_list(), rel=1e-5)
    # the saved weights (the moving average, with ema) are the uninterrupted run's too
    saved = [torch.load(r["last_checkpoint"], weights_only=True)["state_dict"] for r in (straight, resumed)]
    for k, v in saved[0].items():
        torch.testing.assert_close(saved[1][k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_ema_known_answer() -> None:
    ema = EMA(decay=0.5)
    averaged, current = [torch.zeros(2)], [torch.ones(2)]
    # decay min(0.5, (1 + n) / (10 + n)): 1/10 after the first update (the copy), 2/11, 3/12, ...
    expected = 0.0
    for n in range(1, 30):
        ema._update(averaged, current, torch.tensor(n))
        decay = min(0.5, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * 1.0
        assert averaged[0].tolist() == pytest.approx([expected] * 2)
    assert averaged[0][0] == pytest.approx(1.0, abs=1e-6)  # the average of a constant is the constant
    with pytest.raises(InputError, match="ema.decay must lie in"):
        EMA(decay=1.0)


def test_ema_checkpoint_holds_the_average_and_generates(compose_cfg, tmp_path: Path) -> None:
    from ehrgen.generate import run as generate

    summary = _train(compose_cfg, ["data.n_patients=200", "trainer.max_epochs=2", "ema.decay=0.9", f"paths.run_dir={tmp_path / 'run'}"])  # fmt: skip
    ckpt = torch.load(summary["last_checkpoint"], weights_only=True)
    average, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert average.keys() == raw.keys()
    assert any(not torch.equal(average[k], raw[k]) for k in average)  # the average is what is saved
    out = tmp_path / "gen"
    generate(compose_cfg("generate", [f"ckpt={summary['last_checkpoint']}", "n_patients=4", f"out_dir={out}", "constraints.max_length=40", "progress=false"]))  # fmt: skip
    assert (out / "generation.json").is_file()


def test_epoch_zero_is_checkpointed_for_requeue(compose_cfg, tmp_path: Path) -> None:
    """With the default val/loss checkpoint, step checkpoints used to wait for the first validation."""
    peek = ["+callbacks.peek._target_=test_train.PeekLastCheckpoint", "+callbacks.peek.step=5"]
    PeekLastCheckpoint.seen.clear()
    _train(compose_cfg, ["data.n_patients=300", "callbacks.step_checkpoint.every_n_train_steps=2", *peek])
    # what a job killed at step 5, inside epoch 0 (240 train patients / 8 = 30 batches), resumes from
    assert PeekLastCheckpoint.seen == [(0, 4)]


def test_wandb_offline_writes_a_run(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary = _train(
        compose_cfg,
        ["data.n_patients=200", "trainer.max_steps=3", "logger=wandb", f"paths.run_dir={tmp_path / 'w'}"],
    )
    runs = list((Path(summary["run_dir"]) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (Path(summary["run_dir"]) / "wandb_id.txt").read_text().strip()
    assert runs[0].name.endswith(run_id)
    assert list(runs[0].glob("run-*.wandb"))


def _train_subprocess(tmp_path: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "EHRGEN_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ehrgen.train", *TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_ddp_on_cpu_two_processes(tmp_path: Path) -> None:
    # strategy=ddp re-launches the command for rank 1, so it has to run as a real command line.
    _train_subprocess(tmp_path, ["trainer=ddp_cpu", "data.n_patients=200", "trainer.max_steps=4"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 4
    assert Path(summary["last_checkpoint"]).is_file()
    # one run directory, not one per rank (the Hydra + DDP trap)
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("cache",)] == ["run"]


def test_missing_cohort_dir_is_prepared_and_bad_ckpt_path_errors(compose_cfg, tmp_path: Path) -> None:

    with pytest.raises(InputError, match="ckpt_path=.*does not exist"):
        _train(
            compose_cfg, ["data.n_patients=100", "trainer.max_steps=1", f"ckpt_path={tmp_path / 'nope.ckpt'}"]
        )
    half = tmp_path / "half"
    half.mkdir()
    (half / "junk").write_text("x")
    with pytest.raises(InputError, match="is not a cohort directory"):
        _train(compose_cfg, [f"data.cohort_dir={half}", "trainer.max_steps=1"])


def test_main_job_smoke_subprocess(tmp_path: Path) -> None:
    result = _train_subprocess(tmp_path, ["data.n_patients=150", "trainer.max_epochs=1", "examples=2"])
    assert "best checkpoint:" in result.stdout
    assert "synthetic patient 1:" in result.stdout and "visit 1:" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["val/loss"] > 0
    assert (tmp_path / "run" / "summary.json").is_file()


def test_experiment_configs_compose(compose_cfg) -> None:
    cfg = compose_cfg("train", ["experiment=mimic3_base", "data.raw_dir=/data/mimic"])
    assert (cfg.model.net.d_model, cfg.model.net.encoder_layers, cfg.trainer.precision) == (
        768,
        6,
        "bf16-mixed",
    )
    assert cfg.model.net.max_length == cfg.data.datamodule.max_length == 512
    assert list(cfg.logger) == ["wandb"] and cfg.data.name == "mimic3"
    cfg = compose_cfg("train", ["experiment=simulated_hierarchical"])
    assert cfg.model.level == "category" and cfg.data.n_patients == 20000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", r"trainer.max_epochs='abc': expected a whole number"),
        ("trainer.log_every_n_steps=0", r"trainer.log_every_n_steps=0: expected a whole number >= 1"),
        (
            "+trainer.limit_val_batches=1.5",
            r"trainer.limit_val_batches=1.5: expected a whole number of batches",
        ),
        ("data.shard_size=-1", r"shard_size=-1: expected a whole number >= 1"),
        ("data.datamodule.batch_size=0", r"batch_size=0: expected a whole number >= 1"),
        ("model.loss.w_cooc=-0.1", r"model.loss.w_cooc=-0.1: expected a number >= 0"),
        ("model.lr=0", r"model.lr=0: expected a number > 0"),
        ("data.split_fractions=[0.5,0.5]", r"data.split_fractions=.*three non-negative numbers"),
        ("model.age_profile_init=random", r"model.age_profile_init='random': expected 'zero' or 'data'"),
    ],
)
def test_bad_options_fail_before_any_work(compose_cfg, tmp_path: Path, override: str, message: str) -> None:

    with pytest.raises(InputError, match=message):
        _train(compose_cfg, ["data.n_patients=50", override])
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


class RunsCode:
    """Unpickling this runs code: what a crafted checkpoint can do without weights_only."""

    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["EHRGEN_TEST_PWNED"]), "ran"))


def test_resume_refuses_checkpoints_it_cannot_use(compose_cfg, tmp_path: Path, monkeypatch) -> None:

    common = ["data.n_patients=120", f"data.cohort_dir={tmp_path / 'cohort'}", "trainer.max_steps=2"]
    run_dir = tmp_path / "r"
    _train(compose_cfg, [*common, f"paths.run_dir={run_dir}"])
    last = run_dir / "checkpoints" / "last.ckpt"
    # a run dir reused with another model size: one line, not a 136-line size mismatch
    with pytest.raises(InputError, match=r"trained with other model options: d_model 64 \(now 256\)"):
        _train(compose_cfg, [*common, "model/size=small", f"paths.run_dir={run_dir}"])
    with pytest.raises(InputError, match=r"age_bands \[[0-9, ]+\] \(now \[1, 18\]\)"):
        _train(compose_cfg, [*common, "model.net.age_bands=[1,18]", f"paths.run_dir={run_dir}"])
    # a checkpoint from before an option existed had the model's default (no carry pathway)
    old = tmp_path / "old.ckpt"
    crafted = torch.load(last, weights_only=True)
    del crafted[CHECKPOINT_KEY]["config"]["net"]["carry"]
    torch.save(crafted, old)
    with pytest.raises(InputError, match=r"carry False \(now True\)"):
        _train(compose_cfg, [*common, f"ckpt_path={old}", f"paths.run_dir={tmp_path / 'o'}"])
    with pytest.raises(InputError, match="trained on another vocabulary"):
        _train(compose_cfg, [*common, "data.min_count=3", f"paths.run_dir={run_dir}"])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:4000])
    with pytest.raises(InputError, match="truncated.ckpt: not a readable ehrgen checkpoint"):
        _train(compose_cfg, [*common, f"ckpt_path={truncated}", f"paths.run_dir={tmp_path / 's'}"])
    # code in a checkpoint never runs, even when torch is told to load unsafely by default
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("EHRGEN_TEST_PWNED", str(pwned))
    crafted = torch.load(last, weights_only=True)
    crafted["payload"] = RunsCode()
    torch.save(crafted, last)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(InputError, match="not a readable ehrgen checkpoint") as err:
        _train(compose_cfg, [*common, f"paths.run_dir={run_dir}"])
    assert not pwned.exists() and "weights_only=False" not in str(err.value)


def test_entry_points_print_one_line_errors(tmp_path: Path) -> None:
    env = {**os.environ, "EHRGEN_CACHE": str(tmp_path / "cache")}
    for module, override, message in (
        (
            "ehrgen.train",
            "trainer.max_epochs=abc",
            "error: trainer.max_epochs='abc': expected a whole number",
        ),
        ("ehrgen.prepare", "data.shard_size=0", "error: data.shard_size=0: expected a whole number >= 1"),
    ):
        cmd = [sys.executable, "-m", module, override, f"hydra.run.dir={tmp_path / 'run'}"]
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [message], result.stderr[-2000:]
    assert not (tmp_path / "cache").exists()
