"""``generate`` and ``merge``: a sharded generation as one SLURM job array, resumable.

Shard k of S runs ``ehrgen.generate`` with ``shard_index=k num_shards=S`` into
``out_dir/.shards/shard-0000k``; ``out_dir/.shards/plan.json`` records the plan and every
submission, so the same command run again waits for shards still running, resubmits the missing
or broken ones only, and merges. A shard that fails twice in one launch stops it.

The array machinery (``run_array``: submit, wait, resubmit failures once; ``active_tasks``,
``submit_array``, ``throughput``) is shared with ``evaluate ... blocks=N`` (ehrgen.cluster.blocks):
a "unit" is a shard or a block.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ehrgen.data.cohort import check_not_input, check_output, mark_output
from ehrgen.errors import InputError
from ehrgen.sampling.exporters import FORMATS

from . import jobs, shards
from .cli import (
    Args,
    LaunchError,
    absolute,
    compact,
    compose_config,
    fix_paths,
    option_flag,
    parse_value,
    say,
)
from .executor import ExecutorSpec
from .merge import export_formats, merge_shards
from .monitor import Outcome, Task, squeue_states, wait_for

# generate options that change how fast, not what, a shard generates: free to differ on a re-run.
EXECUTION_ONLY = ("progress", "batch_size")
MAX_ATTEMPTS = 2  # a shard that fails this many times in one launch stops the launch


def _total_patients(cfg: DictConfig) -> int:
    """N: n_patients, else the demographics CSV's total, else (conditional) the split's size."""
    if cfg.n_patients is not None:
        n = int(cfg.n_patients)
        if n <= 0:
            raise InputError(f"n_patients must be > 0, got {n}")
        return n
    if cfg.demographics_csv:
        from ehrgen.sampling.demographics import requested_demographics

        return len(requested_demographics(None, csv=str(cfg.demographics_csv))[0])
    if cfg.mode == "conditional" and cfg.cohort:
        import polars as pl

        from ehrgen.data.cohort import Cohort

        return int(Cohort(str(cfg.cohort)).scan(str(cfg.split)).select(pl.len()).collect().item())
    raise InputError("n_patients is not set: expected the number of patients to generate")


def _plan_overrides(overrides: list[str], cfg: DictConfig) -> dict[str, str]:
    """The generate overrides that define the shards' content, keyed by option (ckpt made absolute)."""
    out = {}
    for token in overrides:
        key, _, value = token.partition("=")
        if key.lstrip("+~") in EXECUTION_ONLY:
            continue
        out[key] = value
    for key in ("ckpt", "cohort", "demographics_csv"):
        if key in out and cfg.get(key):
            out[key] = str(absolute(cfg[key]))
    return out


def _generate_setup(args: Args) -> tuple[DictConfig, Path, int, int, list[str], dict[str, Any]]:
    for key in ("shard_index", "num_shards"):
        if any(o.lstrip("+").startswith(f"{key}=") for o in args.overrides):
            raise InputError(f"{key} is set by the launcher; use shards=S")
    if "out_dir" not in args.options:
        raise InputError(
            "out_dir=PATH is required (shards go to out_dir/.shards, the merged cohort to out_dir/cohort)"
        )
    out_dir = absolute(args.options["out_dir"])
    n_shards = parse_value(args.options.get("shards", "1"))
    if not isinstance(n_shards, int) or n_shards < 1:
        raise InputError(f"shards={n_shards!r}: expected a positive integer")
    formats = parse_value(args.options.get("formats", "[cohort]"))
    formats = [formats] if isinstance(formats, str) else list(formats or [])
    if not formats or set(formats) - set(FORMATS):
        raise InputError(f"formats={formats}: expected a non-empty subset of {list(FORMATS)}")
    cfg = compose_config("generate", ["progress=false", *args.overrides])
    with open_dict(cfg):
        cfg.out_dir = str(out_dir)
    fix_paths(cfg, out_dir)
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise InputError("ckpt=PATH is required (a checkpoint written by ehrgen.train)")
    if not absolute(cfg.ckpt).is_file():
        raise InputError(f"ckpt={absolute(cfg.ckpt)}: no such checkpoint file")
    check_not_input(out_dir, [cfg.ckpt, cfg.get("cohort"), cfg.get("demographics_csv")])
    n = _total_patients(cfg)
    if n_shards > n:
        raise InputError(f"shards={n_shards} is more than n_patients={n}")
    plan = shards.new_plan(n, n_shards, _plan_overrides(args.overrides, cfg))
    plan["formats"] = formats
    return cfg, out_dir, n, n_shards, formats, plan


