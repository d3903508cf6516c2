"""Streaming, sharded batches from a cohort directory: :class:`CohortDataModule`.

How a split is streamed and sharded
-----------------------------------
Lightning never shards an ``IterableDataset``, and DDP hangs when ranks run different numbers of
steps, so :class:`CohortIterableDataset` does both itself, from a *batch plan* that depends only on
(seed, epoch, rank, world size, batch size) and never on the number of DataLoader workers:

1. The read unit is a Parquet row group (``prepare`` writes ``row_group_size`` patients per group);
   their sizes come from the file footers, so planning reads no data.
2. Training permutes the row groups with a (seed, epoch) generator; val/test keep file order.
   The concatenated rows form the epoch's global row order of N patients.
3. Rank r takes the contiguous slice ``[r*N//W, (r+1)*N//W)`` (sizes differ by at most one).
   Every rank makes the same number of batches, ``ceil(ceil(N/W) / batch_size)``, by splitting its
   slice into that many near-equal batches of at most ``batch_size``. Only when a rank has fewer
   rows than batches (N < W, or batch_size 1) does it borrow the next rows of the global order, as
   ``DistributedSampler`` pads.
4. Training mixes each rank's rows with a windowed shuffle (the shuffle buffer): row q gets the
   sort key ``q + U(0, shuffle_buffer)``, so a row moves at most ``shuffle_buffer`` places and a
   reader never holds more than about that many rows plus one row group. Being content-free, the
   shuffle is planned up front, so a worker knows which rows each batch needs before reading any.
5. Batch b goes to worker ``b % num_workers``: PyTorch's DataLoader polls workers round-robin, so
   batches come out in plan order. A worker reads, through memory-mapped Parquet, only the row
   groups that hold rows of its batches, tokenizes only those rows, and yields ready collated
   batches (DataLoader ``batch_size=None``).

Every patient is thus seen exactly once per epoch across ranks and workers, and resuming mid-epoch
only needs (epoch, batches_consumed): the plan is recomputed and the consumed batches are skipped
without reading their row groups. The Parquet files are memory-mapped, so the page cache holds the
data once for all workers; the dataset object itself holds only file names and small arrays.

Per batch: the clean sequence is truncated to ``max_length`` by dropping the oldest visits, the
encoder input is corrupted (:mod:`ehrgen.data.corruption`) with a generator seeded by
(seed, epoch, rank, batch), so val corruption is the same every epoch, and test has none.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ehrgen.data.cohort import SPLITS, Cohort
from ehrgen.data.corruption import CorruptionConfig, corrupt_batch, shuffle_visits
from ehrgen.data.vocab import BOS, EOS, PAD, VISIT_END, VISIT_START, Tokenizer, token_event_types
from ehrgen.errors import InputError
from ehrgen.models.visit_times import visits_time_labels

LABEL_PAD = -100
_MIN_LENGTH = 5  # <s> <v> code <\v> </s>
_COLUMNS = ["subject_id", "sex", "age", "visits"]


# ----------------------------------------------------------------------------- per-sequence ops


def truncate_oldest(ids: np.ndarray, max_length: int) -> np.ndarray:
    """Keep ``<s>``, the newest whole visits that fit, and ``</s>``.

    When even the newest visit is too long, its first codes are kept and the visit closed.
    """
    if len(ids) <= max_length:
        return ids
    starts = np.flatnonzero(ids == VISIT_START)
    fits = starts[len(ids) - starts + 1 <= max_length]
    if len(fits):
        return np.concatenate([[BOS], ids[fits[0] :]])
    last = starts[-1]
    return np.concatenate([[BOS], ids[last : last + max_length - 3], [VISIT_END, EOS]])


def _time_labels(visits: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """Per patient, ``[n_visits, 2]`` (gap bin, stay bin) of each visit (:mod:`ehrgen.models.visit_times`)."""
    labels, n = visits_time_labels(visits)
    return np.split(labels, np.cumsum(n)[:-1])


def pad_stack(seqs: list[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-d int arrays into ``[B, L]`` long tensors (values, attention mask)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    width = int(lengths.max()) if len(seqs) else 0
    mask = np.arange(width) < lengths[:, None]
    out = np.full((len(seqs), width), pad, dtype=np.int64)
    out[mask] = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(out), torch.from_numpy(mask.astype(np.int64))


# ----------------------------------------------------------------------------- the batch plan


@dataclass(frozen=True)
class BatchPlan:
    """One rank's epoch: rank-local rows q (in read order) and how they form batches.

    Row q lives in row group ``row_group[q]`` at ``row_in_group[q]``; batch b is the rows
    ``order[bounds[b]:bounds[b + 1]]``.
    """

    row_group: np.ndarray
    row_in_group: np.ndarray
    order: np.ndarray
    bounds: np.ndarray

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1

    def batch(self, b: int) -> np.ndarray:
        return self.order[self.bounds[b] : self.bounds[b + 1]]


def batches_per_rank(n_rows: int, world_size: int, batch_size: int) -> int:
    """The batch count every rank yields: enough for the largest rank slice."""
    return math.ceil(math.ceil(n_rows / world_size) / batch_size) if n_rows else 0


def plan_epoch(
    group_rows: np.ndarray,
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    shuffle_buffer: int = 0,
) -> BatchPlan:
    """The deterministic batch plan of one rank (see the module docstring)."""
    group_rows = np.asarray(group_rows, dtype=np.int64)
    n_total = int(group_rows.sum())
    n_batches = batches_per_rank(n_total, world_size, batch_size)
    if n_batches == 0:
        empty = np.zeros(0, dtype=np.int64)
        return BatchPlan(empty, empty, empty, np.zeros(1, dtype=np.int64))
    groups = np.arange(len(group_rows))
    if shuffle:
        groups = np.random.default_rng([seed, epoch]).permutation(len(group_rows))
    group_start = np.concatenate([[0], np.cumsum(group_rows[groups])])
    start, end = rank * n_total // world_size, (rank + 1) * n_total // world_size
    # Padding (duplicates) only when this rank has fewer rows than the common batch count.
    positions = np.arange(start, max(end, start + n_batches)) % n_total
    k = np.searchsorted(group_start, positions, side="right") - 1
    n = len(positions)
    order = np.arange(n)
    if shuffle and shuffle_buffer > 1:
        jitter = np.random.default_rng([seed, epoch, rank, 1]).uniform(0, shuffle_buffer, n)
        order = np.argsort(order + jitter, kind="stable")
    bounds = np.arange(n_batches + 1) * n // n_batches
    return BatchPlan(groups[k], positions - group_start[k], order, bounds)


# ----------------------------------------------------------------------------- the dataset


class CohortIterableDataset(IterableDataset):
    """Ready collated batches of one split for one rank; see the module docstring.

    ``rank``/``world_size`` are explicit so tests (and the DataModule) can build any rank's view;
    ``epoch`` and ``skip_batches`` are read when an iteration starts.
    """

    def __init__(
        self,
        cohort_dir: str | os.PathLike,
        split: str,
        tokenizer: Tokenizer,
        batch_size: int,
        max_length: int = 512,
        *,
        shuffle: bool = False,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        corruption: CorruptionConfig | None = None,
        rank: int = 0,
        world_size: int = 1,
        with_subject_id: bool = False,
        shuffle_items: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < _MIN_LENGTH:
            raise InputError(
                f"max_length must be >= {_MIN_LENGTH} (<s> <v> code <\\v> </s>), got {max_length}"
            )
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} outside a world of size {world_size}")
        cohort = Cohort(cohort_dir)
        self.split = split
        self.files = [str(f) for f in cohort.files(split)]
        file_of, index_in_file, rows = [], [], []
        for i, path in enumerate(self.files):
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                file_of.append(i)
                index_in_file.append(g)
                rows.append(meta.row_group(g).num_rows)
        self.group_file = np.asarray(file_of, dtype=np.int64)
        self.group_index = np.asarray(index_in_file, dtype=np.int64)
        self.group_rows = np.asarray(rows, dtype=np.int64)
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.shuffle = shuffle
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.corruption = corruption
        lo, _ = tokenizer.content_range
        self.token_type = np.array(token_event_types(tokenizer, lo, tokenizer.vocab_size), dtype=np.int64)
        self.rank, self.world_size = int(rank), int(world_size)
        self.with_subject_id = with_subject_id
        self.shuffle_items = bool(shuffle_items)
        self.epoch = 0
        self.skip_batches = 0

    @property
    def n_rows(self) -> int:
        return int(self.group_rows.sum())

    def __len__(self) -> int:
        return batches_per_rank(self.n_rows, self.world_size, self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> BatchPlan:
        return plan_epoch(
            self.group_rows,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            shuffle=self.shuffle,
            shuffle_buffer=self.shuffle_buffer,
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Read the epoch state now, not at the first next(): it may change while batches flow.
        return self.iter_worker(worker_id, num_workers, self.epoch, self.skip_batches)

    def iter_worker(
        self, worker_id: int, num_workers: int, epoch: int | None = None, skip_batches: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of one DataLoader worker: plan batches ``b >= skip`` with ``b % n == id``."""
        epoch = self.epoch if epoch is None else epoch
        plan = self.plan(epoch)
        mine = np.arange(worker_id, plan.n_batches, num_workers)
        mine = mine[mine >= skip_batches]
        if len(mine) == 0:
            return
        sizes = np.diff(plan.bounds)
        batch_of_row = np.empty(len(plan.order), dtype=np.int64)
        batch_of_row[plan.order] = np.repeat(np.arange(plan.n_batches), sizes)
        needed = (batch_of_row % num_workers == worker_id) & (batch_of_row >= skip_batches)
        last_row = np.maximum.reduceat(plan.order, plan.bounds[:-1])
        # Runs of consecutive rows from the same row group: the read units, in read order.
        g = plan.row_group
        run_start = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
        run_end = np.append(run_start[1:], len(g))

        files: dict[int, pq.ParquetFile] = {}
        pending: dict[int, tuple[np.ndarray, float, int, int]] = {}
        next_run = 0
        for b in mine.tolist():
            while next_run < len(run_start) and run_start[next_run] <= last_row[b]:
                rows = np.arange(run_start[next_run], run_end[next_run])
                rows = rows[needed[rows]]
                if len(rows):
                    pending.update(self._load(files, int(g[rows[0]]), rows, plan.row_in_group[rows]))
                next_run += 1
            yield self.collate([pending.pop(q) for q in plan.batch(b).tolist()], epoch, b)

    def _load(
        self, files: dict[int, pq.ParquetFile], group: int, keys: np.ndarray, rows: np.ndarray
    ) -> Iterator[tuple[int, tuple[np.ndarray, float, int, int]]]:
        """Read ``rows`` of one row group (memory-mapped) and tokenize them, keyed by ``keys``."""
        fid = int(self.group_file[group])
        if fid not in files:
            files[fid] = pq.ParquetFile(self.files[fid], memory_map=True)
        table = files[fid].read_row_group(int(self.group_index[group]), columns=_COLUMNS).take(rows)
        tokens = self.tokenizer.encode_batch(table.column("visits"))
        times = _time_labels(table.column("visits"))
        age = table.column("age").to_numpy().astype(np.float32)
        sex = table.column("sex").to_numpy().astype(np.int64)
        sid = table.column("subject_id").to_numpy().astype(np.int64)
        return zip(keys.tolist(), zip(tokens, age, sex, sid, times, strict=True), strict=True)

    def collate(
        self, rows: list[tuple[np.ndarray, float, int, int]], epoch: int, batch_index: int
    ) -> dict[str, torch.Tensor]:
        """Patients -> the batch contract (see :class:`CohortDataModule`)."""
        clean = [truncate_oldest(r[0], self.max_length) for r in rows]
        if self.shuffle_items:
            # A visit is a set, but the source's order (MIMIC's seq_num: the principal diagnosis
            # first, V codes late) taught the model to end visits on order cues. Teacher-forced on
            # real visits with their items permuted, the flat model trained in source order ended
            # visits 1.9-2.4x too often, the longest (the oldest patients') most; generating, it
            # writes its own orders, and the oldest patients' visits came out 8 % short
            # (docs/benchmarks.md, fidelity: visit items in a random order).
            order_rng = np.random.default_rng([self.seed, epoch, self.rank, batch_index, 3])
            clean = [shuffle_visits(c, order_rng, self.token_type) for c in clean]
        if self.corruption is None:
            encoder = clean
        else:
            rng = np.random.default_rng([self.seed, epoch, self.rank, batch_index, 2])
            encoder = corrupt_batch(
                clean, rng, self.corruption, self.tokenizer.content_range, self.token_type
            )
        input_ids, attention_mask = pad_stack(encoder, PAD)
        decoder_input_ids, decoder_attention_mask = pad_stack([c[:-1] for c in clean], PAD)
        labels, _ = pad_stack([c[1:] for c in clean], LABEL_PAD)
        # each kept visit's (gap, stay) bins where the label closes it; truncation keeps the newest
        time_labels = torch.full((*labels.shape, 2), LABEL_PAD, dtype=torch.long)
        for b, (c, row) in enumerate(zip(clean, rows, strict=True)):
            closes = np.flatnonzero(c[1:] == VISIT_END)
            if len(closes):
                time_labels[b, closes] = torch.from_numpy(row[4][-len(closes) :])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_attention_mask,
            "labels": labels,
            "age": torch.tensor(np.array([r[1] for r in rows], dtype=np.float32)),
            "sex": torch.tensor(np.array([r[2] for r in rows], dtype=np.int64)),
            "time_labels": time_labels,
        }
        if self.with_subject_id:
            batch["subject_id"] = torch.tensor(np.array([r[3] for r in rows], dtype=np.int64))
        return batch


