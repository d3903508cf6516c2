"""Code rules shared by every stage: diagnoses (ICD-9-CM, ICD-10-CM), procedures (ICD-9-CM
volume 3, ICD-10-PCS) and medications.

A cohort's code is a string ``[SYSTEM:]VALUE``; the system mark says the event type too:

==================  ==============  ===========================  ============  ======================
event type          system          example                      category      from (MIMIC)
==================  ==============  ===========================  ============  ======================
diagnosis           ICD-9-CM        ``4019`` (no mark)           ``401``       DIAGNOSES_ICD
diagnosis           ICD-10-CM       ``ICD10CM:E119``             ``ICD10CM:E11``  diagnoses_icd v10
procedure           ICD-9-CM vol 3  ``ICD9PCS:3893``             ``ICD9PCS:38``   PROCEDURES_ICD
procedure           ICD-10-PCS      ``ICD10PCS:02HV33Z``         ``ICD10PCS:02H`` procedures_icd v10
medication          drug name key   ``RX:potassium chloride``    the code      PRESCRIPTIONS
==================  ==============  ===========================  ============  ======================

ICD-9-CM diagnoses carry no mark: they are stored as MIMIC-III stores them (no dot, upper-case
prefix letter: ``4019``, ``25000``, ``V5861``, ``E8497``), so every diagnosis-only ICD-9 cohort
reads the same as before other systems existed here. The others must be marked: systems share
strings (ICD-9 ``E871``, a misadventure, is not ICD-10 ``E87.1``, hypo-osmolality; ICD-9
procedure ``3893`` is also an ICD-9 diagnosis shape). ``401.9`` and ``ICD10CM:E11.9`` are
display forms only.

Medications are keyed by an ingredient-level name, :func:`drug_key`: MIMIC's NDCs are product
codes (one drug, dozens of package sizes and makers; ``0`` for many IV fluids) and no NDC to
ingredient table (RxNorm) is available offline, while the drug name carries the ingredient in
front of strengths and forms (``Potassium Chloride (Powder)``, ``Sodium Chloride 0.9%  Flush``).
The key is that name in lower case without parenthesised parts and without strength and unit words
(a word that starts with a digit, holds a ``%`` or is a unit such as ``mg`` or ``units``):
``potassium chloride``, ``sodium chloride flush``, ``dextrose`` (from ``5% Dextrose``), ``d5w``.
"""

from __future__ import annotations

import re

import polars as pl

ICD9CM, ICD10CM = "icd9cm", "icd10cm"
DIAGNOSIS, PROCEDURE, MEDICATION = "diagnosis", "procedure", "medication"
EVENT_TYPES = (DIAGNOSIS, PROCEDURE, MEDICATION)
ICD10CM_PREFIX = "ICD10CM:"
ICD9PCS_PREFIX, ICD10PCS_PREFIX = "ICD9PCS:", "ICD10PCS:"
RX_PREFIX = "RX:"
# Every system mark, and a regex matching one at the start of a code.
MARKS = (ICD10CM_PREFIX, ICD9PCS_PREFIX, ICD10PCS_PREFIX, RX_PREFIX)
MARK_PATTERN = "^(" + "|".join(m[:-1] for m in MARKS) + "):"
# Words of a drug name that are strengths or units, not the ingredient: a leading digit, a %, a unit.
_DOSE_WORD = r"^([0-9.]|.*%|(mg|mcg|g|gm|ml|l|meq|mmol|units?|iu)(/.*)?$)"
# Numeric diagnosis codes have 3-5 digits, V codes V + 2-4 digits, E codes E + 3-4 digits.
ICD9_DX_PATTERN = r"^(\d{3,5}|V\d{2,4}|E\d{3,4})$"
# ICD-10-CM: a letter (U included: U07.1 is COVID-19 since 2020), a digit, an alphanumeric (the
# 3-character category, e.g. O9A), then up to 4 alphanumerics (7th-character extensions).
ICD10_DX_PATTERN = r"^ICD10CM:[A-Z]\d[0-9A-Z][0-9A-Z]{0,4}$"
DX_PATTERN = f"({ICD9_DX_PATTERN})|({ICD10_DX_PATTERN})"
# ICD-9-CM procedures: 2-digit category + up to 2 digits; ICD-10-PCS: 7 characters, no I or O.
PROCEDURE_PATTERN = r"^(ICD9PCS:\d{2,4}|ICD10PCS:[0-9A-HJ-NP-Z]{7})$"
MEDICATION_PATTERN = r"^RX:[a-z][a-z0-9 /+-]*$"
# Each event type's well-formed codes (the builder's shape check, the evaluation's format check).
TYPE_PATTERNS = {DIAGNOSIS: DX_PATTERN, PROCEDURE: PROCEDURE_PATTERN, MEDICATION: MEDICATION_PATTERN}
_TYPE_RES = {t: re.compile(p) for t, p in TYPE_PATTERNS.items()}
_ICD9_RE = re.compile(ICD9_DX_PATTERN)
_ICD10_RE = re.compile(ICD10_DX_PATTERN)


def normalize_code(code: str) -> str:
    """Strip dots and whitespace and upper-case the letters: ``' v58.61'`` -> ``'V5861'``;
    a medication's name becomes its :func:`drug_key`."""
    if code.startswith(RX_PREFIX):
        return RX_PREFIX + drug_key(code[len(RX_PREFIX) :])
    return re.sub(r"[\s.]", "", code).upper()


def drug_key(name: str) -> str:
    """Ingredient-level key of a drug name (module docstring): ``'5% Dextrose'`` -> ``'dextrose'``."""
    return pl.select(drug_key_expr(pl.lit(name, pl.Utf8))).item()


