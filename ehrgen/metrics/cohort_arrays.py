"""Cohorts as flat arrays over one shared vocabulary, and per-patient sparse sufficient statistics.

Everything the evaluation computes is a sum over patients of a per-patient quantity, so each
cohort is turned once into sparse ``patient x item`` matrices (codes, code pairs, transitions,
visit sizes). A bootstrap replicate is then a weight vector over patients: ``w @ M``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from ehrgen.data.codes import category_of
from ehrgen.data.cohort import Cohort
from ehrgen.errors import InputError
from ehrgen.models.visit_times import epoch_seconds


@dataclass
class RawCohort:
    """One cohort selection read from disk; codes still as a per-cohort dictionary."""

    label: str
    subject_id: np.ndarray
    sex: np.ndarray  # int8, -1 where unknown
    age: np.ndarray  # float64, NaN where unknown
    visit_ptr: np.ndarray  # [n + 1]
    code_ptr: np.ndarray  # [n_visits + 1]
    local_codes: np.ndarray  # int32 indices into ``dictionary``
    dictionary: np.ndarray  # str
    visit_time: np.ndarray | None = None  # [n_visits] admission, epoch seconds (NaN: unknown)
    visit_end: np.ndarray | None = None  # [n_visits] end (discharge), epoch seconds (NaN: unknown)


@dataclass
class CohortArrays:
    """Patients as ragged arrays; ``codes`` index the evaluation-wide vocabulary (raw, duplicates kept)."""

    label: str
    subject_id: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    visit_ptr: np.ndarray
    code_ptr: np.ndarray
    codes: np.ndarray
    vocab: np.ndarray = field(repr=False)
    visit_time: np.ndarray | None = field(default=None, repr=False)  # as in RawCohort
    visit_end: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_patients(self) -> int:
        return len(self.subject_id)

    @property
    def n_visits(self) -> int:
        return len(self.code_ptr) - 1

    def visit_patient(self) -> np.ndarray:
        """Patient index of each visit."""
        return np.repeat(np.arange(self.n_patients), np.diff(self.visit_ptr))

    def code_visit(self) -> np.ndarray:
        """Visit index of each code entry."""
        return np.repeat(np.arange(self.n_visits), np.diff(self.code_ptr))

    def subset(self, rows: np.ndarray, label: str | None = None) -> CohortArrays:
        """The patients ``rows`` (in that order) as a new cohort over the same vocabulary."""
        rows = np.asarray(rows, dtype=np.int64)
        visit_ptr, visits = gather_ranges(self.visit_ptr, rows)
        code_ptr, entries = gather_ranges(self.code_ptr, visits)
        return CohortArrays(
            label or self.label,
            self.subject_id[rows],
            self.sex[rows],
            self.age[rows],
            visit_ptr,
            code_ptr,
            self.codes[entries],
            self.vocab,
            None if self.visit_time is None else self.visit_time[visits],
            None if self.visit_end is None else self.visit_end[visits],
        )

    def restrict(self, keep: np.ndarray, label: str | None = None) -> CohortArrays:
        """The same patients and visits holding only the codes whose vocabulary entry ``keep`` is
        True (per event type metrics: a visit without codes of the type stays, empty)."""
        entry = np.asarray(keep, dtype=bool)[self.codes] if len(self.codes) else np.zeros(0, dtype=bool)
        per_visit = np.bincount(self.code_visit()[entry], minlength=self.n_visits)
        code_ptr = np.zeros(self.n_visits + 1, dtype=np.int64)
        np.cumsum(per_visit, out=code_ptr[1:])
        return CohortArrays(
            label or self.label,
            self.subject_id,
            self.sex,
            self.age,
            self.visit_ptr,
            code_ptr,
            self.codes[entry],
            self.vocab,
            self.visit_time,
            self.visit_end,
        )


def unique_sorted(*arrays: np.ndarray) -> np.ndarray:
    """Sorted distinct values of integer arrays (sort-based: numpy 2's hashing np.unique is ~50x slower here)."""
    x = np.sort(np.concatenate(arrays)) if len(arrays) > 1 else np.sort(arrays[0])
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def gather_ranges(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New offsets and flat element indices for the ranges ``ptr[r]:ptr[r+1]`` of ``rows``."""
    lengths = (ptr[rows + 1] - ptr[rows]).astype(np.int64)
    new_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_ptr[1:])
    flat = np.arange(new_ptr[-1], dtype=np.int64) - np.repeat(new_ptr[:-1] - ptr[rows], lengths)
    return new_ptr, flat


def _offsets(lengths: pa.Array) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths.fill_null(0).to_numpy(zero_copy_only=False), out=out[1:])
    return out


def read_cohort(cohort: Cohort, splits: Sequence[str], label: str) -> RawCohort:
    """Read ``splits`` of ``cohort`` into flat arrays (vectorised through Arrow list offsets)."""
    files = [f for s in splits for f in cohort.files(s)]
    columns = ["subject_id", "sex", "age", "visits"]
    tables = [pq.read_table(f, columns=columns) for f in files]
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        raise InputError(
            f"{label} cohort {cohort.path} holds no patients in split(s) {', '.join(splits)}; "
            f"it has {', '.join(cohort.splits()) or 'none'}"
        )
    visits = table.column("visits").combine_chunks()
    visit_struct = visits.flatten()
    codes_list = pc.struct_field(visit_struct, "codes")
    flat_codes = codes_list.flatten().fill_null("")
    encoded = pc.dictionary_encode(flat_codes)
    return RawCohort(
        label=label,
        subject_id=table.column("subject_id").to_numpy().astype(np.int64),
        sex=table.column("sex").fill_null(-1).to_numpy().astype(np.int8),
        age=table.column("age").cast(pa.float64()).fill_null(np.nan).to_numpy(),
        visit_ptr=_offsets(visits.value_lengths()),
        code_ptr=_offsets(codes_list.value_lengths()),
        local_codes=encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32),
        dictionary=np.asarray(encoded.dictionary.to_pylist(), dtype=str),
        visit_time=_seconds(visit_struct, "time"),
        visit_end=_seconds(visit_struct, "end"),
    )


def _seconds(visit_struct: pa.StructArray, name: str) -> np.ndarray:
    """A visit timestamp field as epoch seconds (float64, NaN where null or absent)."""
    if visit_struct.type.get_field_index(name) < 0:
        return np.full(len(visit_struct), np.nan)
    return epoch_seconds(pc.struct_field(visit_struct, name))


def shared_vocabulary(*raws: RawCohort) -> np.ndarray:
    """Sorted union of the codes of all cohorts."""
    return np.unique(np.concatenate([r.dictionary for r in raws] + [np.array([], dtype=str)]))


def encode(raw: RawCohort, vocab: np.ndarray) -> CohortArrays:
    """Map a cohort's dictionary codes onto the shared vocabulary."""
    lookup = np.searchsorted(vocab, raw.dictionary).astype(np.int32)
    codes = lookup[raw.local_codes] if len(raw.local_codes) else np.zeros(0, np.int32)
    return CohortArrays(
        raw.label,
        raw.subject_id,
        raw.sex,
        raw.age,
        raw.visit_ptr,
        raw.code_ptr,
        codes,
        vocab,
        raw.visit_time,
        raw.visit_end,
    )


# ----------------------------------------------------------------------------- levels


@dataclass
class Level:
    """A code level: ``token_of_code`` maps vocabulary index -> token index in ``tokens``."""

    name: str
    tokens: np.ndarray
    token_of_code: np.ndarray

    @classmethod
    def codes(cls, vocab: np.ndarray) -> Level:
        return cls("code", vocab, np.arange(len(vocab), dtype=np.int64))

    @classmethod
    def categories(cls, vocab: np.ndarray) -> Level:
        cats = np.array([category_of(str(c)) for c in vocab], dtype=str)
        tokens, inverse = np.unique(cats, return_inverse=True) if len(cats) else (cats, cats)
        return cls("category", tokens, np.asarray(inverse, dtype=np.int64))

    @property
    def size(self) -> int:
        return len(self.tokens)


@dataclass
class PatientStats:
    """Per-patient sufficient statistics of one cohort at one level (rows = patients)."""

    visit_counts: sp.csr_matrix  # [n, T] visits holding each token (distinct within a visit)
    n_visits: np.ndarray  # [n]
    n_transitions: np.ndarray  # [n] consecutive visit pairs
    visit_sizes: sp.csr_matrix  # [n, max_size + 1] visits with k distinct tokens
    pair_patient: np.ndarray  # patient of each within-visit pair occurrence (a < b)
    pair_key: np.ndarray  # a * T + b
    trans_patient: np.ndarray  # patient of each consecutive-visit transition (a in t, b in t+1)
    trans_key: np.ndarray  # a * T + b
    carried: np.ndarray  # [n] tokens of a visit present again in the patient's next visit
    carry_base: np.ndarray  # [n] tokens of the visits that have a next visit
    age: np.ndarray  # [n] years at the first visit
    female: np.ndarray  # [n] 1.0 for sex 1, 0.0 otherwise


def _csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=shape)
    m.sum_duplicates()
    return m


def distinct_entries(arr: CohortArrays, level: Level) -> tuple[np.ndarray, np.ndarray]:
    """(visit, token) of every distinct token of every visit, sorted by visit then token."""
    t = max(level.size, 1)
    key = unique_sorted(arr.code_visit().astype(np.int64) * t + level.token_of_code[arr.codes])
    return key // t, key % t


def code_counts(arr: CohortArrays, level: Level | None = None) -> sp.csr_matrix:
    """``[n_patients, n_tokens]``: number of visits holding each token (bag of codes)."""
    level = level or Level.codes(arr.vocab)
    e_visit, e_tok = distinct_entries(arr, level)
    return _csr(arr.visit_patient()[e_visit], e_tok, (arr.n_patients, level.size))


def patient_stats(arr: CohortArrays, level: Level) -> PatientStats:
    """Deduplicate tokens within visits and enumerate pairs and transitions, all vectorised."""
    n, nv, t = arr.n_patients, arr.n_visits, level.size
    e_visit, e_tok = distinct_entries(arr, level)
    size = np.bincount(e_visit, minlength=nv).astype(np.int64)
    start = np.zeros(nv + 1, dtype=np.int64)
    np.cumsum(size, out=start[1:])
    vp = arr.visit_patient()
    visit_counts = _csr(vp[e_visit], e_tok, (n, t))
    n_visits = np.diff(arr.visit_ptr)
    visit_sizes = _csr(vp, size, (n, int(size.max(initial=0)) + 1))

    # within-visit pairs: entry at position i of its visit pairs with positions i+1 .. size-1
    pos = np.arange(len(e_visit)) - start[e_visit]
    n_partners = size[e_visit] - 1 - pos
    left = np.repeat(np.arange(len(e_visit)), n_partners)
    offs = np.arange(len(left)) - np.repeat(np.cumsum(n_partners) - n_partners, n_partners)
    right = left + 1 + offs
    pair_key = e_tok[left] * t + e_tok[right]
    pair_patient = vp[e_visit[left]]

    # transitions: every token of visit v with every token of visit v + 1 of the same patient
    has_next = np.ones(nv, dtype=bool)
    has_next[arr.visit_ptr[1:][n_visits > 0] - 1] = False
    v = np.flatnonzero(has_next)
    count = size[v] * size[v + 1]
    tr = np.repeat(np.arange(len(v)), count)
    q = np.arange(len(tr)) - np.repeat(np.cumsum(count) - count, count)
    a = start[v[tr]] + q // np.maximum(size[v[tr] + 1], 1)
    b = start[v[tr] + 1] + q % np.maximum(size[v[tr] + 1], 1)
    trans_key = e_tok[a] * t + e_tok[b]
    n_transitions = np.bincount(vp[v], minlength=n).astype(np.int64)
    same = e_tok[a] == e_tok[b]  # a token of visit t that visit t + 1 holds again
    return PatientStats(
        visit_counts,
        n_visits,
        n_transitions,
        visit_sizes,
        pair_patient,
        pair_key,
        vp[v[tr]],
        trans_key,
        carried=np.bincount(vp[v[tr]][same], minlength=n).astype(np.float64),
        carry_base=np.bincount(vp[v], weights=size[v], minlength=n).astype(np.float64),
        age=np.asarray(arr.age, dtype=np.float64),
        female=(np.asarray(arr.sex) == 1).astype(np.float64),
    )


def keyed_matrix(patient: np.ndarray, key: np.ndarray, columns: np.ndarray, n: int) -> sp.csr_matrix:
    """``[n, len(columns)]`` counts of ``key`` per patient; ``columns`` sorted, keys outside dropped."""
    col = np.searchsorted(columns, key)
    ok = col < len(columns)
    ok[ok] = columns[col[ok]] == key[ok]
    return _csr(patient[ok], col[ok], (n, len(columns)))
