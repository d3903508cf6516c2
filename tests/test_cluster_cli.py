"""submitit_launch.py without a cluster: executor keys, plans, shard merging, dry runs and errors.

The SLURM runs themselves are in test_cluster_launch.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import submitit

from ehrgen.cluster import launch, shards
from ehrgen.cluster.executor import ExecutorSpec
from ehrgen.cluster.merge import check_subject_ids, merge_shards
from ehrgen.data.build import load_cooccurrence
from ehrgen.data.cohort import Cohort, write_json_atomic
from ehrgen.errors import InputError
from ehrgen.sampling.writers import SyntheticCohortWriter

REPO = Path(__file__).resolve().parents[1]
CODES = ["4019", "25000", "4280", "V5861", "E8497", "5849", "42731"]


def _patients(n: int, seed: int = 0) -> pl.DataFrame:
    """Synthetic rows (sex, age, visits as code lists) with repeated codes and an empty visit."""
    rng = np.random.default_rng(seed)
    visits = []
    for i in range(n):
        n_visits = int(rng.integers(1, 4))
        pv = [list(rng.choice(CODES, size=int(rng.integers(1, 5)))) for _ in range(n_visits)]
        if i == 3:
            pv.append([])  # dropped (and counted) by the writer, in one shard only
        visits.append(pv)
    return pl.DataFrame(
        {
            "sex": rng.integers(0, 2, n).astype(np.int8),
            "age": rng.uniform(0, 95, n).astype(np.float32),
            "visits": visits,
        },
        schema={"sex": pl.Int8, "age": pl.Float32, "visits": pl.List(pl.List(pl.Utf8))},
    )


def _write(out: Path, frame: pl.DataFrame, first_index: int, generation: dict) -> None:
    with SyntheticCohortWriter(
        out, id_offset=1000, first_index=first_index, generation=generation, shard_size=4
    ) as w:
        w.add(frame)


def _fake_shards(out_dir: Path, patients: pl.DataFrame, n_shards: int) -> list[shards.ShardState]:
    """Shard outputs laid out as `ehrgen.generate ... shard_index=k` writes them (no model needed)."""
    n = patients.height
    for k in range(n_shards):
        a, b = shards.shard_range(k, n, n_shards)
        gen = {"seed": 0, "n_patients_total": n, "first_index": a, "shard_index": k, "num_shards": n_shards}
        d = shards.shard_dir(out_dir, k)
        _write(d / "cohort", patients.slice(a, b - a), a, gen)
        write_json_atomic(d / "generation.json", {"n_patients": b - a, "seconds": 2.0, "generation": gen})
    return [shards.shard_state(out_dir, k, n, n_shards) for k in range(n_shards)]


def test_shard_ranges_tile_all_patients() -> None:
    ranges = [shards.shard_range(k, 10, 3) for k in range(3)]
    assert ranges == [(0, 3), (3, 6), (6, 10)]
    assert [shards.shard_range(k, 7, 7) for k in range(7)] == [(i, i + 1) for i in range(7)]


def test_merge_equals_single_writer(tmp_path: Path) -> None:
    patients = _patients(30)
    _write(tmp_path / "single", patients, 0, {"seed": 0})
    states = _fake_shards(tmp_path / "out", patients, 3)
    assert all(s.done for s in states), [s.reason for s in states]
    summary = merge_shards(tmp_path / "out", 30, 3, states)

    single, merged = Cohort(tmp_path / "single"), Cohort(tmp_path / "out" / "cohort")
    assert merged.read("train").equals(single.read("train"))  # rows and subject ids, in order
    assert merged.codes().equals(single.codes())  # counts summed, same order
    diff = load_cooccurrence(merged.path) != load_cooccurrence(single.path)
    assert diff.nnz == 0 and load_cooccurrence(merged.path).nnz > 0
    assert merged.meta["counts"] == single.meta["counts"]
    assert merged.meta["drops"] == single.meta["drops"]
    assert merged.meta["drops"]["admission_without_codes"] == 1
    assert merged.meta["subject_ids"]["n_indices"] == 30
    assert [s["first_index"] for s in merged.meta["array_shards"]["shards"]] == [0, 10, 20]
    # part files renumbered across shards (each shard wrote parts of 4 patients: 4+4+2 per shard)
    assert merged.meta["shards"]["rows_per_file"]["train"] == [4, 4, 2] * 3
    assert [p.name for p in merged.files("train")][-1] == "part-00008.parquet"
    assert merged.row_counts("val") == [0] and merged.row_counts("test") == [0]
    assert summary["n_patients"] == 30 and summary["seconds"] == 6.0
    assert json.loads((tmp_path / "out" / "generation.json").read_text())["first_subject_id"] == 1000


def test_merge_refuses_incomplete_shards_and_repeated_ids(tmp_path: Path) -> None:
    patients = _patients(12)
    states = _fake_shards(tmp_path / "out", patients, 2)
    meta_file = shards.shard_dir(tmp_path / "out", 1) / "cohort" / "metadata" / "cohort.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "complete": False}))
    state = shards.shard_state(tmp_path / "out", 1, 12, 2)
    assert not state.done and "incomplete" in state.reason
    with pytest.raises(InputError, match=r"shards \[1\] are not complete"):
        merge_shards(tmp_path / "out", 12, 2, [states[0], state])
    # a plan of 3 shards does not accept a 2-shard layout
    assert shards.shard_state(tmp_path / "out", 0, 12, 3).reason.startswith("generation.json num_shards=2")
    # shard 1 written with shard 0's ids: caught from the ids themselves
    _write(tmp_path / "dup", patients.slice(6, 6), 0, {})
    with pytest.raises(InputError, match="shard 1: subject_ids 1000..1005 outside its range 1006..1011"):
        check_subject_ids(
            [Cohort(shards.shard_dir(tmp_path / "out", 0) / "cohort"), Cohort(tmp_path / "dup")], 12, 2
        )


def test_plan_difference_names_the_change() -> None:
    a = shards.new_plan(100, 4, {"ckpt": "/m.ckpt", "seed": "1"})
    assert shards.plan_difference(a, shards.new_plan(100, 4, {"seed": "1", "ckpt": "/m.ckpt"})) is None
    assert shards.plan_difference(a, shards.new_plan(100, 5, a["overrides"])) == "shards 4 in the plan, 5 now"
    assert shards.plan_difference(a, shards.new_plan(100, 4, {"ckpt": "/m.ckpt", "seed": "2"})) == (
        "seed=1 in the plan, seed=2 now"
    )
    assert (
        shards.plan_difference(a, shards.new_plan(100, 4, {"ckpt": "/m.ckpt"}))
        == "seed=1 in the plan, no seed now"
    )


def test_executor_keys_reach_sbatch(tmp_path: Path) -> None:
    keys = {"partition": "gpu", "time": "120", "gpus_per_node": "2", "cpus_per_task": "8", "mem_gb": "16",
            "account": "proj", "qos": "high", "array_parallelism": "8", "setup": "['module load cuda']"}  # fmt: skip
    spec = ExecutorSpec.from_cli("slurm", keys)
    assert spec.submitit_parameters() == {
        "timeout_min": 120, "nodes": 1, "cpus_per_task": 8, "gpus_per_node": 2, "mem_gb": 16,
        "slurm_partition": "gpu", "slurm_account": "proj", "slurm_qos": "high", "slurm_array_parallelism": 8,
        "slurm_signal_delay_s": 120, "slurm_setup": ["module load cuda"],
    }  # fmt: skip
    # no GPU key at all when none is asked for; local keeps generic keys only; debug takes none
    assert "gpus_per_node" not in ExecutorSpec.from_cli("slurm", {}).submitit_parameters()
    local = ExecutorSpec.from_cli("local", {"partition": "gpu", "time": "5"}).submitit_parameters()
    assert local == {"timeout_min": 5, "nodes": 1, "cpus_per_task": 1}
    assert ExecutorSpec.from_cli("debug", {"time": "5"}).submitit_parameters() == {}


@pytest.mark.slurm
def test_executor_keys_reach_sbatch_script(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    """submitit's SLURM executor needs a SLURM client (srun): a `slurm` test."""
    keys = {"partition": "gpu", "time": "120", "gpus_per_node": "2", "cpus_per_task": "8", "mem_gb": "16",
            "account": "proj", "qos": "high", "array_parallelism": "8", "setup": "['module load cuda']"}  # fmt: skip
    executor = ExecutorSpec.from_cli("slurm", keys).make(tmp_path / "%j")
    script = submitit.slurm.slurm._make_sbatch_string(
        command="true", folder=tmp_path, map_count=20, **executor._executor.parameters
    )
    for line in ("--partition=gpu", "--time=120", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=16GB",
                 "--account=proj", "--qos=high", "--array=0-19%8", "--signal=USR2@120", "module load cuda"):  # fmt: skip
        assert line in script, line
    assert executor._executor.max_num_timeout == 3


