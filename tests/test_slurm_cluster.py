"""Scale-out plumbing against a real single-node SLURM cluster (scripts/slurm_local.sh).

sbatch, submitit (single job, job array), scontrol requeue and Hydra multiruns through
conf/hydra/launcher/{slurm,local}.yaml. The cluster has no accounting database: job states come
from scontrol, never sacct.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from slurm_cluster import job_info, sbatch, submitit_results, wait_for_state

from ehrgen.config import CONFIG_DIR
from ehrgen.data.codes import normalize_code


def _wait_for_text(path: Path, text: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in (content := path.read_text()):
            return content
        time.sleep(0.5)
    pytest.fail(f"{text!r} never appeared in {path} within {timeout_s:.0f}s")


@pytest.mark.slurm
def test_sbatch_wrap_completes(slurm_cluster: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    job_id = sbatch("--job-name=ehrgen-wrap", f"--output={out}", "--wrap", "echo ehrgen-ok $((6 * 7))")
    info = wait_for_state(job_id, {"COMPLETED"}, timeout_s=120)
    assert info["ExitCode"] == "0:0"
    assert out.read_text().strip() == "ehrgen-ok 42"


@pytest.mark.slurm
def test_submitit_job_returns_value(slurm_cluster: dict[str, str], tmp_path: Path) -> None:
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1)
    # os.getenv runs inside the job: it must see the SLURM job that submitit reports.
    job = executor.submit(os.getenv, "SLURM_JOB_ID")
    (result,) = submitit_results([job], timeout_s=180)
    assert result == job.job_id
    assert wait_for_state(job.job_id, {"COMPLETED"}, timeout_s=60)["ExitCode"] == "0:0"


@pytest.mark.slurm
def test_submitit_job_array(slurm_cluster: dict[str, str], tmp_path: Path) -> None:
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(
        slurm_partition="debug", timeout_min=5, cpus_per_task=1, slurm_array_parallelism=3
    )
    raw = ["401.9", " v58.61", "250.00"]
    jobs = executor.map_array(normalize_code, raw)
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "map_array must submit one job array"
    assert submitit_results(jobs, timeout_s=240) == ["4019", "V5861", "25000"]


@pytest.mark.slurm
@pytest.mark.slow
def test_scontrol_requeue_restarts_running_job(slurm_cluster: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "requeue.txt"
    job_id = sbatch(
        "--requeue",
        "--open-mode=append",  # keep the first run's line when the requeued run reopens the file
        f"--output={out}",
        "--wrap",
        "echo run-${SLURM_RESTART_COUNT:-0}; exec sleep 600",
    )
    try:
        wait_for_state(job_id, {"RUNNING"}, timeout_s=120)
        _wait_for_text(out, "run-0", timeout_s=60)
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
        # The requeued job waits AuthInfo=cred_expire (10 s in slurm_local.sh) before it may start.
        _wait_for_text(out, "run-1", timeout_s=180)
        info = wait_for_state(job_id, {"RUNNING"}, timeout_s=30)
        assert info["Restarts"] == "1"
        # slurmstepd also appends "*** JOB n ... CANCELLED ... DUE TO JOB REQUEUE ***" to the log.
        lines = out.read_text().splitlines()
        assert [line for line in lines if line.startswith("run-")] == ["run-0", "run-1"]
        assert any("DUE TO JOB REQUEUE" in line for line in lines)
    finally:
        subprocess.run(["scancel", job_id], check=False)
    assert wait_for_state(job_id, {"CANCELLED"}, timeout_s=60)["JobState"] == "CANCELLED"


# --- Hydra launcher configs --------------------------------------------------------------------

_APP = """\
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    env = os.environ
    (out / "result.txt").write_text(
        f"{cfg.x * 2} {env.get('SUBMITIT_EXECUTOR', '-')} {env.get('SLURM_JOB_ID', '-')}"
    )
    return cfg.x * 2


if __name__ == "__main__":
    main()
"""


def _hydra_app(tmp_path: Path) -> Path:
    """A one-file Hydra app that finds ehrgen's conf/ (hydra/launcher/*) on its search path."""
    (tmp_path / "app.py").write_text(_APP)
    (tmp_path / "app.yaml").write_text(
        textwrap.dedent(f"""\
            x: 1
            hydra:
              searchpath:
                - file://{CONFIG_DIR}
              sweep:
                dir: {tmp_path}/multirun
                subdir: ${{hydra.job.num}}
            """)
    )
    return tmp_path / "app.py"


def _run_multirun(tmp_path: Path, overrides: list[str], timeout_s: int) -> list[list[str]]:
    app = _hydra_app(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(app), "-m", *overrides, "x=1,2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [(tmp_path / "multirun" / str(n) / "result.txt").read_text().split() for n in (0, 1)]


def test_launcher_configs_compose() -> None:
    """Both launcher configs extend the plugin's structured configs (a misspelt key fails here)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        slurm = compose(
            "prepare",
            [
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "+hydra.launcher.srun_args=['--cpu-bind=none']",
            ],
            return_hydra_config=True,
        ).hydra.launcher
        local = compose("prepare", ["hydra/launcher=local"], return_hydra_config=True).hydra.launcher
    GlobalHydra.instance().clear()
    assert slurm._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (slurm.partition, slurm.timeout_min, slurm.max_num_timeout) == ("gpu", 240, 0)
    assert slurm.srun_args == ["--cpu-bind=none"]
    assert local._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert local.timeout_min == 60


@pytest.mark.slurm
def test_hydra_multirun_on_slurm(slurm_cluster: dict[str, str], tmp_path: Path) -> None:
    results = _run_multirun(
        tmp_path,
        ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=5"],
        300,
    )
    assert [r[:2] for r in results] == [["2", "slurm"], ["4", "slurm"]]
    job_ids = [r[2] for r in results]
    assert all(i.isdigit() for i in job_ids) and len(set(job_ids)) == 2, job_ids
    assert job_info(job_ids[0]).get("JobState") == "COMPLETED"
    assert (tmp_path / "multirun" / ".submitit").is_dir()


def test_hydra_multirun_local(tmp_path: Path) -> None:
    results = _run_multirun(tmp_path, ["hydra/launcher=local", "hydra.launcher.timeout_min=5"], 300)
    assert [r[:2] for r in results] == [["2", "local"], ["4", "local"]]
