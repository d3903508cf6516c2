"""Tokenizers: special ids, train-only vocabulary, round trips, the hierarchical id layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from ehrgen.data.cohort import PATIENT_SCHEMA, cohort_metadata
from ehrgen.data.vocab import (
    BOS,
    EOS,
    MASK,
    PAD,
    UNK,
    VISIT_END,
    VISIT_START,
    CodeVocab,
    HierarchicalTokenizer,
    Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)
from ehrgen.errors import InputError

V, E = VISIT_START, VISIT_END


def _codes_only_cohort(path: Path, codes: dict[str, tuple[int, int]]) -> Path:
    """A cohort dir with only metadata (enough for the vocabulary): code -> (count, train_count)."""
    (path / "metadata").mkdir(parents=True)
    pl.DataFrame(
        {
            "code": list(codes),
            "count": [c for c, _ in codes.values()],
            "train_count": [t for _, t in codes.values()],
            "category": [None] * len(codes),
            "description": [None] * len(codes),
        },
        schema_overrides={"category": pl.Utf8, "description": pl.Utf8},
    ).write_parquet(path / "metadata" / "codes.parquet")
    meta = cohort_metadata("test", counts={"patients": {"train": 0, "val": 0, "test": 0}})
    (path / "metadata" / "cohort.json").write_text(json.dumps(meta))
    return path


def test_special_ids() -> None:
    assert (BOS, PAD, EOS, UNK, VISIT_START, VISIT_END, MASK) == (0, 1, 2, 3, 4, 5, 6)
    vocab = CodeVocab(["4019", "25000"])
    assert [vocab.id_to_token(i) for i in range(7)] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "<v>",
        "<\\v>",
        "<mask>",
    ]
    assert (
        vocab.code_offset == 7
        and vocab.code_id("4019") == 8
        and vocab.code_id("0000") == UNK
        and len(vocab) == vocab.vocab_size == 9
    )


def test_encode_layout_and_round_trip() -> None:
    vocab = CodeVocab(["4019", "25000", "V5861", "E8497"])  # sorted: 25000 4019 E8497 V5861
    visits = [["4019", "25000"], ["V5861"], ["E8497", "4019", "V5861"]]
    ids = vocab.encode(visits)
    assert ids.dtype == np.int64
    assert ids.tolist() == [BOS, V, 8, 7, E, V, 10, E, V, 9, 8, 10, E, EOS]
    assert vocab.decode(ids) == visits
    # codes are never split: one token per code
    assert vocab.encode([["25000"]]).tolist() == [BOS, V, 7, E, EOS]
    assert vocab.encode([]).tolist() == [BOS, EOS]
    assert isinstance(vocab, Tokenizer) and vocab.level == "code" and vocab.content_range == (7, 11)


def test_unknown_codes_and_lenient_decode() -> None:
    vocab = CodeVocab(["4019", "25000"])
    assert vocab.encode([["4019", "99999"]]).tolist() == [BOS, V, 8, UNK, E, EOS]
    # padding, masks and unknowns are not codes; decoding stops at </s>
    assert vocab.decode([BOS, V, 7, MASK, UNK, E, V, 8, E, EOS, V, 7, E, PAD]) == [["25000"], ["4019"]]
    # ragged generated sequences: a code outside a visit opens one, an unclosed visit is kept
    assert vocab.decode([BOS, 7, E, V, 8, V, 7]) == [["25000"], ["4019"], ["25000"]]


def test_batch_encoding_matches_single_from_arrow_column() -> None:
    vocab = CodeVocab(["4019", "25000", "V5861", "E8497", "4280"])
    patients = [
        [["4019", "25000"], ["V5861"]],
        [],
        [[], ["E8497"]],
        [["4280", "0000", "4019", "25000", "V5861"]],
    ]
    column = pa.array(
        [[{"time": None, "codes": v} for v in p] for p in patients], type=PATIENT_SCHEMA.field("visits").type
    )
    # a sliced, chunked column (as a row group read gives) must respect offsets
    chunked = pa.chunked_array([column.slice(0, 1), column.slice(1)])
    batch = vocab.encode_batch(chunked)
    assert len(batch) == 4
    for got, visits in zip(batch, patients, strict=True):
        assert got.tolist() == vocab.encode(visits).tolist()
    assert batch[2].tolist() == [BOS, V, E, V, 10, E, EOS]
    assert [vocab.decode(x) for x in vocab.encode_batch(patients)] == [
        [["4019", "25000"], ["V5861"]],
        [],
        [[], ["E8497"]],
        [["4280", "4019", "25000", "V5861"]],  # 0000 is unknown: dropped on decode
    ]


def test_vocab_from_train_counts_only(tmp_path: Path) -> None:
    cohort = _codes_only_cohort(
        tmp_path / "c",
        {"4019": (10, 8), "25000": (5, 5), "V5861": (3, 0), "E8497": (2, 2), "4280": (1, 1)},
    )
    vocab = CodeVocab.from_cohort(cohort)
    assert vocab.codes == ["25000", "4019", "4280", "E8497"]  # V5861 was only seen outside train
    rare = CodeVocab.from_cohort(cohort, min_count=2)
    assert rare.codes == ["25000", "4019", "E8497"]
    assert rare.encode([["4280", "V5861", "4019"]]).tolist() == [BOS, V, UNK, UNK, 8, E, EOS]
    with pytest.raises(InputError, match="min_count"):
        CodeVocab.from_cohort(cohort, min_count=0)
    assert build_tokenizer(cohort, "code", 2).to_dict() == rare.to_dict()
    hier = build_tokenizer(cohort, "category", 2)
    assert hier.categories == ["250", "401", "E849"] and hier.codes == ["25000", "4019", "E8497"]
    with pytest.raises(InputError, match="level"):
        build_tokenizer(cohort, "visit")


def test_order_is_deterministic() -> None:
    codes = ["4019", "25000", "V5861", "E8497", "4280", "0389"]
    rng = np.random.default_rng(0)
    for _ in range(3):
        shuffled = list(rng.permutation(codes))
        assert CodeVocab(shuffled).codes == sorted(codes)
        assert HierarchicalTokenizer.from_counts(shuffled, [1] * 6).to_dict() == (
            HierarchicalTokenizer.from_counts(codes, [1] * 6).to_dict()
        )


@pytest.mark.parametrize(
    "tok",
    [CodeVocab(["4019", "25000"], min_count=3), HierarchicalTokenizer(["250", "401"], ["4019", "25000"])],
)
def test_to_dict_survives_weights_only_checkpoint(
    tok: CodeVocab | HierarchicalTokenizer, tmp_path: Path
) -> None:
    torch.save({"tokenizer": tok.to_dict()}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["tokenizer"]
    again = tokenizer_from_dict(loaded)
    assert type(again) is type(tok) and again.to_dict() == tok.to_dict()
    visits = [["4019", "25000"], ["25000"]]
    assert again.encode(visits).tolist() == tok.encode(visits).tolist()
    with pytest.raises(InputError, match="unknown kind"):
        tokenizer_from_dict({"kind": "bpe"})


def test_hierarchical_layout_and_category_encoding() -> None:
    tok = HierarchicalTokenizer.from_counts(
        ["4019", "4011", "25000", "25001", "E8497", "V5861"], [5, 1, 4, 2, 3, 1]
    )
    assert tok.level == "category" and tok.category_offset == 7
    assert tok.categories == ["250", "401", "E849", "V58"]
    assert tok.code_offset == 11
    assert tok.codes == ["25000", "25001", "4011", "4019", "E8497", "V5861"]
    assert tok.vocab_size == 17 and tok.content_range == (7, 11) and tok.code_range == (11, 17)
    # categories de-duplicated within a visit, in order of first occurrence
    visits = [["4019", "25000", "4011", "25001"], ["E8497"], ["V5861", "4019"]]
    ids = tok.encode(visits)
    assert ids.tolist() == [BOS, V, 8, 7, E, V, 9, E, V, 10, 8, E, EOS]
    assert tok.decode(ids) == [["401", "250"], ["E849"], ["V58", "401"]]
    # the code level in the same id space, and its map to categories
    codes = tok.encode_codes(visits)
    assert codes.tolist() == [BOS, V, 14, 11, 13, 12, E, V, 15, E, V, 16, 14, E, EOS]
    assert tok.decode(codes) == visits
    assert tok.code_to_category[codes].tolist() == [BOS, V, 8, 7, 8, 7, E, V, 9, E, V, 10, 8, E, EOS]
    assert tok.codes_of_category("401").tolist() == [13, 14]
    assert tok.codes_of_category(7).tolist() == [11, 12]
    assert tok.codes_of_category("999").tolist() == []
    # an unknown code of a known category still gives its category; unknown categories give <unk>
    assert tok.encode([["4010", "9999"]]).tolist() == [BOS, V, 8, UNK, E, EOS]
    assert [t.tolist() for t in tok.encode_batch([visits, []])] == [ids.tolist(), [BOS, EOS]]


def test_hierarchical_min_count_uses_category_totals() -> None:
    # 401's codes are each rarer than min_count, but the category as a whole is not
    tok = HierarchicalTokenizer.from_counts(["4019", "4011", "25000"], [1, 1, 1], min_count=2)
    assert tok.categories == ["401"] and tok.codes == []
    assert tok.encode([["4019", "25000"]]).tolist() == [BOS, V, 7, UNK, E, EOS]
    with pytest.raises(InputError, match="category is not in the vocabulary"):
        HierarchicalTokenizer(["401"], ["25000"])


def test_category_lookup_matches_official_table(icd9_tables: Path) -> None:
    table = pl.read_csv(
        icd9_tables / "icd9cm_dx_codes_v32.csv", schema_overrides={"code": pl.Utf8, "category": pl.Utf8}
    )
    codes, official = table["code"].to_list(), table["category"].to_list()
    tok = HierarchicalTokenizer.from_counts(codes, np.ones(len(codes), dtype=np.int64))
    assert len(tok.codes) == len(codes) == 14567
    assert set(tok.categories) == set(official)
    code_ids = np.array([tok.code_id(c) for c in codes])
    assert (code_ids >= tok.code_offset).all()
    got = [tok.id_to_token(i) for i in tok.code_to_category[code_ids]]
    mismatches = [(c, g, o) for c, g, o in zip(codes, got, official, strict=True) if g != o]
    assert mismatches == []
    # a 3-digit code (042, HIV disease) and its category are distinct tokens of the same name
    assert tok.code_id("042") >= tok.code_offset > tok.category_id("042") >= tok.category_offset
    assert tok.code_to_category[tok.code_id("042")] == tok.category_id("042")
    # every category's code range holds exactly its codes
    for cat in ("001", "042", "401", "V58", "E846", "E849"):
        expected = sorted(c for c, o in zip(codes, official, strict=True) if o == cat)
        assert [tok.id_to_token(i) for i in tok.codes_of_category(cat)] == expected
    # the category-level encoding agrees with the table for every code (one visit per code)
    encoded = tok.encode_batch([[[c]] for c in codes])
    assert [tok.id_to_token(int(e[2])) for e in encoded] == official