# ----------------------------------------------------------------------------- array machinery


def active_tasks(plan: dict[str, Any], todo: Sequence[int], unit: str = "shard") -> dict[int, Task]:
    """Units of ``todo`` whose latest SLURM task is still queued or running (e.g. after --no-wait)."""
    latest = {k: v for k, v in shards.latest_tasks(plan).items() if k in todo and v[0] == "slurm"}
    if not latest:
        return {}
    states = squeue_states([job_id for _, job_id, _ in latest.values()])
    if states is None:
        raise LaunchError(f"squeue failed: cannot tell whether earlier {unit} jobs still run; try again")
    return {
        k: Task(f"{unit} {k}", job_id, folder)
        for k, (_, job_id, folder) in latest.items()
        if job_id in states
    }


def throughput(args: Args, key: str, measured: list[float], unit: str = "shard") -> tuple[float, str] | None:
    """Work per second per task: given (``key=`` on the command line), else the median measured."""
    if key in args.options:
        rate = parse_value(args.options[key])
        if not isinstance(rate, int | float) or rate <= 0:
            raise InputError(f"{key}={rate!r}: expected a positive number")
        return float(rate), "given"
    if measured:
        return float(statistics.median(measured)), f"median of {len(measured)} finished {unit}(s)"
    return None


def submit_array(
    spec: ExecutorSpec, folder: Path, plan_file: Path, plan: dict[str, Any], ids: list[int],
    fn: Callable[..., Any], columns: Sequence[list[Any]], unit: str = "shard",
) -> dict[int, Task]:  # fmt: skip
    """One job array of ``fn(*column[i] for column in columns)`` for unit ``ids[i]``; recorded in the plan."""
    executor = spec.make(folder)
    submitted = executor.map_array(fn, *columns)
    shards.record_submission(
        plan_file, plan, spec.cluster, {j.job_id: k for j, k in zip(submitted, ids, strict=True)}, folder
    )
    array = submitted[0].job_id.split("_")[0]
    say(f"submitted job array {array}: {len(ids)} task(s) for {unit}s {compact(ids)} (logs: {folder.parent})")
    return {k: Task(f"{unit} {k}", j.job_id, folder, j) for j, k in zip(submitted, ids, strict=True)}


def wait_and_retry(
    tasks: dict[int, Task], cluster: str, attempts: dict[int, int], state: Callable[[int], shards.ShardState],
    resubmit: Callable[[list[int]], dict[int, Task]], unit: str = "shard",
) -> None:  # fmt: skip
    """Wait for ``tasks``; resubmit the units whose output is not done once, stop when one fails twice.

    ``attempts``: submissions so far per unit (units absent count one: attached earlier submissions).
    """
    errors: dict[int, Outcome] = {}
    while tasks:
        outcomes = wait_for(list(tasks.values()), cluster)
        retry = []
        for k, task in tasks.items():
            st = state(k)
            if st.done:
                continue
            outcome = outcomes.get(task.label, Outcome(False, error="no result"))
            errors[k] = outcome
            attempts[k] = attempts.get(k, 1)
            if attempts[k] >= MAX_ATTEMPTS:
                raise LaunchError(
                    f"{unit} {k} failed {'twice' if attempts[k] == 2 else f'{attempts[k]} times'} "
                    f"({outcome.error or st.reason}); log: {task.paths.stderr}"
                )
            retry.append(k)
        tasks = {}
        if retry:
            say(f"{unit}(s) {compact(retry)} failed ({errors[retry[0]].error}); resubmitting them once")
            for k in retry:
                attempts[k] += 1
            tasks = resubmit(retry)


def run_array(
    args: Args, spec: ExecutorSpec, unit: str, states: list[shards.ShardState], attached: dict[int, Task],
    submit: Callable[[list[int]], dict[int, Task]], state: Callable[[int], shards.ShardState],
    print_plan: Callable[[list[int]], None], start: Callable[[], None], words: tuple[str, str], not_waiting: str,
) -> bool:  # fmt: skip
    """Submit the units of ``states`` not done (``attached``: still running from an earlier launch),
    wait, resubmit failures once. True when every unit is done; False after a dry run or --no-wait.

    ``start`` persists the plan before anything is submitted; ``words``: what redoing a unit is
    called and what a finished one is ("generating it again", "complete").
    """
    redo, finished = words
    todo = [s.shard for s in states if not s.done]
    if attached and spec.cluster != "slurm":
        raise InputError(
            f"{unit}s {compact(list(attached))} still run on SLURM (job {next(iter(attached.values())).job_id}); "
            f"wait for them or scancel them before cluster={spec.cluster}"
        )
    if args.dry_run:
        print_plan(todo)
        say("dry run: nothing submitted")
        return False
    start()
    for s in states:
        if not s.done and s.reason != "missing" and s.shard not in attached:
            say(f"{unit} {s.shard}: {s.reason}; {redo}")
    tasks = dict(attached)
    new = [k for k in todo if k not in attached]
    if new:
        tasks.update(submit(new))
    elif not todo:
        say(f"all {len(states)} {unit}(s) already {finished}")
    if attached:
        say(f"waiting for {unit}s {compact(list(attached))} submitted earlier")
    if not args.wait:
        say(not_waiting)
        return False
    wait_and_retry(tasks, spec.cluster, dict.fromkeys(new, 1), state, submit, unit=unit)
    return True


