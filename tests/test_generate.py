"""ehrgen.generate end to end: barely trained tiny checkpoints on a simulated cohort, the real
conf/generate.yaml shrunk, every mode and output format, sharding, and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch import Trainer

from ehrgen.config import CONFIG_DIR
from ehrgen.data.codes import category_of
from ehrgen.data.cohort import Cohort
from ehrgen.data.corruption import content_mask
from ehrgen.data.datamodule import CohortDataModule, truncate_oldest
from ehrgen.data.rules import VALIDITY_RULES
from ehrgen.data.vocab import UNK, build_tokenizer
from ehrgen.data.vocab import VISIT_START as V_START
from ehrgen.errors import InputError
from ehrgen.generate import PatientGenerator, conditional_prompts, load_checkpoint, run
from ehrgen.module import PromptBartModule
from ehrgen.prepare import run as prepare
from ehrgen.sampling.demographics import DemographicsModel
from ehrgen.sampling.writers import synthetic_id_offset
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]
MAX_LENGTH = 40  # generated tokens per patient: keeps barely trained models fast
SMALL = [
    "progress=false",
    f"constraints.max_length={MAX_LENGTH}",
    "constraints.max_visits=4",
    "batch_size=16",
]


def model_config(level: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=[f"+model={'flat' if level == 'code' else 'hierarchical'}", "model/size=tiny", "model.warmup_steps=2", "model.net.max_length=64"])  # fmt: skip
    return cfg.model


def train_checkpoint(cohort: Path, level: str, path: Path) -> Path:
    """A few optimiser steps of the real module on the real DataModule; saved like Lightning does."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cohort, level=level)
    module = PromptBartModule(model_config(level), tokenizer.to_dict())
    trainer = Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, limit_val_batches=0, default_root_dir=path.parent,
    )  # fmt: skip
    trainer.fit(module, datamodule=CohortDataModule(str(cohort), tokenizer, batch_size=16, max_length=64))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "cohort"
    return prepare(compose_config("prepare", ["data.n_patients=300", f"data.cohort_dir={out}"], out.parent))


