"""The cohort directory: the single contract between prepare, training, generation and evaluation.

```
cohort/
  data/{train,val,test}/part-00000.parquet   one row per patient; a patient never spans two files
  metadata/codes.parquet                     code, count, train_count, category, description
  metadata/cohort.json                       schema version, source, counts, drops, split seed
  metadata/cooccurrence.npz                  train-split visit-level code x code counts (CSR)
```
Row schema: ``subject_id: int64, sex: int8 (0=M, 1=F), age: float32 (years, first visit),
visits: list<struct<time: timestamp[us] (nullable), end: timestamp[us] (nullable), codes: list<string>>>``:
``time`` is the admission, ``end`` the discharge (null where the source has none).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ehrgen.errors import InputError

# 2: visits carry their end (discharge) time.
SCHEMA_VERSION = 2
SPLITS = ("train", "val", "test")

VISIT_TYPE = pa.struct(
    [("time", pa.timestamp("us")), ("end", pa.timestamp("us")), ("codes", pa.list_(pa.string()))]
)
PATIENT_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("sex", pa.int8()),
        ("age", pa.float32()),
        ("visits", pa.list_(VISIT_TYPE)),
    ]
)
CODES_COLUMN = "visits.list.element.codes.list.element"
POLARS_SCHEMA = pl.Schema(
    {
        "subject_id": pl.Int64,
        "sex": pl.Int8,
        "age": pl.Float32,
        "visits": pl.List(
            pl.Struct({"time": pl.Datetime("us"), "end": pl.Datetime("us"), "codes": pl.List(pl.Utf8)})
        ),
    }
)


# ----------------------------------------------------------------------------- splits


def stable_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of ``ids`` mixed with ``seed``: identical on every machine and library version."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def assign_splits(subject_ids: np.ndarray, seed: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """Split index (0=train, 1=val, 2=test) per subject from a seeded stable hash of its id."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    u = (stable_hash(subject_ids, seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    edges = np.cumsum(fractions)[:2]
    return np.searchsorted(edges, u, side="right").astype(np.int8)


# ----------------------------------------------------------------------------- atomic output


OUTPUT_MARKER = ".ehrgen-output.json"


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().absolute().resolve()


def check_not_input(out: Path, inputs: Iterable[str | os.PathLike | None], key: str = "out_dir") -> None:
    """Refuse an output path that is, or contains, one of the command's inputs.

    Replacing ``out`` deletes everything under it, so an input inside it would be lost.
    """
    target = _resolved(out)
    for given in inputs:
        if given in (None, ""):
            continue
        inp = _resolved(str(given))
        if inp == target or target in inp.parents:
            raise InputError(
                f"{key}={out} would replace {inp}, an input of this command; choose another {key}"
            )


def mark_output(path: Path, kind: str) -> None:
    """Record in ``path`` that ehrgen wrote it as a ``kind`` (what ``overwrite=true`` may replace)."""
    write_json_atomic(path / OUTPUT_MARKER, {"kind": kind, "created": datetime.now(UTC).isoformat()})


def output_kind(path: Path) -> str | None:
    """The kind ehrgen recorded in ``path``'s marker file (``cohort``, ``generation`` ...), or None."""
    marker = path / OUTPUT_MARKER
    try:
        return str(json.loads(marker.read_text()).get("kind"))
    except (OSError, ValueError, AttributeError):
        return None


def check_output(
    out_dir: str | os.PathLike,
    overwrite: bool,
    kind: str,
    inputs: Iterable[str | os.PathLike | None] = (),
    key: str = "out_dir",
) -> Path:
    """Fail before any work when :func:`atomic_directory` would refuse ``out_dir``; return it absolute."""
    out = Path(out_dir).expanduser().absolute()
    check_not_input(out, inputs, key)
    if out.exists() or out.is_symlink():
        _check_replaceable(out, kind, overwrite)
    return out


