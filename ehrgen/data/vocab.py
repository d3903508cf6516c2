"""Vocabularies and tokenizers: a patient's visits <-> one flat sequence of token ids.

A patient is ``<s> <v> c1 c2 <\\v> <v> c3 <\\v> </s>``. Two tokenizers share one interface
(:class:`Tokenizer`):

- :class:`CodeVocab` (``level="code"``): ids 0-6 special, then one token per code (never split).
- :class:`HierarchicalTokenizer` (``level="category"``): ids 0-6 special, then diagnosis categories (ICD-9 and ICD-10-CM),
  then codes. ``encode`` gives the *category* sequence (categories de-duplicated within a visit,
  first occurrence first) for the hierarchical model; ``encode_codes`` gives the code level in
  the same id space; ``decode`` reads both.

Both are built from the TRAIN split counts only (``train_count`` in ``metadata/codes.parquet``), so
nothing about val/test leaks into the vocabulary; rarer codes than ``min_count`` become ``<unk>``.
``to_dict`` holds only str/int/list values: it is stored in checkpoints read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ehrgen.data.codes import EVENT_TYPES, category_expr, event_type
from ehrgen.errors import InputError

BOS, PAD, EOS, UNK, VISIT_START, VISIT_END, MASK = range(7)
SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<v>", "<\\v>", "<mask>")
N_SPECIAL = len(SPECIAL_TOKENS)

# One patient's visits, or a batch of them (a cohort ``visits`` column, Arrow or Python lists).
Visits = Sequence[Sequence[str]]
VisitsBatch = pa.Array | pa.ChunkedArray | Sequence[Visits]


@runtime_checkable
class Tokenizer(Protocol):
    """What the DataModule, the model and the sampler rely on."""

    level: str  # "code" or "category": what ``encode`` puts between the visit markers
    vocab_size: int
    content_range: tuple[int, int]  # [lo, hi) ids that ``encode`` emits for codes/categories

    def __len__(self) -> int: ...
    def encode(self, visits: Visits) -> np.ndarray: ...
    def encode_batch(self, visits: VisitsBatch) -> list[np.ndarray]: ...
    def decode(self, ids: Sequence[int] | np.ndarray) -> list[list[str]]: ...
    def to_dict(self) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------- sequence layout


def assemble(
    content_ids: np.ndarray, items_per_visit: np.ndarray, visits_per_patient: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lay out ``<s> (<v> items <\\v>)* </s>`` for many patients at once.

    ``content_ids`` are the token ids of every visit's items, patients and visits in order.
    Returns the concatenated sequences and patient offsets (``n_patients + 1``).
    """
    nc = np.asarray(items_per_visit, dtype=np.int64)
    nv = np.asarray(visits_per_patient, dtype=np.int64)
    n_pat, n_vis = len(nv), len(nc)
    vcum = np.zeros(n_vis + 1, dtype=np.int64)
    np.cumsum(nc + 2, out=vcum[1:])
    vofs = np.zeros(n_pat + 1, dtype=np.int64)
    np.cumsum(nv, out=vofs[1:])
    pofs = np.zeros(n_pat + 1, dtype=np.int64)
    np.cumsum(vcum[vofs[1:]] - vcum[vofs[:-1]] + 2, out=pofs[1:])

    out = np.empty(pofs[-1], dtype=np.int64)
    out[pofs[:-1]] = BOS
    out[pofs[1:] - 1] = EOS
    # Visit blocks are laid end to end; each earlier patient adds its <s> and </s>, this one its <s>.
    vstart = vcum[:-1] + 2 * np.repeat(np.arange(n_pat), nv) + 1
    out[vstart] = VISIT_START
    out[vstart + nc + 1] = VISIT_END
    visit_of_item = np.repeat(np.arange(n_vis), nc)
    cofs = np.cumsum(nc) - nc
    out[vstart[visit_of_item] + 1 + np.arange(len(visit_of_item)) - cofs[visit_of_item]] = content_ids
    return out, pofs