# ----------------------------------------------------------------------------- the DataModule


class CohortDataModule(L.LightningDataModule):
    """Train/val/test batches of a cohort directory, streamed and sharded per rank and worker.

    Batch contract (dict of tensors)::

        input_ids              [B, Le] long     corrupted encoder input, padded with <pad>=1
        attention_mask         [B, Le] long
        decoder_input_ids      [B, Ld] long     clean sequence without its final </s>
        decoder_attention_mask [B, Ld] long
        labels                 [B, Ld] long     clean sequence without its first <s>, -100 at padding
        age                    [B]     float32  years at the first visit
        sex                    [B]     long     0 = M, 1 = F

    ``corruption`` None means the default :class:`CorruptionConfig`; pass ``{"p": 0}`` to train
    without it. ``shuffle_items``: train batches hold each visit's items in a fresh random order
    (:func:`~ehrgen.data.corruption.shuffle_visits`, seeded by seed, epoch, rank and batch); val and test keep the
    source's order. ``rank``/``world_size`` override what torch.distributed or the trainer report.
    The training module calls :meth:`set_epoch` at each epoch start; ``state_dict`` holds
    (epoch, batches_consumed), counted in :meth:`on_before_batch_transfer`, so a resumed run
    skips the batches of the current epoch it has already trained on.
    """

    def __init__(
        self,
        cohort_dir: str,
        tokenizer: Tokenizer,
        batch_size: int = 16,
        max_length: int = 512,
        num_workers: int = 0,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        corruption: CorruptionConfig | Mapping[str, Any] | None = None,
        eval_batch_size: int | None = None,
        shuffle_items: bool = False,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        self.cohort = Cohort(cohort_dir)
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.max_length = int(max_length)
        self.num_workers = int(num_workers)
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.corruption = CorruptionConfig.coerce(corruption)
        self.shuffle_items = bool(shuffle_items)
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        self.batches_consumed = 0
        self._plan_key: tuple[int, int, int] | None = None  # (seed, world size, batch size) of the state
        self._datasets: dict[str, CohortIterableDataset] = {}

    # -- distributed view -------------------------------------------------------------------

    def dist_info(self) -> tuple[int, int]:
        """(global rank, world size): explicit > torch.distributed > trainer > single process."""
        if self._rank is not None or self._world_size is not None:
            return int(self._rank or 0), int(self._world_size or 1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        if self.trainer is not None:
            return int(self.trainer.global_rank), int(self.trainer.world_size)
        return 0, 1

    # -- datasets and loaders ---------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        self._datasets.clear()  # rank/world may have changed since an earlier call

    def dataset(self, split: str) -> CohortIterableDataset:
        """The (cached) dataset of ``split`` for this process's rank."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split not in self._datasets:
            rank, world = self.dist_info()
            train = split == "train"
            self._datasets[split] = CohortIterableDataset(
                self.cohort.path,
                split,
                self.tokenizer,
                self.batch_size if train else self.eval_batch_size,
                self.max_length,
                shuffle=train,
                shuffle_buffer=self.shuffle_buffer,
                seed=self.seed,
                corruption=None if split == "test" else self.corruption,
                rank=rank,
                world_size=world,
                shuffle_items=train and self.shuffle_items,
            )
        return self._datasets[split]

    def _loader(self, split: str) -> DataLoader:
        # Non-persistent workers: each epoch's iter() forks them with the dataset's current
        # epoch/skip state; persistent workers would keep iterating a stale epoch.
        return DataLoader(
            self.dataset(split),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        self._sync_train()
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    # -- epochs and resumption --------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (a new epoch starts at batch 0; the current one keeps its progress)."""
        if int(epoch) != self.epoch:
            self.epoch, self.batches_consumed = int(epoch), 0
        self._sync_train()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training and not trainer.sanity_checking:
            self.batches_consumed += 1
            if self.batches_consumed >= len(self.dataset("train")):
                # The epoch is complete: the next iteration starts the next epoch.
                self.epoch, self.batches_consumed = self.epoch + 1, 0
                self._sync_train()
        return batch

    def state_dict(self) -> dict[str, Any]:
        rank, world = self.dist_info()
        return {
            "epoch": self.epoch,
            "batches_consumed": self.batches_consumed,
            "seed": self.seed,
            "world_size": world,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = int(state_dict.get("epoch", 0))
        self.batches_consumed = int(state_dict.get("batches_consumed", 0))
        if {"seed", "world_size", "batch_size"} <= set(state_dict):
            self._plan_key = (
                int(state_dict["seed"]),
                int(state_dict["world_size"]),
                int(state_dict["batch_size"]),
            )
        self._sync_train()

    def _sync_train(self) -> None:
        """Push (epoch, batches to skip) into the train dataset before the next iteration."""
        if self._plan_key is not None:
            current = (self.seed, self.dist_info()[1], self.batch_size)
            if current != self._plan_key and self.batches_consumed:
                warnings.warn(
                    f"resuming with (seed, world size, batch size) {current} instead of {self._plan_key}: "
                    f"the batch plan differs, so epoch {self.epoch} restarts from its first batch",
                    stacklevel=2,
                )
                self.batches_consumed = 0
            self._plan_key = None
        if "train" in self._datasets or self.cohort.files("train"):
            ds = self.dataset("train")
            ds.set_epoch(self.epoch)
            ds.skip_batches = self.batches_consumed