# ----------------------------------------------------------------------------- generate


def _print_generate_plan(
    args: Args, spec: ExecutorSpec, out_dir: Path, n: int, n_shards: int, todo: list[int],
    attached: dict[int, Task], states: list[shards.ShardState], formats: list[str],
) -> None:  # fmt: skip
    submit = [k for k in todo if k not in attached]
    done = n_shards - len(todo)
    say(f"plan: {n} patients in {n_shards} shard(s) -> {out_dir}")
    if done:
        say(f"  {done} shard(s) already complete")
    if attached:
        say(
            f"  shards {compact(list(attached))} still queued or running (job {', '.join(t.job_id for t in attached.values())})"
        )
    if submit:
        parallel = min(len(submit), int(spec.params.get("array_parallelism") or len(submit)))
        say(f"job array: {len(submit)} task(s) for shards {compact(submit)}, at most {parallel} at a time")
        shown = submit if len(submit) <= 8 else [*submit[:4], None, *submit[-2:]]
        for k in shown:
            if k is None:
                say("  ...")
                continue
            a, b = shards.shard_range(k, n, n_shards)
            say(f"  shard {k}: patients [{a}, {b}) ({b - a}) -> {shards.shard_dir(out_dir, k)}")
    else:
        say("nothing to submit")
    say(f"executor: {spec.describe()}")
    per_shard = [b - a for a, b in (shards.shard_range(k, n, n_shards) for k in submit)] or [0]
    work = f"work: {sum(per_shard)} patients to generate, {max(per_shard)} per task at most"
    measured = [
        s.summary["patients_per_s"] for s in states if s.done and (s.summary or {}).get("patients_per_s")
    ]
    rate = throughput(args, "patients_per_s", measured)
    if rate is not None and submit:
        minutes = max(per_shard) / rate[0] / 60
        work += f"; about {minutes:.1f} min per task at {rate[0]:.3g} patients/s ({rate[1]})"
        if spec.params.get("time") and minutes > 0.9 * float(spec.params["time"]):
            work += f" -- close to or above slurm.time={spec.params['time']} min"
    elif submit:
        work += " (time estimate: pass patients_per_s=<measured rate per task>)"
    if submit:
        say(work)
    exports = [f for f in formats if f != "cohort"]
    say(f"then: merge into {out_dir / 'cohort'}" + (f" and export {', '.join(exports)}" if exports else ""))


def _submit_shards(
    spec: ExecutorSpec, cfg: DictConfig, out_dir: Path, n_shards: int, todo: list[int], plan: dict[str, Any]
) -> dict[int, Task]:
    for k in todo:
        shards.clear_shard(out_dir, k)
    dirs = [str(shards.shard_dir(out_dir, k)) for k in todo]
    columns = [[cfg] * len(todo), todo, [n_shards] * len(todo), dirs]
    folder = out_dir / ".submitit" / "%j"
    return submit_array(spec, folder, shards.plan_path(out_dir), plan, todo, jobs.generate_shard, columns)


def _finish_generate(out_dir: Path, plan: dict[str, Any], formats: list[str], overwrite: bool) -> int:
    """Merge (unless already merged) and export; print where everything is."""
    n, n_shards = int(plan["n_patients"]), int(plan["shards"])
    cfg = compose_config("generate", [f"{k}={v}" for k, v in plan["overrides"].items()])
    if overwrite or not (out_dir / "cohort").is_dir():
        states = [shards.shard_state(out_dir, k, n, n_shards) for k in range(n_shards)]
        bad = [s for s in states if not s.done]
        if bad:
            raise InputError(
                f"cannot merge: shard(s) {compact([s.shard for s in bad])} not complete "
                f"(shard {bad[0].shard}: {bad[0].reason}); re-run the generate command: it waits for shards "
                "still running and resubmits the others"
            )
        summary = merge_shards(out_dir, n, n_shards, states, overwrite=overwrite)
        patients = sum(summary["counts"]["patients"].values())
        say(f"merged {n_shards} shard(s): {patients} patients -> {out_dir / 'cohort'}")
        dropped = summary["drops"].get("patient_without_admissions", 0)
        if dropped:
            say(f"  {dropped} generated patient(s) without visits were dropped (cohort.json drops)")
    else:
        say(f"{out_dir / 'cohort'} already merged")
    written = export_formats(out_dir, formats, int(cfg.seed), bool(cfg.export.compress), overwrite=overwrite)
    for fmt in written:
        say(f"exported {fmt} -> {out_dir / fmt}")
    return 0


