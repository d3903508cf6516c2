"""DemographicsModel (fit, sample, serialise) and requested_demographics (fixed values, CSV, errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from ehrgen.data.cohort import Cohort
from ehrgen.errors import InputError
from ehrgen.sampling.demographics import DemographicsModel, requested_demographics


def population(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous ages (older men, younger women, neonates) with ~3% clamped to 90."""
    rng = np.random.default_rng(seed)
    sex = (rng.random(n) < 0.45).astype(np.int8)
    age = np.where(sex == 0, rng.normal(64, 14, n), rng.normal(48, 18, n))
    age = np.where(rng.random(n) < 0.05, rng.uniform(0, 1, n), age)
    age = np.clip(age, 0, 89)
    age = np.where(rng.random(n) < 0.03, 90.0, age)
    return age.astype(np.float32), sex


@pytest.fixture(scope="module")
def fitted() -> tuple[DemographicsModel, np.ndarray, np.ndarray]:
    age, sex = population(50_000)
    return DemographicsModel.fit(age, sex), age, sex


def test_fit_histogram(fitted) -> None:
    model, age, sex = fitted
    bins = [0.0, 7 / 365.25, 1 / 12, 0.25, 0.5, *(float(e) for e in range(1, 91))]
    assert model.edges.tolist() == bins
    assert model.counts.shape == (2, 95) and model.counts.sum() == len(age)
    for s in (0, 1):
        interval, _ = np.histogram(age[(sex == s) & (age < 90)], bins=bins)
        assert model.counts[s, :94].tolist() == interval.tolist()
        assert model.counts[s, 94] == np.sum((sex == s) & (age == 90))


def test_newborns_stay_days_old() -> None:
    """Patients admitted at birth are sampled days old, not anywhere in their first year."""
    rng = np.random.default_rng(0)
    age = np.concatenate([rng.uniform(0, 3 / 365.25, 500), rng.uniform(20, 89, 4500)]).astype(np.float32)
    sex = rng.integers(0, 2, 5000)
    model = DemographicsModel.fit(age, sex).coarsened()
    drawn, _ = model.sample(20_000, np.random.default_rng(1))
    newborn = drawn[drawn < 1]
    assert abs(len(newborn) / len(drawn) - 0.1) < 0.01
    assert newborn.max() < 7 / 365.25 + 1e-6  # within the first week bin


def test_sampled_marginals_match_fit(fitted) -> None:
    model, age, sex = fitted
    rng = np.random.default_rng(123)
    s_age, s_sex = model.sample(40_000, rng)
    assert s_age.dtype == np.float32 and s_sex.dtype == np.int8 and s_age.shape == (40_000,)

    # joint cells: chi-square goodness of fit against the fitted probabilities
    fit_again = DemographicsModel.fit(s_age, s_sex)
    observed = fit_again.counts.ravel()
    expected = model.probabilities.ravel() * len(s_age)
    keep = expected > 5
    chi2 = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
    assert chi2.pvalue > 1e-3
    # sex marginal within 4 standard errors; age marginal close to the continuous source (KS)
    p_f = model.probabilities[1].sum()
    assert abs(s_sex.mean() - p_f) < 4 * np.sqrt(p_f * (1 - p_f) / len(s_sex))
    assert stats.ks_2samp(s_age, age).statistic < 0.015
    # the clamp value stays exact, nothing falls between 89 and 90
    assert np.mean(s_age == 90.0) == pytest.approx(model.probabilities[:, -1].sum(), abs=0.004)
    assert not np.any((s_age > 89) & (s_age < 90))
    assert s_age.min() >= 0


def test_conditional_sampling(fitted) -> None:
    model, age, sex = fitted
    rng = np.random.default_rng(7)
    # P(age | sex): men older than women, as fitted
    age_m, sex_m = model.sample(20_000, rng, sex=np.zeros(20_000, np.int8))
    age_f, _ = model.sample(20_000, rng, sex=np.ones(20_000, np.int8))
    assert (sex_m == 0).all()
    assert age_m.mean() == pytest.approx(age[sex == 0].mean(), abs=0.5)
    assert age_f.mean() == pytest.approx(age[sex == 1].mean(), abs=0.5)
    # P(sex | age bin)
    ages = np.full(20_000, 30.5, np.float32)
    kept, drawn = model.sample(20_000, rng, age=ages)
    assert (kept == ages).all()
    cell = model.counts[:, int(np.searchsorted(model.edges, 30.5, side="right")) - 1]
    assert drawn.mean() == pytest.approx(cell[1] / cell.sum(), abs=0.02)