@pytest.mark.parametrize(
    ("cluster", "keys", "message"),
    [
        ("slurm", {"partiton": "gpu"}, "unknown executor key slurm.partiton; expected one of slurm.name"),
        ("slurm", {"time": "-3"}, "slurm.time=-3: expected a positive integer"),
        ("pbs", {}, "cluster=pbs: expected one of slurm, local, debug"),
    ],
)
def test_executor_key_errors(cluster: str, keys: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        ExecutorSpec.from_cli(cluster, keys)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = launch.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str, text: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert text in err, err


def test_generate_dry_run_prints_plan_and_estimate(capsys, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")  # the launcher checks existence only; the shards load it
    out = tmp_path / "gen"
    rc, text, _ = _cli(capsys, "generate", f"ckpt={ckpt}", "n_patients=1000", "shards=4", f"out_dir={out}",
                       "patients_per_s=2", "slurm.partition=debug", "slurm.time=5", "--dry-run")  # fmt: skip
    assert rc == 0
    assert "job array: 4 task(s) for shards 0-3, at most 4 at a time" in text
    assert f"shard 3: patients [750, 1000) (250) -> {out}/.shards/shard-00003" in text
    assert "executor: cluster=slurm name=ehrgen-generate partition=debug time=5 nodes=1" in text
    assert "about 2.1 min per task at 2 patients/s (given)" in text
    assert "close to or above slurm.time=5" not in text
    assert text.rstrip().endswith("dry run: nothing submitted")
    assert not out.exists()


def test_train_dry_run_fixes_run_dir(capsys, tmp_path: Path) -> None:
    rc, text, _ = _cli(
        capsys,
        "train",
        f"paths.output_dir={tmp_path}",
        "trainer.max_steps=5",
        "slurm.gpus_per_node=2",
        "--dry-run",
    )
    assert rc == 0
    run_dir = next(line.split("run dir: ")[1] for line in text.splitlines() if "run dir: " in line)
    assert Path(run_dir).parent == tmp_path / "train"  # a concrete path chosen at submission
    assert "tasks_per_node=2" in text and "gpus_per_node=2" in text and "'requeue': True" in text
    assert "dry run: nothing submitted" in text and not (tmp_path / "train").exists()


def test_one_line_errors(capsys, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    base = [f"ckpt={ckpt}", "n_patients=10", "shards=2"]
    rc, _, err = _cli(
        capsys, "generate", f"ckpt={tmp_path / 'none.ckpt'}", "n_patients=10", f"out_dir={tmp_path / 'a'}"
    )
    assert rc == 1
    _one_line_error(err, f"ckpt={tmp_path / 'none.ckpt'}: no such checkpoint file")

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    _, _, err = _cli(capsys, "generate", *base, f"out_dir={tmp_path / 'taken'}")
    _one_line_error(err, "already exists and holds no generation plan")

    plan = shards.new_plan(10, 2, {"ckpt": str(ckpt), "n_patients": "10", "seed": "3"})
    shards.save_plan(tmp_path / "planned", plan)
    _, _, err = _cli(capsys, "generate", *base, f"out_dir={tmp_path / 'planned'}")
    _one_line_error(err, "differs from this command (seed=3 in the plan, no seed now); use another out_dir")

    _, _, err = _cli(capsys, "generate", *base, "shard_index=1", f"out_dir={tmp_path / 'b'}")
    _one_line_error(err, "shard_index is set by the launcher")
    _, _, err = _cli(capsys, "generate", *base, "formats=[cohort,csv]", f"out_dir={tmp_path / 'b'}")
    _one_line_error(
        err,
        "formats=['cohort', 'csv']: expected a non-empty subset of ['cohort', 'mimic3', 'mimic4', 'meds']",
    )
    _, _, err = _cli(capsys, "generate", *base, "slurm.gpu=1", f"out_dir={tmp_path / 'b'}")
    _one_line_error(err, "unknown executor key slurm.gpu")
    _, _, err = _cli(capsys, "merge", f"out_dir={tmp_path / 'b'}")
    _one_line_error(err, "plan.json not found")
    _, _, err = _cli(capsys, "train", "trainer.max_stepz=3")
    _one_line_error(err, "train overrides:")
    _, _, err = _cli(capsys, "deploy")
    _one_line_error(err, "unknown command 'deploy'")


def test_script_is_a_thin_cli(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "submitit_launch.py"), "merge", f"out_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"error: {tmp_path}/.shards/plan.json not found: {tmp_path} is not a sharded generation"
    )
    help_ = subprocess.run(
        [sys.executable, str(REPO / "submitit_launch.py"), "--help"], capture_output=True, text=True
    )
    assert help_.returncode == 0 and "generate ckpt=" in help_.stdout
