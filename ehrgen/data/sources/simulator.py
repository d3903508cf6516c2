"""Built-in EHR simulator: writes a realistic MIMIC-III v1.4-format raw dataset of any size.

The files go through ehrgen's own mimic3 reader (:class:`SimulatedSource`), so the simulator
exercises the real ingestion path. The generative story, per patient:

1. Demographics: 8% newborns (NICU births, one admission); adults aged 16-89 from a
   Beta skewed to 50-85, plus 3.5% aged over 89; 56% male. A latent frailty z ~ N(0, 1) raises
   the odds of every condition, the number of admissions and the codes per admission.
2. Chronic conditions (diabetes, hypertension, CKD, CAD, heart failure, AF, COPD, cirrhosis,
   cancers, dementia, ... and newborn prematurity/jaundice) are drawn once per patient, in an
   order that lets earlier ones raise later ones (diabetes -> CKD -> heart failure). Each picks
   its codes once for the patient; every admission re-codes each with probability ``persist``.
3. Admissions: 1 + a negative-binomial count (mean ~1.3 overall, heavy tail, at most 42),
   ordered in time from a first admission uniform in 2100-2195 (MIMIC's shifted calendar),
   log-normal stays and gaps of weeks to years; frail patients and those with cancer, heart,
   liver or kidney failure, COPD, a transplant, ... come back sooner (``GAP_EFFECTS``).
4. Acute conditions (sepsis + AKI + shock, pneumonia, MI, GI bleed, stroke, falls, delivery, ...)
   are drawn per admission from age, sex, frailty and the chronic conditions; they give the
   principal diagnosis and drive in-hospital death.
5. A Zipf-distributed background over the unrestricted codes adds the long tail.
6. Codes never break :data:`ehrgen.data.rules.VALIDITY_RULES` (sex/age-restricted codes come only
   from conditions gated on sex and age; a final filter enforces the rules); duplicates within
   an admission are dropped and at most 39 codes are kept, principal diagnosis first.
7. When asked for (``event_types``), procedures (PROCEDURES_ICD, ICD-9-CM volume 3) and
   prescriptions (PRESCRIPTIONS, MIMIC-III drug names) follow from the same latent conditions
   (sepsis -> vasopressors and antibiotics, MI -> catheterisation and stents, diabetes -> insulin)
   plus an adult in-hospital background; :mod:`ehrgen.data.sources.simulator_events` holds them.
   They are drawn from their own random stream, so the diagnoses do not change with them.

As in MIMIC-III, dates are shifted into the future and patients older than 89 have their date of
birth set exactly 300 years before their first admission. The clinical world (codes, titles,
conditions) lives in :mod:`ehrgen.data.sources.simulator_codes`.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from scipy.special import expit, logit

from ehrgen.data.codes import DIAGNOSIS, MEDICATION, PROCEDURE
from ehrgen.data.rules import VALIDITY_RULES, rule_membership
from ehrgen.data.sources.base import SourceTables, check_event_types
from ehrgen.data.sources.simulator_codes import CODE_TABLE, CONDITIONS, GAP_EFFECTS
from ehrgen.data.sources.simulator_events import (
    BACKGROUND_MEDICATIONS,
    BACKGROUND_PROCEDURES,
    CONDITION_EVENTS,
    DRUG_TABLE,
    HOME_MEDICINE_PERSIST,
    ORDERS_PER_MEDICINE,
    PROCEDURE_TABLE,
)
from ehrgen.errors import InputError

# Bump whenever the output for a given (n_patients, seed) changes: it is part of the cache key.
SIMULATOR_VERSION = 2  # 2: chronic conditions shorten the gap to the next admission
CHUNK_PATIENTS = 50_000  # patients generated (and written) at a time; part of the output contract
MAX_CODES_PER_VISIT = 39  # as in MIMIC-III
MAX_VISITS = 42

P_NEWBORN = 0.08
P_FEMALE_NEWBORN, P_FEMALE_ADULT = 0.47, 0.44
P_OVER_89 = 0.035
EXTRA_VISITS_MEAN = 0.326  # adults: 0.92 * (1 + 0.326) + 0.08 = 1.3 admissions per patient
EXTRA_VISITS_SHAPE = 0.3  # negative-binomial r: small r, heavy tail
BACKGROUND_CODES_MEAN = 1.1  # Zipf tail codes per adult admission
ZIPF_EXPONENT, ZIPF_OFFSET = 1.2, 40.0  # Zipf-Mandelbrot: no single background code dominates

DAY = 86_400
YEAR = 365.25 * DAY
T_2100 = 4_102_444_800  # 2100-01-01 00:00:00 UTC in Unix seconds
SHIFT_YEARS = 300

TABLES = ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD", "D_ICD_DIAGNOSES")
TYPED_TABLES = {
    PROCEDURE: ("PROCEDURES_ICD", "D_ICD_PROCEDURES"),
    MEDICATION: ("PRESCRIPTIONS",),
}  # when asked
# PRESCRIPTIONS columns taken from DRUG_TABLE, by its column order ("" : the table's own key)
DRUG_COLUMNS = ("", "DRUG", "DRUG_TYPE", "PROD_STRENGTH", "DOSE_VAL_RX", "DOSE_UNIT_RX", "ROUTE")

# ----------------------------------------------------------------------------- the compiled world


@dataclass(frozen=True)
class _Groups:
    """Emission groups of several conditions, flattened (see ``simulator_codes``)."""

    group_start: np.ndarray  # [n_conditions + 1]
    group_prob: np.ndarray
    group_principal: np.ndarray
    entry_bound: np.ndarray  # group index + cumulative weight, sorted: searchsorted picks an item
    entry_code: np.ndarray
    entry_cond: np.ndarray


@dataclass(frozen=True)
class _Scope:
    """The chronic or the acute conditions as arrays (one entry per condition)."""

    names: list[str]
    labels: list[str]
    logit0: np.ndarray
    age: np.ndarray
    female: np.ndarray
    frailty: np.ndarray
    sex: np.ndarray  # -1: any
    min_age: np.ndarray
    max_age: np.ndarray
    after: np.ndarray  # [n_conditions, n_chronic] log-odds boosts from chronic conditions
    persist: np.ndarray
    mortality: np.ndarray
    los: np.ndarray
    gap: np.ndarray  # log gap to the next admission added while present (chronic)
    elective: np.ndarray
    dx: _Groups  # diagnoses
    px: _Groups  # procedures
    rx: _Groups  # medications (DRUG_TABLE rows)


@dataclass(frozen=True)
class _World:
    codes: list[str]
    short_titles: list[str]
    long_titles: list[str]
    chronic: _Scope
    acute: _Scope
    background_code: np.ndarray  # Zipf pool
    background_cum: np.ndarray
    rule_cover: np.ndarray  # [n_rules, n_codes]
    is_ev: np.ndarray  # E and V codes (supplementary, coded late)
    fallback_code: np.ndarray  # codes for an admission that would otherwise have none
    labels: pa.Array  # chronic labels, acute labels, then generic labels
    procedures: list[list[str]]  # PROCEDURE_TABLE rows: code, short title, long title
    drugs: list[list[str]]  # DRUG_TABLE rows: key, DRUG, DRUG_TYPE, strength, dose, unit, route
    background_px: _Groups  # one pseudo-condition: any adult admission
    background_rx: _Groups


GENERIC_LABELS = ("FEVER", "ABDOMINAL PAIN", "CHEST PAIN", "SHORTNESS OF BREATH", "ALTERED MENTAL STATUS",
                  "WEAKNESS", "SYNCOPE", "HYPOTENSION")  # fmt: skip


def _parse_groups(
    spec: str, index: dict[str, int], where: str
) -> list[tuple[float, bool, list[int], list[float]]]:
    groups = []
    for line in spec.strip().splitlines():
        head, *items = line.split()
        principal = head.startswith("!")
        prob = float(head.lstrip("!"))
        codes, weights = [], []
        for item in items:
            code, _, weight = item.partition(":")
            if code not in index:
                raise ValueError(f"simulator: {where} uses {code}, which is not in its code or drug table")
            codes.append(index[code])
            weights.append(float(weight or 1))
        groups.append((prob, principal, codes, weights))
    return groups


def _compile_groups(specs: list[str], index: dict[str, int], where: list[str]) -> _Groups:
    """One condition per spec (``where`` names them in errors)."""
    group_start, probs, principal, bounds, entry_codes, entry_conds = [0], [], [], [], [], []
    for i, (spec, name) in enumerate(zip(specs, where, strict=True)):
        for prob, is_principal, codes, weights in _parse_groups(spec, index, name):
            g = len(probs)
            probs.append(prob)
            principal.append(is_principal)
            cum = np.cumsum(weights) / np.sum(weights)
            cum[-1] = 1.0
            bounds.extend(g + cum)
            entry_codes.extend(codes)
            entry_conds.extend([i] * len(codes))
        group_start.append(len(probs))
    return _Groups(
        group_start=np.array(group_start),
        group_prob=np.array(probs, dtype=np.float64),
        group_principal=np.array(principal, dtype=bool),
        entry_bound=np.array(bounds, dtype=np.float64),
        entry_code=np.array(entry_codes, dtype=np.int64),
        entry_cond=np.array(entry_conds, dtype=np.int64),
    )


def _compile_scope(
    conditions: list, chronic_names: list[str], index: dict[str, int], px_index: dict[str, int],
    rx_index: dict[str, int],
) -> _Scope:  # fmt: skip
    n, n_chronic = len(conditions), len(chronic_names)
    after = np.zeros((n, n_chronic))
    for i, cond in enumerate(conditions):
        for name, boost in cond.after.items():
            j = chronic_names.index(name)  # ValueError names an unknown condition
            if cond.scope == "chronic" and j >= i:
                raise ValueError(f"simulator_codes: {cond.name} is raised by later condition {name}")
            after[i, j] = boost
    names = [c.name for c in conditions]
    treatments = [CONDITION_EVENTS.get(name, ("", "")) for name in names]

    def arr(attr: str) -> np.ndarray:
        return np.array([float(getattr(c, attr)) for c in conditions])

    return _Scope(
        names=names,
        labels=[c.label or c.name.replace("_", " ").upper() for c in conditions],
        logit0=logit(np.clip(arr("rate"), 1e-6, 1 - 1e-6)),
        age=arr("age"),
        female=arr("female"),
        frailty=arr("frailty"),
        sex=np.array([-1 if c.sex is None else c.sex for c in conditions]),
        min_age=arr("min_age"),
        max_age=arr("max_age"),
        after=after,
        persist=arr("persist"),
        mortality=arr("mortality"),
        los=arr("los"),
        gap=np.array([GAP_EFFECTS.get(c.name, 0.0) for c in conditions]),
        elective=arr("elective"),
        dx=_compile_groups([c.codes for c in conditions], index, names),
        px=_compile_groups([t[0] for t in treatments], px_index, names),
        rx=_compile_groups([t[1] for t in treatments], rx_index, names),
    )


@functools.cache
def _world() -> _World:
    rows = [line.split("|") for line in CODE_TABLE.strip().splitlines()]
    codes = [r[0] for r in rows]
    index = {c: i for i, c in enumerate(codes)}
    if len(index) != len(codes):
        raise ValueError("simulator_codes: duplicate code in CODE_TABLE")
    chronic = [c for c in CONDITIONS if c.scope == "chronic"]
    acute = [c for c in CONDITIONS if c.scope == "acute"]
    chronic_names = [c.name for c in chronic]
    unknown = set(CONDITION_EVENTS) - {c.name for c in CONDITIONS}
    if unknown:
        raise ValueError(f"simulator_events: treatments for unknown conditions {sorted(unknown)}")
    procedures = [line.split("|") for line in PROCEDURE_TABLE.strip().splitlines()]
    drugs = [line.split("|") for line in DRUG_TABLE.strip().splitlines()]
    px_index = {r[0]: i for i, r in enumerate(procedures)}
    rx_index = {r[0]: i for i, r in enumerate(drugs)}
    chronic_scope = _compile_scope(chronic, chronic_names, index, px_index, rx_index)
    acute_scope = _compile_scope(acute, chronic_names, index, px_index, rx_index)

    cover = rule_membership(codes, VALIDITY_RULES)
    # The background tail holds no restricted code: those come only from sex/age-gated conditions.
    gated = set()
    for scope, conds in ((chronic_scope, chronic), (acute_scope, acute)):
        restricted = [i for i, c in enumerate(conds) if c.restricted]
        gated.update(scope.dx.entry_code[np.isin(scope.dx.entry_cond, restricted)].tolist())
    pool = np.array([i for i in range(len(codes)) if not cover[:, i].any() and i not in gated])
    # A fixed pseudo-random rank per code (independent of the seed: the world is the same for all).
    rank = np.random.default_rng(20240601).permutation(len(pool))
    weights = 1.0 / (rank + ZIPF_OFFSET) ** ZIPF_EXPONENT
    fallback = np.array([index[c] for c in ("78650", "7802", "78097", "78060", "4589", "78900")])
    return _World(
        codes=codes,
        short_titles=[r[1] for r in rows],
        long_titles=[r[2] for r in rows],
        chronic=chronic_scope,
        acute=acute_scope,
        background_code=pool,
        background_cum=np.cumsum(weights) / weights.sum(),
        rule_cover=cover,
        is_ev=np.array([c[0] in "EV" for c in codes]),
        fallback_code=fallback,
        labels=pa.array(chronic_scope.labels + acute_scope.labels + list(GENERIC_LABELS)),
        procedures=procedures,
        drugs=drugs,
        background_px=_compile_groups([BACKGROUND_PROCEDURES], px_index, ["background procedures"]),
        background_rx=_compile_groups([BACKGROUND_MEDICATIONS], rx_index, ["background medications"]),
    )


# ----------------------------------------------------------------------------- sampling helpers


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ragged ``counts``: the owner of each element and its position within its owner."""
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(owner.size) - starts[owner]


