"""submitit_launch.py against the real local SLURM cluster (scripts/slurm_local.sh).

A tiny checkpoint is trained once per module (ehrgen.train on a simulated cohort); then a job-array
generation is compared with a single process, broken shards are resubmitted alone, a training job
is requeued mid-run and resumes, and a Hydra sweep runs through hydra/launcher=slurm. Every
launcher run is a real `python submitit_launch.py ...` subprocess with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import compose_config
from lightning.pytorch.callbacks import Callback
from slurm_cluster import job_info, wait_for_state

from ehrgen.data.build import load_cooccurrence
from ehrgen.data.cohort import Cohort

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TINY = [
    "model/size=tiny",
    "model.warmup_steps=2",
    "model.lr=1e-3",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.datamodule.batch_size=8",
]
GEN = ["constraints.max_length=40", "constraints.max_visits=4", "seed=7"]
SLURM = ["slurm.partition=debug", "slurm.time=10"]
N, SHARDS = 200, 4


class Probe(Callback):
    """Test-only: records where each (re)start of training begins and slows steps down, so a
    requeue lands mid-run on any machine. Imported on the node (PYTHONPATH holds tests/)."""

    def __init__(self, path: str, sleep_s: float = 0.0):
        self.path, self.sleep_s = Path(path), sleep_s

    def on_train_start(self, trainer, pl_module) -> None:
        line = {"restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")), "step": int(trainer.global_step)}
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.sleep_s)


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EHRGEN_CACHE": str(tmp / "cache"),
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }


def launcher(tmp: Path, *args: str, timeout_s: int = 420) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / "submitit_launch.py"), *args],
        cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    return proc


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _rows(cohort_dir: Path) -> pl.DataFrame:
    return Cohort(cohort_dir).read().sort("subject_id")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cohort(work: Path) -> Path:
    from ehrgen.prepare import run as prepare

    return prepare(
        compose_config("prepare", ["data.n_patients=200", f"data.cohort_dir={work / 'cohort'}"], work)
    )


@pytest.fixture(scope="module")
def ckpt(work: Path, cohort: Path) -> Path:
    """A few steps of the real training run: a checkpoint with its generation context."""
    from ehrgen.train import run

    overrides = [*TINY, f"data.cohort_dir={cohort}", "trainer.max_steps=3", "+trainer.limit_val_batches=0",
                 f"paths.run_dir={work / 'ckpt-run'}"]  # fmt: skip
    summary = run(compose_config("train", overrides, work))
    return Path(summary["last_checkpoint"])


@pytest.fixture(scope="module")
def array_run(slurm_cluster: dict, work: Path, ckpt: Path) -> tuple[Path, str]:
    """One 4-shard job-array generation, waited for and merged by the launcher."""
    out = work / "gen"
    stdout = _ok(
        launcher(
            work,
            "generate",
            f"ckpt={ckpt}",
            f"n_patients={N}",
            f"shards={SHARDS}",
            f"out_dir={out}",
            *GEN,
            *SLURM,
        )
    )
    return out, stdout


def _generate_args(ckpt: Path, out: Path) -> list[str]:
    return ["generate", f"ckpt={ckpt}", f"n_patients={N}", f"shards={SHARDS}", f"out_dir={out}", *GEN, *SLURM]


@pytest.mark.slurm
@pytest.mark.slow
def test_job_array_equals_single_process(array_run: tuple[Path, str], ckpt: Path, work: Path) -> None:
    from ehrgen.generate import run

    out, stdout = array_run
    match = re.search(r"submitted job array (\d+): 4 task\(s\) for shards 0-3", stdout)
    assert match, stdout
    assert f"merged 4 shard(s): {N} patients -> {out / 'cohort'}" in stdout
    tasks = json.loads((out / ".shards" / "plan.json").read_text())["submissions"][0]["tasks"]
    assert tasks == {f"{match[1]}_{i}": i for i in range(4)}  # one array, task i = shard i
    for i in range(4):  # the result is written a moment before SLURM marks the task COMPLETED
        assert wait_for_state(f"{match[1]}_{i}", {"COMPLETED"}, timeout_s=60)["ExitCode"] == "0:0"

    merged = _rows(out / "cohort")
    assert merged.height == N and merged["subject_id"].n_unique() == N
    single_cfg = compose_config(
        "generate",
        [f"ckpt={ckpt}", f"n_patients={N}", f"out_dir={work / 'single'}", "progress=false", *GEN],
        work,
    )
    run(single_cfg)
    single = _rows(work / "single" / "cohort")
    assert merged.equals(single)  # same ids, demographics and codes, visit by visit
    assert Cohort(out / "cohort").codes().equals(Cohort(work / "single" / "cohort").codes())
    assert (load_cooccurrence(out / "cohort") != load_cooccurrence(work / "single" / "cohort")).nnz == 0
    gen = json.loads((out / "generation.json").read_text())
    assert gen["n_patients"] == N and [s["n_patients"] for s in gen["shards"]] == [50] * 4


@pytest.mark.slurm
@pytest.mark.slow
def test_rerun_resubmits_only_broken_shards(array_run: tuple[Path, str], ckpt: Path, work: Path) -> None:
    src, _ = array_run
    out = work / "gen-rerun"
    shutil.copytree(src, out, symlinks=True)
    shutil.rmtree(out / "cohort")
    (out / "generation.json").unlink()
    shutil.rmtree(out / ".shards" / "shard-00002")  # lost
    meta_file = out / ".shards" / "shard-00001" / "cohort" / "metadata" / "cohort.json"
    meta_file.write_text(meta_file.read_text()[:40])  # truncated mid-write
    kept = {k: (out / ".shards" / f"shard-0000{k}" / "generation.json").stat().st_mtime_ns for k in (0, 3)}

    stdout = _ok(launcher(work, *_generate_args(ckpt, out), "formats=[cohort,meds]"))
    match = re.search(r"submitted job array (\d+): 2 task\(s\) for shards 1-2", stdout)
    assert match, stdout
    assert "shard 1: generation.json unreadable" not in stdout and "shard 1: cohort unusable" in stdout
    plan = json.loads((out / ".shards" / "plan.json").read_text())
    assert [s["shards"] for s in plan["submissions"]] == [[0, 1, 2, 3], [1, 2]]
    assert plan["submissions"][1]["tasks"] == {f"{match[1]}_0": 1, f"{match[1]}_1": 2}
    assert sorted(p.name for p in (out / ".submitit").glob(f"{match[1]}_*")) == [
        f"{match[1]}_0",
        f"{match[1]}_1",
    ]
    for k, mtime in kept.items():  # untouched shards were not regenerated
        assert (out / ".shards" / f"shard-0000{k}" / "generation.json").stat().st_mtime_ns == mtime
    assert _rows(out / "cohort").equals(_rows(src / "cohort"))
    assert "exported meds" in stdout and (out / "meds" / "metadata" / "dataset.json").is_file()

    # nothing left to do: the same command again submits nothing; a changed plan is refused
    again = _ok(launcher(work, *_generate_args(ckpt, out)))
    assert "already merged" in again and "submitted" not in again
    changed_args = [a if a != "seed=7" else "seed=8" for a in _generate_args(ckpt, out)]
    changed = launcher(work, *changed_args)
    assert changed.returncode == 1
    assert changed.stderr.strip().endswith(
        "(seed=7 in the plan, seed=8 now); use another out_dir or pass overwrite=true to discard its shards"
    )


@pytest.mark.slurm
def test_dry_run_submits_nothing(slurm_cluster: dict, work: Path, ckpt: Path) -> None:
    before = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout.split()
    out = work / "dry"
    stdout = _ok(launcher(work, *_generate_args(ckpt, out), "--dry-run"))
    assert "job array: 4 task(s) for shards 0-3, at most 4 at a time" in stdout
    assert f"shard 1: patients [50, 100) (50) -> {out}/.shards/shard-00001" in stdout
    assert "work: 200 patients to generate, 50 per task at most" in stdout
    assert stdout.rstrip().endswith("dry run: nothing submitted") and "submitted job" not in stdout
    after = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(after) <= set(before)
    assert not out.exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_shard_failing_twice_stops_the_launch(slurm_cluster: dict, work: Path) -> None:
    bad = work / "garbage.ckpt"
    bad.write_bytes(b"not a checkpoint")
    out = work / "gen-bad"
    proc = launcher(work, "generate", f"ckpt={bad}", "n_patients=4", "shards=2", f"out_dir={out}", *SLURM)
    assert proc.returncode == 1
    assert "resubmitting them once" in proc.stdout
    err = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: shard \d failed twice \(.*not a readable PyTorch checkpoint.*\); log: .*_log\.err", err
    ), err
    assert [s["shards"] for s in json.loads((out / ".shards" / "plan.json").read_text())["submissions"]] == [
        [0, 1],
        [0, 1],
    ]
    assert not (out / "cohort").exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_train_requeue_resumes_in_same_run_dir(slurm_cluster: dict, work: Path, cohort: Path) -> None:
    run_dir = work / "train-requeue"
    steps, every = 20, 5
    args = [
        "train", *TINY, f"data.cohort_dir={cohort}", f"trainer.max_steps={steps}", "+trainer.limit_val_batches=0",
        f"callbacks.step_checkpoint.every_n_train_steps={every}", "logger=wandb", f"paths.run_dir={run_dir}",
        "+callbacks.probe._target_=test_cluster_launch.Probe", f"+callbacks.probe.path={run_dir / 'probe.jsonl'}",
        "+callbacks.probe.sleep_s=0.5", *SLURM,
    ]  # fmt: skip
    log = work / "train-launcher.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "submitit_launch.py"), *args],
            cwd=work, env=_env(work), stdout=fh, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        job_id = None
        deadline = time.monotonic() + 120
        while job_id is None and time.monotonic() < deadline:
            match = re.search(r"submitted job (\d+): train", log.read_text())
            job_id = match[1] if match else None
            time.sleep(0.5)
        assert job_id, log.read_text()
        wait_for_state(job_id, {"RUNNING"}, timeout_s=120)
        last = run_dir / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while not last.is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert last.is_file(), log.read_text()[-3000:]
        wandb_id = (run_dir / "wandb_id.txt").read_text()
        assert job_info(job_id)["JobState"] == "RUNNING"
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
        assert proc.wait(timeout=420) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", str(job_id)], check=False)
    text = log.read_text()
    assert f"training done: global_step {steps}" in text
    assert job_info(job_id)["Restarts"] == "1"
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == steps
    starts = [json.loads(line) for line in (run_dir / "probe.jsonl").read_text().splitlines()]
    assert [s["restart"] for s in starts] == [0, 1]
    assert starts[0]["step"] == 0 and starts[1]["step"] >= every and starts[1]["step"] % every == 0
    assert (run_dir / "wandb_id.txt").read_text() == wandb_id
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{wandb_id}") for r in runs)  # one W&B run, resumed


@pytest.mark.slurm
@pytest.mark.slow
def test_hydra_sweep_on_slurm_writes_summary(slurm_cluster: dict, work: Path, cohort: Path) -> None:
    sweep = work / "sweep"
    cmd = [
        sys.executable, "-m", "ehrgen.train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=10", *TINY, f"data.cohort_dir={cohort}", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "model.loss.w_cooc=0.0,0.1",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=work, env=_env(work), capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["global_step"] == 3 and "val/loss" in summary["metrics"]
        assert Path(summary["best_checkpoint"]).parent == sweep / job / "checkpoints"
    table = (sweep / "sweep_summary.md").read_text()
    assert "model.loss.w_cooc=0.0" in table and "model.loss.w_cooc=0.1" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and rows[1].startswith("| **")  # header + one row per job, best in bold
    assert (sweep / ".submitit").is_dir()


def test_generate_in_process_debug_cluster(work: Path, ckpt: Path, capsys) -> None:
    """cluster=debug runs the same plan/shards/merge path inside the launcher process (no SLURM)."""
    from ehrgen.cluster.launch import main

    out = work / "gen-debug"
    assert (
        main(
            ["generate", f"ckpt={ckpt}", "n_patients=12", "shards=3", f"out_dir={out}", *GEN, "cluster=debug"]
        )
        == 0
    )
    assert "merged 3 shard(s): 12 patients" in capsys.readouterr().out
    rows = _rows(out / "cohort")
    assert rows.height == 12 and rows["subject_id"].n_unique() == 12
    assert json.loads((out / ".shards" / "plan.json").read_text())["submissions"][0]["cluster"] == "debug"