def cmd_generate(args: Args) -> int:
    cfg, out_dir, n, n_shards, formats, plan = _generate_setup(args)
    spec = ExecutorSpec.from_cli(args.cluster, args.executor).with_defaults(name="ehrgen-generate")
    overwrite = option_flag(args, "overwrite")
    existing = shards.load_plan(out_dir)
    if existing is not None:
        diff = shards.plan_difference(existing, plan)
        if diff and not overwrite:
            raise InputError(
                f"{shards.plan_path(out_dir)} differs from this command ({diff}); "
                "use another out_dir or pass overwrite=true to discard its shards"
            )
        if overwrite:
            running = active_tasks(existing, list(range(int(existing["shards"]))))
            if running:
                ids = ", ".join(t.job_id for t in running.values())
                raise InputError(
                    f"overwrite=true but shard jobs {ids} of the old plan still run; scancel them first"
                )
            if not args.dry_run:
                shutil.rmtree(shards.shards_root(out_dir))
            existing = None
    elif out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(
                f"{out_dir} already exists and holds no generation plan "
                f"({shards.SHARDS_DIR}/{shards.PLAN_FILE}); use a new out_dir or pass overwrite=true"
            )
        check_output(out_dir, overwrite, "generation")  # only ehrgen's own generation output
    if existing is not None:
        existing["formats"] = formats
        plan = existing  # keeps its submission history
        if (out_dir / "cohort").is_dir() and not overwrite:
            if args.dry_run:
                say(f"{out_dir / 'cohort'} is already merged: nothing to submit")
                return 0
            return _finish_generate(out_dir, plan, formats, overwrite=False)

    if overwrite:  # every shard is generated again (a dry run has not deleted the old ones yet)
        states = [shards.ShardState(k, False, "missing") for k in range(n_shards)]
    else:
        states = [shards.shard_state(out_dir, k, n, n_shards) for k in range(n_shards)]
    todo = [s.shard for s in states if not s.done]
    attached = active_tasks(plan, todo) if existing is not None else {}

    def start() -> None:
        if existing is None:
            shards.save_plan(out_dir, plan)
            mark_output(out_dir, "generation")

    done = run_array(
        args, spec, "shard", states, attached,
        submit=lambda ks: _submit_shards(spec, cfg, out_dir, n_shards, ks, plan),
        state=lambda k: shards.shard_state(out_dir, k, n, n_shards),
        print_plan=lambda todo: _print_generate_plan(
            args, spec, out_dir, n, n_shards, todo, attached, states, formats
        ),
        start=start,
        words=("generating it again", "complete"),
        not_waiting=f"not waiting; when the jobs are done run: python submitit_launch.py merge out_dir={out_dir}",
    )  # fmt: skip
    if not done:
        return 0
    return _finish_generate(out_dir, plan, formats, overwrite)


def cmd_merge(args: Args) -> int:
    if "out_dir" not in args.options:
        raise InputError("out_dir=PATH is required (the out_dir of the generate command)")
    if args.overrides:
        raise InputError(f"merge takes out_dir=, formats= and overwrite= only, got {args.overrides[0]}")
    out_dir = absolute(args.options["out_dir"])
    plan = shards.load_plan(out_dir)
    if plan is None:
        raise InputError(f"{shards.plan_path(out_dir)} not found: {out_dir} is not a sharded generation")
    formats = (
        parse_value(args.options["formats"]) if "formats" in args.options else plan.get("formats", ["cohort"])
    )
    formats = [formats] if isinstance(formats, str) else list(formats)
    if args.dry_run:
        states = [
            shards.shard_state(out_dir, k, plan["n_patients"], plan["shards"]) for k in range(plan["shards"])
        ]
        done = sum(s.done for s in states)
        say(
            f"would merge {done}/{plan['shards']} complete shard(s) into {out_dir / 'cohort'}; formats {formats}"
        )
        say("dry run: nothing written")
        return 0
    return _finish_generate(out_dir, plan, formats, option_flag(args, "overwrite"))