def _choice_rows(rng: np.random.Generator, probs: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Categorical draw per element from ``probs[row]`` (rows of a probability table)."""
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    u = rng.random(row.size)
    return np.minimum((u[:, None] >= cum[row]).sum(axis=1), probs.shape[1] - 1)


def _choice(rng: np.random.Generator, probs: list[float], n: int) -> np.ndarray:
    return _choice_rows(rng, np.array([probs], dtype=np.float64), np.zeros(n, dtype=np.int64))


def _emit(
    rng: np.random.Generator, groups: _Groups, owner: np.ndarray, cond: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Items emitted by active ``(owner, cond)`` pairs: (owner, item, cond, principal) per item."""
    start = groups.group_start[cond]
    which, pos = _expand(groups.group_start[cond + 1] - start)
    group = start[which] + pos
    keep = rng.random(group.size) < groups.group_prob[group]
    which, group = which[keep], group[keep]
    entry = np.searchsorted(groups.entry_bound, group + rng.random(group.size), side="right")
    return owner[which], groups.entry_code[entry], cond[which], groups.group_principal[group]


def _gate(scope: _Scope, sex: np.ndarray, age: np.ndarray) -> np.ndarray:
    """[n, n_conditions]: where each condition is possible for these sexes and ages."""
    ok = (age[:, None] >= scope.min_age) & (age[:, None] < scope.max_age)
    return ok & ((scope.sex < 0) | (sex[:, None] == scope.sex))


def _logits(scope: _Scope, age: np.ndarray, female: np.ndarray, frailty: np.ndarray) -> np.ndarray:
    return (
        scope.logit0
        + np.outer((age - 65.0) / 10.0, scope.age)
        + np.outer(female, scope.female)
        + np.outer(frailty, scope.frailty)
    )


def _shift_years(seconds: np.ndarray, years: int) -> np.ndarray:
    """Midnight of the same calendar day ``years`` earlier (29 Feb -> 28 Feb), in Unix seconds."""
    day = (seconds // DAY).astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    dom = (day - month).astype(np.int64)  # 0-based day of month
    target = month - np.timedelta64(12 * years, "M")
    days_in_month = (target + np.timedelta64(1, "M")).astype("datetime64[D]") - target.astype("datetime64[D]")
    dom = np.minimum(dom, days_in_month.astype(np.int64) - 1)
    return (target.astype("datetime64[D]").astype(np.int64) + dom) * DAY


# ----------------------------------------------------------------------------- one chunk


def _chunk(rng: np.random.Generator, n: int, world: _World) -> dict[str, dict[str, np.ndarray]]:
    """Generate ``n`` patients: column arrays for PATIENTS, ADMISSIONS and DIAGNOSES_ICD (local ids)."""
    ch, ac = world.chronic, world.acute
    # -- demographics
    newborn = rng.random(n) < P_NEWBORN
    female = (rng.random(n) < np.where(newborn, P_FEMALE_NEWBORN, P_FEMALE_ADULT)).astype(np.int8)
    frailty = rng.standard_normal(n)
    over_89 = ~newborn & (rng.random(n) < P_OVER_89)
    adult_age = 16.0 + 73.5 * rng.beta(3.0, 1.6, n)
    old_age = 90.0 + np.minimum(rng.exponential(2.5, n), 14.0)
    age = np.where(newborn, 0.0, np.where(over_89, old_age, adult_age))

    # -- chronic conditions, in order, each raised by the earlier ones
    lp = _logits(ch, age, female, frailty).T.copy()  # [n_chronic, n]: rows are contiguous
    u = rng.random(lp.shape)
    ok = _gate(ch, female, age).T
    present_t = np.zeros(lp.shape, dtype=bool)
    for j in range(len(ch.names)):
        for k in np.flatnonzero(ch.after[j]):
            lp[j] += ch.after[j, k] * present_t[k]
        present_t[j] = ok[j] & (u[j] < expit(lp[j]))
    present = present_t.T
    present_f = present.astype(np.float64)

    # -- admissions and their timeline
    n_extra = rng.negative_binomial(
        EXTRA_VISITS_SHAPE,
        EXTRA_VISITS_SHAPE / (EXTRA_VISITS_SHAPE + EXTRA_VISITS_MEAN * np.exp(0.5 * frailty - 0.125)),
    )
    n_visits = np.where(newborn, 1, 1 + np.minimum(n_extra, MAX_VISITS - 1))
    pv, k = _expand(n_visits)  # patient and index of each visit
    nv = pv.size
    visit_start = np.cumsum(n_visits) - n_visits
    last = k == n_visits[pv] - 1
    log_los = np.where(newborn[pv], np.log(2.5), np.log(4.5) + 0.25 * frailty[pv])
    log_los += (present_f @ ch.los)[pv] + rng.normal(0.0, 0.7, nv)
    los = np.round(np.clip(np.exp(log_los), 0.05, 250.0) * 1440) * 60  # seconds, whole minutes
    log_gap = np.log(150.0) - 0.3 * frailty[pv] + (present_f @ ch.gap)[pv] + rng.normal(0.0, 1.4, nv)
    gap = np.round(np.exp(log_gap) * 1440) * 60
    gap = np.maximum(gap, DAY)
    step = np.where(last, 0, los + gap)
    offset = np.cumsum(step) - step
    offset -= offset[visit_start][pv]
    t0 = T_2100 + rng.integers(0, 95 * 365 * 1440, n) * 60
    admit = (t0[pv] + offset).astype(np.int64)
    disch = (admit + los).astype(np.int64)
    age_v = age[pv] + offset / YEAR

    # -- acute conditions per admission
    # Everything but age is per patient; sex and age gates become -inf log-odds.
    per_patient = (_logits(ac, np.full(n, 65.0), female, frailty) + present_f @ ac.after.T).astype(np.float32)
    per_patient[(ac.sex >= 0) & (female[:, None] != ac.sex)] = -np.inf
    lp = per_patient[pv]
    lp += np.outer((age_v - 65.0) / 10.0, ac.age).astype(np.float32)
    lp[(age_v[:, None] < ac.min_age) | (age_v[:, None] >= ac.max_age)] = -np.inf
    active = rng.random(lp.shape, dtype=np.float32) < expit(lp)

    # -- codes: chronic (fixed per patient, re-coded per visit), acute, background
    pp, cc = np.nonzero(present)
    c_owner, c_code, c_cond, c_principal = _emit(rng, ch.dx, pp, cc)
    which, pos = _expand(n_visits[c_owner])
    keep = rng.random(which.size) < ch.persist[c_cond[which]]
    which = which[keep]
    chronic_visit = visit_start[c_owner[which]] + pos[keep]
    vv, aa = np.nonzero(active)
    a_visit, a_code, a_cond, a_principal = _emit(rng, ac.dx, vv, aa)
    n_bg = np.where(newborn[pv], 0, rng.poisson(BACKGROUND_CODES_MEAN * np.exp(0.3 * frailty[pv] - 0.045)))
    bg_visit = np.repeat(np.arange(nv), n_bg)
    bg_code = world.background_code[
        np.searchsorted(world.background_cum, rng.random(bg_visit.size), side="right")
    ]

    n_c, n_a = len(ch.names), len(ac.names)
    visit = np.concatenate([chronic_visit, a_visit, bg_visit])
    code = np.concatenate([c_code[which], a_code, bg_code])
    source = np.concatenate([c_cond[which], n_c + a_cond, np.full(bg_visit.size, n_c + n_a)])
    # Coding order: acute principal, chronic principal, other acute, background, other chronic;
    # supplementary E/V codes late.
    prio = np.concatenate([
        np.where(c_principal[which], 1.0, 3.0),
        np.where(a_principal, 0.0, 2.0),
        np.full(bg_visit.size, 2.0),
    ])  # fmt: skip
    principal = np.concatenate([c_principal[which], a_principal, np.zeros(bg_visit.size, dtype=bool)])
    prio += rng.random(prio.size) * np.where(source == n_c + n_a, 2.0, 1.0)
    prio += np.where(world.is_ev[code] & ~principal, 1.5, 0.0)

    # -- the validity rules, on the ages the reader will compute (over-89s read as ~300)
    shifted = ~newborn & (age + (admit[visit_start + n_visits - 1] - t0) / YEAR >= 90.0)
    rec_age = np.where(shifted, float(SHIFT_YEARS), age)
    ok = np.stack([
        r.allows(female[pv], rec_age[pv]) & r.allows(female[pv], rec_age[pv] + offset / YEAR) for r in VALIDITY_RULES
    ])  # fmt: skip
    bad = (world.rule_cover[:, code] & ~ok[:, visit]).any(axis=0)
    visit, code, source, prio = visit[~bad], code[~bad], source[~bad], prio[~bad]
    empty = np.flatnonzero(np.bincount(visit, minlength=nv) == 0)
    if empty.size:
        visit = np.concatenate([visit, empty])
        code = np.concatenate(
            [code, world.fallback_code[rng.integers(0, world.fallback_code.size, empty.size)]]
        )
        source = np.concatenate([source, np.full(empty.size, n_c + n_a)])
        prio = np.concatenate([prio, np.zeros(empty.size)])

    # -- one code once per visit (its earliest position), principal first, at most 39
    q = np.minimum(prio * (1 << 17), (1 << 20) - 1).astype(np.int64)
    order = np.argsort((visit.astype(np.int64) << 32) | (q << 12) | code, kind="stable")
    visit, code, source = visit[order], code[order], source[order]
    _, first = np.unique((visit.astype(np.int64) << 12) | code, return_index=True)
    first.sort()
    visit, code, source = visit[first], code[first], source[first]
    counts = np.bincount(visit, minlength=nv)
    seq = np.arange(visit.size) - (np.cumsum(counts) - counts)[visit] + 1
    keep = seq <= MAX_CODES_PER_VISIT
    visit, code, source, seq = visit[keep], code[keep], source[keep], seq[keep]
    principal_source = source[seq == 1]  # every visit has exactly one first code
    generic = principal_source == n_c + n_a
    label = np.where(generic, n_c + n_a + rng.integers(0, len(GENERIC_LABELS), nv), principal_source)

    # -- outcomes
    mort = np.where(newborn[pv], -5.5, -4.3 + 0.3 * (age_v - 65.0) / 10.0 + 0.5 * frailty[pv])
    fatal = np.flatnonzero(ac.mortality)
    mort += (present_f @ ch.mortality)[pv] + active[:, fatal] @ ac.mortality[fatal]
    died = last & (rng.random(nv) < expit(mort))
    died_p = np.zeros(n, dtype=bool)
    died_p[pv[died]] = True
    later = ~died_p & (
        rng.random(n) < expit(np.where(newborn, -6.0, -1.8 + 0.5 * (age - 65.0) / 10.0 + 0.5 * frailty))
    )
    last_disch = disch[visit_start + n_visits - 1]
    dod_later = last_disch + (np.exp(np.log(400.0) + rng.normal(0.0, 1.2, n)) * DAY).astype(np.int64) + DAY
    dod = np.where(died_p, last_disch, dod_later) // DAY * DAY
    has_dod = died_p | later
    ssn = has_dod & (~died_p | (rng.random(n) < 0.75))

    first_day = t0 // DAY * DAY
    dob = np.where(
        newborn, first_day, np.where(shifted, _shift_years(t0, SHIFT_YEARS), (t0 - age * YEAR) // DAY * DAY)
    )
    planned = np.flatnonzero(ac.elective)
    elective = rng.random(nv) < np.maximum(
        0.05, (active[:, planned] * ac.elective[planned]).max(axis=1, initial=0.0)
    )
    adm_type = np.where(newborn[pv], 3, np.where(elective, 1, np.where(rng.random(nv) < 0.035, 2, 0)))
    return {
        "patients": {
            "female": female, "dob": dob, "dod": np.where(has_dod, dod, -1),
            "dod_hosp": np.where(died_p, dod, -1), "dod_ssn": np.where(ssn, dod, -1),
            "newborn": newborn, "age": age,
        },
        "admissions": {
            "patient": pv, "admit": admit, "disch": disch, "died": died, "type": adm_type,
            "age": age_v, "label": label,
        },
        "diagnoses": {"visit": visit, "seq": seq, "code": code},
        "latent": {"present": present, "active": active},
    }  # fmt: skip


def _chunk_events(rng: np.random.Generator, chunk: dict, world: _World) -> dict[str, dict[str, np.ndarray]]:
    """Procedures and prescriptions of a chunk's admissions, from its latent conditions.

    Drawn with their own ``rng`` after the diagnoses, so a chunk's diagnoses are the same whether
    or not its procedures and medications are written.
    """
    ch, ac = world.chronic, world.acute
    p, a, latent = chunk["patients"], chunk["admissions"], chunk["latent"]
    pv = a["patient"]
    nv = pv.size
    n_visits = np.bincount(pv, minlength=p["female"].size)
    visit_start = np.cumsum(n_visits) - n_visits
    adult = np.flatnonzero(~p["newborn"][pv])
    chronic_visit, chronic_cond = np.nonzero(latent["present"][pv])
    acute_visit, acute_cond = np.nonzero(latent["active"])

    # -- procedures: every (visit, condition) pair draws afresh; principal first, then at random
    parts = [
        _emit(rng, ch.px, chronic_visit, chronic_cond),
        _emit(rng, ac.px, acute_visit, acute_cond),
        _emit(rng, world.background_px, adult, np.zeros(adult.size, dtype=np.int64)),
    ]
    px_visit = np.concatenate([q[0] for q in parts])
    px_code = np.concatenate([q[1] for q in parts])
    px_principal = np.concatenate([q[3] for q in parts])
    prio = np.where(px_principal, 0.0, 1.0) + rng.random(px_visit.size)
    px_visit, px_code = _first_per_visit(px_visit, px_code, prio)
    counts = np.bincount(px_visit, minlength=nv)
    px_seq = np.arange(px_visit.size) - (np.cumsum(counts) - counts)[px_visit] + 1

    # -- medications: home medicines chosen once per patient, kept at each visit with a chance
    pp, cc = np.nonzero(latent["present"])
    home_owner, home_drug, _, _ = _emit(rng, ch.rx, pp, cc)
    which, pos = _expand(n_visits[home_owner])
    keep = rng.random(which.size) < HOME_MEDICINE_PERSIST
    home_visit = visit_start[home_owner[which[keep]]] + pos[keep]
    acute_rx = _emit(rng, ac.rx, acute_visit, acute_cond)
    background_rx = _emit(rng, world.background_rx, adult, np.zeros(adult.size, dtype=np.int64))
    rx_visit = np.concatenate([home_visit, acute_rx[0], background_rx[0]])
    rx_drug = np.concatenate([home_drug[which[keep]], acute_rx[1], background_rx[1]])
    rx_visit, rx_drug = _first_per_visit(rx_visit, rx_drug, rng.random(rx_visit.size))
    # Each medicine is ordered one or more times during the stay, each order from a day of it.
    orders = 1 + rng.poisson(ORDERS_PER_MEDICINE, rx_visit.size)
    rx_visit, rx_drug = np.repeat(rx_visit, orders), np.repeat(rx_drug, orders)
    stay_days = np.maximum((a["disch"] - a["admit"]) // DAY, 0)[rx_visit]
    start = (
        a["admit"][rx_visit] // DAY * DAY
        + (rng.random(rx_visit.size) * (stay_days + 1)).astype(np.int64) * DAY
    )
    end = start + rng.integers(1, 4, rx_visit.size) * DAY
    order = np.lexsort((rng.random(rx_visit.size), start, rx_visit))
    return {
        "procedures": {"visit": px_visit, "seq": px_seq, "code": px_code},
        "prescriptions": {"visit": rx_visit[order], "drug": rx_drug[order], "start": start[order], "end": end[order]},
    }  # fmt: skip


def _first_per_visit(visit: np.ndarray, item: np.ndarray, prio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each ``(visit, item)`` once, at its lowest ``prio``; sorted by visit, then ``prio``."""
    order = np.lexsort((prio, visit))
    visit, item = visit[order], item[order]
    _, first = np.unique((visit.astype(np.int64) << 20) | item, return_index=True)
    first.sort()
    return visit[first], item[first]


# ----------------------------------------------------------------------------- CSV columns

# fmt: off
# Value lists (and their probabilities) of the minor columns, as they appear in MIMIC-III v1.4.
ADMISSION_TYPES = ["EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"]
ADMISSION_LOCATIONS = ["EMERGENCY ROOM ADMIT", "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL/PREMATURE",
                       "PHYS REFERRAL/NORMAL DELI", "TRANSFER FROM SKILLED NUR", "TRANSFER FROM OTHER HEALT"]
ADMISSION_LOCATION_P = [[0.62, 0.22, 0.13, 0.0, 0.02, 0.01],  # by ADMISSION_TYPES
                        [0.0, 0.05, 0.03, 0.92, 0.0, 0.0],
                        [0.1, 0.55, 0.15, 0.2, 0.0, 0.0],
                        [0.0, 0.02, 0.45, 0.53, 0.0, 0.0]]
DISCHARGE_LOCATIONS = ["HOME", "HOME HEALTH CARE", "SNF", "REHAB/DISTINCT PART HOSP", "LONG TERM CARE HOSPITAL",
                       "SHORT TERM HOSPITAL", "HOSPICE-HOME", "LEFT AGAINST MEDICAL ADVI",
                       "DISC-TRAN CANCER/CHLDRN H", "ICF", "DISCH-TRAN TO PSYCH HOSP", "HOME WITH HOME IV PROVIDR",
                       "DEAD/EXPIRED"]
DISCHARGE_LOCATION_P = [[0.45, 0.2, 0.08, 0.08, 0.03, 0.04, 0.01, 0.04, 0.02, 0.0, 0.03, 0.02, 0.0],  # < 65
                        [0.2, 0.25, 0.28, 0.12, 0.05, 0.02, 0.03, 0.01, 0.0, 0.01, 0.0, 0.03, 0.0],  # >= 65
                        [0.8, 0.05, 0.0, 0.0, 0.0, 0.05, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]]  # newborn
INSURANCES = ["Medicare", "Private", "Medicaid", "Government", "Self Pay"]
INSURANCE_P = [[0.1, 0.55, 0.25, 0.05, 0.05], [0.88, 0.09, 0.02, 0.01, 0.0], [0.0, 0.7, 0.28, 0.01, 0.01]]
LANGUAGES = ["ENGL", None, "SPAN", "RUSS", "PTUN", "CANT", "PORT", "CAPE", "MAND", "HAIT", "ITAL", "VIET"]
LANGUAGE_P = [0.55, 0.31, 0.04, 0.025, 0.015, 0.012, 0.01, 0.01, 0.008, 0.008, 0.007, 0.005]
RELIGIONS = ["CATHOLIC", "NOT SPECIFIED", "UNOBTAINABLE", "PROTESTANT QUAKER", "JEWISH", "OTHER", "EPISCOPALIAN",
             "GREEK ORTHODOX", "CHRISTIAN SCIENTIST", "BUDDHIST", "MUSLIM", "JEHOVAH'S WITNESS", None]
RELIGION_P = [0.35, 0.2, 0.13, 0.12, 0.08, 0.04, 0.012, 0.01, 0.01, 0.006, 0.005, 0.004, 0.033]
MARITAL_STATUSES = ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "SEPARATED", "UNKNOWN (DEFAULT)", "LIFE PARTNER", None]
MARITAL_P = [0.46, 0.28, 0.12, 0.065, 0.012, 0.006, 0.002, 0.055]
ETHNICITIES = ["WHITE", "BLACK/AFRICAN AMERICAN", "UNKNOWN/NOT SPECIFIED", "HISPANIC OR LATINO", "OTHER", "ASIAN",
               "UNABLE TO OBTAIN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN - CHINESE", "PATIENT DECLINED TO ANSWER",
               "WHITE - RUSSIAN", "BLACK/CAPE VERDEAN", "MULTI RACE ETHNICITY", "PORTUGUESE"]
ETHNICITY_P = [0.70, 0.09, 0.075, 0.03, 0.025, 0.02, 0.015, 0.01, 0.01, 0.008, 0.007, 0.004, 0.003, 0.003]
# fmt: on


def _take(values: list[str | None], idx: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values, type=pa.string()), pa.array(idx))


def _ts(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    mask = None if valid is None else ~valid
    return pa.array(seconds.astype(np.int64), type=pa.timestamp("s"), mask=mask)


def _tables(
    rng: np.random.Generator, chunk: dict, world: _World, subject0: int, hadm0: int, row0: dict[str, int],
    events: dict | None = None,
):  # fmt: skip
    """Arrow tables of one chunk with global ids (subjects from ``subject0 + 1``, admissions from
    ``hadm0``); PROCEDURES_ICD and PRESCRIPTIONS too when ``events`` (:func:`_chunk_events`) is given."""
    p, a, d = chunk["patients"], chunk["admissions"], chunk["diagnoses"]
    n, nv = p["female"].size, a["patient"].size
    subject = subject0 + 1 + np.arange(n, dtype=np.int64)
    hadm = hadm0 + rng.permutation(nv).astype(np.int64)  # not in time order, as in MIMIC
    newborn_v = p["newborn"][a["patient"]]

    patients = pa.table({
        "ROW_ID": np.arange(row0["PATIENTS"] + 1, row0["PATIENTS"] + 1 + n, dtype=np.int64),
        "SUBJECT_ID": subject,
        "GENDER": _take(["M", "F"], p["female"]),
        "DOB": _ts(p["dob"]),
        "DOD": _ts(p["dod"], p["dod"] != -1),
        "DOD_HOSP": _ts(p["dod_hosp"], p["dod_hosp"] != -1),
        "DOD_SSN": _ts(p["dod_ssn"], p["dod_ssn"] != -1),
        "EXPIRE_FLAG": (p["dod"] != -1).astype(np.int8),
    })  # fmt: skip

    adm_type = a["type"]
    location = _choice_rows(rng, np.array(ADMISSION_LOCATION_P), adm_type)
    er = location == 0
    age_group = np.where(newborn_v, 2, (a["age"] >= 65).astype(np.int64))
    discharge = np.where(a["died"], len(DISCHARGE_LOCATIONS) - 1,
                         _choice_rows(rng, np.array(DISCHARGE_LOCATION_P), age_group))  # fmt: skip
    # Language, religion, marital status and ethnicity belong to the patient, not the admission.
    language = np.where(p["newborn"], 1, _choice(rng, LANGUAGE_P, n))[a["patient"]]
    religion = _choice(rng, RELIGION_P, n)[a["patient"]]
    marital = np.where(p["newborn"], len(MARITAL_STATUSES) - 1, _choice(rng, MARITAL_P, n))[a["patient"]]
    ethnicity = _choice(rng, ETHNICITY_P, n)[a["patient"]]
    ed_reg = a["admit"] - np.round(rng.uniform(0.5, 8.0, nv) * 60) * 60
    ed_out = a["admit"] + np.round(rng.uniform(0.0, 2.0, nv) * 60) * 60
    admissions = pa.table({
        "ROW_ID": np.arange(row0["ADMISSIONS"] + 1, row0["ADMISSIONS"] + 1 + nv, dtype=np.int64),
        "SUBJECT_ID": subject[a["patient"]],
        "HADM_ID": hadm,
        "ADMITTIME": _ts(a["admit"]),
        "DISCHTIME": _ts(a["disch"]),
        "DEATHTIME": _ts(a["disch"], a["died"]),
        "ADMISSION_TYPE": _take(ADMISSION_TYPES, adm_type),
        "ADMISSION_LOCATION": _take(ADMISSION_LOCATIONS, location),
        "DISCHARGE_LOCATION": _take(DISCHARGE_LOCATIONS, discharge),
        "INSURANCE": _take(INSURANCES, _choice_rows(rng, np.array(INSURANCE_P), age_group)),
        "LANGUAGE": _take(LANGUAGES, language),
        "RELIGION": _take(RELIGIONS, religion),
        "MARITAL_STATUS": _take(MARITAL_STATUSES, marital),
        "ETHNICITY": _take(ETHNICITIES, ethnicity),
        "EDREGTIME": _ts(ed_reg, er),
        "EDOUTTIME": _ts(ed_out, er),
        "DIAGNOSIS": pc.take(world.labels, pa.array(a["label"])),
        "HOSPITAL_EXPIRE_FLAG": a["died"].astype(np.int8),
        "HAS_CHARTEVENTS_DATA": (rng.random(nv) < 0.985).astype(np.int8),
    })  # fmt: skip

    nd = d["visit"].size
    diagnoses = pa.table({
        "ROW_ID": np.arange(row0["DIAGNOSES_ICD"] + 1, row0["DIAGNOSES_ICD"] + 1 + nd, dtype=np.int64),
        "SUBJECT_ID": subject[a["patient"][d["visit"]]],
        "HADM_ID": hadm[d["visit"]],
        "SEQ_NUM": d["seq"].astype(np.int64),
        "ICD9_CODE": _take(world.codes, d["code"]),
    })  # fmt: skip
    tables = {"PATIENTS": patients, "ADMISSIONS": admissions, "DIAGNOSES_ICD": diagnoses}
    if events is None:
        return tables
    px, rx = events["procedures"], events["prescriptions"]
    npx, nrx = px["visit"].size, rx["visit"].size
    tables["PROCEDURES_ICD"] = pa.table({
        "ROW_ID": np.arange(row0["PROCEDURES_ICD"] + 1, row0["PROCEDURES_ICD"] + 1 + npx, dtype=np.int64),
        "SUBJECT_ID": subject[a["patient"][px["visit"]]],
        "HADM_ID": hadm[px["visit"]],
        "SEQ_NUM": px["seq"].astype(np.int64),
        "ICD9_CODE": _take([r[0] for r in world.procedures], px["code"]),
    })  # fmt: skip
    drug = {
        name: _take([r[i] for r in world.drugs], rx["drug"]) for i, name in enumerate(DRUG_COLUMNS) if name
    }
    main = pc.equal(drug["DRUG_TYPE"], "MAIN")
    tables["PRESCRIPTIONS"] = pa.table({
        "ROW_ID": np.arange(row0["PRESCRIPTIONS"] + 1, row0["PRESCRIPTIONS"] + 1 + nrx, dtype=np.int64),
        "SUBJECT_ID": subject[a["patient"][rx["visit"]]],
        "HADM_ID": hadm[rx["visit"]],
        "ICUSTAY_ID": pa.nulls(nrx, pa.int64()),
        "STARTDATE": _ts(rx["start"]),
        "ENDDATE": _ts(rx["end"]),
        "DRUG_TYPE": drug["DRUG_TYPE"],
        "DRUG": drug["DRUG"],
        "DRUG_NAME_POE": pc.if_else(main, drug["DRUG"], pa.scalar(None, pa.string())),
        "DRUG_NAME_GENERIC": pc.if_else(main, drug["DRUG"], pa.scalar(None, pa.string())),
        "PROD_STRENGTH": drug["PROD_STRENGTH"],
        "DOSE_VAL_RX": drug["DOSE_VAL_RX"],
        "DOSE_UNIT_RX": drug["DOSE_UNIT_RX"],
        "ROUTE": drug["ROUTE"],
    })  # fmt: skip
    return tables


def _check_args(n_patients: object, seed: object, id_offset: object = 0) -> None:
    if isinstance(n_patients, bool) or not isinstance(n_patients, int | np.integer) or n_patients < 1:
        raise InputError(f"simulator n_patients must be an integer >= 1, got {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"simulator seed must be an integer >= 0, got {seed!r}")
    if isinstance(id_offset, bool) or not isinstance(id_offset, int | np.integer) or id_offset < 0:
        raise InputError(f"simulator id_offset must be an integer >= 0, got {id_offset!r}")


def _write_tables(
    writers: dict[str, pacsv.CSVWriter], paths: dict[str, Path], tables: dict[str, pa.Table]
) -> None:
    for name, table in tables.items():
        if name not in writers:
            writers[name] = pacsv.CSVWriter(paths[name], table.schema)
        writers[name].write_table(table)


def write_mimic3_csvs(
    out_dir: Path,
    n_patients: int,
    seed: int = 0,
    id_offset: int = 0,
    event_types: tuple[str, ...] = (DIAGNOSIS,),
) -> dict[str, int]:
    """Write PATIENTS.csv, ADMISSIONS.csv, DIAGNOSES_ICD.csv, D_ICD_DIAGNOSES.csv (and, as
    ``event_types`` asks, PROCEDURES_ICD.csv + D_ICD_PROCEDURES.csv, PRESCRIPTIONS.csv); return row counts.

    The same ``(n_patients, seed, id_offset)`` always gives byte-identical files, and the same
    diagnosis tables whatever ``event_types``. SUBJECT_IDs run from ``id_offset + 1``: independent
    samples of the same truth (other seeds) get disjoint ids with different offsets. Files appear
    complete or not at all (temporary names, then renamed).
    """
    _check_args(n_patients, seed, id_offset)
    types = check_event_types(list(event_types))
    names = [*TABLES, *(name for kind, extra in TYPED_TABLES.items() if kind in types for name in extra)]
    world = _world()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = {name: out_dir / f".{name}.csv.tmp" for name in names}
    rows = dict.fromkeys(names, 0) | {"PROCEDURES_ICD": 0, "PRESCRIPTIONS": 0}
    writers: dict[str, pacsv.CSVWriter] = {}
    try:
        # One writer thread: chunk i is written (Arrow releases the GIL) while chunk i+1 is drawn.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            hadm0 = 100_001
            for i, start in enumerate(range(0, n_patients, CHUNK_PATIENTS)):
                rng = np.random.default_rng([int(seed), i])
                chunk = _chunk(rng, min(CHUNK_PATIENTS, n_patients - start), world)
                events = None
                if len(types) > 1:  # their own stream: the diagnoses do not depend on them
                    events = _chunk_events(np.random.default_rng([int(seed), i, 1]), chunk, world)
                tables = _tables(rng, chunk, world, int(id_offset) + start, hadm0, rows, events)
                tables = {name: t for name, t in tables.items() if name in tmp}
                hadm0 += tables["ADMISSIONS"].num_rows
                for name, table in tables.items():
                    rows[name] += table.num_rows
                if pending is not None:
                    pending.result()
                pending = pool.submit(_write_tables, writers, tmp, tables)
            if pending is not None:
                pending.result()
        dictionaries = {  # code, short title, long title
            "D_ICD_DIAGNOSES": list(zip(world.codes, world.short_titles, world.long_titles, strict=True)),
            "D_ICD_PROCEDURES": world.procedures,
        }
        for name, entries in dictionaries.items():
            if name not in tmp:
                continue
            titles = pa.table({
                "ROW_ID": np.arange(1, len(entries) + 1, dtype=np.int64),
                "ICD9_CODE": [r[0] for r in entries],
                "SHORT_TITLE": [r[1] for r in entries],
                "LONG_TITLE": [r[2] for r in entries],
            })  # fmt: skip
            pacsv.write_csv(titles, tmp[name])
            rows[name] = titles.num_rows
    except BaseException:
        for writer in writers.values():
            writer.close()
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    for writer in writers.values():
        writer.close()
    for name in names:
        os.replace(tmp[name], out_dir / f"{name}.csv")
    return {name: rows[name] for name in names}


class SimulatedSource:
    """The built-in simulator as a source: writes MIMIC-III CSVs, then reads them with the mimic3 reader."""

    name = "simulated"

    def __init__(
        self, n_patients: int = 2000, seed: int = 0, id_offset: int = 0, event_types: object = (DIAGNOSIS,)
    ):
        """``event_types``: diagnoses only by default (the built-in data of the quickstart and the
        fidelity benchmark); None or a list with procedure/medication adds those tables."""
        _check_args(n_patients, seed, id_offset)
        self.event_types = check_event_types(event_types)
        self.n_patients = int(n_patients)
        self.seed = int(seed)
        self.id_offset = int(id_offset)

    def cache_key(self) -> dict[str, object]:
        key: dict[str, object] = {
            "source": "simulated",
            "n_patients": self.n_patients,
            "seed": self.seed,
            "simulator_version": SIMULATOR_VERSION,
        }
        if self.id_offset:  # absent when 0, so existing cached cohorts keep their folders
            key["id_offset"] = self.id_offset
        if self.event_types != (DIAGNOSIS,):  # likewise for diagnosis-only cohorts
            key["event_types"] = list(self.event_types)
        return key

    def load(self, workdir: Path) -> SourceTables:
        from ehrgen.data.sources.mimic3 import Mimic3Source  # the reader the simulator exists to exercise

        raw = Path(workdir) / "raw"
        rows = write_mimic3_csvs(raw, self.n_patients, self.seed, self.id_offset, self.event_types)
        tables = Mimic3Source(raw, event_types=list(self.event_types)).load(workdir)
        tables.name = "simulated"
        tables.info.pop("raw_dir", None)  # a scratch folder, deleted once the cohort is built
        tables.info.update(
            {
                "n_patients": self.n_patients,
                "seed": self.seed,
                "id_offset": self.id_offset,
                "simulator_version": SIMULATOR_VERSION,
                "raw_rows": rows,
            }
        )
        return tables