def drug_key_expr(expr: pl.Expr) -> pl.Expr:
    """Vectorised :func:`drug_key`; idempotent, so an exported key reads back as itself."""
    words = (
        expr.str.to_lowercase()
        .str.replace_all(r"\([^)]*\)?|\*[^*]*\*", " ")
        .str.replace_all(r"[^a-z0-9%./+ -]", " ")
        .str.strip_chars()
        .str.split(" ")
    )
    kept = words.list.eval(pl.element().filter(~pl.element().str.contains(_DOSE_WORD) & (pl.element() != "")))
    return kept.list.join(" ").str.replace_all(r"[^a-z0-9 /+-]", "").str.strip_chars(" /+-")


def event_type(code: str) -> str:
    """``diagnosis``, ``procedure`` or ``medication``, from the code's system mark."""
    if code.startswith((ICD9PCS_PREFIX, ICD10PCS_PREFIX)):
        return PROCEDURE
    return MEDICATION if code.startswith(RX_PREFIX) else DIAGNOSIS


def event_type_expr(col: str | pl.Expr) -> pl.Expr:
    """Vectorised :func:`event_type` over a polars string column."""
    expr = pl.col(col) if isinstance(col, str) else col
    return (
        pl.when(expr.str.starts_with(ICD9PCS_PREFIX) | expr.str.starts_with(ICD10PCS_PREFIX))
        .then(pl.lit(PROCEDURE))
        .when(expr.str.starts_with(RX_PREFIX))
        .then(pl.lit(MEDICATION))
        .otherwise(pl.lit(DIAGNOSIS))
    )


def is_known_code(code: str) -> bool:
    """True for a well-formed code of any event type (diagnosis, procedure, medication)."""
    return _TYPE_RES[event_type(code)].match(code) is not None


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
    """The category (module docstring's table): ICD-9 first 3 characters (4 for E codes,
    ``E8497`` -> ``E849``); ICD-10-CM first 3 of the value, mark kept (``ICD10CM:E11``); ICD-9
    procedures first 2 digits; ICD-10-PCS first 3 characters; a medication is its own category."""
    for prefix, n in _CATEGORY_WIDTH.items():
        if code.startswith(prefix):
            return code if n is None else code[: len(prefix) + n]
    return code[:4] if code.startswith("E") else code[:3]


# Marked systems: characters of the value that make the category (None: the whole code).
_CATEGORY_WIDTH: dict[str, int | None] = {
    ICD10CM_PREFIX: 3,
    ICD9PCS_PREFIX: 2,
    ICD10PCS_PREFIX: 3,
    RX_PREFIX: None,
}


def display_code(code: str) -> str:
    """Dotted display form: ``4019`` -> ``401.9``, ``E8497`` -> ``E849.7``, ``ICD10CM:E119`` ->
    ``ICD10CM:E11.9``, ``ICD9PCS:3893`` -> ``ICD9PCS:38.93``; other codes as they are."""
    for prefix, head in ((ICD10CM_PREFIX, 3), (ICD9PCS_PREFIX, 2)):
        if code.startswith(prefix):
            value = code[len(prefix) :]
            return code if len(value) <= head else f"{prefix}{value[:head]}.{value[head:]}"
    if code.startswith((ICD10PCS_PREFIX, RX_PREFIX)):
        return code
    head = 4 if code.startswith("E") else 3
    return code if len(code) <= head else f"{code[:head]}.{code[head:]}"


def normalize_code_expr(col: str | pl.Expr) -> pl.Expr:
    """Vectorised :func:`normalize_code` over a polars string column."""
    expr = (pl.col(col) if isinstance(col, str) else col).cast(pl.Utf8)
    code = expr.str.replace_all(r"[\s.]", "").str.to_uppercase()
    drug = pl.lit(RX_PREFIX) + drug_key_expr(expr.str.slice(len(RX_PREFIX)))
    return pl.when(expr.str.starts_with(RX_PREFIX)).then(drug).otherwise(code)


def with_system_expr(code: str | pl.Expr, icd_version: str | pl.Expr, kind: str = DIAGNOSIS) -> pl.Expr:
    """Vectorised: a source's raw ICD code and version (9 or 10) -> the cohort's code string, marked
    for its system (``kind``: ``diagnosis`` or ``procedure``)."""
    code = pl.col(code) if isinstance(code, str) else code
    version = pl.col(icd_version) if isinstance(icd_version, str) else icd_version
    code = code.cast(pl.Utf8)
    nine, ten = ("", ICD10CM_PREFIX) if kind == DIAGNOSIS else (ICD9PCS_PREFIX, ICD10PCS_PREFIX)
    # The first branch names the output: the code column's name, as the other *_expr keep it.
    nine_code = code if not nine else (pl.lit(nine) + code).alias(code.meta.output_name())
    return pl.when(version != 10).then(nine_code).otherwise(pl.lit(ten) + code)


def category_expr(col: str | pl.Expr) -> pl.Expr:
    """Vectorised :func:`category_of` over a polars string column."""
    expr = pl.col(col) if isinstance(col, str) else col
    out = pl.when(expr.str.starts_with("E")).then(expr.str.slice(0, 4)).otherwise(expr.str.slice(0, 3))
    for prefix, n in _CATEGORY_WIDTH.items():
        cat = expr if n is None else expr.str.slice(0, len(prefix) + n)
        out = pl.when(expr.str.starts_with(prefix)).then(cat).otherwise(out)
    return out