def _flatten(visits: VisitsBatch) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(all codes as one string array, codes per visit, visits per patient) of a batch."""
    if isinstance(visits, pa.ChunkedArray):
        visits = visits.combine_chunks()
    if not isinstance(visits, pa.Array):
        nv = np.fromiter((len(p) for p in visits), dtype=np.int64, count=len(visits))
        nc = np.fromiter((len(v) for p in visits for v in p), dtype=np.int64, count=int(nv.sum()))
        codes = pa.array([c for p in visits for v in p for c in v], type=pa.string())
        return codes, nc, nv
    nv = pc.fill_null(pc.list_value_length(visits), 0).to_numpy().astype(np.int64)
    inner = visits.flatten()
    # The cohort schema stores visits as struct<time, codes>; plain list<string> visits work too.
    code_lists = pc.struct_field(inner, "codes") if pa.types.is_struct(inner.type) else inner
    nc = pc.fill_null(pc.list_value_length(code_lists), 0).to_numpy().astype(np.int64)
    return code_lists.flatten(), nc, nv


def _lookup(values: pa.Array, value_set: pa.Array, offset: int) -> np.ndarray:
    """Token ids of ``values`` (``offset`` + position in ``value_set``), ``<unk>`` when absent."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    idx = pc.fill_null(pc.index_in(values, value_set=value_set), -1).to_numpy().astype(np.int64)
    return np.where(idx < 0, UNK, idx + offset)


def _split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, offsets[1:-1]) if len(offsets) > 1 else []


def _train_counts(cohort_dir: str | os.PathLike) -> pl.DataFrame:
    """code, train_count of the cohort's train split (codes never seen in train dropped)."""
    from ehrgen.data.cohort import Cohort

    codes = Cohort(cohort_dir).codes()
    if "train_count" not in codes.columns:
        raise InputError(f"{cohort_dir}/metadata/codes.parquet: column 'train_count' is missing")
    return codes.select("code", "train_count").filter(pl.col("train_count") > 0)


def _check_min_count(min_count: int) -> int:
    if int(min_count) < 1:
        raise InputError(f"min_count must be >= 1, got {min_count}")
    return int(min_count)


# ----------------------------------------------------------------------------- shared machinery


class _TokenizerBase:
    """Encoding/decoding over a token table ``specials + entries``; subclasses fill the table."""

    kind: ClassVar[str]
    level: str
    _tokens: np.ndarray  # id -> token string (object array)

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def id_to_token(self, token_id: int) -> str:
        return str(self._tokens[token_id])

    def code_id(self, code: str) -> int:
        """Token id of a code (``<unk>`` when not in the vocabulary)."""
        return self._code_index.get(code, UNK)

    def encode(self, visits: Visits) -> np.ndarray:
        """One patient's visits -> ``<s> <v> ... <\\v> </s>`` as int64."""
        return self.encode_batch([visits])[0]

    def encode_batch(self, visits: VisitsBatch) -> list[np.ndarray]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[list[str]]:
        """Token ids -> visits of token strings; lenient, since generated sequences may be ragged.

        Stops at the first ``</s>``; drops ``<s> <pad> <unk> <mask>``; an item outside any visit
        opens one; ``<v>`` inside an open visit closes it first; an unclosed visit is kept.
        """
        arr = np.asarray(ids, dtype=np.int64).ravel()
        stop = np.flatnonzero(arr == EOS)
        if len(stop):
            arr = arr[: stop[0]]
        visits: list[list[str]] = []
        current: list[str] | None = None
        tokens = self._tokens
        for t in arr.tolist():
            if t == VISIT_START:
                if current is not None:
                    visits.append(current)
                current = []
            elif t == VISIT_END:
                if current is not None:
                    visits.append(current)
                current = None
            elif N_SPECIAL <= t < len(tokens):
                if current is None:
                    current = []
                current.append(tokens[t])
        if current:
            visits.append(current)
        return visits

    def _set_table(self, categories: list[str], codes: list[str]) -> None:
        # Separate indexes: a 3-digit code such as ``042`` is also the name of its category.
        self._tokens = np.array(list(SPECIAL_TOKENS) + categories + codes, dtype=object)
        self._category_index = {c: N_SPECIAL + i for i, c in enumerate(categories)}
        self._code_index = {c: N_SPECIAL + len(categories) + i for i, c in enumerate(codes)}