@pytest.fixture(scope="module")
def ckpts(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``bare``: weights only (generation falls back on cohort=); ``full``: with the generation
    context ehrgen.train stores; ``hier``: hierarchical, weights only."""
    root = tmp_path_factory.mktemp("ckpt")
    bare = train_checkpoint(cohort, "code", root / "bare.ckpt")
    raw = torch.load(bare, weights_only=True, map_location="cpu")
    real = Cohort(cohort)
    raw["generation"] = {
        "demographics": DemographicsModel.from_cohort(real).to_dict(),
        "max_real_subject_id": int(real.scan().select("subject_id").max().collect().item()),
        "code_descriptions": {"4019": "Unspecified essential hypertension"},
    }
    torch.save(raw, root / "full.ckpt")
    hier = train_checkpoint(cohort, "category", root / "hier.ckpt")
    return {"bare": bare, "full": root / "full.ckpt", "hier": hier}


def gen_cfg(overrides: list[str], tmp: Path):
    return compose_config("generate", [*SMALL, *overrides], tmp)


def rows(out: Path) -> pl.DataFrame:
    return Cohort(out / "cohort").read("train")


def rule_violations(frame: pl.DataFrame) -> int:
    n = 0
    for r in frame.iter_rows(named=True):
        for visit in r["visits"]:
            for code in visit["codes"]:
                n += sum(
                    rule.covers(code) and not bool(rule.allows(r["sex"], r["age"])) for rule in VALIDITY_RULES
                )
    return n


def assert_clean(out: Path, vocab: set[str]) -> pl.DataFrame:
    """Readable cohort; the writer dropped nothing (no duplicate, empty visit or patient)."""
    meta = Cohort(out / "cohort").meta
    assert meta["drops"] == {}
    frame = rows(out)
    codes = {c for patient in frame["visits"].to_list() for visit in patient for c in visit["codes"]}
    assert codes and codes <= vocab
    assert frame["visits"].list.len().max() <= 4
    return frame


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU: one thread avoids oversubscription stalls (several-fold faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- modes


def test_demographics_mode_with_cohort_fallbacks(cohort: Path, ckpts: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    summary = run(gen_cfg([f"ckpt={ckpts['bare']}", f"cohort={cohort}", "n_patients=40", f"out_dir={out}", "progress=true"], tmp_path))  # fmt: skip
    assert "patient/s" in capsys.readouterr().err  # progress bar with throughput
    vocab = set(load_checkpoint(ckpts["bare"]).tokenizer.codes)
    frame = assert_clean(out, vocab)
    real = Cohort(cohort)
    max_real = real.scan().select("subject_id").max().collect().item()
    offset = synthetic_id_offset(max_real)
    assert frame["subject_id"].to_list() == list(range(offset, offset + 40))
    assert offset > max_real and summary["first_subject_id"] == offset
    assert set(frame["sex"].to_list()) == {0, 1}
    assert rule_violations(frame) == 0
    assert (out / "generation.json").is_file() and not (out / "mimic3").exists()
    descriptions = Cohort(out / "cohort").codes().drop_nulls("description")
    assert descriptions.height > 0  # titles came from the real cohort's codes.parquet


def test_fixed_and_csv_demographics_from_checkpoint_context(ckpts: dict, tmp_path: Path) -> None:
    fixed = run(gen_cfg([f"ckpt={ckpts['full']}", "n_patients=12", "age=70", "sex=F", f"out_dir={tmp_path / 'f'}"], tmp_path))  # fmt: skip
    frame = rows(tmp_path / "f")
    assert frame["age"].to_list() == [70.0] * 12 and frame["sex"].to_list() == [1] * 12
    assert fixed["generation"]["demographics"] == "fixed"

    csv = tmp_path / "profiles.csv"
    csv.write_text("age,sex,n\n25,F,3\n0.5,M,2\n85,M,2\n")
    run(gen_cfg([f"ckpt={ckpts['full']}", f"demographics_csv={csv}", f"out_dir={tmp_path / 'c'}"], tmp_path))
    frame = rows(tmp_path / "c")
    assert frame["sex"].to_list() == [1, 1, 1, 0, 0, 0, 0]
    np.testing.assert_allclose(frame["age"].to_numpy(), [25, 25, 25, 0.5, 0.5, 85, 85])
    assert rule_violations(frame) == 0
    # ids from the checkpoint's max_real_subject_id (<= 300 in the simulated cohort)
    assert frame["subject_id"].min() == 1000


def test_seed_batching_and_shards(ckpts: dict, tmp_path: Path) -> None:
    base = [f"ckpt={ckpts['full']}", "n_patients=20", "seed=3"]
    run(gen_cfg([*base, "batch_size=8", f"out_dir={tmp_path / 'a'}"], tmp_path))
    single = rows(tmp_path / "a")
    # shards of 6-7 patients in batches of 16 vs one process in batches of 8: same patients
    shards = []
    for k in range(3):
        run(gen_cfg([*base, f"shard_index={k}", "num_shards=3", f"out_dir={tmp_path / f's{k}'}"], tmp_path))
        shards.append(rows(tmp_path / f"s{k}"))
    assert [s.height for s in shards] == [6, 7, 7]
    assert pl.concat(shards).equals(single)  # ids included
    run(gen_cfg([*base[:-1], "seed=4", f"out_dir={tmp_path / 'c'}"], tmp_path))
    assert not rows(tmp_path / "c").equals(single)
    # the visit times are part of what the seed fixes, whatever the batch or shard
    visits = single.select(pl.col("visits").list.explode()).unnest("visits")
    assert visits["time"].null_count() == 0 and visits["end"].null_count() == 0


def test_a_checkpoint_without_the_time_head_generates_without_times(ckpts: dict, tmp_path: Path) -> None:
    raw = torch.load(ckpts["full"], weights_only=True, map_location="cpu")
    for where in (raw["hyper_parameters"]["model"]["net"], raw["ehrgen"]["config"]["net"]):
        where.pop("visit_times", None)
        where.pop("visit_times_detach", None)
    for key in ("state_dict", "current_model_state"):
        if raw.get(key) is not None:
            raw[key] = {k: v for k, v in raw[key].items() if "time_head" not in k}
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    out = tmp_path / "out"
    run(gen_cfg([f"ckpt={old}", "n_patients=8", "formats=[cohort,mimic3]", f"out_dir={out}"], tmp_path))
    visits = rows(out).select(pl.col("visits").list.explode()).unnest("visits")
    assert visits["time"].null_count() == visits.height  # no times: the exports draw dates
    assert pl.read_csv(out / "mimic3" / "ADMISSIONS.csv")["ADMITTIME"].null_count() == 0


def test_generated_times_are_monotone_and_survive_every_export(ckpts: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(
        gen_cfg(
            [
                f"ckpt={ckpts['full']}",
                "n_patients=40",
                "formats=[cohort,mimic3,mimic4,meds]",
                f"out_dir={out}",
            ],
            tmp_path,
        )
    )
    frame = rows(out)
    for patient in frame["visits"].to_list():
        for a, b in zip(patient, patient[1:], strict=False):
            assert a["time"] <= a["end"] <= b["time"]  # stay, then the gap to the next admission
        assert patient[-1]["time"] <= patient[-1]["end"]
    # times read back exactly from the MIMIC-III and MIMIC-IV CSVs and from MEDS (whole minutes)
    ages = frame["age"].to_numpy()
    for source, raw in (("mimic3", out / "mimic3"), ("mimic4", out / "mimic4"), ("meds", out / "meds")):
        back = Cohort(prepare(compose_config("prepare", [f"data={source}", f"data.raw_dir={raw}", f"data.cohort_dir={tmp_path / source}"], tmp_path))).read()  # fmt: skip
        back = back.sort("subject_id")
        assert back["subject_id"].to_list() == frame["subject_id"].to_list()
        assert back["visits"].to_list() == frame["visits"].to_list()
        # the synthetic date of birth is consistent with the generated age (MIMIC-IV: whole years)
        want = np.where(ages > 89, 90, np.floor(ages)) if source == "mimic4" else ages
        np.testing.assert_allclose(back["age"].to_numpy(), want, atol=1e-3)


@pytest.mark.parametrize("strategy", ["sample", "beam"])
def test_conditional_mode_keeps_each_patients_prefix(
    cohort: Path, ckpts: dict, tmp_path: Path, strategy: str
) -> None:
    out = tmp_path / "out"
    run(gen_cfg([f"ckpt={ckpts['full']}", "mode=conditional", f"cohort={cohort}", "split=test", f"out_dir={out}", f"sampling.strategy={strategy}", "sampling.num_beams=2"], tmp_path))  # fmt: skip
    synthetic = rows(out)
    real = Cohort(cohort).read("test")
    assert synthetic.height == real.height
    np.testing.assert_array_equal(synthetic["age"].to_numpy(), real["age"].to_numpy())
    np.testing.assert_array_equal(synthetic["sex"].to_numpy(), real["sex"].to_numpy())
    tokenizer = load_checkpoint(ckpts["full"]).tokenizer
    seqs = tokenizer.encode_batch(real["visits"].to_arrow())
    _, prefixes, dropped = conditional_prompts(seqs, 0.5, MAX_LENGTH)
    n_kept = n_checked = n_timed = 0
    real_visits = real["visits"].to_list()
    for i, (prefix, seq, generated) in enumerate(
        zip(prefixes, seqs, synthetic["visits"].to_list(), strict=True)
    ):
        # the prefix's visits keep their real admission and discharge; later ones follow them
        n_prefix = int((prefix == V_START).sum())
        kept_real = real_visits[i][dropped[i] : dropped[i] + n_prefix]
        assert [(v["time"], v["end"]) for v in generated[:n_prefix]] == [
            (v["time"], v["end"]) for v in kept_real
        ]
        for a, b in zip(generated[max(n_prefix - 1, 0) :], generated[n_prefix:], strict=False):
            assert a["end"] <= b["time"]
        n_timed += n_prefix
        n_items = int(content_mask(truncate_oldest(seq, MAX_LENGTH - 1)).sum())
        assert int(content_mask(prefix).sum()) == math.floor(0.5 * n_items)
        if (prefix == UNK).any():  # codes unknown to the vocabulary are not written back
            continue
        kept = tokenizer.decode(prefix)
        got = [v["codes"] for v in generated]
        if kept:
            assert got[: len(kept) - 1] == kept[:-1]  # whole visits before the cut
            assert got[len(kept) - 1][: len(kept[-1])] == kept[-1]  # the open visit starts the same
        n_kept += sum(len(v) for v in kept)
        n_checked += 1
    assert n_checked > 0.7 * real.height and n_kept > 20 and n_timed > 20


def test_conditional_meds_trajectories_carry_the_prediction_time(
    cohort: Path, ckpts: dict, tmp_path: Path
) -> None:
    import meds

    out = tmp_path / "out"
    run(gen_cfg([f"ckpt={ckpts['full']}", "mode=conditional", f"cohort={cohort}", "split=test", f"out_dir={out}", "formats=[cohort,meds]"], tmp_path))  # fmt: skip
    events = pl.read_parquet(out / "meds" / "data")
    assert events["prediction_time"].null_count() == 0
    import pyarrow.parquet as pq

    for part in sorted((out / "meds" / "data").glob("*.parquet")):
        table = pq.read_table(part)
        assert table.schema.field("prediction_time").type == pa.timestamp("us")
        meds.DataSchema.validate(table.drop(["hadm_id", "prediction_time"]))  # the MEDS data schema ...
        labels = (
            table.select(["subject_id", "prediction_time"])
            .group_by(["subject_id", "prediction_time"])
            .aggregate([])
        )
        meds.LabelSchema.validate(labels)  # ... plus the label schema's prediction time
    assert (
        events.group_by("subject_id").agg(pl.col("prediction_time").n_unique())["prediction_time"].max() == 1
    )
    # the prediction time is the admission of the last real visit kept (or birth when none was)
    real = Cohort(cohort).read("test")
    tokenizer = load_checkpoint(ckpts["full"]).tokenizer
    _, prefixes, dropped = conditional_prompts(
        tokenizer.encode_batch(real["visits"].to_arrow()), 0.5, MAX_LENGTH
    )
    synthetic = rows(out)
    expected = {}
    for sid, prefix, drop, visits in zip(
        synthetic["subject_id"], prefixes, dropped, real["visits"].to_list(), strict=True
    ):
        n = int((prefix == V_START).sum())
        expected[sid] = visits[drop + n - 1]["time"] if n else None
    got = dict(events.select("subject_id", "prediction_time").unique().iter_rows())
    births = dict(events.filter(pl.col("code") == "MEDS_BIRTH").select("subject_id", "time").iter_rows())
    assert got == {sid: t if t is not None else births[sid] for sid, t in expected.items() if sid in got}
    assert all(t is not None for t in expected.values())
    # no real visit kept: the patient is seeded by the demographics alone, up to its birth
    run(gen_cfg([f"ckpt={ckpts['full']}", "mode=conditional", "keep_fraction=0", f"cohort={cohort}", "split=test", f"out_dir={tmp_path / 'none'}", "formats=[meds]"], tmp_path))  # fmt: skip
    events = pl.read_parquet(tmp_path / "none" / "meds" / "data")
    births = events.filter(pl.col("code") == "MEDS_BIRTH").select("subject_id", pl.col("time").alias("birth"))
    assert (
        events.join(births, on="subject_id").filter(pl.col("prediction_time") != pl.col("birth")).height == 0
    )


def test_hierarchical_conditional_keeps_the_real_codes_of_the_prefix(
    cohort: Path, ckpts: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run(gen_cfg([f"ckpt={ckpts['hier']}", "mode=conditional", f"cohort={cohort}", f"out_dir={out}"], tmp_path))  # fmt: skip
    synthetic = rows(out)["visits"].to_list()
    real = Cohort(cohort).read("test")
    tokenizer = load_checkpoint(ckpts["hier"]).tokenizer
    known = set(tokenizer.codes)
    seqs = tokenizer.encode_batch(real["visits"].to_arrow())
    _, prefixes, dropped = conditional_prompts(seqs, 0.5, MAX_LENGTH)
    n_checked = 0
    for prefix, skip, patient, generated in zip(
        prefixes, dropped, real["visits"].to_list(), synthetic, strict=True
    ):
        kept = tokenizer.decode(prefix)  # categories per visit
        if not kept or (prefix == UNK).any():
            continue
        visits = [[c for c in v["codes"] if c in known] for v in patient[skip:]]
        got = [set(v["codes"]) for v in generated]
        for j in range(len(kept) - 1):  # closed visits: exactly the real codes
            assert got[j] == set(visits[j])
        open_real = {c for c in visits[len(kept) - 1] if category_of(c) in set(kept[-1])}
        assert open_real <= got[len(kept) - 1]  # the open visit keeps its real codes, then continues
        n_checked += 1
    assert n_checked > 10


def test_hierarchical_checkpoint(cohort: Path, ckpts: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(gen_cfg([f"ckpt={ckpts['hier']}", f"cohort={cohort}", "n_patients=30", "age=30", "sex=F", f"out_dir={out}"], tmp_path))  # fmt: skip
    frame = assert_clean(out, set(load_checkpoint(ckpts["hier"]).tokenizer.codes))
    assert rule_violations(frame) == 0 and frame.height == 30


@pytest.mark.slow  # two interpreter start-ups (torch, lightning, transformers): ~20 s
def test_command_line_all_formats(ckpts: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "ehrgen.generate", f"ckpt={ckpts['full']}", "n_patients=12", f"out_dir={out}", "formats=[cohort,mimic3,meds]", f"hydra.run.dir={tmp_path / 'hydra'}", *SMALL]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "12 synthetic patients" in done.stdout
    ids = rows(out)["subject_id"].to_list()
    assert len(ids) == 12
    patients = pl.read_csv(out / "mimic3" / "PATIENTS.csv")
    assert patients["SUBJECT_ID"].to_list() == ids
    assert (
        pl.read_csv(out / "mimic3" / "DIAGNOSES_ICD.csv").height
        == Cohort(out / "cohort").meta["counts"]["codes"]["train"]
    )
    meds = pl.read_parquet(out / "meds" / "data")
    assert sorted(set(meds["subject_id"].to_list())) == ids

    bad = subprocess.run([*args[:4], "n_patients=0", f"out_dir={tmp_path / 'bad'}", *args[6:]], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)  # fmt: skip
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == "error: n_patients must be > 0, got 0"
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_fail_before_writing(cohort: Path, ckpts: dict, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpts["full"].read_bytes()[:50_000])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    csv = tmp_path / "bad.csv"
    csv.write_text("age,sex\n40,F\nabc,M\n")
    existing = tmp_path / "exists"
    full = f"ckpt={ckpts['full']}"
    cases = [
        ([f"ckpt={tmp_path / 'missing.ckpt'}", "n_patients=2"], "no such checkpoint"),
        ([f"ckpt={garbage}", "n_patients=2"], "not a readable PyTorch checkpoint"),
        ([f"ckpt={truncated}", "n_patients=2"], "not a readable PyTorch checkpoint"),
        ([f"ckpt={foreign}", "n_patients=2"], "not an ehrgen PromptBart checkpoint"),
        ([full, "n_patients=0"], "n_patients must be > 0"),
        ([full, "n_patients=-3"], "n_patients must be > 0"),
        ([full], "n_patients is not set"),
        ([full, "n_patients=2", "age=200"], "age '200', expected 0 to 120"),
        ([full, "n_patients=2", "sex=X"], "sex 'X', expected M, F, 0 or 1"),
        ([full, f"demographics_csv={csv}"], r"bad\.csv line 3: age 'abc'"),
        ([full, "n_patients=2", "sampling.strategy=beam"], "beam is for mode=conditional"),
        ([full, "n_patients=2", "sampling.temperature=0"], "temperature"),
        ([full, "mode=conditional"], "needs cohort="),
        ([full, "n_patients=2", "mode=dream"], "mode='dream'"),
        ([full, "n_patients=2", "shard_index=3", "num_shards=3"], "shard_index"),
        ([full, "n_patients=2", "num_shards=2", "formats=[cohort,meds]"], "merged"),
        ([full, "n_patients=2", "formats=[csv]"], "formats"),
        ([full, "mode=conditional", f"cohort={cohort}", "n_patients=100000"], "asked for 100000"),
        ([f"ckpt={ckpts['bare']}", "n_patients=2"], "largest real subject_id"),
        (
            [f"ckpt={ckpts['hier']}", "n_patients=2", "id_offset=5000", "age=40", "sex=M"],
            "expansion statistics",
        ),
    ]
    for overrides, message in cases:
        out = tmp_path / "out"
        with pytest.raises(InputError, match=message):
            run(gen_cfg([*overrides, f"out_dir={out}"], tmp_path))
        assert not out.exists(), overrides
    run(gen_cfg([full, "n_patients=3", f"out_dir={existing}"], tmp_path))
    with pytest.raises(InputError, match="already exists; pass overwrite=true"):
        run(gen_cfg([full, "n_patients=2", f"out_dir={existing}"], tmp_path))
    run(gen_cfg([full, "n_patients=2", f"out_dir={existing}", "overwrite=true"], tmp_path))
    assert rows(existing).height == 2


def test_overwrite_never_replaces_inputs_or_foreign_folders(ckpts: dict, tmp_path: Path) -> None:
    """overwrite=true replaced whatever out_dir named, e.g. the training run holding the checkpoint."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpts["full"].read_bytes())
    for out in (run_dir, run_dir / "checkpoints", ckpt):
        with pytest.raises(InputError, match="an input of this command"):
            run(gen_cfg([f"ckpt={ckpt}", "n_patients=2", f"out_dir={out}", "overwrite=true"], tmp_path))
        assert ckpt.read_bytes() == ckpts["full"].read_bytes()
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    with pytest.raises(InputError, match="not written by ehrgen"):
        run(gen_cfg([f"ckpt={ckpt}", "n_patients=2", f"out_dir={foreign}", "overwrite=true"], tmp_path))
    assert (foreign / "chapter1.tex").read_text() == "years of work"
    # another kind of ehrgen output (the cohort inside a generation) is not replaced either
    first = tmp_path / "first"
    run(gen_cfg([f"ckpt={ckpt}", "n_patients=2", f"out_dir={first}"], tmp_path))
    with pytest.raises(InputError, match="is a cohort"):
        run(
            gen_cfg(
                [f"ckpt={ckpt}", "n_patients=2", f"out_dir={first / 'cohort'}", "overwrite=true"], tmp_path
            )
        )
    assert rows(first).height == 2


def test_interrupt_leaves_no_complete_looking_output(ckpts: dict, tmp_path: Path, monkeypatch) -> None:
    calls = []
    original = PatientGenerator.__call__

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PatientGenerator, "__call__", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(gen_cfg([f"ckpt={ckpts['full']}", "n_patients=40", "batch_size=10", f"out_dir={out}"], tmp_path))
    assert len(calls) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
