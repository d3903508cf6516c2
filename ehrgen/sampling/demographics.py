"""Demographics to generate for: fitted on a training cohort, or requested by the user.

Sex is 0 (M) / 1 (F) and age is years at the first visit, as in every cohort; ages above 89 are
reported as 90 (``ehrgen.data.build.AGE_CLAMP_*``, MIMIC's convention), here too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ehrgen.data.build import AGE_CLAMP_ABOVE, AGE_CLAMP_TO
from ehrgen.data.cohort import Cohort
from ehrgen.data.sources.base import parse_sex
from ehrgen.errors import InputError
from ehrgen.privacy.small_cells import MIN_CELL, coarsen_age_histogram

MAX_REQUEST_AGE = 120.0
# Bin edges inside the first year (1 week, 1 month, 3 and 6 months): newborns are admitted at
# birth, so a 1-year bin sampled uniformly made synthetic newborns half a year old on average
# where real ones are days old (and age-conditioned outputs read the age itself).
INFANT_EDGES: tuple[float, ...] = (7 / 365.25, 1 / 12, 0.25, 0.5)


class DemographicsModel:
    """Joint (sex, age) histogram: ``counts[sex][bin]``.

    Bins ``[edges[i], edges[i+1])`` (default 1-year bins over 0..90, the first year split at
    :data:`INFANT_EDGES`) plus a last bin for ages
    ``>= edges[-1]``, which holds the clamp value and is sampled as exactly ``edges[-1]`` (90).
    Inside a bin an age is drawn uniformly, never above 89 (ages in (89, 90) do not exist in a
    cohort). Everything is plain lists (``to_dict``) so it can live in a checkpoint loaded with
    ``weights_only=True``.
    """

    def __init__(self, edges: list[float], counts: list[list[int]]):
        edges_arr = np.asarray(edges, dtype=np.float64)
        counts_arr = np.asarray(counts, dtype=np.int64)
        if edges_arr.ndim != 1 or len(edges_arr) < 2 or np.any(np.diff(edges_arr) <= 0) or edges_arr[0] < 0:
            raise InputError(f"demographics edges must be >= 2 increasing ages from >= 0, got {edges!r}")
        if counts_arr.shape != (2, len(edges_arr)) or np.any(counts_arr < 0) or counts_arr.sum() == 0:
            raise InputError(
                f"demographics counts must be 2 x {len(edges_arr)} non-negative numbers (sex x bin, the "
                f"last bin for age >= {edges_arr[-1]:g}) with a positive total, got shape {counts_arr.shape}"
            )
        self.edges = edges_arr
        self.counts = counts_arr

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, age: np.ndarray, sex: np.ndarray, bin_width: float = 1.0, max_age: float = AGE_CLAMP_TO):
        """Histogram of ``age`` (years) by ``sex`` (0/1) on ``bin_width``-year bins up to ``max_age``,
        the first year split at :data:`INFANT_EDGES` too."""
        age = np.asarray(age, dtype=np.float64)
        sex = np.asarray(sex)
        if age.shape != sex.shape or age.size == 0:
            raise InputError(
                f"fit needs equally long, non-empty age and sex arrays, got {age.shape}, {sex.shape}"
            )
        if np.any(~np.isin(sex, (0, 1))) or np.any(~(age >= 0)):
            raise InputError("fit needs sex in {0, 1} and ages >= 0")
        edges = np.arange(0.0, max_age + bin_width / 2, bin_width)
        edges[-1] = max_age
        infant = [e for e in INFANT_EDGES if e < min(bin_width, max_age)]
        edges = np.concatenate([edges[:1], infant, edges[1:]])
        # bins 0..len(edges)-2 are the intervals, len(edges)-1 is "age >= max_age"
        bins = np.searchsorted(edges, age, side="right") - 1
        cells = sex.astype(np.int64) * len(edges) + bins
        counts = np.bincount(cells, minlength=2 * len(edges)).reshape(2, len(edges))
        return cls(edges.tolist(), counts.tolist())

    @classmethod
    def from_cohort(cls, cohort: Cohort | str | os.PathLike, split: str = "train", **kwargs: Any):
        """Fit on one split of a cohort (only the sex and age columns are read)."""
        cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
        frame = cohort.scan(split).select("sex", "age").collect()
        if frame.height == 0:
            raise InputError(f"cohort {cohort.path} has no {split} patients to fit demographics on")
        return cls.fit(frame["age"].to_numpy(), frame["sex"].to_numpy(), **kwargs)

    def coarsened(self, min_cell: int = MIN_CELL) -> DemographicsModel:
        """The same distribution with every cell 0 or >= ``min_cell`` (adjacent age bins merged,
        then failing cells suppressed): what may leave the machine in a checkpoint."""
        edges, counts = coarsen_age_histogram(self.edges.tolist(), self.counts, min_cell)
        if counts.sum() == 0:
            raise InputError(
                f"fewer than {min_cell} training patients per sex: their age/sex distribution cannot be "
                "stored under the small-cell rule"
            )
        return DemographicsModel(edges, counts.tolist())

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> DemographicsModel:
        if not isinstance(state, dict) or "edges" not in state or "counts" not in state:
            raise InputError("demographics state must be a dict with 'edges' and 'counts'")
        return cls(state["edges"], state["counts"])

    # ------------------------------------------------------------------ probabilities

    @property
    def probabilities(self) -> np.ndarray:
        """``P(sex, bin)``, shape (2, n_bins)."""
        return self.counts / self.counts.sum()

    def _ages_in_bins(self, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        top = len(self.edges) - 1
        lo = self.edges[np.minimum(bins, top)]
        hi = np.minimum(self.edges[np.minimum(bins + 1, top)], AGE_CLAMP_ABOVE)
        age = lo + rng.random(len(bins)) * np.maximum(hi - lo, 0.0)
        return np.where(bins == top, self.edges[-1], age).astype(np.float32)

    def _bin_of(self, age: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, age, side="right") - 1, 0, len(self.edges) - 1)

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        age: np.ndarray | None = None,
        sex: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(age float32, sex int8)`` of ``n`` patients from the joint distribution.

        A given ``age`` (or ``sex``) array of length ``n`` is kept and the other field is drawn
        conditionally on it (``P(sex | age bin)``, ``P(age | sex)``); an empty conditional falls
        back to the marginal.
        """
        if n <= 0:
            raise InputError(f"n_patients must be > 0, got {n}")
        p = self.probabilities
        if age is None and sex is None:
            cells = rng.choice(p.size, size=n, p=p.ravel())
            sex_out, bins = np.divmod(cells, p.shape[1])
            return self._ages_in_bins(bins, rng), sex_out.astype(np.int8)
        if age is not None and sex is not None:
            return np.asarray(age, dtype=np.float32), np.asarray(sex, dtype=np.int8)
        if sex is not None:
            sex_out = np.asarray(sex, dtype=np.int8)
            bins = np.empty(n, dtype=np.int64)
            for s in (0, 1):  # two draws, each vectorised
                mask = sex_out == s
                row = p[s] if p[s].sum() > 0 else p.sum(axis=0)
                bins[mask] = rng.choice(p.shape[1], size=int(mask.sum()), p=row / row.sum())
            return self._ages_in_bins(bins, rng), sex_out
        age_out = np.asarray(age, dtype=np.float32)
        per_bin = p[:, self._bin_of(age_out)]  # (2, n)
        total = per_bin.sum(axis=0)
        p_female = np.where(total > 0, per_bin[1] / np.where(total > 0, total, 1.0), p[1].sum())
        return age_out, (rng.random(n) < p_female).astype(np.int8)


