"""Neighbour searches of the privacy suite cut into blocks of query rows, one file per block.

A job array runs one block per task (:func:`write_block`, ``block-NNNNN.npz``, written under a temp
name and renamed); :func:`read_blocks` checks that every block is there and was computed for the
same cohorts and settings, and joins them into the results :func:`ehrgen.privacy.suite.searches`
would give in one process (bit-identical).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ehrgen.errors import InputError
from ehrgen.metrics.cohort_arrays import CohortArrays
from ehrgen.privacy.neighbors import Neighbours, concat
from ehrgen.privacy.suite import PrivacyConfig, SearchSpec, run_search, search_shapes, search_specs, searches

BLOCK_FORMAT = 1  # bump when the searches or the block file layout change
_FIELDS = ("distance", "index", "reverse_similarity", "reverse_index")  # stored per search


def block_rows(block: int, n: int, n_blocks: int) -> tuple[int, int]:
    """Query rows ``[start, stop)`` of ``block`` (every search is cut the same way)."""
    return block * n // n_blocks, (block + 1) * n // n_blocks


def block_path(directory: str | os.PathLike, block: int) -> Path:
    return Path(directory) / f"block-{block:05d}.npz"


def fingerprint(
    synthetic: CohortArrays, train: CohortArrays, holdout: CohortArrays, cfg: PrivacyConfig
) -> str:
    """Digest of everything the searches' results depend on: the three cohorts' arrays and the
    privacy settings that pick the record sets (not workers/block/chunk, which change speed only)."""
    h = hashlib.blake2b(digest_size=12)
    settings = {
        "format": BLOCK_FORMAT,
        "distances": list(cfg.distances),
        "max_records": int(cfg.max_records),
        "known_top_k": int(cfg.known_top_k),
        "attribute_targets": int(cfg.attribute_targets),
        "seed": int(cfg.seed),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update("\x00".join(train.vocab.tolist()).encode())
    for arr in (synthetic, train, holdout):
        for a in (arr.subject_id, arr.sex, arr.age, arr.visit_ptr, arr.code_ptr, arr.codes):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()


def write_block(
    directory: str | os.PathLike,
    block: int,
    n_blocks: int,
    synthetic: CohortArrays,
    train: CohortArrays,
    holdout: CohortArrays,
    cfg: PrivacyConfig,
) -> dict[str, Any]:
    """Run query rows ``block_rows(block, n, n_blocks)`` of every search into one ``.npz``
    (temp name + rename, so a file that exists is complete); returns the block's metadata."""
    if not 0 <= block < n_blocks:
        raise InputError(f"block {block} of {n_blocks}: expected 0 <= block < n_blocks")
    started = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    rows, pairs = {}, 0
    for search in searches(synthetic, train, holdout, cfg):
        a, b = block_rows(block, search.n_query, n_blocks)
        nn = run_search(search, cfg, rows=(a, b))
        rows[search.spec.name] = [a, b]
        pairs += (b - a) * search.n_ref
        for field in _FIELDS:
            if (value := getattr(nn, field)) is not None:
                arrays[f"{search.spec.name}:{field}"] = value
    meta = {
        "format": BLOCK_FORMAT,
        "block": int(block),
        "n_blocks": int(n_blocks),
        "fingerprint": fingerprint(synthetic, train, holdout, cfg),
        "rows": rows,
        "pairs": int(pairs),
        "seconds": round(time.perf_counter() - started, 3),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = block_path(directory, block)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)
    return meta


def read_block_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A block file's metadata (reads nothing else); InputError when it is not a readable block."""
    try:
        # our own handle: np.load leaks the one it opens when the file is not a zip
        with open(path, "rb") as fh, np.load(fh) as z:
            meta = json.loads(z["meta"].item())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable neighbour block ({type(err).__name__})") from None
    if meta.get("format") != BLOCK_FORMAT or not {"block", "n_blocks", "fingerprint"} <= meta.keys():
        raise InputError(f"{path}: block format {meta.get('format')}, this ehrgen writes {BLOCK_FORMAT}")
    return meta


def read_blocks(
    directory: str | os.PathLike,
    synthetic: CohortArrays,
    train: CohortArrays,
    holdout: CohortArrays,
    cfg: PrivacyConfig,
) -> dict[str, Neighbours]:
    """Every search's neighbours joined from ``directory``'s blocks, after checking that all blocks
    are there, were computed for these inputs and settings and have the rows these cohorts give."""
    where = f"privacy.neighbours_dir={directory}"
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{where}: no such directory")
    files = sorted(d.glob("block-*.npz"))
    if not files:
        raise InputError(f"{where}: holds no neighbour blocks (block-NNNNN.npz)")
    metas = {}
    for f in files:
        try:
            metas[f] = read_block_meta(f)
        except InputError as err:
            raise InputError(f"{err}; recompute it") from None
    counts = sorted({int(m["n_blocks"]) for m in metas.values()})
    if len(counts) > 1:
        raise InputError(f"{where}: mixes blocks of {' and '.join(map(str, counts))}-block splits; recompute")
    n_blocks = counts[0]
    by_block = {int(m["block"]): f for f, m in metas.items() if f == block_path(d, int(m["block"]))}
    missing = [k for k in range(n_blocks) if k not in by_block]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise InputError(f"{where}: {len(missing)} of {n_blocks} blocks missing or misnamed (block {shown})")
    expected = fingerprint(synthetic, train, holdout, cfg)
    for k in range(n_blocks):
        got = metas[by_block[k]]["fingerprint"]
        if got != expected:
            raise InputError(
                f"{by_block[k]}: computed for other inputs or privacy settings (fingerprint {got}, "
                f"these give {expected}); recompute the blocks"
            )
    specs = search_specs(synthetic.n_patients, train.n_patients, holdout.n_patients, cfg)
    shapes = search_shapes(synthetic.n_patients, train.n_patients, holdout.n_patients, cfg)
    parts: dict[str, list[Neighbours]] = {s.name: [] for s in specs}
    for k in range(n_blocks):
        with np.load(by_block[k]) as z:
            for s in specs:
                parts[s.name].append(_block_part(z, by_block[k], s, shapes[s.name], k, n_blocks))
    return {name: concat(p) for name, p in parts.items()}


def _block_part(z: Any, path: Path, s: SearchSpec, shape: tuple, block: int, n_blocks: int) -> Neighbours:
    """One search's arrays of one block, with their shapes checked against the cohorts."""
    n_query, n_ref = shape
    a, b = block_rows(block, n_query, n_blocks)
    want = {"distance": (b - a, 0 if s.metric == "attribute" else 1), "index": (b - a, 1)}
    if s.reverse:
        want.update(reverse_similarity=(n_ref,), reverse_index=(n_ref,))
    got = {}
    for field, wanted in want.items():
        key = f"{s.name}:{field}"
        if key not in z.files:
            raise InputError(f"{path}: lacks {key}; recompute the blocks")
        got[field] = z[key]
        if got[field].shape != wanted:
            raise InputError(
                f"{path}: {key} has shape {got[field].shape}, these cohorts give {wanted}; recompute the blocks"
            )
    return Neighbours(**got)
