"""One diagnosis vocabulary: ICD-9-CM <-> ICD-10-CM through the CMS General Equivalence Mappings.

    python -m ehrgen.prepare data=mimic4 data.raw_dir=PATH data.icd_map.to=10

MIMIC-IV codes admissions before October 2015 in ICD-9-CM and later ones in ICD-10-CM; by default
a cohort keeps both (ICD-10 codes marked ``ICD10CM:``, ``ehrgen.data.codes``). ``icd_map.to``
translates every code of the other system at prepare time, for users who want one vocabulary.

A GEM file has one row per (source, target) pair: ``source target flags``, the five flag digits
being approximate, no map, combination, scenario and choice list (CMS's own files,
``2018_I9gem.txt`` / ``2018_I10gem.txt``, have exactly this layout). Each source code becomes:

* nothing when its row is flagged "no map" (counted as ``diagnosis_no_gem_map``), or when the
  code is not in the GEM at all (``diagnosis_not_in_gem``);
* one of its non-combination targets when it has any: those are alternative translations
  (one-to-many "approximate" entries) of which a record holds one. The one chosen is the
  alternative the cohort's own data use most (its rows already coded in the target system),
  then the first listed: ICD-10 I10 lists 401.0 (malignant), 401.1 and 401.9 (unspecified), and
  MIMIC-IV's ICD-9 era codes hypertension as 401.9 almost always, where "first listed" would
  make every ICD-10 hypertensive malignant;
* otherwise (combination entries only) one target of each choice list (chosen the same way) of
  its lowest-numbered scenario: a combination code (ICD-10 A02.1, Salmonella sepsis) is the codes
  that together express it (003.1 and 995.91), and a record gets all of them.

ehrgen ships the GEMs CMS published (not updated after fiscal year 2018; public domain), in
``ehrgen/data/gem/``; ``icd_map.gem_dir`` reads CMS's files from a folder instead.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ehrgen.data.codes import ICD10CM_PREFIX
from ehrgen.errors import InputError

SHIPPED_GEM_DIR = Path(__file__).parent / "gem"
# Target version -> (shipped file, pattern of CMS's file name for the same direction).
GEM_FILES = {10: ("icd9cm_to_icd10cm.gem.gz", r"I9gem"), 9: ("icd10cm_to_icd9cm.gem.gz", r"I10gem")}
_ROW = re.compile(r"^(\S+)\s+(\S+)\s+([01]{3}\d{2})\s*$")


def gem_path(to: int, gem_dir: str | Path | None = None) -> Path:
    """The GEM file translating into ICD-``to`` codes: shipped, or CMS's file in ``gem_dir``."""
    shipped, pattern = GEM_FILES[to]
    if gem_dir is None:
        return SHIPPED_GEM_DIR / shipped
    folder = Path(gem_dir).expanduser()
    if not folder.is_dir():
        raise InputError(f"data.icd_map.gem_dir={folder}: not a folder (expected CMS's GEM files)")
    found = sorted(
        p for p in folder.iterdir() if re.search(pattern, p.name, re.IGNORECASE) or p.name == shipped
    )
    if not found:
        raise InputError(
            f"data.icd_map.gem_dir={folder}: no GEM file for ICD-{19 - to} -> ICD-{to} "
            f"(expected a file named like 2018_{pattern}.txt or {shipped})"
        )
    return found[0]