def test_serialise_through_weights_only_checkpoint(fitted, tmp_path: Path) -> None:
    model = fitted[0]
    state = model.to_dict()
    assert all(isinstance(x, float) for x in state["edges"])
    assert all(isinstance(x, int) for row in state["counts"] for x in row)
    torch.save({"demographics": state}, tmp_path / "ckpt.pt")
    loaded = DemographicsModel.from_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["demographics"])
    a = model.sample(100, np.random.default_rng(1))
    b = loaded.sample(100, np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(InputError, match="edges"):
        DemographicsModel.from_dict({"edges": [3, 1], "counts": [[1, 1], [1, 1]]})
    with pytest.raises(InputError, match="counts"):
        DemographicsModel.from_dict({"edges": [0, 1], "counts": [[1, 1, 1]]})
    with pytest.raises(InputError, match="must be a dict"):
        DemographicsModel.from_dict({"edges": [0, 1]})


def test_fit_on_demo_train_split(demo_cohort: Path) -> None:
    cohort = Cohort(demo_cohort)
    train = cohort.read("train")
    model = DemographicsModel.from_cohort(cohort)
    assert model.counts.sum() == train.height
    assert model.counts.sum(axis=1).tolist() == [int((train["sex"] == s).sum()) for s in (0, 1)]
    assert model.counts[:, -1].sum() == int((train["age"] == 90).sum())


# ----------------------------------------------------------------------------- requests


def test_fixed_request() -> None:
    for sex, code in (("F", 1), ("f", 1), ("m", 0), (0, 0), (1, 1), ("1", 1), (" M ", 0)):
        age, got = requested_demographics(3, age=70, sex=sex)
        assert age.tolist() == [70.0] * 3 and age.dtype == np.float32
        assert got.tolist() == [code] * 3 and got.dtype == np.int8
    assert requested_demographics(2, age=95.5, sex="F")[0].tolist() == [90.0, 90.0]  # clamp, as in cohorts


def test_partial_request_draws_the_rest(fitted) -> None:
    model, real_age, real_sex = fitted
    rng = np.random.default_rng(0)
    age, sex = requested_demographics(5000, sex="M", model=model, rng=rng)
    assert (sex == 0).all() and age.mean() == pytest.approx(real_age[real_sex == 0].mean(), abs=1)
    age, sex = requested_demographics(5000, age=70, model=model, rng=rng)
    assert (age == 70).all() and 0 < sex.mean() < 1
    age, sex = requested_demographics(5000, model=model, rng=rng)
    assert sex.mean() == pytest.approx(real_sex.mean(), abs=0.03)
    with pytest.raises(InputError, match="sex not given and no demographics model"):
        requested_demographics(5, age=70)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"age": "seventy", "sex": "F"}, "age 'seventy', expected a number"),
        ({"age": -1, "sex": "F"}, "age '-1', expected 0 to 120"),
        ({"age": 121, "sex": "F"}, "age '121', expected 0 to 120"),
        ({"age": 50, "sex": "X"}, "sex 'X', expected M, F, 0 or 1"),
        ({"age": 50, "sex": 2}, "sex '2'"),
    ],
)
def test_fixed_request_errors(kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        requested_demographics(3, **kwargs)


def test_n_patients_must_be_positive() -> None:
    for n in (0, -2):
        with pytest.raises(InputError, match="n_patients must be > 0"):
            requested_demographics(n, age=50, sex="M")
    with pytest.raises(InputError, match="n_patients is not set"):
        requested_demographics(None, age=50, sex="M")


def test_csv_request(tmp_path: Path) -> None:
    path = tmp_path / "req.csv"
    path.write_text("Age, Sex ,n,comment\n70,F,3,x\n45.5,m,1,\n0,1,2,newborns\n")
    age, sex = requested_demographics(None, csv=path)
    assert age.tolist() == [70, 70, 70, 45.5, 0, 0] and sex.tolist() == [1, 1, 1, 0, 1, 1]
    assert requested_demographics(6, csv=path)[0].shape == (6,)
    with pytest.raises(InputError, match=r"n_patients=5 but .*req\.csv asks for 6"):
        requested_demographics(5, csv=path)
    path.write_text("age,sex\n30,M\n40,F\n")
    assert requested_demographics(None, csv=path)[1].tolist() == [0, 1]
    with pytest.raises(InputError, match="not both"):
        requested_demographics(None, csv=path, age=3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age,sex\n30,M\nabc,F\n", r"req\.csv line 3: age 'abc', expected a number"),
        ("age,sex\n30,M\n40,F\n130,M\n", r"req\.csv line 4: age '130', expected 0 to 120"),
        ("age,sex\n-0.5,M\n", r"req\.csv line 2: age '-0.5'"),
        ("age,sex\n30,M\n40,Q\n", r"req\.csv line 3: sex 'Q', expected M, F, 0 or 1"),
        ("age,sex\n30,\n", r"req\.csv line 2: sex None"),
        ("age,sex,n\n30,M,2\n40,F,0\n", r"req\.csv line 3: n '0', expected a positive whole number"),
        ("age,sex,n\n30,M,two\n", r"req\.csv line 2: n 'two'"),
        (
            "age,gender\n30,M\n",
            r"req\.csv: missing column\(s\) sex; expected age,sex\[,n\], found age, gender",
        ),
        ("age,sex\n", r"req\.csv: no rows"),
        ("", r"req\.csv: missing column\(s\) age, sex"),
    ],
)
def test_csv_request_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "req.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        requested_demographics(None, csv=path)


def test_csv_request_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        requested_demographics(None, csv=tmp_path / "nope.csv")
