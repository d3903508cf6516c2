"""The plan of a sharded generation and the state of its shards; plan files in general.

```
out_dir/.shards/plan.json          command, generate overrides, n_patients, shards; submissions
out_dir/.shards/shard-00000/       one `python -m ehrgen.generate ... shard_index=0` output
                                   (cohort/ + generation.json), written atomically by generate
```
Shard ``k`` of ``S`` generates patients ``[k*N//S, (k+1)*N//S)`` (ehrgen.generate's rule). A shard
counts as done only when its cohort is complete and its generation.json matches the plan, so a
re-run resubmits exactly the shards that are missing, incomplete or from another plan.

The plan-file helpers (``read_plan``, ``write_plan``, ``plan_difference``, ``record_submission``,
``latest_tasks``) also serve ``evaluate ... blocks=N`` (ehrgen.cluster.blocks), whose plan lists
blocks instead of shards.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ehrgen.data.cohort import Cohort, write_json_atomic
from ehrgen.errors import InputError

SHARDS_DIR = ".shards"
PLAN_FILE = "plan.json"
# Per command: the plan fields that must match (besides "overrides") for a re-run to reuse outputs.
PLAN_KEYS = {"generate": ("n_patients", "shards"), "evaluate": ("blocks",)}
# Per command: what one array task produces, the key under which a submission lists them.
UNITS = {"generate": "shards", "evaluate": "blocks"}


def shard_range(shard: int, n: int, shards: int) -> tuple[int, int]:
    """Patient indices ``[start, end)`` of ``shard`` (the same rule as ehrgen.generate)."""
    return shard * n // shards, (shard + 1) * n // shards


def shards_root(out_dir: Path) -> Path:
    return out_dir / SHARDS_DIR


def shard_dir(out_dir: Path, shard: int) -> Path:
    return shards_root(out_dir) / f"shard-{shard:05d}"


def plan_path(out_dir: Path) -> Path:
    return shards_root(out_dir) / PLAN_FILE


# ----------------------------------------------------------------------------- plan


def new_plan(n_patients: int, shards: int, overrides: dict[str, str]) -> dict[str, Any]:
    return {
        "command": "generate",
        "n_patients": int(n_patients),
        "shards": int(shards),
        "overrides": dict(sorted(overrides.items())),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "submissions": [],
    }


def read_plan(path: Path) -> dict[str, Any] | None:
    """A plan file (None when absent), checked for the fields its command needs."""
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg}); pass overwrite=true to start over") from None
    if plan.get("command") not in PLAN_KEYS:
        raise InputError(f"{path}: lacks a known command; pass overwrite=true to start over")
    missing = [k for k in (*PLAN_KEYS[plan["command"]], "overrides") if k not in plan]
    if missing:
        raise InputError(f"{path}: lacks {', '.join(missing)}; pass overwrite=true to start over")
    return plan


def write_plan(path: Path, plan: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan)


def load_plan(out_dir: Path) -> dict[str, Any] | None:
    return read_plan(plan_path(out_dir))


def save_plan(out_dir: Path, plan: dict[str, Any]) -> None:
    write_plan(plan_path(out_dir), plan)


def plan_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first difference between two plans, in words; None when they agree."""
    if old["command"] != new["command"]:
        return f"command {old['command']} in the plan, {new['command']} now"
    for key in PLAN_KEYS[new["command"]]:
        if old[key] != new[key]:
            return f"{key} {old[key]} in the plan, {new[key]} now"
    a, b = old["overrides"], new["overrides"]
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            was = f"{key}={a[key]}" if key in a else f"no {key}"
            now = f"{key}={b[key]}" if key in b else f"no {key}"
            return f"{was} in the plan, {now} now"
    return None


def record_submission(
    path: Path, plan: dict[str, Any], cluster: str, tasks: dict[str, int], folder: Path
) -> None:
    """Append one submission (task id -> shard or block) to the plan file ``path``."""
    plan.setdefault("submissions", []).append(
        {
            "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
            "cluster": cluster,
            UNITS[plan["command"]]: sorted(tasks.values()),
            "tasks": tasks,
            "folder": str(folder),
        }
    )
    write_plan(path, plan)


def latest_tasks(plan: dict[str, Any]) -> dict[int, tuple[str, str, Path]]:
    """Shard (block) -> (cluster, job id, submitit folder) of its most recent submission."""
    latest: dict[int, tuple[str, str, Path]] = {}
    for sub in plan.get("submissions", []):
        for job_id, shard in sub.get("tasks", {}).items():
            latest[int(shard)] = (sub["cluster"], job_id, Path(sub["folder"]))
    return latest


# ----------------------------------------------------------------------------- shard state


@dataclass
class ShardState:
    """The output of one array task: a generate shard, or an evaluate block (ehrgen.cluster.blocks)."""

    shard: int
    done: bool
    reason: str  # why not done ("missing", "cohort incomplete", ...); "" when done
    summary: dict[str, Any] | None = None  # the shard's generation.json (a block's metadata) when done


def shard_state(out_dir: Path, shard: int, n: int, shards: int) -> ShardState:
    """Is shard ``shard`` complete and consistent with a plan of ``n`` patients in ``shards``?"""
    path = shard_dir(out_dir, shard)
    if not path.is_dir():
        return ShardState(shard, False, "missing")
    gen_file = path / "generation.json"
    try:
        summary = json.loads(gen_file.read_text())
        cohort = Cohort(path / "cohort")
    except (OSError, json.JSONDecodeError) as err:
        return ShardState(shard, False, f"{gen_file.name} unreadable ({type(err).__name__})")
    except InputError as err:
        return ShardState(shard, False, f"cohort unusable ({err})")
    gen = summary.get("generation", {})
    start, end = shard_range(shard, n, shards)
    expected = {
        "shard_index": shard,
        "num_shards": shards,
        "n_patients_total": n,
        "first_index": start,
    }
    for key, value in expected.items():
        if gen.get(key) != value:
            return ShardState(shard, False, f"generation.json {key}={gen.get(key)}, plan says {value}")
    if summary.get("n_patients") != end - start:
        return ShardState(
            shard, False, f"{summary.get('n_patients')} patients generated, plan says {end - start}"
        )
    ids = cohort.meta.get("subject_ids", {})
    if ids.get("first_index") != start or ids.get("n_indices") != end - start:
        return ShardState(shard, False, "cohort.json subject_ids do not match the plan")
    if sum(sum(cohort.row_counts(s)) for s in ("train", "val", "test")) != cohort.n_patients:
        return ShardState(shard, False, "part files do not hold the patients cohort.json counts")
    return ShardState(shard, True, "", summary)


def clear_shard(out_dir: Path, shard: int) -> None:
    """Remove a shard's output and leftovers of interrupted writes before it is generated again."""
    path = shard_dir(out_dir, shard)
    shutil.rmtree(path, ignore_errors=True)
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