class CodeVocab(_TokenizerBase):
    """Flat tokenizer: specials 0-6, then one token per code from ``code_offset`` = 7."""

    kind = "flat"
    level = "code"
    code_offset = N_SPECIAL

    def __init__(self, codes: Sequence[str], min_count: int = 1):
        self.codes = sorted({str(c) for c in codes})
        self.min_count = _check_min_count(min_count)
        self._set_table([], self.codes)
        self._codes_arrow = pa.array(self.codes, type=pa.string())

    def __repr__(self) -> str:
        return f"CodeVocab(n_codes={len(self.codes)}, min_count={self.min_count})"

    @classmethod
    def from_counts(cls, codes: Sequence[str], counts: Sequence[int], min_count: int = 1) -> CodeVocab:
        """Keep codes with ``count >= min_count``."""
        keep = np.asarray(counts) >= _check_min_count(min_count)
        return cls([c for c, k in zip(codes, keep, strict=True) if k], min_count)

    @classmethod
    def from_cohort(cls, cohort_dir: str | os.PathLike, min_count: int = 1) -> CodeVocab:
        """From the train-split counts in ``metadata/codes.parquet``."""
        counts = _train_counts(cohort_dir)
        return cls.from_counts(counts["code"].to_list(), counts["train_count"].to_numpy(), min_count)

    @property
    def content_range(self) -> tuple[int, int]:
        return (self.code_offset, self.vocab_size)

    def encode_batch(self, visits: VisitsBatch) -> list[np.ndarray]:
        """Vectorised over a batch (e.g. a cohort row group's ``visits`` column)."""
        codes, nc, nv = _flatten(visits)
        flat, offsets = assemble(_lookup(codes, self._codes_arrow, self.code_offset), nc, nv)
        return _split(flat, offsets)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "codes": list(self.codes), "min_count": self.min_count}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodeVocab:
        return cls(d["codes"], d.get("min_count", 1))