def _check_replaceable(out: Path, kind: str, overwrite: bool) -> None:
    """An existing ``out`` may be replaced only if empty, or (with overwrite) ehrgen's own ``kind``."""
    if not out.is_dir() or out.is_symlink():
        raise InputError(f"{out} exists and is not a directory; choose another path")
    if not any(out.iterdir()):
        return  # an empty folder holds nothing to lose
    if not overwrite:
        raise InputError(f"{out} already exists; pass overwrite=true to replace it")
    found = output_kind(out)
    if found != kind:
        what = f"a {found}" if found else "not written by ehrgen"
        raise InputError(
            f"overwrite=true refused: {out} is {what} (its {OUTPUT_MARKER} does not say {kind!r}), "
            "so replacing it could delete data; remove it yourself or choose another path"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete temp/old siblings of ``out`` left by killed runs of this host; return what was removed.

    Temp names carry ``<host>-<pid>``: only folders of this host whose process is gone are touched
    (on a shared file system another node's run may still be writing its own).
    """
    host = socket.gethostname()
    removed = []
    for stale in out.parent.glob(f".{out.name}.*-{host}-*"):
        match = re.fullmatch(rf"\.{re.escape(out.name)}\.(tmp|old)-{re.escape(host)}-(\d+)-\d+", stale.name)
        if match and not _pid_alive(int(match.group(2))):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_directory(
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    *,
    kind: str,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``out_dir`` only if the block succeeds.

    A crash or Ctrl-C leaves at most a ``.<name>.tmp-*`` folder, never a complete-looking output
    (and the next run removes it). The finished directory carries :data:`OUTPUT_MARKER` naming its
    ``kind``: ``overwrite`` replaces only an empty folder or ehrgen's own output of the same kind,
    never a foreign folder and never one holding an input of the command (``inputs``).
    """
    out = check_output(out_dir, overwrite, kind, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    stamp = f"{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}"
    tmp = out.parent / f".{out.name}.tmp-{stamp}"
    tmp.mkdir()
    try:
        yield tmp
        mark_output(tmp, kind)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{stamp}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temp file and rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.rename(path)


# ----------------------------------------------------------------------------- writing


def with_visit_ends(patients: pl.DataFrame) -> pl.DataFrame:
    """``patients`` whose visits are ``struct<time, codes>`` (no stays: cohort schema 1) with a
    null ``end`` added; other frames unchanged. polars >= 2.2 no longer fills a missing struct
    field in a cast, so this comes before casting to :data:`POLARS_SCHEMA`."""
    visits = patients.schema.get("visits")
    if not (isinstance(visits, pl.List) and isinstance(visits.inner, pl.Struct)):
        return patients
    if "end" in {f.name for f in visits.inner.fields}:
        return patients
    return patients.with_columns(
        pl.col("visits").list.eval(
            pl.struct(
                pl.element().struct.field("time"),
                pl.lit(None, dtype=pl.Datetime("us")).alias("end"),
                pl.element().struct.field("codes"),
            )
        )
    )


def write_patient_shards(
    patients: pl.DataFrame,
    split_dir: Path,
    shard_size: int,
    row_group_size: int = 1024,
    first_part: int = 0,
) -> list[int]:
    """Write ``patients`` (cohort row schema) as ``part-NNNNN.parquet`` files; return rows per file."""
    split_dir.mkdir(parents=True, exist_ok=True)
    patients = with_visit_ends(patients)
    table = patients.select(POLARS_SCHEMA.names()).cast(dict(POLARS_SCHEMA)).to_arrow()
    table = table.cast(PATIENT_SCHEMA)
    sizes = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), shard_size)):
        part = table.slice(start, shard_size)
        if part.num_rows == 0 and i > 0:
            break
        pq.write_table(
            part,
            split_dir / f"part-{first_part + i:05d}.parquet",
            row_group_size=row_group_size,
            compression="zstd",
            # Codes repeat (dictionary pays); statistics only where readers filter (15% faster).
            use_dictionary=[CODES_COLUMN],
            write_statistics=["subject_id", "sex", "age"],
        )
        sizes.append(part.num_rows)
    return sizes


def cohort_metadata(source: str, **fields: Any) -> dict[str, Any]:
    """The common header of ``metadata/cohort.json``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "complete": True,
        **fields,
    }


# ----------------------------------------------------------------------------- reading


class Cohort:
    """Read-only view of a cohort directory; validates the layout on construction."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()
        meta_file = self.path / "metadata" / "cohort.json"
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path} is a file, not a cohort directory")
        if not self.path.is_dir():
            raise InputError(
                f"cohort directory {self.path} does not exist; create it with "
                f"`python -m ehrgen.prepare data=<source> data.cohort_dir={self.path}`"
            )
        if not meta_file.is_file():
            raise InputError(
                f"{meta_file} is missing: {self.path} is not a complete cohort directory "
                "(write one with `python -m ehrgen.prepare ... data.cohort_dir=<new folder>`)"
            )
        try:
            self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{meta_file}: not valid JSON ({err.msg} at line {err.lineno})") from None
        version = self.meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(
                f"{meta_file}: schema_version {version!r}, this ehrgen reads {SCHEMA_VERSION} (version 2 "
                "added visit end times); write the cohort again with the ehrgen command that made it"
            )
        if not self.meta.get("complete", False):
            raise InputError(f"{meta_file}: cohort is marked incomplete; re-run the step that wrote it")

    def __repr__(self) -> str:
        return f"Cohort({str(self.path)!r}, n_patients={self.n_patients})"

    @property
    def n_patients(self) -> int:
        return int(sum(self.meta["counts"]["patients"].values()))

    def splits(self) -> list[str]:
        """Splits that hold at least one patient."""
        return [s for s in SPLITS if self.meta["counts"]["patients"].get(s, 0) > 0]

    def files(self, split: str) -> list[Path]:
        """Parquet part files of ``split`` in order (empty list when the split is empty)."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return sorted((self.path / "data" / split).glob("part-*.parquet"))

    def scan(self, split: str | None = None) -> pl.LazyFrame:
        """Lazy frame over one split, or over all splits with a ``split`` column when None."""
        if split is None:
            frames = [self.scan(s).with_columns(pl.lit(s).alias("split")) for s in self.splits()]
            if not frames:
                raise InputError(f"cohort {self.path} holds no patients")
            return pl.concat(frames)
        files = self.files(split)
        if not files:
            return pl.LazyFrame(schema=POLARS_SCHEMA)
        return pl.scan_parquet(files)

    def read(self, split: str | None = None) -> pl.DataFrame:
        """Materialise one split (or all) as a polars DataFrame."""
        return self.scan(split).collect()

    def codes(self) -> pl.DataFrame:
        """``metadata/codes.parquet``: code, count, train_count, category, description."""
        return pl.read_parquet(self.path / "metadata" / "codes.parquet")

    def row_counts(self, split: str) -> list[int]:
        """Patients per part file, from Parquet footers (no data read)."""
        return [pq.ParquetFile(f).metadata.num_rows for f in self.files(split)]
