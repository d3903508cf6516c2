"""``evaluate ... blocks=N``: the privacy nearest-neighbour searches as one job array, then evaluate.

Block k of N runs query rows ``[k*n//N, (k+1)*n//N)`` of every search the privacy suite needs
(``ehrgen.evaluate.neighbour_block``) into ``<parent>/.<out_dir name>.blocks/block-0000k.npz``,
next to ``out_dir`` rather than inside it because evaluate writes ``out_dir`` atomically as a
whole. ``plan.json`` beside the blocks records the plan and every submission: the same command
run again waits for blocks still running, resubmits the missing or broken ones only, then runs
the evaluate job; a command whose blocks would differ is refused (overwrite=true discards them).

The final evaluate (``privacy.neighbours_dir=<blocks>``, which verifies every block against the
inputs) is a job of its own rather than part of the launcher: it still reads all cohorts and
computes fidelity, utility classifiers and bootstrap CIs over every patient, which takes the
memory and minutes a login node should not give. Only the evaluate settings that decide the
searches (cohorts, splits, privacy record sets, seed) are in the plan, so bootstrap, report or
metric options may change between runs and reuse the blocks.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ehrgen.data.cohort import Cohort
from ehrgen.errors import InputError
from ehrgen.privacy import blocks as pblocks
from ehrgen.privacy import suite

from . import jobs, shards
from .array import active_tasks, run_array, submit_array, throughput
from .cli import Args, compact, say
from .executor import ExecutorSpec
from .monitor import Task

# evaluate settings that decide the searches' results (the cohorts' creation stamps are added).
NEIGHBOUR_KEYS = (
    "real", "synthetic", "holdout", "splits.real", "splits.synthetic", "splits.holdout", "seed",
    "privacy.distances", "privacy.max_records", "privacy.known_top_k", "privacy.attribute_targets",
)  # fmt: skip


def blocks_root(out_dir: Path) -> Path:
    """``/a/out`` -> ``/a/.out.blocks``: the block files and plan of an evaluation into ``/a/out``."""
    return out_dir.parent / f".{out_dir.name}.blocks"


def plan_file(out_dir: Path) -> Path:
    return blocks_root(out_dir) / shards.PLAN_FILE


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def _cohorts(cfg: DictConfig) -> dict[str, tuple[Cohort, list[str]]]:
    """Each role's cohort and splits, as ehrgen.evaluate resolves them (holdout null: real's)."""
    real = Cohort(str(cfg.real))
    roles = {"real": real, "synthetic": Cohort(str(cfg.synthetic))}
    roles["holdout"] = Cohort(str(cfg.holdout)) if cfg.get("holdout") else real
    out = {}
    for role, cohort in roles.items():
        splits = cfg.splits[role]
        out[role] = (cohort, cohort.splits() if splits is None else [str(s) for s in splits])
    return out


def cohort_sizes(cfg: DictConfig) -> tuple[int, int, int]:
    """Patients of the synthetic, real and holdout selections, from cohort.json (no rows read)."""
    sizes = []
    for role, (cohort, splits) in _cohorts(cfg).items():
        n = sum(int(cohort.meta["counts"]["patients"].get(s, 0)) for s in splits)
        if n == 0:
            raise InputError(f"{role} cohort {cohort.path} holds no patients in split(s) {', '.join(splits)}")
        sizes.append(n)
    real, synthetic, holdout = sizes
    return synthetic, real, holdout


def new_block_plan(cfg: DictConfig, n_blocks: int) -> dict[str, Any]:
    settings = {}
    for key in NEIGHBOUR_KEYS:
        value = OmegaConf.select(cfg, key)
        settings[key] = _text(list(value) if OmegaConf.is_list(value) else value)
    # a cohort regenerated at the same path makes its old blocks stale
    for role, (cohort, _) in _cohorts(cfg).items():
        settings[f"{role}.created"] = str(cohort.meta.get("created", "unknown"))
    return {
        "command": "evaluate",
        "blocks": int(n_blocks),
        "overrides": dict(sorted(settings.items())),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "submissions": [],
    }


def block_state(root: Path, block: int, n_blocks: int) -> shards.ShardState:
    """Is block ``block`` of ``n_blocks`` written? (Its fingerprint is checked by the evaluate job.)"""
    path = pblocks.block_path(root, block)
    if not path.is_file():
        return shards.ShardState(block, False, "missing")
    try:
        meta = pblocks.read_block_meta(path)
    except InputError as err:
        return shards.ShardState(block, False, str(err).removeprefix(f"{path}: "))
    if (meta["block"], meta["n_blocks"]) != (block, n_blocks):
        return shards.ShardState(
            block,
            False,
            f"{path.name} holds block {meta['block']} of {meta['n_blocks']}, plan says {block} of {n_blocks}",
        )
    return shards.ShardState(block, True, "", meta)


def clear_block(root: Path, block: int) -> None:
    """Remove a block's file and leftovers of interrupted writes before it is computed again."""
    path = pblocks.block_path(root, block)
    path.unlink(missing_ok=True)
    for tmp in root.glob(f".{path.name}.tmp-*"):
        tmp.unlink(missing_ok=True)