def read_gem(path: Path) -> pl.DataFrame:
    """``source, target, no_map, combination, scenario, choice, order`` of a GEM file (``.gz`` or text)."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="ascii") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                match = _ROW.match(line)
                if match is None:
                    raise InputError(
                        f"{path}, line {line_no}: expected 'source target flags' "
                        "(flags: 5 digits, approximate/no map/combination/scenario/choice list)"
                    )
                rows.append(match.groups())
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise InputError(f"{path}: cannot be read as a GEM file ({type(err).__name__})") from None
    if not rows:
        raise InputError(f"{path}: no GEM rows")
    frame = pl.DataFrame(rows, schema=["source", "target", "flags"], orient="row")
    flag = pl.col("flags").str
    return frame.with_row_index("order").select(
        "source",
        "target",
        (flag.slice(1, 1) == "1").alias("no_map"),
        (flag.slice(2, 1) == "1").alias("combination"),
        flag.slice(3, 1).cast(pl.Int64).alias("scenario"),
        flag.slice(4, 1).cast(pl.Int64).alias("choice"),
        "order",
    )


def gem_targets(gem: pl.DataFrame, usage: pl.DataFrame | None = None) -> pl.DataFrame:
    """``source -> targets`` (a list, empty for "no map") by the rule in the module docstring.

    ``usage``: ``target, n`` (how often the data use each target-system code) to choose among
    alternatives; without it, or on ties, the first listed wins.
    """
    if usage is not None:
        gem = gem.join(usage.select("target", "n"), on="target", how="left").with_columns(
            pl.col("n").fill_null(0)
        )
    else:
        gem = gem.with_columns(pl.lit(0, pl.Int64).alias("n"))
    plain = (
        gem.filter(~pl.col("no_map") & ~pl.col("combination"))
        .sort(["n", "order"], descending=[True, False])
        .group_by("source", maintain_order=True)
        .agg(pl.col("target").first().alias("targets"))
        .with_columns(pl.concat_list("targets"))
    )
    combination = gem.filter(pl.col("combination") & ~pl.col("source").is_in(plain["source"].implode()))
    first_scenario = combination.filter(pl.col("scenario") == pl.col("scenario").min().over("source"))
    combined = (
        first_scenario.sort(["n", "order"], descending=[True, False])
        .group_by("source", "choice", maintain_order=True)
        .agg(pl.col("target").first())
        .sort("source", "choice")
        .group_by("source", maintain_order=True)
        .agg(pl.col("target").alias("targets"))
    )
    mapped = pl.concat([plain, combined])
    no_map = (
        gem.filter(pl.col("no_map") & ~pl.col("source").is_in(mapped["source"].implode()))
        .select("source")
        .unique(maintain_order=True)
        .with_columns(pl.lit([], pl.List(pl.Utf8)).alias("targets"))
    )
    return pl.concat([mapped, no_map])


@dataclass(frozen=True)
class IcdMap:
    """Translate a cohort's codes into one ICD version (``to``) with a GEM."""

    to: int
    gem_dir: str | None = None

    def __post_init__(self) -> None:
        if self.to not in GEM_FILES:
            raise InputError(f"data.icd_map.to={self.to!r}: expected null, 9 or 10")

    def cache_key(self) -> dict[str, object]:
        gem_dir = None if self.gem_dir is None else str(Path(self.gem_dir).expanduser().absolute())
        return {"to": self.to, "gem_dir": gem_dir}

    def targets(self, codes: pl.Series, usage: pl.DataFrame | None = None) -> pl.DataFrame:
        """Per normalised cohort code: ``code, targets`` (cohort form; null when not in the GEM).

        Codes already in the target system map to themselves. ``usage``: ``code, n`` of the
        data's codes (cohort form), which decides among a GEM's alternatives.
        """
        if usage is not None:  # the target system's codes only, unmarked as the GEM writes them
            code = pl.col("code").cast(pl.Utf8)
            ten = code.str.starts_with(ICD10CM_PREFIX)
            usage = usage.filter(ten if self.to == 10 else ~ten).select(
                code.str.slice(len(ICD10CM_PREFIX) if self.to == 10 else 0).alias("target"), "n"
            )
        table = gem_targets(read_gem(gem_path(self.to, self.gem_dir)), usage)
        # GEM codes are unmarked; the cohort marks ICD-10 ones (targets into 10, sources from 10).
        if self.to == 10:
            table = table.with_columns(pl.col("targets").list.eval(pl.lit(ICD10CM_PREFIX) + pl.element()))
            already = pl.col("code").str.starts_with(ICD10CM_PREFIX)
        else:
            table = table.with_columns((pl.lit(ICD10CM_PREFIX) + pl.col("source")).alias("source"))
            already = ~pl.col("code").str.starts_with(ICD10CM_PREFIX)
        frame = pl.DataFrame({"code": codes.cast(pl.Utf8)})
        joined = frame.join(table, left_on="code", right_on="source", how="left", maintain_order="left")
        return joined.select(
            "code",
            pl.when(already).then(pl.concat_list("code")).otherwise(pl.col("targets")).alias("targets"),
        )

    def describe(self) -> dict[str, object]:
        """What cohort.json records about the mapping."""
        path = gem_path(self.to, self.gem_dir)
        return {"to": self.to, "gem": str(path if self.gem_dir else path.name)}


def icd_map_from_config(options: object) -> IcdMap | None:
    """``data.icd_map`` (``{to, gem_dir}``) -> an :class:`IcdMap`, or None when ``to`` is null."""
    if options is None:
        return None
    to = options.get("to") if hasattr(options, "get") else None
    if to is None:
        return None
    try:
        to = int(to)
    except (TypeError, ValueError):
        raise InputError(f"data.icd_map.to={to!r}: expected null, 9 or 10") from None
    gem_dir = options.get("gem_dir")
    return IcdMap(to, None if gem_dir is None else str(gem_dir))
