"""Merge the shard cohorts of a job-array generation into one cohort directory.

The merged ``out_dir/cohort`` is what one ``python -m ehrgen.generate`` process would have written
for the same patients (same rows, ids and code statistics): part files are linked (or copied)
from the shards and renumbered, ``codes.parquet`` counts and ``cooccurrence.npz`` are summed over
shards, ``cohort.json`` counts and drops are summed and an ``array_shards`` section lists the
shards. Only part-file boundaries differ (one set per shard). The merge reads subject ids and the
metadata, never whole patient rows, so it is cheap enough to run on a login node.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from ehrgen.data.build import COOCCURRENCE_FILE, codes_per_table, load_cooccurrence
from ehrgen.data.codes import event_type_expr
from ehrgen.data.cohort import SPLITS, Cohort, atomic_directory, write_json_atomic
from ehrgen.errors import InputError
from ehrgen.sampling.exporters import EXPORTERS

from .shards import ShardState, shard_dir, shard_range


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no extra disk for millions of patients); copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def check_subject_ids(cohorts: list[Cohort], n: int, shards: int) -> int:
    """Verify that no subject_id repeats across shards; return the shared id offset.

    Shard k may only use ids ``id_offset + [k*N//S, (k+1)*N//S)`` (checked on its actual ids,
    one shard in memory at a time), and those ranges are disjoint, so ids are globally unique.
    """
    offsets = {int(c.meta["subject_ids"]["id_offset"]) for c in cohorts}
    if len(offsets) != 1:
        raise InputError(f"shards use different synthetic id offsets {sorted(offsets)}; regenerate them")
    offset = offsets.pop()
    for k, cohort in enumerate(cohorts):
        start, end = shard_range(k, n, shards)
        ids = cohort.scan().select("subject_id").collect()["subject_id"]
        if ids.len() == 0:
            continue
        if ids.n_unique() != ids.len():
            raise InputError(f"shard {k}: subject_id repeats within the shard ({cohort.path})")
        lo, hi = int(ids.min()), int(ids.max())  # type: ignore[arg-type]
        if lo < offset + start or hi >= offset + end:
            raise InputError(
                f"shard {k}: subject_ids {lo}..{hi} outside its range {offset + start}..{offset + end - 1} "
                "(ids would repeat across shards)"
            )
    return offset


def _merged_codes(cohorts: list[Cohort]) -> pl.DataFrame:
    codes = pl.concat([c.codes() for c in cohorts], how="diagonal_relaxed")
    return (
        codes.group_by("code")
        .agg(
            pl.col("count").sum(),
            pl.col("train_count").sum(),
            pl.col("category").first(),
            pl.col("description").drop_nulls().first(),
        )
        .with_columns(event_type_expr("code").alias("type"))
        .sort(["count", "code"], descending=[True, False])
        .select("code", "count", "train_count", "category", "type", "description")
    )


def _merged_cooccurrence(cohorts: list[Cohort], vocab: pl.DataFrame) -> sp.csr_matrix:
    """Sum of the shards' matrices, each re-indexed from its own codes.parquet order to ``vocab``'s."""
    index = vocab.select("code", pl.int_range(pl.len(), dtype=pl.Int64).alias("idx"))
    rows, cols, vals = [], [], []
    for cohort in cohorts:
        local = cohort.codes().select("code").join(index, on="code", how="left", maintain_order="left")
        pos = local["idx"].to_numpy()
        m = load_cooccurrence(cohort.path).tocoo()
        rows.append(pos[m.row])
        cols.append(pos[m.col])
        vals.append(m.data.astype(np.int64))
    size = vocab.height
    total = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size)
    ).tocsr()  # duplicates (the same pair in several shards) are summed
    if total.nnz and total.data.max() > np.iinfo(np.int32).max:
        raise InputError("merged co-occurrence counts exceed int32; merge fewer patients per cohort")
    return total.astype(np.int32)


def _sum_dicts(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def merge_shards(
    out_dir: Path, n: int, shards: int, states: list[ShardState], overwrite: bool = False
) -> dict[str, Any]:
    """Write ``out_dir/cohort`` and ``out_dir/generation.json`` from complete shards; return the summary."""
    started = time.perf_counter()
    if len(states) != shards or not all(s.done for s in states):
        bad = [s.shard for s in states if not s.done]
        raise InputError(f"cannot merge: shards {bad} are not complete")
    cohorts = [Cohort(shard_dir(out_dir, k) / "cohort") for k in range(shards)]
    summaries = [s.summary or {} for s in states]
    generated = sum(int(c.meta.get("input_rows", {}).get("patients", 0)) for c in cohorts)
    if generated != n:
        raise InputError(f"shards generated {generated} patients in total, the plan says n_patients={n}")
    offset = check_subject_ids(cohorts, n, shards)

    codes = _merged_codes(cohorts)
    cooc = _merged_cooccurrence(cohorts, codes)
    meta0 = cohorts[0].meta
    counts = {
        key: {s: sum(int(c.meta["counts"][key].get(s, 0)) for c in cohorts) for s in SPLITS}
        for key in meta0["counts"]
        if key != "events"
    }
    counts["events"] = codes_per_table(codes)
    drops = _sum_dicts([c.meta.get("drops", {}) for c in cohorts])
    generation = {k: v for k, v in meta0.get("generation", {}).items() if k != "shard_index"}
    generation.update(first_index=0, num_shards=shards)

    final = out_dir / "cohort"
    with atomic_directory(final, overwrite, kind="cohort") as tmp:
        rows_per_file: dict[str, list[int]] = {}
        for split in SPLITS:
            (tmp / "data" / split).mkdir(parents=True)
            rows_per_file[split] = []
            for cohort in cohorts:
                for path, rows in zip(cohort.files(split), cohort.row_counts(split), strict=True):
                    if rows:
                        part = tmp / "data" / split / f"part-{len(rows_per_file[split]):05d}.parquet"
                        _link_or_copy(path, part)
                        rows_per_file[split].append(rows)
            if not rows_per_file[split]:  # an empty split keeps one empty part file, as prepare writes
                _link_or_copy(cohorts[0].files(split)[0], tmp / "data" / split / "part-00000.parquet")
                rows_per_file[split] = [0]
        (tmp / "metadata").mkdir()
        codes.write_parquet(tmp / "metadata" / "codes.parquet")
        sp.save_npz(tmp / "metadata" / COOCCURRENCE_FILE, cooc, compressed=True)
        meta = {
            **meta0,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": counts,
            "n_unique_codes": codes.height,
            "input_rows": {"patients": generated},
            "drops": drops,
            "shards": {**meta0.get("shards", {}), "rows_per_file": rows_per_file},
            "cooccurrence": {**meta0.get("cooccurrence", {}), "nnz": int(cooc.nnz)},
            "subject_ids": {**meta0.get("subject_ids", {}), "first_index": 0, "n_indices": n},
            "generation": generation,
            "array_shards": {
                "num_shards": shards,
                "shards": [
                    {
                        "shard": k,
                        "first_index": shard_range(k, n, shards)[0],
                        "n_indices": int(c.meta["subject_ids"]["n_indices"]),
                        "patients": int(sum(c.meta["counts"]["patients"].values())),
                        "dir": str(shard_dir(out_dir, k).relative_to(out_dir)),
                    }
                    for k, c in enumerate(cohorts)
                ],
            },
        }
        write_json_atomic(tmp / "metadata" / "cohort.json", meta)

    seconds = sum(float(s.get("seconds") or 0.0) for s in summaries)
    summary = {
        "out_dir": str(out_dir),
        "formats": ["cohort"],
        "n_patients": n,
        "first_subject_id": offset,
        "counts": counts,
        "drops": drops,
        "seconds": round(seconds, 3),  # generation time summed over shards (compute, not wall clock)
        "patients_per_s": round(n / seconds, 2) if seconds > 0 else None,  # per task
        "merge_seconds": round(time.perf_counter() - started, 3),
        "generation": generation,
        "shards": [
            {"shard": k, "n_patients": s.get("n_patients"), "seconds": s.get("seconds")}
            for k, s in enumerate(summaries)
        ],
    }
    write_json_atomic(out_dir / "generation.json", summary)
    return summary


def export_formats(
    out_dir: Path, formats: list[str], seed: int, compress: bool, overwrite: bool = False
) -> list[str]:
    """MIMIC-III / MEDS exports of the merged cohort that do not exist yet; returns those written.

    Exported from the merged cohort (not per shard) so admission ids run once across all patients.
    """
    written = []
    cohort = out_dir / "cohort"
    for fmt in formats:
        target = out_dir / fmt
        if fmt == "cohort" or (target.exists() and not overwrite):
            continue
        EXPORTERS[fmt](cohort, target, seed, compress, overwrite)
        written.append(fmt)
    gen_file = out_dir / "generation.json"
    if written and gen_file.is_file():
        summary = json.loads(gen_file.read_text())
        summary["formats"] = list(dict.fromkeys([*summary.get("formats", []), *written]))
        write_json_atomic(gen_file, summary)
    return written