def _block_pairs(shapes: dict[str, tuple], block: int, n_blocks: int) -> int:
    total = 0
    for n_query, n_ref in shapes.values():
        a, b = pblocks.block_rows(block, n_query, n_blocks)
        total += (b - a) * n_ref
    return total


def _print_plan(
    args: Args, spec: ExecutorSpec, out_dir: Path, n_blocks: int, sizes: tuple[int, int, int],
    shapes: dict[str, tuple], todo: list[int], attached: dict[int, Task], states: list[shards.ShardState],
) -> None:  # fmt: skip
    root = blocks_root(out_dir)
    submit = [k for k in todo if k not in attached]
    n_s, n_t, n_h = sizes
    say(f"plan: privacy nearest neighbours in {n_blocks} block(s) -> {root}")
    say(f"  {len(shapes)} searches over {n_s} synthetic, {n_t} real and {n_h} holdout patients:")
    for name, (nq, nr) in shapes.items():
        say(f"    {name}: {nq} x {nr}")
    if n_blocks - len(todo):
        say(f"  {n_blocks - len(todo)} block(s) already computed")
    if attached:
        jobs_ = ", ".join(t.job_id for t in attached.values())
        say(f"  blocks {compact(list(attached))} still queued or running (job {jobs_})")
    pairs = [_block_pairs(shapes, k, n_blocks) for k in submit] or [0]
    if submit:
        parallel = min(len(submit), int(spec.params.get("array_parallelism") or len(submit)))
        say(f"job array: {len(submit)} task(s) for blocks {compact(submit)}, at most {parallel} at a time")
        for k in submit if len(submit) <= 8 else [*submit[:4], None, *submit[-2:]]:
            if k is None:
                say("  ...")
                continue
            a, b = pblocks.block_rows(k, n_s, n_blocks)
            path = pblocks.block_path(root, k)
            say(f"  block {k}: synthetic rows [{a}, {b}) and its share of every search -> {path}")
    else:
        say("nothing to submit")
    say(f"executor: {spec.describe()}")
    if submit:
        work = f"work: {sum(pairs):,} pairs to score, {max(pairs):,} per task at most"
        measured = [
            s.summary["pairs"] / s.summary["seconds"] for s in states if s.done and s.summary["seconds"]
        ]
        rate = throughput(args, "pairs_per_s", measured, unit="block")
        if rate is not None:
            minutes = max(pairs) / rate[0] / 60
            work += f"; about {minutes:.1f} min per task at {rate[0]:.3g} pairs/s ({rate[1]})"
            if spec.params.get("time") and minutes > 0.9 * float(spec.params["time"]):
                work += f" -- close to or above slurm.time={spec.params['time']} min"
        else:
            work += " (time estimate: pass pairs_per_s=<measured rate per task>)"
        say(work)
    say(f"then: one evaluate job with privacy.neighbours_dir={root} -> {out_dir}")