class HierarchicalTokenizer(_TokenizerBase):
    """Specials 0-6, categories from ``category_offset`` = 7, codes from ``code_offset``.

    Codes are ordered by (category, code), so each category's codes are one contiguous id range.
    """

    kind = "hierarchical"
    level = "category"
    category_offset = N_SPECIAL

    def __init__(self, categories: Sequence[str], codes: Sequence[str], min_count: int = 1):
        self.min_count = _check_min_count(min_count)
        self.categories = sorted({str(c) for c in categories})
        code_cats = _categories_of(sorted({str(c) for c in codes}))
        order = sorted(code_cats.items(), key=lambda kv: (kv[1], kv[0]))
        missing = {cat for _, cat in order} - set(self.categories)
        if missing:
            raise InputError(f"codes whose category is not in the vocabulary: {sorted(missing)[:5]}")
        self.codes = [code for code, _ in order]
        self.code_offset = self.category_offset + len(self.categories)
        self._set_table(self.categories, self.codes)
        self._categories_arrow = pa.array(self.categories, type=pa.string())
        self._codes_arrow = pa.array(self.codes, type=pa.string())

        cat_ids = np.array([self._category_index[cat] for _, cat in order], dtype=np.int64)
        # Identity on specials and categories, so code_to_category[ids] maps a whole code-level
        # sequence (markers included) to its category level.
        self.code_to_category = np.concatenate([np.arange(self.code_offset, dtype=np.int64), cat_ids])
        bounds = np.searchsorted(cat_ids, np.arange(self.category_offset, self.code_offset + 1))
        self._category_ranges = bounds + self.code_offset

    def __repr__(self) -> str:
        return (
            f"HierarchicalTokenizer(n_categories={len(self.categories)}, n_codes={len(self.codes)}, "
            f"min_count={self.min_count})"
        )

    @classmethod
    def from_counts(
        cls, codes: Sequence[str], counts: Sequence[int], min_count: int = 1
    ) -> HierarchicalTokenizer:
        """Keep codes with ``count >= min_count`` and categories whose summed count reaches it."""
        min_count = _check_min_count(min_count)
        df = pl.DataFrame({"code": list(codes), "count": np.asarray(counts, dtype=np.int64)})
        df = df.with_columns(category_expr("code").alias("category"))
        cats = df.group_by("category").agg(pl.col("count").sum()).filter(pl.col("count") >= min_count)
        kept = df.filter(pl.col("count") >= min_count)["code"].to_list()
        return cls(cats["category"].to_list(), kept, min_count)

    @classmethod
    def from_cohort(cls, cohort_dir: str | os.PathLike, min_count: int = 1) -> HierarchicalTokenizer:
        counts = _train_counts(cohort_dir)
        return cls.from_counts(counts["code"].to_list(), counts["train_count"].to_numpy(), min_count)

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def content_range(self) -> tuple[int, int]:
        return (self.category_offset, self.code_offset)

    @property
    def code_range(self) -> tuple[int, int]:
        return (self.code_offset, self.vocab_size)

    def category_id(self, category: str) -> int:
        """Token id of a category (``<unk>`` when not in the vocabulary)."""
        return self._category_index.get(category, UNK)

    def codes_of_category(self, category: int | str) -> np.ndarray:
        """Code token ids of a category (given as token id or string); empty when unknown."""
        cid = self.category_id(category) if isinstance(category, str) else int(category)
        if not self.category_offset <= cid < self.code_offset:
            return np.zeros(0, dtype=np.int64)
        k = cid - self.category_offset
        return np.arange(self._category_ranges[k], self._category_ranges[k + 1], dtype=np.int64)

    def encode_batch(self, visits: VisitsBatch) -> list[np.ndarray]:
        """Category sequences: each visit's categories once, in order of first occurrence."""
        codes, nc, nv = _flatten(visits)
        cats = pl.Series("c", codes).to_frame().select(category_expr("c")).to_series().to_arrow()
        ids = _lookup(cats, self._categories_arrow, self.category_offset)
        visit_of = np.repeat(np.arange(len(nc), dtype=np.int64), nc)
        _, first = np.unique(visit_of * self.vocab_size + ids, return_index=True)
        keep = np.sort(first)
        flat, offsets = assemble(ids[keep], np.bincount(visit_of[keep], minlength=len(nc)), nv)
        return _split(flat, offsets)

    def encode_codes(self, visits: Visits) -> np.ndarray:
        """One patient's code-level sequence in this tokenizer's id space."""
        return self.encode_codes_batch([visits])[0]

    def encode_codes_batch(self, visits: VisitsBatch) -> list[np.ndarray]:
        codes, nc, nv = _flatten(visits)
        flat, offsets = assemble(_lookup(codes, self._codes_arrow, self.code_offset), nc, nv)
        return _split(flat, offsets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "categories": list(self.categories),
            "codes": list(self.codes),
            "min_count": self.min_count,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HierarchicalTokenizer:
        return cls(d["categories"], d["codes"], d.get("min_count", 1))


def _categories_of(codes: list[str]) -> dict[str, str]:
    cats = pl.Series("c", codes, dtype=pl.Utf8).to_frame().select(category_expr("c")).to_series()
    return dict(zip(codes, cats.to_list(), strict=True))


# ----------------------------------------------------------------------------- factories

_KINDS: dict[str, type[CodeVocab] | type[HierarchicalTokenizer]] = {
    CodeVocab.kind: CodeVocab,
    HierarchicalTokenizer.kind: HierarchicalTokenizer,
}
_LEVELS = {"code": CodeVocab, "category": HierarchicalTokenizer}


def tokenizer_from_dict(d: dict[str, Any]) -> CodeVocab | HierarchicalTokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` (e.g. from a checkpoint)."""
    kind = d.get("kind")
    if kind not in _KINDS:
        raise InputError(f"tokenizer dict: unknown kind {kind!r}; expected one of {sorted(_KINDS)}")
    return _KINDS[kind].from_dict(d)


def build_tokenizer(
    cohort_dir: str | os.PathLike, level: str = "code", min_count: int = 1
) -> CodeVocab | HierarchicalTokenizer:
    """Tokenizer of a cohort's train split; ``level`` "code" (flat) or "category" (hierarchical)."""
    if level not in _LEVELS:
        raise InputError(f"tokenizer level {level!r}; expected one of {sorted(_LEVELS)}")
    return _LEVELS[level].from_cohort(cohort_dir, min_count)


def token_event_types(tokenizer: Tokenizer, first: int, size: int) -> list[int]:
    """Event type id of token ids ``0..size-1``: 0 below ``first`` (specials), else 1 + the
    ``EVENT_TYPES`` index of the token's code or category."""
    rank = {kind: i + 1 for i, kind in enumerate(EVENT_TYPES)}
    return [rank[event_type(tokenizer.id_to_token(i))] if i >= first else 0 for i in range(size)]
