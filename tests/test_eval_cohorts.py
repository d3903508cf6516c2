"""Hand-made cohorts for the evaluation tests (helpers imported by the other test_eval_* files).

``toy_patients`` is a small generative model with demographic-dependent disease clusters,
chronic codes that recur across visits and clinically valid codes only; two draws with
different seeds are independent samples from the same distribution.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrgen.data.codes import category_of
from ehrgen.data.cohort import SPLITS, Cohort, cohort_metadata, write_json_atomic, write_patient_shards
from ehrgen.data.rules import VALIDITY_RULES, rule_membership

# Real ICD-9 codes (frequent ones first) including rule-covered ones, then a synthetic tail.
# fmt: off
HEAD = [
    "4019", "4280", "42731", "41401", "5849", "25000", "2724", "51881", "5990", "53081",
    "2720", "V053", "V290", "2859", "2449", "486", "2851", "2762", "496", "99592",
    "5859", "40391", "311", "V5861", "E8497", "65101", "V270", "185", "6000", "1749",
    "6259", "V3000", "7742", "V5867", "3051", "4240", "2875", "5070",
]
# fmt: on
TAIL = [f"{i:03d}{j}" for i in range(710, 760) for j in range(0, 10, 3)]
VOCAB = np.array(HEAD + TAIL)
N_CLUSTERS = 6


def _cluster_cdf(seed: int = 1234) -> np.ndarray:
    """Fixed per-cluster code distributions (Zipf over a cluster-specific code order)."""
    rng = np.random.default_rng(seed)
    probs = []
    for _ in range(N_CLUSTERS):
        order = np.r_[rng.permutation(len(HEAD)), len(HEAD) + rng.permutation(len(TAIL))]
        p = np.empty(len(VOCAB))
        p[order] = 1.0 / np.arange(1, len(VOCAB) + 1) ** 1.2
        probs.append(p / p.sum())
    return np.cumsum(np.array(probs), 1)


_CDF = _cluster_cdf()


def toy_patients(
    n: int, seed: int, first_id: int = 1, mean_visits: float = 2.0, shift: int = 0
) -> pl.DataFrame:
    """``n`` patients in the cohort row schema (vectorised sampling).

    ``shift`` moves every demographic group to another disease cluster: a different distribution.
    """
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, n).astype(np.int8)
    age = np.where(rng.random(n) < 0.05, rng.random(n) * 0.9, rng.uniform(1, 90, n)).astype(np.float32)
    # cluster depends on demographics so a classifier can read sex / age back from codes
    base = (sex + 2 * (age >= 45) + 3 * (age >= 65) + shift) % N_CLUSTERS
    cluster = np.where(rng.random(n) < 0.7, base, rng.integers(0, N_CLUSTERS, n))
    n_vis = rng.geometric(1.0 / mean_visits, n)
    vp = np.repeat(np.arange(n), n_vis)
    per_visit = 1 + rng.poisson(3, len(vp))
    entry_visit = np.repeat(np.arange(len(vp)), per_visit)
    entry_cluster = cluster[vp[entry_visit]]
    flat_cdf = (_CDF + np.arange(N_CLUSTERS)[:, None]).ravel()

    def draw(c: np.ndarray, u: np.ndarray) -> np.ndarray:
        # inverse-CDF sampling from each entry's cluster: clusters are offset to stay sorted
        return np.minimum(np.searchsorted(flat_cdf, u + c) - c * len(VOCAB), len(VOCAB) - 1)

    codes = draw(entry_cluster, rng.random(len(entry_visit)))
    # one chronic code per patient (from the cluster's common half), recurring with prob. 0.7
    chronic = draw(cluster, 0.5 * rng.random(n))
    recur = rng.random(len(vp)) < 0.7
    entry_visit = np.r_[entry_visit, np.flatnonzero(recur)]
    codes = np.r_[codes, chronic[vp[recur]]]
    # drop codes the patient's sex / age rule out (the simulator contract: no violations)
    member = rule_membership(list(VOCAB), VALIDITY_RULES)
    patient = vp[entry_visit]
    ok = np.ones(len(codes), dtype=bool)
    for r, rule in enumerate(VALIDITY_RULES):
        ok &= ~(member[r, codes] & ~rule.allows(sex[patient], age[patient]))
    entry_visit, codes = entry_visit[ok], codes[ok]
    order = np.lexsort((codes, entry_visit))
    entries = pl.DataFrame({"visit": entry_visit[order], "code": VOCAB[codes[order]]})
    visit_codes = entries.unique(maintain_order=True).group_by("visit", maintain_order=True).agg("code")
    start = datetime(2100, 1, 1)
    offsets = np.cumsum(rng.integers(1, 400, len(vp)))
    visits = (
        pl.DataFrame({"visit": np.arange(len(vp)), "pidx": vp, "days": offsets})
        .join(visit_codes, on="visit", how="left")
        .with_columns(
            pl.col("code").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
            (pl.lit(start) + pl.duration(days=pl.col("days"))).cast(pl.Datetime("us")).alias("time"),
        )
        .sort("visit")
        .group_by("pidx", maintain_order=True)
        .agg(pl.struct(pl.col("time"), pl.col("code").alias("codes")).alias("visits"))
    )
    demo = pl.DataFrame(
        {
            "pidx": np.arange(n),
            "subject_id": np.arange(first_id, first_id + n, dtype=np.int64),
            "sex": sex,
            "age": age,
        }
    )
    return demo.join(visits, on="pidx", how="left").sort("pidx").drop("pidx")


def write_cohort(
    path: Path, splits: dict[str, pl.DataFrame], source: str = "toy", codes: bool = True
) -> Path:
    """Write a cohort directory: given patients per split, codes.parquet and cohort.json."""
    for split in SPLITS:
        df = splits.get(split)
        if df is not None and df.height:
            write_patient_shards(df, path / "data" / split, shard_size=max(df.height // 2, 1))
    (path / "metadata").mkdir(parents=True, exist_ok=True)
    frames = [df.select("visits").with_columns(pl.lit(s).alias("split")) for s, df in splits.items()]
    exploded = (
        pl.concat(frames).explode("visits").unnest("visits").explode("codes").drop_nulls("codes")
        if frames
        else pl.DataFrame({"codes": [], "split": []}, schema={"codes": pl.Utf8, "split": pl.Utf8})
    )
    if codes:
        table = (
            exploded.group_by("codes")
            .agg(pl.len().alias("count"), (pl.col("split") == "train").sum().alias("train_count"))
            .rename({"codes": "code"})
            .sort("code")
        )
        table = table.with_columns(
            pl.col("code").map_elements(category_of, return_dtype=pl.Utf8).alias("category"),
            pl.lit(None, dtype=pl.Utf8).alias("description"),
        )
        table.write_parquet(path / "metadata" / "codes.parquet")
    counts = {s: (splits[s].height if s in splits else 0) for s in SPLITS}
    write_json_atomic(
        path / "metadata" / "cohort.json",
        cohort_metadata(source, counts={"patients": counts}, split_seed=0),
    )
    return path


def toy_cohort(path: Path, n_train: int, n_test: int, seed: int, n_val: int = 0) -> Path:
    """A real-like cohort: independent toy patients in train / val / test with disjoint ids."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    splits, first = {}, 1
    for i, (split, n) in enumerate(sizes.items()):
        if n:
            splits[split] = toy_patients(n, seed * 10 + i, first_id=first)
            first += n
    return write_cohort(path, splits)