def _submit_blocks(
    spec: ExecutorSpec, cfg: DictConfig, out_dir: Path, n_blocks: int, todo: list[int], plan: dict[str, Any]
) -> dict[int, Task]:
    root = blocks_root(out_dir)
    for k in todo:
        clear_block(root, k)
    columns = [[cfg] * len(todo), todo, [n_blocks] * len(todo), [str(root)] * len(todo)]
    folder = out_dir.parent / f".{out_dir.name}.submitit" / "%j"
    return submit_array(
        spec, folder, plan_file(out_dir), plan, todo, jobs.neighbour_block, columns, unit="block"
    )


def run_blocks(
    args: Args, cfg: DictConfig, spec: ExecutorSpec, out_dir: Path, n_blocks: int
) -> DictConfig | None:
    """Plan, submit and wait for the blocks; the config of the final evaluate job once all are done,
    None when there is nothing more to do now (dry run, --no-wait, already evaluated)."""
    if cfg.privacy.get("neighbours_dir"):
        raise InputError("privacy.neighbours_dir is set by the launcher when blocks=N; leave it out")
    if not cfg.privacy.enabled:
        raise InputError(f"blocks={n_blocks} splits the privacy search, but privacy.enabled=false")
    from ehrgen.evaluate import privacy_config

    sizes = cohort_sizes(cfg)
    if n_blocks > sizes[0]:
        raise InputError(f"blocks={n_blocks} is more than the {sizes[0]} synthetic patients")
    shapes = suite.search_shapes(*sizes, privacy_config(cfg))
    root, overwrite = blocks_root(out_dir), bool(cfg.overwrite)
    plan = new_block_plan(cfg, n_blocks)
    existing = shards.read_plan(plan_file(out_dir))
    discard = False
    if existing is not None and (diff := shards.plan_difference(existing, plan)):
        if not overwrite:
            raise InputError(
                f"{plan_file(out_dir)} differs from this command ({diff}); "
                "use another out_dir or pass overwrite=true to discard its blocks"
            )
        running = active_tasks(existing, list(range(int(existing["blocks"]))), unit="block")
        if running:
            ids = ", ".join(t.job_id for t in running.values())
            raise InputError(
                f"overwrite=true but block jobs {ids} of the old plan still run; scancel them first"
            )
        existing, discard = None, True
    elif existing is None and root.exists() and any(root.iterdir()):
        if not overwrite:
            raise InputError(
                f"{root} exists and holds no block plan ({shards.PLAN_FILE}); pass overwrite=true"
            )
        discard = True
    if existing is not None:
        plan = existing  # keeps its submission history
    if out_dir.exists() and not overwrite:
        if existing is None:
            raise InputError(f"{out_dir} already exists; pass overwrite=true to replace it")
        say(f"{out_dir} is already evaluated (blocks in {root}); pass overwrite=true to evaluate again")
        return None
    if discard:
        states = [shards.ShardState(k, False, "missing") for k in range(n_blocks)]
    else:
        states = [block_state(root, k, n_blocks) for k in range(n_blocks)]
    todo = [s.shard for s in states if not s.done]
    attached = active_tasks(plan, todo, unit="block") if existing is not None else {}

    def start() -> None:
        if discard:
            shutil.rmtree(root)
        if existing is None:
            shards.write_plan(plan_file(out_dir), plan)

    done = run_array(
        args, spec, "block", states, attached,
        submit=lambda ks: _submit_blocks(spec, cfg, out_dir, n_blocks, ks, plan),
        state=lambda k: block_state(root, k, n_blocks),
        print_plan=lambda todo: _print_plan(args, spec, out_dir, n_blocks, sizes, shapes, todo, attached, states),
        start=start,
        words=("computing it again", "computed"),
        not_waiting="not waiting; when the jobs are done run the same command again: it then submits the evaluate job",
    )  # fmt: skip
    if not done:
        return None
    say(f"all {n_blocks} block(s) computed -> {root}")
    final = cfg.copy()
    with open_dict(final):
        final.privacy.neighbours_dir = str(root)
    return final
