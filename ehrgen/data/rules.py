"""Clinical validity rules: diagnosis codes that only make sense for one sex or an age range.

One table, used by the simulator (never emits a violation), the sampler (as a logits mask) and
the evaluation (violation rates). Age is the patient's age at the first visit, in years.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ehrgen.data.codes import ICD10CM_PREFIX, category_of, is_icd9_dx, is_icd10_dx

MALE, FEMALE = 0, 1


@dataclass(frozen=True)
class ValidityRule:
    """Codes whose category lies in one of ``ranges`` (ICD-9-CM) or ``icd10_ranges`` (ICD-10-CM)
    require the demographic condition.

    ``ranges`` are inclusive pairs of ICD-9 categories with the same prefix letter, compared
    numerically (``("630", "679")``, ``("V22", "V24")``); ``icd10_ranges`` inclusive pairs of
    3-character ICD-10 categories, compared as strings (``("O00", "O9A")``: ``9 < A``, as the
    classification orders them). ``sex`` is required when not None; the age condition is
    ``min_age <= age < max_age``.
    """

    name: str
    description: str
    ranges: tuple[tuple[str, str], ...]
    icd10_ranges: tuple[tuple[str, str], ...] = ()
    sex: int | None = None
    min_age: float = 0.0
    max_age: float = float("inf")

    def covers(self, code: str) -> bool:
        """Whether the rule applies to ``code`` (normalised, no dot); False for non-diagnosis strings."""
        if is_icd10_dx(code):
            category = category_of(code)[len(ICD10CM_PREFIX) :]
            return any(lo <= category <= hi for lo, hi in self.icd10_ranges)
        if not is_icd9_dx(code):
            return False
        cat = category_of(code)
        prefix = cat[0] if cat[0] in "VE" else ""
        for lo, hi in self.ranges:
            lo_prefix = lo[0] if lo[0] in "VE" else ""
            if prefix != lo_prefix:
                continue
            value = int(cat[len(prefix) :][:3] if prefix != "E" else cat[1:4])
            if int(lo[len(lo_prefix) :]) <= value <= int(hi[len(lo_prefix) :]):
                return True
        return False

    def allows(self, sex: np.ndarray | int, age: np.ndarray | float) -> np.ndarray:
        """Vectorised: True where a patient of this sex and age may carry the rule's codes."""
        sex = np.asarray(sex)
        age = np.asarray(age, dtype=np.float64)
        ok = (age >= self.min_age) & (age < self.max_age)
        if self.sex is not None:
            ok &= sex == self.sex
        return ok


VALIDITY_RULES: tuple[ValidityRule, ...] = (
    ValidityRule(
        "pregnancy",
        "pregnancy/childbirth (ICD-9 630-679, V22-V24, V27; ICD-10 O00-O9A, Z33-Z37, Z39, Z3A) "
        "only for women aged 12-55",
        (("630", "679"), ("V22", "V24"), ("V27", "V27")),
        (("O00", "O9A"), ("Z33", "Z37"), ("Z39", "Z39"), ("Z3A", "Z3A")),
        sex=FEMALE,
        min_age=12.0,
        max_age=56.0,
    ),
    ValidityRule(
        "perinatal",
        "perinatal conditions (ICD-9 760-779, V29-V39; ICD-10 P00-P96, Z05, Z38) only under 1 year of age",
        (("760", "779"), ("V29", "V39")),
        (("P00", "P96"), ("Z05", "Z05"), ("Z38", "Z38")),
        max_age=1.0,
    ),
    ValidityRule(
        "male_genital",
        "male genital organs (ICD-9 600-608, 185; ICD-10 N40-N53, C60-C63) only for men",
        (("600", "608"), ("185", "185")),
        (("N40", "N53"), ("C60", "C63")),
        sex=MALE,
    ),
    ValidityRule(
        "female_genital",
        "female genital organs (ICD-9 614-629, 179-184; ICD-10 N70-N98, C51-C58) only for women",
        (("614", "629"), ("179", "184")),
        (("N70", "N98"), ("C51", "C58")),
        sex=FEMALE,
    ),
)


def rule_membership(codes: Sequence[str], rules: Sequence[ValidityRule] = VALIDITY_RULES) -> np.ndarray:
    """Boolean matrix ``[len(rules), len(codes)]``: which codes each rule covers."""
    return np.array([[rule.covers(c) for c in codes] for rule in rules], dtype=bool).reshape(
        len(rules), len(codes)
    )


def allowed_code_mask(
    codes: Sequence[str],
    sex: np.ndarray,
    age: np.ndarray,
    rules: Sequence[ValidityRule] = VALIDITY_RULES,
    membership: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean ``[n_patients, len(codes)]``: codes each patient may carry under every rule.

    ``membership`` (from :func:`rule_membership`) can be passed to avoid recomputing it per batch.
    """
    sex = np.atleast_1d(np.asarray(sex))
    age = np.atleast_1d(np.asarray(age, dtype=np.float64))
    member = rule_membership(codes, rules) if membership is None else membership
    mask = np.ones((sex.shape[0], len(codes)), dtype=bool)
    for rule, covered in zip(rules, member, strict=True):
        forbidden = ~rule.allows(sex, age)  # [n_patients]
        mask &= ~(forbidden[:, None] & covered[None, :])
    return mask
