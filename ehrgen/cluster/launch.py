"""``python submitit_launch.py <command> [overrides...] [cluster=slurm|local|debug] [--dry-run] [--no-wait]``

Commands (overrides are those of ``python -m ehrgen.<command>``, composed from conf/<command>.yaml):

- ``generate ckpt=... n_patients=N shards=S out_dir=... [formats=[cohort,mimic3,meds]]``: one
  job array of S tasks, task k writing ``out_dir/.shards/shard-0000k``; when all are done (and
  the launcher is still waiting) the shards are merged into ``out_dir/cohort`` and exported.
  ``out_dir/.shards/plan.json`` records the plan, so running the same command again submits only
  the shards that are missing or broken (a plan that differs is refused unless overwrite=true).
- ``merge out_dir=... [formats=...]``: verify and merge the shards of an earlier ``generate``.
- ``train [overrides]``: one requeue-safe training job in a fixed ``paths.run_dir``.
- ``evaluate real=... synthetic=... out_dir=... [blocks=N]``: one job; with ``blocks=N`` first
  one job array of N tasks, task k computing block k of the privacy nearest-neighbour searches
  into ``<parent>/.<out_dir name>.blocks/``, then the evaluate job reading them
  (``privacy.neighbours_dir``). Running the same command again resubmits only missing or failed
  blocks (``plan.json`` there; a command that would change the blocks is refused).
- ``prepare [overrides]``: one job.

Executor keys: ``slurm.<key>=<value>`` (conf/cluster/slurm.yaml lists them with their defaults).
``--dry-run`` prints what would be submitted and submits nothing; ``--no-wait`` returns after
submitting. Errors are one line on stderr (exit status 1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from ehrgen.data.cohort import check_not_input, check_output
from ehrgen.errors import InputError

from . import jobs
from .array import cmd_generate, cmd_merge
from .blocks import run_blocks
from .cli import Args, LaunchError, absolute, compose_config, fix_paths, parse_args, parse_value, say
from .executor import ExecutorSpec
from .monitor import Task, wait_for


def _hidden_sibling(path: Path, suffix: str) -> Path:
    """``/a/b`` -> ``/a/.b.<suffix>``: logs next to an output that is written atomically."""
    return path.parent / f".{path.name}.{suffix}"


# ----------------------------------------------------------------------------- single jobs


def _single_job(
    args: Args, spec: ExecutorSpec, folder: Path, fn: Callable[..., Any], fn_args: tuple, label: str,
    describe: list[str], report: Callable[[Any], None],
) -> int:  # fmt: skip
    """Submit one job (or print it, --dry-run), wait for it unless --no-wait, report its result."""
    if args.dry_run:
        say(f"job: {label}")
        for line in describe:
            say(f"  {line}")
        say(f"executor: {spec.describe()}")
        say(f"logs: {folder.parent}")
        say("dry run: nothing submitted")
        return 0
    executor = spec.make(folder)
    job = executor.submit(fn, *fn_args)
    say(f"submitted job {job.job_id}: {label} (logs: {folder.parent})")
    for line in describe:
        say(f"  {line}")
    if not args.wait:
        return 0
    outcome = wait_for([Task(label, job.job_id, folder, job)], spec.cluster)[label]
    if not outcome.ok:
        raise LaunchError(
            f"job {job.job_id} ({label}) failed: {outcome.error}; log: {Task(label, job.job_id, folder).paths.stderr}"
        )
    report(outcome.result)
    return 0


def cmd_train(args: Args) -> int:
    cfg = compose_config("train", args.overrides)
    given = [o for o in args.overrides if o.lstrip("+").startswith("paths.run_dir=")]
    if given:
        run_dir = absolute(cfg.paths.run_dir)
    else:  # the run dir is fixed now so that every requeue of the job resumes in it
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        run_dir = absolute(cfg.paths.output_dir) / str(cfg.task_name) / stamp
    fix_paths(cfg, run_dir)
    if cfg.get("ckpt_path") and not absolute(cfg.ckpt_path).is_file():
        raise InputError(f"ckpt_path={absolute(cfg.ckpt_path)} does not exist")
    spec = ExecutorSpec.from_cli(args.cluster, args.executor)
    spec = spec.with_defaults(
        name="ehrgen-train", tasks_per_node=max(1, int(spec.params.get("gpus_per_node") or 0))
    )
    if spec.cluster == "slurm":
        # --requeue: SLURM itself may requeue the job (node failure, preemption); it resumes the same way.
        extra = {"requeue": True, **(spec.params.get("additional_parameters") or {})}
        spec = ExecutorSpec(spec.cluster, {**spec.params, "additional_parameters": extra})
    last = run_dir / "checkpoints" / "last.ckpt"
    describe = [
        f"run dir: {run_dir}" + (" (has last.ckpt: training resumes from it)" if last.is_file() else ""),
        f"requeue: resumes from {last} after a timeout (up to slurm.max_num_timeout="
        f"{spec.params.get('max_num_timeout')} times), preemption or scontrol requeue",
        "overrides: " + (" ".join(args.overrides) or "(none)"),
    ]

    def report(summary: dict[str, Any]) -> None:
        say(f"training done: global_step {summary['global_step']}, run dir {summary['run_dir']}")
        say(f"  best checkpoint {summary['best_checkpoint']}, last {summary['last_checkpoint']}")
        val = {k: v for k, v in summary.get("metrics", {}).items() if k.startswith("val/")}
        if val:
            say("  " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(val.items())))

    return _single_job(
        args, spec, run_dir / ".submitit" / "%j", jobs.TrainJob(cfg), (), "train", describe, report
    )


def cmd_evaluate(args: Args) -> int:
    cfg = compose_config("evaluate", args.overrides)
    for key in ("real", "synthetic", "out_dir"):
        if OmegaConf.is_missing(cfg, key):
            raise InputError(f"{key}=PATH is required")
    out_dir = absolute(cfg.out_dir)
    n_blocks = parse_value(args.options.get("blocks", "1"))
    if not isinstance(n_blocks, int) or isinstance(n_blocks, bool) or n_blocks < 1:
        raise InputError(f"blocks={n_blocks!r}: expected a positive integer")
    inputs = [cfg.real, cfg.synthetic, cfg.get("holdout"), cfg.get("ckpt")]
    if n_blocks == 1:
        check_output(out_dir, bool(cfg.overwrite), "evaluation", inputs)
    else:
        check_not_input(out_dir, inputs)
    spec = ExecutorSpec.from_cli(args.cluster, args.executor).with_defaults(name="ehrgen-evaluate")
    with open_dict(cfg):
        cfg.out_dir = str(out_dir)
        for key in ("real", "synthetic", "holdout"):
            if cfg.get(key):
                cfg[key] = str(absolute(cfg[key]))
        if not any(o.lstrip("+").startswith("privacy.workers=") for o in args.overrides):
            # the nearest-neighbour search forks this many workers: use the CPUs the job holds
            cfg.privacy.workers = int(spec.params.get("cpus_per_task") or 1)
    fix_paths(cfg, out_dir)
    if n_blocks > 1:  # the privacy search as a job array first; then the evaluate job below
        cfg = run_blocks(args, cfg, spec, out_dir, n_blocks)
        if cfg is None:
            return 0
    describe = [
        f"real {cfg.real}, synthetic {cfg.synthetic} -> {out_dir}",
        f"privacy.workers={cfg.privacy.workers}",
    ]
    if cfg.privacy.get("neighbours_dir"):
        describe.append(f"privacy.neighbours_dir={cfg.privacy.neighbours_dir} (no search in this job)")

    def report(result: dict[str, Any]) -> None:
        say(f"evaluation written to {result['out_dir']}")
        for key, value in result["metrics"].items():
            say(f"  {key} = {value}")

    folder = _hidden_sibling(out_dir, "submitit") / "%j"
    return _single_job(args, spec, folder, jobs.run_evaluate, (cfg,), "evaluate", describe, report)


def cmd_prepare(args: Args) -> int:
    from ehrgen.prepare import cohort_dir_for

    cfg = compose_config("prepare", args.overrides)
    fix_paths(cfg, absolute(cfg.paths.output_dir))
    cohort = cohort_dir_for(cfg)
    raw_dir = OmegaConf.select(cfg, "data.raw_dir", default=None, throw_on_missing=False)
    check_output(cohort, bool(cfg.get("overwrite")), "cohort", [raw_dir], key="data.cohort_dir")
    with open_dict(cfg):
        cfg.data.cohort_dir = str(cohort)
    spec = ExecutorSpec.from_cli(args.cluster, args.executor).with_defaults(name="ehrgen-prepare")
    folder = _hidden_sibling(cohort, "submitit") / "%j"
    describe = [f"data={cfg.data.name} -> {cohort}"]
    return _single_job(
        args,
        spec,
        folder,
        jobs.run_prepare,
        (cfg,),
        "prepare",
        describe,
        lambda p: say(f"cohort written to {p}"),
    )


# ----------------------------------------------------------------------------- entry point

HANDLERS: dict[str, Callable[[Args], int]] = {
    "generate": cmd_generate,
    "merge": cmd_merge,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "prepare": cmd_prepare,
}


def main(argv: list[str] | None = None) -> int:
    """Run the launcher; errors become one ``error: ...`` line on stderr and exit status 1."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        args = parse_args(argv)
        return HANDLERS[args.command](args)
    except (InputError, LaunchError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            "\nstopped waiting; submitted jobs keep running (squeue --me). Run the same command again "
            "to wait for them (generate then merges the shards).",
            file=sys.stderr,
        )
        return 130
