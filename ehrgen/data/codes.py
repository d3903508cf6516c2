"""ICD-9-CM diagnosis code rules shared by every stage.

Codes are stored as MIMIC stores them: no dot, upper-case prefix letter (``4019``, ``25000``,
``V5861``, ``E8497``). ``401.9`` is a display form only.
"""

from __future__ import annotations

import re

import polars as pl

# Numeric diagnosis codes have 3-5 digits, V codes V + 2-4 digits, E codes E + 3-4 digits.
ICD9_DX_PATTERN = r"^(\d{3,5}|V\d{2,4}|E\d{3,4})$"
_ICD9_RE = re.compile(ICD9_DX_PATTERN)


def normalize_code(code: str) -> str:
    """Strip dots and whitespace and upper-case the prefix letter: ``' v58.61'`` -> ``'V5861'``."""
    return re.sub(r"[\s.]", "", code).upper()


def is_icd9_dx(code: str) -> bool:
    """True when ``code`` (already normalised) has the shape of an ICD-9-CM diagnosis code."""
    return _ICD9_RE.match(code) is not None


def category_of(code: str) -> str:
    """The ICD-9 three-digit category: first 3 characters, 4 for E codes (``E8497`` -> ``E849``)."""
    return code[:4] if code.startswith("E") else code[:3]


def display_code(code: str) -> str:
    """Dotted display form: ``4019`` -> ``401.9``, ``E8497`` -> ``E849.7``, ``V5861`` -> ``V58.61``."""
    head = 4 if code.startswith("E") else 3
    return code if len(code) <= head else f"{code[:head]}.{code[head:]}"


def normalize_code_expr(col: str | pl.Expr) -> pl.Expr:
    """Vectorised :func:`normalize_code` over a polars string column."""
    expr = pl.col(col) if isinstance(col, str) else col
    return expr.cast(pl.Utf8).str.replace_all(r"[\s.]", "").str.to_uppercase()


def category_expr(col: str | pl.Expr) -> pl.Expr:
    """Vectorised :func:`category_of` over a polars string column."""
    expr = pl.col(col) if isinstance(col, str) else col
    return pl.when(expr.str.starts_with("E")).then(expr.str.slice(0, 4)).otherwise(expr.str.slice(0, 3))
