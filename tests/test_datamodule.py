"""Streaming DataModule: sharding over ranks and workers, the batch contract, truncation, resume."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

from ehrgen.data.codes import category_of
from ehrgen.data.cohort import POLARS_SCHEMA, SPLITS, Cohort, cohort_metadata, write_patient_shards
from ehrgen.data.corruption import CorruptionConfig, shuffle_visits
from ehrgen.data.datamodule import (
    CohortDataModule,
    CohortIterableDataset,
    batches_per_rank,
    pad_stack,
    plan_epoch,
    truncate_oldest,
)
from ehrgen.data.vocab import (
    BOS,
    EOS,
    PAD,
    VISIT_END,
    VISIT_START,
    CodeVocab,
    HierarchicalTokenizer,
    build_tokenizer,
)

V, E = VISIT_START, VISIT_END
POOL = ["4019", "25000", "V5861", "E8497", "4280", "42731", "5849", "0389", "51881", "2724", "53081", "41401"]
# The first train patient, checked token by token.
KNOWN = {
    "subject_id": 7,
    "sex": 1,
    "age": 66.5,
    "visits": [["4019", "25000"], ["V5861"], ["0389", "4019", "E8497"]],
}


def _patient(i: int) -> dict:
    n_visits = 1 + i % 4
    visits = []
    for j in range(n_visits):
        n = 1 + (i + j) % 5
        visits.append([POOL[(3 * i + 5 * j + k) % len(POOL)] for k in range(n)])
    return {"subject_id": 1000 + i, "sex": i % 2, "age": 20.0 + i % 60, "visits": visits}


def write_cohort(
    path: Path, splits: dict[str, list[dict]], row_group_size: int = 10, shard_size: int = 40
) -> Path:
    """A cohort dir with the given patients (visits as lists of code lists) per split."""
    start = datetime(2150, 1, 1)
    counts = {}
    for split in SPLITS:
        rows = [
            {
                **p,
                "visits": [
                    {"time": start + timedelta(days=30 * j), "codes": v} for j, v in enumerate(p["visits"])
                ],
            }
            for p in splits.get(split, [])
        ]
        counts[split] = len(rows)
        if rows:
            frame = pl.DataFrame(rows, schema=POLARS_SCHEMA)
            write_patient_shards(frame, path / "data" / split, shard_size, row_group_size)
    total = Counter(c for ps in splits.values() for p in ps for v in p["visits"] for c in v)
    train = Counter(c for p in splits.get("train", []) for v in p["visits"] for c in v)
    codes = pl.DataFrame(
        {
            "code": list(total),
            "count": list(total.values()),
            "train_count": [train[c] for c in total],
            "category": [category_of(c) for c in total],
            "description": [None] * len(total),
        },
        schema_overrides={"description": pl.Utf8},
    )
    (path / "metadata").mkdir(parents=True, exist_ok=True)
    codes.write_parquet(path / "metadata" / "codes.parquet")
    meta = cohort_metadata("test", counts={"patients": counts})
    (path / "metadata" / "cohort.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """101 train patients (awkward for batch 8 over 2 ranks) in 3 files of 10-row groups."""
    train = [KNOWN] + [_patient(i) for i in range(100)]
    val = [_patient(i) for i in range(200, 223)]
    test = [_patient(i) for i in range(300, 317)]
    return write_cohort(tmp_path_factory.mktemp("dm") / "cohort", {"train": train, "val": val, "test": test})


@pytest.fixture(scope="module")
def vocab(cohort: Path) -> CodeVocab:
    return build_tokenizer(cohort, "code")


def _ds(cohort: Path, vocab, split="train", **kw) -> CohortIterableDataset:
    kw.setdefault("batch_size", 8)
    return CohortIterableDataset(
        cohort,
        split,
        vocab,
        shuffle=split == "train",
        with_subject_id=True,
        shuffle_buffer=kw.pop("buf", 16),
        **kw,
    )


def _round_robin(ds: CohortIterableDataset, workers: int) -> list[list[int]]:
    """Subject ids of what a DataLoader with ``workers`` workers yields: workers polled in turn."""
    its = [ds.iter_worker(w, workers) for w in range(workers)]
    out, live = [], list(range(workers))
    while live:
        for w in list(live):
            try:
                out.append(next(its[w])["subject_id"].tolist())
            except StopIteration:
                live.remove(w)
    return out


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize(
    ("world", "batch", "workers"), [(2, 8, 2), (3, 8, 2), (4, 5, 3), (1, 16, 1), (2, 1, 2), (7, 32, 2)]
)
def test_every_patient_once_and_equal_batch_counts(
    cohort: Path, vocab, world: int, batch: int, workers: int
) -> None:
    all_ids = sorted(Cohort(cohort).read("train")["subject_id"].to_list())
    seen, counts = [], []
    for rank in range(world):
        ds = _ds(cohort, vocab, batch_size=batch, rank=rank, world_size=world)
        batches = _round_robin(ds, workers)
        assert len(batches) == len(ds) == batches_per_rank(101, world, batch)
        assert all(1 <= len(b) <= batch for b in batches)
        counts.append(len(batches))
        seen += [s for b in batches for s in b]
    assert len(set(counts)) == 1  # equal on every rank: DDP never waits for a missing batch
    if world * counts[0] <= 101:
        assert sorted(seen) == all_ids  # exactly once
    else:  # more batch slots than patients (batch 1 with an odd split): padding duplicates only
        assert set(seen) == set(all_ids) and len(seen) == world * counts[0]


def test_101_patients_batch_8_two_ranks(cohort: Path, vocab) -> None:
    sizes = []
    for rank in (0, 1):
        plan = _ds(cohort, vocab, rank=rank, world_size=2).plan()
        sizes.append(np.diff(plan.bounds).tolist())
    # ranks hold 50 and 51 rows, both in ceil(51 / 8) = 7 near-equal batches
    assert [len(s) for s in sizes] == [7, 7]
    assert sorted(sizes[0]) == [7, 7, 7, 7, 7, 7, 8] and sorted(sizes[1]) == [7, 7, 7, 7, 7, 8, 8]


def test_fewer_patients_than_ranks_pads(tmp_path: Path) -> None:
    c = write_cohort(tmp_path / "c", {"train": [_patient(i) for i in range(3)]})
    vocab = build_tokenizer(c)
    seen = []
    for rank in range(5):
        batches = _round_robin(_ds(c, vocab, rank=rank, world_size=5, batch_size=4), 2)
        assert len(batches) == 1 and len(batches[0]) == 1
        seen += batches[0]
    assert set(seen) == {1000, 1001, 1002}


def test_real_dataloader_workers_yield_plan_order(cohort: Path, vocab) -> None:
    ds = _ds(cohort, vocab, rank=1, world_size=2)
    expected = _round_robin(ds, 1)  # one worker = the plan order
    assert _round_robin(ds, 2) == expected
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    got = [b["subject_id"].tolist() for b in loader]
    assert got == expected
    # the batch plan, not the worker count, decides each batch's patients
    assert _round_robin(ds, 3) == expected


def test_epochs_reshuffle_and_seed_reproduces(cohort: Path, vocab) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        ds = _ds(cohort, vocab, seed=seed)
        ds.set_epoch(epoch)
        return [s for b in _round_robin(ds, 2) for s in b]

    e0, e1 = order(0, 0), order(0, 1)
    assert sorted(e0) == sorted(e1) and e0 != e1
    assert order(0, 1) == e1  # same seed and epoch: same order
    assert order(1, 0) != e0
    # val is never shuffled: file order, the same every epoch
    val = _ds(cohort, vocab, "val")
    first = [s for b in _round_robin(val, 2) for s in b]
    val.set_epoch(3)
    assert [s for b in _round_robin(val, 2) for s in b] == first == list(range(1200, 1223))


def test_shuffle_buffer_bounds_displacement(cohort: Path, vocab) -> None:
    plan = plan_epoch(
        np.full(20, 50), rank=0, world_size=1, batch_size=8, seed=0, epoch=0, shuffle=True, shuffle_buffer=64
    )
    displacement = np.abs(plan.order - np.arange(len(plan.order)))
    assert displacement.max() <= 64 and displacement.mean() > 5
    assert sorted(plan.order.tolist()) == list(range(1000))


# ----------------------------------------------------------------------------- batch contract


def test_batch_contract_for_a_known_patient(cohort: Path, vocab) -> None:
    ds = _ds(cohort, vocab, "train", corruption=CorruptionConfig(p=0.0, prompt_p=0.0), batch_size=8)
    batch = next(b for b in _round_robin_batches(ds) if 7 in b["subject_id"].tolist())
    i = batch["subject_id"].tolist().index(7)
    code = vocab.code_id
    clean = [
        BOS,
        V,
        code("4019"),
        code("25000"),
        E,
        V,
        code("V5861"),
        E,
        V,
        code("0389"),
        code("4019"),
        code("E8497"),
        E,
        EOS,
    ]
    n = len(clean)
    assert batch["decoder_input_ids"][i, : n - 1].tolist() == clean[:-1]
    assert batch["labels"][i, : n - 1].tolist() == clean[1:]
    assert batch["input_ids"][i, :n].tolist() == clean  # p = 0: the clean sequence
    width = batch["labels"].shape[1]
    assert batch["labels"][i, n - 1 :].tolist() == [-100] * (width - n + 1)
    assert batch["decoder_input_ids"][i, n - 1 :].tolist() == [PAD] * (width - n + 1)
    assert batch["decoder_attention_mask"][i].tolist() == [1] * (n - 1) + [0] * (width - n + 1)
    assert batch["attention_mask"][i].sum() == n and (batch["input_ids"][i, n:] == PAD).all()
    assert batch["age"][i].item() == 66.5 and batch["sex"][i].item() == 1
    B = len(batch["subject_id"])
    for key, dtype in [
        ("input_ids", torch.long),
        ("attention_mask", torch.long),
        ("decoder_input_ids", torch.long),
        ("decoder_attention_mask", torch.long),
        ("labels", torch.long),
        ("age", torch.float32),
        ("sex", torch.long),
    ]:
        assert batch[key].dtype == dtype and batch[key].shape[0] == B
    assert batch["decoder_input_ids"].shape == batch["labels"].shape == batch["decoder_attention_mask"].shape
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    # every row: labels are decoder_input_ids shifted by one, and the last label is </s>
    for r in range(B):
        m = int(batch["decoder_attention_mask"][r].sum())
        assert batch["labels"][r, : m - 1].tolist() == batch["decoder_input_ids"][r, 1:m].tolist()
        assert batch["labels"][r, m - 1] == EOS and batch["decoder_input_ids"][r, 0] == BOS


def _round_robin_batches(ds: CohortIterableDataset) -> list[dict]:
    return list(ds.iter_worker(0, 1))


def test_test_split_is_clean_and_val_corruption_is_fixed(cohort: Path, vocab) -> None:
    dm = CohortDataModule(str(cohort), vocab, batch_size=4, eval_batch_size=5, rank=0, world_size=1)
    dm.setup("fit")
    test = list(dm.test_dataloader())
    assert len(test) == math.ceil(17 / 5)
    for b in test:
        m = b["decoder_attention_mask"].sum(1)
        for r in range(len(m)):
            assert b["input_ids"][r, : m[r] + 1].tolist() == [BOS, *b["labels"][r, : m[r]].tolist()]
    val1 = [b["input_ids"] for b in dm.val_dataloader()]
    dm.set_epoch(5)
    val2 = [b["input_ids"] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val1, val2, strict=True))
    # training batches are corrupted with p = 0.5: some rows differ from the clean sequence
    train = next(iter(dm.train_dataloader()))
    assert train["input_ids"].shape[1] <= train["decoder_input_ids"].shape[1] + 1


def test_train_corruption_changes_some_encoder_inputs(cohort: Path, vocab) -> None:
    ds = _ds(cohort, vocab, corruption=CorruptionConfig(p=0.5, prompt_p=0.0))
    changed = total = 0
    for b in ds.iter_worker(0, 1):
        for r in range(len(b["sex"])):
            m = int(b["decoder_attention_mask"][r].sum())
            clean = [BOS, *b["labels"][r, :m].tolist()]
            enc = b["input_ids"][r, : int(b["attention_mask"][r].sum())].tolist()
            changed += enc != clean
            total += 1
            assert enc[0] == BOS and enc[-1] == EOS
    assert 0.25 < changed / total < 0.6


def test_shuffle_items_reorders_train_visits_only_and_is_seeded(cohort: Path, vocab) -> None:
    def visits(batch: dict[str, torch.Tensor]) -> list[list[tuple[int, ...]]]:
        out = []
        for r in range(len(batch["sex"])):
            seq = batch["labels"][r, : int(batch["decoder_attention_mask"][r].sum())].tolist()
            rows, cur = [], []
            for t in seq:
                if t == E:
                    rows.append(tuple(cur))
                    cur = []
                elif t >= vocab.content_range[0]:
                    cur.append(t)
            out.append(rows)
        return out

    def batches(shuffle: bool, split: str = "train") -> list[dict[str, torch.Tensor]]:
        dm = CohortDataModule(str(cohort), vocab, batch_size=4, rank=0, world_size=1, shuffle_items=shuffle)
        dm.setup("fit")
        return list(dm.train_dataloader() if split == "train" else dm.val_dataloader())

    plain, shuffled, again = batches(False), batches(True), batches(True)
    a = [v for b in plain for v in visits(b)]
    b = [v for b in shuffled for v in visits(b)]
    assert [[sorted(x) for x in p] for p in a] == [[sorted(x) for x in p] for p in b]  # same visits
    assert a != b  # in another order
    assert all(torch.equal(x["labels"], y["labels"]) for x, y in zip(shuffled, again, strict=True))
    for x, y in zip(batches(False, "val"), batches(True, "val"), strict=True):
        assert torch.equal(x["labels"], y["labels"])  # val keeps the source's order


def test_training_on_shuffled_items_ends_visits_on_the_set_not_on_order_cues() -> None:
    """The cause of visits cut short in generation: every visit of the source ends with one code
    (as MIMIC's V codes come late), so a model trained in that order learns "end after it", and
    where that code comes earlier (as in the orders a model writes itself) it misses the visit's
    real end. Trained on shuffled items, its end decision reads the set written so far, not the order."""
    from test_prompt_bart import TINY

    from ehrgen.models.prompt_bart import PromptBart

    lo, n_codes, last = 7, 8, 15
    vocab_size = 16
    types = np.zeros(vocab_size, dtype=np.int64)
    types[lo:] = 1

    def patients(rng: np.random.Generator, n: int) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            codes = rng.choice(n_codes, size=rng.integers(1, 5), replace=False) + lo
            out.append(np.array([BOS, V, *codes, last, E, EOS]))
        return out

    def end_probability(model: PromptBart, seqs: list[np.ndarray]) -> float:
        """Mean probability of ``<\\v>`` where the visit really ends."""
        dec, dec_mask = pad_stack([s[:-1] for s in seqs], PAD)
        labels, _ = pad_stack([s[1:] for s in seqs], PAD)
        n = len(seqs)
        out = model(torch.tensor([[BOS, EOS]] * n), torch.ones(n, 2, dtype=torch.long), dec, dec_mask,
                    torch.full((n,), 50.0), torch.zeros(n, dtype=torch.long))  # fmt: skip
        return float(out.logits.softmax(-1)[..., E][labels == E].mean())

    def fit(shuffle: bool, steps: int = 150) -> tuple[float, float]:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        model = PromptBart(vocab_size, prompt_length=2, **{**TINY, "max_length": 10})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(steps):
            seqs = patients(rng, 64)
            if shuffle:
                seqs = [shuffle_visits(s, rng, types) for s in seqs]
            dec, dec_mask = pad_stack([s[:-1] for s in seqs], PAD)
            labels, _ = pad_stack([s[1:] for s in seqs], -100)
            n = len(seqs)
            out = model(torch.tensor([[BOS, EOS]] * n), torch.ones(n, 2, dtype=torch.long), dec, dec_mask,
                        torch.full((n,), 50.0), torch.zeros(n, dtype=torch.long))  # fmt: skip
            loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():  # the same visits, in the source's order and in any order
            source = patients(rng, 256)
            shuffled = [shuffle_visits(s, rng, types) for s in source]
            return end_probability(model, source), end_probability(model, shuffled)

    in_order, other_order = fit(shuffle=False)
    assert in_order > 0.8 and other_order < 0.5 * in_order
    in_order, other_order = fit(shuffle=True)
    assert other_order == pytest.approx(in_order, rel=0.15)


def test_truncation_keeps_newest_visits(tmp_path: Path) -> None:
    visits = [["4019"], ["25000", "4280"], ["V5861"], ["0389", "5849"]]
    c = write_cohort(tmp_path / "c", {"test": [{"subject_id": 1, "sex": 0, "age": 50.0, "visits": visits}]})
    vocab = CodeVocab(POOL)
    full = vocab.encode(visits)
    assert len(full) == 16
    # <s> + the last three visits (4 + 3 + 4 tokens) + </s> = 13 tokens; the last two take 9
    assert vocab.decode(truncate_oldest(full, 13)) == visits[1:]
    t = truncate_oldest(full, 12)
    assert vocab.decode(t) == visits[2:] and t[0] == BOS and t[-1] == EOS and len(t) == 9
    assert truncate_oldest(full, 16) is full
    # the newest visit alone too long: its first codes, closed properly
    long = vocab.encode([["4019"], POOL])
    cut = truncate_oldest(long, 8)
    assert cut.tolist() == [BOS, V, *vocab.encode([POOL])[2:6].tolist(), E, EOS] and len(cut) == 8
    ds = CohortIterableDataset(c, "test", vocab, batch_size=2, max_length=12)
    b = next(iter(ds))
    assert vocab.decode(b["labels"][0][b["labels"][0] >= 0]) == visits[2:]
    assert b["decoder_input_ids"].shape[1] == 8


def test_hierarchical_tokenizer_batches(cohort: Path) -> None:
    tok = build_tokenizer(cohort, "category")
    assert isinstance(tok, HierarchicalTokenizer)
    ds = _ds(cohort, tok, corruption=CorruptionConfig(p=1.0, prompt_p=0.0, tasks=("replace",), replace_p=1.0))
    for b in ds.iter_worker(0, 1):
        for key in ("input_ids", "decoder_input_ids"):
            assert (b[key] < tok.code_offset).all()
    b = next(b for b in ds.iter_worker(0, 1) if 7 in b["subject_id"].tolist())
    i = b["subject_id"].tolist().index(7)
    m = int(b["decoder_attention_mask"][i].sum())
    assert tok.decode(b["labels"][i, :m]) == [["401", "250"], ["V58"], ["038", "401", "E849"]]


# ----------------------------------------------------------------------------- DataModule, resume


def test_datamodule_rank_injection_and_constructor(cohort: Path, vocab) -> None:
    dm = CohortDataModule(str(cohort), vocab, batch_size=8, rank=1, world_size=2, corruption={"p": 0.2})
    assert dm.dist_info() == (1, 2) and dm.corruption.p == 0.2
    dm.setup("fit")
    ds = dm.dataset("train")
    assert (ds.rank, ds.world_size, len(ds)) == (1, 2, 7)
    assert dm.dataset("val").batch_size == 8 and ds.shuffle and not dm.dataset("val").shuffle
    assert CohortDataModule(str(cohort), vocab).dist_info() == (0, 1)
    assert CohortDataModule(str(cohort), vocab).corruption == CorruptionConfig()


def test_state_dict_resume_skips_consumed_batches(cohort: Path, vocab) -> None:
    def dm_for() -> CohortDataModule:
        dm = CohortDataModule(str(cohort), vocab, batch_size=8, num_workers=0, rank=0, world_size=2)
        dm.setup("fit")
        return dm

    ref = dm_for()
    ref.set_epoch(1)
    full = [b for b in ref.train_dataloader()]
    assert len(full) == 7
    resumed = dm_for()
    resumed.load_state_dict({"epoch": 1, "batches_consumed": 3})
    resumed.set_epoch(1)  # the training module's call at epoch start keeps the progress
    rest = list(resumed.train_dataloader())
    assert len(rest) == 4
    for a, b in zip(full[3:], rest, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a new epoch starts from its first batch
    resumed.set_epoch(2)
    assert resumed.state_dict()["batches_consumed"] == 0 and len(list(resumed.train_dataloader())) == 7
    # a different world size changes the plan: the epoch restarts, with a warning
    other = dm_for()
    with pytest.warns(UserWarning, match="restarts from its first batch"):
        other.load_state_dict(
            {"epoch": 1, "batches_consumed": 3, "seed": 0, "world_size": 4, "batch_size": 8}
        )
    other.set_epoch(1)
    assert len(list(other.train_dataloader())) == 7


class _Tiny(L.LightningModule):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, 4)
        self.seen: list[list[int]] = []

    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch["decoder_input_ids"].shape)
        mask = batch["labels"] != -100
        return (
            self.emb(batch["labels"].clamp(min=0))[mask].pow(2).mean() + self.emb(batch["input_ids"]).mean()
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val_x", self.emb(batch["input_ids"]).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_trainer_smoke_and_checkpointed_state(cohort: Path, vocab, tmp_path: Path) -> None:
    dm = CohortDataModule(str(cohort), vocab, batch_size=8, num_workers=0)
    model = _Tiny(vocab.vocab_size)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 2
    # sanity-check validation batches are not counted as consumed training batches
    assert dm.state_dict()["epoch"] == 0 and dm.state_dict()["batches_consumed"] == 2
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["CohortDataModule"] == {
        "epoch": 0,
        "batches_consumed": 2,
        "seed": 0,
        "world_size": 1,
        "batch_size": 8,
    }


def test_full_epochs_advance_without_set_epoch(cohort: Path, vocab) -> None:
    dm = CohortDataModule(str(cohort), vocab, batch_size=32)

    class NoEpochCalls(_Tiny):
        def on_train_epoch_start(self) -> None:
            pass

    model = NoEpochCalls(vocab.vocab_size)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 2 * 4 and dm.state_dict()["epoch"] == 2


# ----------------------------------------------------------------------------- real data


def test_mimic3_demo_cohort_streams_every_train_patient(demo_cohort: Path) -> None:
    cohort = Cohort(demo_cohort)
    vocab = build_tokenizer(demo_cohort, "code")
    train = cohort.read("train")
    expected = {r["subject_id"]: [v["codes"] for v in r["visits"]] for r in train.iter_rows(named=True)}
    seen: dict[int, list[list[str]]] = {}
    for rank in (0, 1):
        ds = CohortIterableDataset(
            demo_cohort,
            "train",
            vocab,
            batch_size=8,
            max_length=100_000,  # no truncation: compare whole patients
            shuffle=True,
            rank=rank,
            world_size=2,
            with_subject_id=True,
        )
        for w in (0, 1):
            for b in ds.iter_worker(w, 2):
                for r, sid in enumerate(b["subject_id"].tolist()):
                    m = int(b["decoder_attention_mask"][r].sum())
                    assert sid not in seen
                    seen[sid] = vocab.decode(b["labels"][r, :m])
    assert seen.keys() == expected.keys()
    # every train code is in the vocabulary, so each patient decodes back to its visits
    assert all(seen[s] == expected[s] for s in expected)


class _RecordAges(_Tiny):
    """Writes the ages (unique per patient in the DDP test cohort) each rank trained on."""

    def __init__(self, vocab_size: int, out: str):
        super().__init__(vocab_size)
        self.out = out
        self.ages: list[list[float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.ages.append(batch["age"].tolist())
        return super().training_step(batch, batch_idx)

    def on_train_end(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.ages))


@pytest.mark.slow
def test_ddp_two_processes_see_every_patient_once(tmp_path: Path) -> None:
    patients = [{**_patient(i), "age": float(i)} for i in range(101)]
    c = write_cohort(tmp_path / "c", {"train": patients})
    vocab = build_tokenizer(c)
    dm = CohortDataModule(str(c), vocab, batch_size=8, num_workers=1)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(_RecordAges(vocab.vocab_size, str(tmp_path)), datamodule=dm)
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(batches) for batches in per_rank] == [7, 7]
    ages = sorted(a for batches in per_rank for b in batches for a in b)
    assert ages == [float(i) for i in range(101)]
