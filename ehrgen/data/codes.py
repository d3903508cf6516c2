"""Diagnosis code rules shared by every stage: ICD-9-CM and ICD-10-CM.

A cohort's code is a string ``[SYSTEM:]VALUE``. ICD-9-CM diagnoses carry no system prefix: they
are stored as MIMIC-III stores them (no dot, upper-case prefix letter: ``4019``, ``25000``,
``V5861``, ``E8497``), so every ICD-9-only cohort reads the same as before ICD-10 existed here.
ICD-10-CM diagnoses carry ``ICD10CM:`` (``ICD10CM:E119``): the two systems share strings
(ICD-9 ``E871``, a misadventure, is not ICD-10 ``E87.1``, hypo-osmolality), so one of them must
be marked, and the unmarked one is the system every existing cohort and checkpoint holds.
``401.9`` and ``ICD10CM:E11.9`` are display forms only.
"""

from __future__ import annotations

import re

import polars as pl

ICD9CM, ICD10CM = "icd9cm", "icd10cm"
ICD10CM_PREFIX = "ICD10CM:"
# Numeric diagnosis codes have 3-5 digits, V codes V + 2-4 digits, E codes E + 3-4 digits.
ICD9_DX_PATTERN = r"^(\d{3,5}|V\d{2,4}|E\d{3,4})$"
# ICD-10-CM: a letter (U included: U07.1 is COVID-19 since 2020), a digit, an alphanumeric (the
# 3-character category, e.g. O9A), then up to 4 alphanumerics (7th-character extensions).
ICD10_DX_PATTERN = r"^ICD10CM:[A-Z]\d[0-9A-Z][0-9A-Z]{0,4}$"
DX_PATTERN = f"({ICD9_DX_PATTERN})|({ICD10_DX_PATTERN})"
_ICD9_RE = re.compile(ICD9_DX_PATTERN)
_ICD10_RE = re.compile(ICD10_DX_PATTERN)


def normalize_code(code: str) -> str:
    """Strip dots and whitespace and upper-case the letters: ``' v58.61'`` -> ``'V5861'``."""
    return re.sub(r"[\s.]", "", code).upper()


def is_icd9_dx(code: str) -> bool:
    """True when ``code`` (already normalised) has the shape of an ICD-9-CM diagnosis code."""
    return _ICD9_RE.match(code) is not None


def is_icd10_dx(code: str) -> bool:
    """True when ``code`` (normalised, with its ``ICD10CM:`` prefix) has the shape of an ICD-10-CM code."""
    return _ICD10_RE.match(code) is not None


def is_diagnosis_code(code: str) -> bool:
    """True for a well-formed ICD-9-CM or (prefixed) ICD-10-CM diagnosis code."""
    return is_icd9_dx(code) or is_icd10_dx(code)


def code_system(code: str) -> str:
    """``"icd10cm"`` for a prefixed ICD-10-CM code, else ``"icd9cm"`` (the unmarked system)."""
    return ICD10CM if code.startswith(ICD10CM_PREFIX) else ICD9CM


def category_of(code: str) -> str:
    """The 3-character category: ICD-9 first 3 characters (4 for E codes, ``E8497`` -> ``E849``);
    ICD-10 first 3 characters of the value, prefix kept (``ICD10CM:E119`` -> ``ICD10CM:E11``)."""
    if code.startswith(ICD10CM_PREFIX):
        return code[: len(ICD10CM_PREFIX) + 3]
    return code[:4] if code.startswith("E") else code[:3]


def display_code(code: str) -> str:
    """Dotted display form: ``4019`` -> ``401.9``, ``E8497`` -> ``E849.7``, ``ICD10CM:E119`` -> ``ICD10CM:E11.9``."""
    if code.startswith(ICD10CM_PREFIX):
        value = code[len(ICD10CM_PREFIX) :]
        return code if len(value) <= 3 else f"{ICD10CM_PREFIX}{value[:3]}.{value[3:]}"
    head = 4 if code.startswith("E") else 3
    return code if len(code) <= head else f"{code[:head]}.{code[head:]}"


def normalize_code_expr(col: str | pl.Expr) -> pl.Expr:
    """Vectorised :func:`normalize_code` over a polars string column."""
    expr = pl.col(col) if isinstance(col, str) else col
    return expr.cast(pl.Utf8).str.replace_all(r"[\s.]", "").str.to_uppercase()


def with_system_expr(code: str | pl.Expr, icd_version: str | pl.Expr) -> pl.Expr:
    """Vectorised: a source's raw code and ICD version (9 or 10) -> the cohort's code string."""
    code = pl.col(code) if isinstance(code, str) else code
    version = pl.col(icd_version) if isinstance(icd_version, str) else icd_version
    code = code.cast(pl.Utf8)
    # The first branch names the output: the code column's name, as the other *_expr keep it.
    return pl.when(version != 10).then(code).otherwise(pl.lit(ICD10CM_PREFIX) + code)


def category_expr(col: str | pl.Expr) -> pl.Expr:
    """Vectorised :func:`category_of` over a polars string column."""
    expr = pl.col(col) if isinstance(col, str) else col
    return (
        pl.when(expr.str.starts_with(ICD10CM_PREFIX))
        .then(expr.str.slice(0, len(ICD10CM_PREFIX) + 3))
        .when(expr.str.starts_with("E"))
        .then(expr.str.slice(0, 4))
        .otherwise(expr.str.slice(0, 3))
    )