# ----------------------------------------------------------------------------- requests


def _parse(frame: pl.DataFrame, where: str, line_of: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate string columns age, sex (and n) vectorised; name the first bad row and field."""
    parsed = frame.with_columns(pl.col("sex").cast(pl.Utf8).str.strip_chars().alias("_sex_text")).select(
        pl.col("age").cast(pl.Utf8).str.strip_chars().alias("age_text"),
        pl.col("age").cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False).alias("age"),
        pl.col("sex").cast(pl.Utf8).alias("sex_text"),
        pl.coalesce(
            pl.col("_sex_text").replace_strict({"0": 0, "1": 1}, default=None, return_dtype=pl.Int8),
            parse_sex("_sex_text"),
        ).alias("sex"),
        (pl.col("n") if "n" in frame.columns else pl.lit("1")).cast(pl.Utf8).alias("n_text"),
    )
    parsed = parsed.with_columns(pl.col("n_text").str.strip_chars().cast(pl.Int64, strict=False).alias("n"))

    def fail(mask: pl.Series, field: str, expected: str) -> None:
        if mask.any():
            i = int(mask.arg_true()[0])
            value = parsed[f"{field}_text"][i]
            raise InputError(
                f"{where}{line_of + i if line_of else ''}: {field} {value!r}, expected {expected}"
            )

    fail(parsed["age"].is_null() | parsed["age"].is_nan(), "age", "a number of years")
    fail((parsed["age"] < 0) | (parsed["age"] > MAX_REQUEST_AGE), "age", f"0 to {MAX_REQUEST_AGE:g} years")
    fail(parsed["sex"].is_null(), "sex", "M, F, 0 or 1")
    fail(parsed["n"].is_null() | (parsed["n"] <= 0), "n", "a positive whole number")
    age = parsed["age"].to_numpy()
    age = np.where(age > AGE_CLAMP_ABOVE, AGE_CLAMP_TO, age).astype(np.float32)
    return age, parsed["sex"].to_numpy().astype(np.int8), parsed["n"].to_numpy()


def _read_request_csv(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise InputError(f"demographics file {path} does not exist: expected a CSV with columns age,sex[,n]")
    try:
        frame = pl.read_csv(path, infer_schema=False, raise_if_empty=False)
    except pl.exceptions.PolarsError as err:
        raise InputError(f"{path}: cannot be read as CSV ({type(err).__name__})") from None
    frame = frame.rename({c: c.strip().lower() for c in frame.columns})
    missing = [c for c in ("age", "sex") if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns) or "no header"
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; expected age,sex[,n], found {found}"
        )
    if frame.height == 0:
        raise InputError(f"{path}: no rows; expected one row per demographic profile (age,sex[,n])")
    return frame


def requested_demographics(
    n_patients: int | None,
    *,
    age: float | str | None = None,
    sex: int | str | None = None,
    csv: str | os.PathLike | None = None,
    model: DemographicsModel | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(age float32, sex int8)`` of the patients to generate.

    - ``csv``: one row per profile, columns ``age,sex`` and optional ``n`` (repeat count, default
      1); the total is the sum of ``n``, and ``n_patients``, when given, must equal it.
    - else ``n_patients`` patients with the fixed ``age`` and/or ``sex`` (``M``/``F``/``0``/``1``,
      any case); a field not given is drawn from ``model`` (conditionally on the given one).

    Ages above 89 become 90, like in every cohort. Bad input raises :class:`InputError` naming the
    file line (or option) and the field.
    """
    if n_patients is not None and int(n_patients) <= 0:
        raise InputError(f"n_patients must be > 0, got {n_patients}")
    if csv is not None:
        if age is not None or sex is not None:
            raise InputError("give either a demographics CSV or fixed age/sex, not both")
        path = Path(csv).expanduser()
        ages, sexes, repeat = _parse(_read_request_csv(path), f"{path} line ", line_of=2)
        total = int(repeat.sum())
        if n_patients is not None and int(n_patients) != total:
            raise InputError(f"n_patients={n_patients} but {path} asks for {total} patients (sum of n)")
        return np.repeat(ages, repeat), np.repeat(sexes, repeat)

    if n_patients is None:
        raise InputError("n_patients is not set: expected the number of patients to generate")
    n = int(n_patients)
    fixed = {"age": "0" if age is None else str(age), "sex": "0" if sex is None else str(sex)}
    fixed_age, fixed_sex, _ = _parse(pl.DataFrame({k: [v] for k, v in fixed.items()}), "option", line_of=0)
    ages = None if age is None else np.full(n, fixed_age[0], dtype=np.float32)
    sexes = None if sex is None else np.full(n, fixed_sex[0], dtype=np.int8)
    if ages is not None and sexes is not None:
        return ages, sexes
    if model is None:
        missing = " and ".join(f for f, v in (("age", age), ("sex", sex)) if v is None)
        raise InputError(f"{missing} not given and no demographics model to draw it from")
    return model.sample(n, rng if rng is not None else np.random.default_rng(), age=ages, sex=sexes)