def arrays_of(tmp: Path, frames: dict[str, pl.DataFrame]) -> list:
    """Write each frame as a one-split cohort under ``tmp`` and load all over one vocabulary."""
    from ehrgen.metrics.cohort_arrays import encode, read_cohort, shared_vocabulary

    raws = [
        read_cohort(Cohort(write_cohort(tmp / name, {"train": df})), ["train"], name)
        for name, df in frames.items()
    ]
    vocab = shared_vocabulary(*raws)
    return [encode(r, vocab) for r in raws]


def copy_cohort(src: Path, dst: Path, split: str = "train", as_split: str = "train") -> Path:
    """A cohort holding exactly the patients of ``src``'s ``split`` (a generator that copies)."""
    return write_cohort(dst, {as_split: Cohort(src).read(split)})


# ----------------------------------------------------------------------------- helper checks


def test_toy_cohort_round_trip(tmp_path):
    path = toy_cohort(tmp_path / "c", 60, 20, seed=1)
    c = Cohort(path)
    assert c.splits() == ["train", "test"]
    df = c.read("train")
    assert df.height == 60 and df["subject_id"].n_unique() == 60
    assert set(df["subject_id"]).isdisjoint(set(c.read("test")["subject_id"]))
    codes = c.codes()
    assert {"code", "count", "train_count", "category", "description"} <= set(codes.columns)
    assert codes["count"].sum() >= codes["train_count"].sum() > 0


def test_toy_patients_are_valid_and_seeded():
    a, b = toy_patients(200, 3), toy_patients(200, 3)
    assert a.equals(b)
    assert not a.equals(toy_patients(200, 4))
    flat = a.explode("visits").unnest("visits").explode("codes").drop_nulls("codes")
    codes = flat["codes"].to_list()
    member = rule_membership(codes, VALIDITY_RULES)
    for r, rule in enumerate(VALIDITY_RULES):
        bad = member[r] & ~rule.allows(flat["sex"].to_numpy(), flat["age"].to_numpy())
        assert not bad.any(), rule.name


@pytest.mark.parametrize("n", [1, 5])
def test_toy_patients_small(n):
    assert toy_patients(n, 0).height == n
