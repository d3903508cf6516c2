"""Training benchmark: where a PromptBart training step spends its time, measured in one run.

    python scripts/bench_train.py                                  # CPU: tiny + small
    python scripts/bench_train.py --device cuda --size base        # GPU: bf16 autocast, MFU
    python scripts/bench_train.py --profile small                  # torch.profiler table, one step

Every comparison is a ratio of timings taken in this run, interleaved and repeated (medians), so
a shared, noisy machine still gives usable numbers. On CPU the default is one torch thread and
the ratios use process CPU time (wall time is printed beside it): on a shared 2-core machine a
descheduled OpenMP worker stalls every parallel region and wall times swing by 10x. On CUDA,
timings are wall clock after ``torch.cuda.synchronize()``, under bf16 autocast (Lightning:
``precision=bf16-mixed``).

Batches are pre-collated once from the real CohortDataModule on a simulated cohort
(``data=simulated``), except where a MIMIC-scale vocabulary is needed: there a synthetic
7,000-code world stands in (Zipf code frequencies, a frequent-pair matrix with ~630k pairs whose
degrees fall with code rank, full-length 8 x 256 batches).

(a) raw loop vs Lightning: forward + loss + backward + clip + AdamW + LR scheduler by hand, vs
    ``Trainer.fit`` on the same module and batches with the default config's logger (CSV),
    callbacks (ModelCheckpoint, LearningRateMonitor) and gradient clipping, no progress bar.
    Step time: mean interval between consecutive step ends (data fetch included), after warmup.
(b) co-occurrence regulariser: step time with ``w_cooc=0.05`` vs ``w_cooc=0`` on the same batch,
    back to back, on the simulated cohort and on the 7,000-code synthetic world.
(c) DataModule alone (train epoch, ``num_workers`` 0 and 2) vs what the model consumes, in
    decoder tokens per wall-clock second.
(d) tokens/s and achieved FLOP/s (FlopCounterMode on forward + backward of the measured batches)
    vs the peak: a timed large ``torch.mm`` (fp32 on CPU; bf16 on GPU, and ``--peak-tflops``
    for MFU).
(e) peak RSS of base-size training at batch 8 x 256 tokens (7,000 codes, regulariser on), two
    steps in a fresh subprocess (``ru_maxrss``; CPU only).
(f) one AdamW step: torch's default implementation for the device vs ``foreach`` vs ``fused``.
(g) carry-over pathway: training step with ``model.net.carry`` on vs off (raw loop, simulated
    batches), and ``carry_history`` vs the per-position one-hot cumulative sum it replaced
    (kept here as the baseline) on the simulated batches and on full 8 x 256 batches over 7,000
    codes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

Batch = dict[str, torch.Tensor]
MIMIC_CODES, MIMIC_FREQUENT_PAIRS = 7000, 630_000


# ----------------------------------------------------------------------------- setup


def compose(overrides: list[str], run_dir: Path) -> Any:
    """The real conf/train.yaml with ``overrides``; the run directory pointed at ``run_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from ehrgen.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)  # ${hydra:runtime.output_dir} resolves only in @hydra.main
    return cfg


def simulated_world(args: argparse.Namespace, run_dir: Path) -> SimpleNamespace:
    """Simulated cohort (prepared once, cached like ``python -m ehrgen.train`` does), DataModule."""
    from hydra.utils import instantiate

    from ehrgen.data.build import token_cooccurrence
    from ehrgen.data.vocab import build_tokenizer
    from ehrgen.prepare import ensure_cohort

    cfg = compose(
        [
            "data=simulated",
            f"data.n_patients={args.n_patients}",
            f"data.datamodule.batch_size={args.batch_size}",
            f"data.datamodule.max_length={args.max_length}",
        ],
        run_dir,
    )
    cohort = ensure_cohort(cfg)
    tokenizer = build_tokenizer(cohort.path, level=cfg.model.level, min_count=int(cfg.data.min_count))
    datamodule = instantiate(cfg.data.datamodule)(cohort_dir=str(cohort.path), tokenizer=tokenizer)
    datamodule.setup("fit")
    return SimpleNamespace(
        cfg=cfg,
        tokenizer=tokenizer.to_dict(),
        cooc=token_cooccurrence(cohort.path, tokenizer),
        datamodule=datamodule,
        n_codes=tokenizer.content_range[1] - tokenizer.content_range[0],
    )


def precollate(datamodule: Any, n: int) -> list[Batch]:
    """The first ``n`` train batches of epoch 0, collated once (cycled when the epoch is shorter)."""
    batches: list[Batch] = []
    while len(batches) < n:
        for batch in datamodule.train_dataloader():
            batches.append(batch)
            if len(batches) == n:
                break
    return batches


def mimic_like(
    n_codes: int, n_pairs: int, n_batches: int, batch_size: int, length: int, seed: int = 0
) -> tuple[sp.csr_matrix, list[Batch], dict]:
    """A synthetic MIMIC-scale world: count matrix, full-length batches, flat tokenizer dict.

    Code c has rank c: frequency ~ 1 / (c + 20) and a frequent-partner set {j : (c+20)(j+20) <= k},
    k chosen for ~``n_pairs`` pairs, so common codes (the ones that fill visits) have thousands of
    partners, as hypertension or CHF do in MIMIC-III. Visits hold 5-19 codes.
    """
    rank = np.arange(n_codes) + 20.0

    def degrees(k: float) -> np.ndarray:
        return np.clip(np.floor(k / rank - 19.0), 0, n_codes).astype(np.int64)

    lo, hi = 1.0, rank[-1] ** 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if degrees(mid).sum() < n_pairs else (lo, mid)
    deg = degrees(hi)
    rows = np.repeat(np.arange(n_codes), deg)
    cols = np.arange(len(rows)) - np.repeat(np.cumsum(deg) - deg, deg)  # 0 .. deg-1 per row
    counts = sp.csr_matrix((np.full(len(rows), 10, dtype=np.int32), (rows, cols)), shape=(n_codes, n_codes))
    counts = counts.maximum(counts.T).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()

    rng = np.random.default_rng(seed)
    p = 1.0 / rank
    p /= p.sum()
    batches = []
    for _ in range(n_batches):
        seqs = []
        for _ in range(batch_size):
            seq = [0]
            while len(seq) < length + 1:
                seq += [4, *(rng.choice(n_codes, int(rng.integers(5, 20)), replace=False, p=p) + 7), 5]
            seqs.append(np.array([*seq[: length - 1], 5, 2][: length + 1]))
        clean = torch.from_numpy(np.stack(seqs)).long()
        ones = torch.ones(batch_size, length, dtype=torch.long)
        batches.append(
            {
                "input_ids": clean[:, :length],
                "attention_mask": ones,
                "decoder_input_ids": clean[:, :-1],
                "decoder_attention_mask": ones,
                "labels": clean[:, 1:],
                "age": torch.from_numpy(rng.uniform(20, 90, batch_size).astype(np.float32)),
                "sex": torch.from_numpy(rng.integers(0, 2, batch_size)),
            }
        )
    tokenizer = {"kind": "flat", "codes": [f"S{i:05d}" for i in range(n_codes)], "min_count": 1}
    return counts, batches, tokenizer


def build_module(cfg: Any, size: str, tokenizer: dict, cooc: sp.spmatrix | None) -> Any:
    """PromptBartModule from the real model config at ``size`` (everything else as in ``cfg``)."""
    from omegaconf import OmegaConf

    from ehrgen.module import PromptBartModule

    sized = compose([f"model/size={size}"], Path(cfg.paths.run_dir))
    model_cfg = OmegaConf.merge(cfg, {"model": {"size": sized.model.size}}).model
    return PromptBartModule(model=model_cfg, tokenizer=tokenizer, cooc=cooc)


# ----------------------------------------------------------------------------- timing


class Clock:
    """(wall, process CPU) seconds, after waiting for the device (CUDA kernels run asynchronously).

    On CPU the comparisons use process CPU time: on a shared machine a descheduled process keeps
    its CPU time but not its wall time. Wall time is reported beside it.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> np.ndarray:
        if self.cuda:
            torch.cuda.synchronize()
        return np.array([time.perf_counter(), time.process_time()])


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class RawStepper:
    """A hand-written training step: forward, loss, backward, clip, AdamW, LR scheduler.

    Uses the module's own ``configure_optimizers`` (same parameter groups, optimiser and schedule
    as under Lightning; it only reads the step total from the trainer).
    """

    def __init__(self, module: Any, device: torch.device, total_steps: int, clip: float = 1.0):
        module.train()
        module.trainer = SimpleNamespace(estimated_stepping_batches=total_steps)
        conf = module.configure_optimizers()
        module.trainer = None
        self.module, self.device, self.clip = module, device, clip
        self.optimizer, self.scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __call__(self, batch: Batch) -> None:
        batch = to_device(batch, self.device)
        with autocast(self.device):
            _, losses = self.module._losses(batch)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


def raw_loop(module: Any, batches: list[Batch], device: torch.device, warmup: int) -> np.ndarray:
    """[steps, (wall, cpu)] seconds between step ends (data fetch included, as under Lightning)."""
    step, clock = RawStepper(module, device, len(batches)), Clock(device)
    ends = []
    for batch in DataLoader(batches, batch_size=None):
        step(batch)
        ends.append(clock())
    return np.diff(ends[max(warmup, 1) - 1 :], axis=0)


def lightning_fit(
    module: Any, batches: list[Batch], device: torch.device, warmup: int, cfg: Any
) -> np.ndarray:
    """[steps, (wall, cpu)] inside ``Trainer.fit`` with the default logger/callbacks, no progress bar."""
    from hydra.utils import instantiate
    from lightning.pytorch import Callback

    clock = Clock(device)

    class StepClock(Callback):
        def __init__(self) -> None:
            self.ends: list[np.ndarray] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.ends.append(clock())

    timer = StepClock()
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    loggers = [instantiate(c) for c in cfg.logger.values()]
    trainer = instantiate(
        cfg.trainer,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        precision="bf16-mixed" if device.type == "cuda" else "32-true",
        max_steps=len(batches),
        max_epochs=-1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, timer],
        logger=loggers,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return np.diff(timer.ends[max(warmup, 1) - 1 :], axis=0)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def mean(xs: list[float]) -> float:
    return float(statistics.fmean(xs)) if xs else float("nan")


def decoder_tokens(batch: Batch) -> int:
    return int(batch["decoder_attention_mask"].sum())


def flops_per_step(module: Any, batches: list[Batch], device: torch.device) -> list[float]:
    """Forward + backward FLOPs of each batch (matmuls and attention, as FlopCounterMode counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    module.train()
    out = []
    for batch in batches:
        batch = to_device(batch, device)
        with FlopCounterMode(display=False) as counter, autocast(device):
            _, losses = module._losses(batch)
            losses["loss"].backward()
        module.zero_grad(set_to_none=True)
        out.append(float(counter.get_total_flops()))
    return out


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of an ``n x n`` matmul (the machine's practical peak)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    clock = Clock(device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b)
        best = min(best, (clock() - start)[0])
    return 2.0 * n**3 / best


# ----------------------------------------------------------------------------- sections


WALL, CPU = 0, 1


def section_overhead(args, world, sizes, device, report) -> dict[str, np.ndarray]:
    """(a) Lightning overhead; returns the raw loop's mean (wall, cpu) step time per size."""
    step_time = {}
    warm, clock = args.warmup, (WALL if device.type == "cuda" else CPU)
    batches = precollate(world.datamodule, warm + args.steps)
    for size in sizes:
        pristine = build_module(world.cfg, size, world.tokenizer, world.cooc)
        raw, lit = [], []
        for _ in range(args.repeats):
            raw.append(raw_loop(copy.deepcopy(pristine).to(device), batches, device, warm).mean(0))
            module = copy.deepcopy(pristine).to(device)
            lit.append(lightning_fit(module, batches, device, warm, world.cfg).mean(0))
        raw_t, lit_t = np.median(raw, axis=0), np.median(lit, axis=0)
        ratios = [b[clock] / a[clock] for a, b in zip(raw, lit, strict=True)]
        step_time[size] = raw_t
        report(
            "a",
            size=size,
            raw_ms=1e3 * raw_t[clock],
            lightning_ms=1e3 * lit_t[clock],
            overhead_pct=100 * (median(ratios) - 1),
            raw_wall_ms=1e3 * raw_t[WALL],
            lightning_wall_ms=1e3 * lit_t[WALL],
            wall_overhead_pct=100 * (lit_t[WALL] / raw_t[WALL] - 1),
            runs=len(raw),
        )
    return step_time


def section_cooc(args, world, device, report) -> None:
    """(b) step time with the regulariser on vs off, simulated and MIMIC-scale vocabularies."""
    warm = args.warmup
    cases = [("simulated", world.tokenizer, world.cooc, precollate(world.datamodule, warm + args.steps))]
    counts, synth, tok = synthetic_world(args, warm + args.synthetic_steps)
    cases.append((f"synthetic {MIMIC_CODES} codes", tok, counts, synth))
    for name, tokenizer, cooc, batches in cases:
        module = build_module(world.cfg, args.cooc_size, tokenizer, cooc).to(device)
        step, clock = RawStepper(module, device, len(batches) * args.repeats * 2), Clock(device)
        on, off = [], []
        for r in range(args.repeats):
            for i, batch in enumerate(batches):
                # The same batch with the regulariser on and off, back to back (order alternating).
                seconds = {}
                for w in (0.05, 0.0) if (r + i) % 2 == 0 else (0.0, 0.05):
                    module.loss_fn.w_cooc = w
                    start = clock()
                    step(batch)
                    seconds[w] = clock() - start
                if i >= warm:
                    on.append(seconds[0.05])
                    off.append(seconds[0.0])
        on_t, off_t = np.sum(on, axis=0), np.sum(off, axis=0)
        c = WALL if device.type == "cuda" else CPU
        report(
            "b",
            world=name,
            size=args.cooc_size,
            codes=module.loss_fn.n_codes,
            frequent_pairs=module.loss_fn.frequent_col.numel(),
            tokens_per_batch=int(np.mean([decoder_tokens(b) for b in batches])),
            off_ms=1e3 * off_t[c] / len(off),
            on_ms=1e3 * on_t[c] / len(on),
            overhead_pct=100 * (on_t[c] / off_t[c] - 1),
            median_step_overhead_pct=100 * (median([a[c] / b[c] for a, b in zip(on, off, strict=True)]) - 1),
            wall_overhead_pct=100 * (on_t[WALL] / off_t[WALL] - 1),
        )


def section_data(args, world, step_time, batches, report) -> None:
    """(c) DataModule tokens/s alone (one train epoch) vs what each model size consumes.

    Workers are not persistent (each epoch forks them anew), so the epoch rate includes their
    start-up; the steady rate counts from the first batch on.
    """
    tokens_per_step = np.mean([decoder_tokens(b) for b in batches[args.warmup :]])
    for workers in (0, 2):
        world.datamodule.num_workers = workers
        epoch, steady, startup = [], [], []
        for _ in range(args.repeats):
            start, tokens, first, first_tokens = time.perf_counter(), 0, 0.0, 0
            for batch in world.datamodule.train_dataloader():
                if not first:
                    first, first_tokens = time.perf_counter(), decoder_tokens(batch)
                tokens += decoder_tokens(batch)
            end = time.perf_counter()
            epoch.append(tokens / (end - start))
            steady.append((tokens - first_tokens) / (end - first))
            startup.append(first - start)
        for size, seconds in step_time.items():
            consumed = tokens_per_step / seconds[WALL]  # all rates in wall-clock time
            report(
                "c",
                num_workers=workers,
                size=size,
                epoch_tok_s=median(epoch),
                steady_tok_s=median(steady),
                first_batch_s=median(startup),
                model_tok_s=consumed,
                epoch_ratio=median(epoch) / consumed,
                steady_ratio=median(steady) / consumed,
            )
    world.datamodule.num_workers = 0


_SYNTHETIC: dict[tuple, tuple] = {}


def synthetic_world(args: argparse.Namespace, n_batches: int) -> tuple[sp.csr_matrix, list[Batch], dict]:
    """The 7,000-code world of (b) and (d), built once per run."""
    key = (n_batches, args.batch_size, args.max_length)
    if key not in _SYNTHETIC:
        _SYNTHETIC[key] = mimic_like(
            MIMIC_CODES, MIMIC_FREQUENT_PAIRS, n_batches, args.batch_size, args.max_length
        )
    return _SYNTHETIC[key]


def section_flops(args, world, step_time, batches, device, report) -> None:
    """(d) tokens/s and achieved FLOP/s vs the measured (and, on GPU, the quoted) peak.

    Two batch sets: the simulated cohort's (short, padded: what (a) timed) and full-length
    synthetic 8 x 256 batches over 7,000 codes (timed here).
    """
    c = WALL if device.type == "cuda" else CPU
    if device.type == "cuda":
        peak = matmul_peak(device, torch.bfloat16, 8192)
        quoted = args.peak_tflops * 1e12
    else:
        peak, quoted = matmul_peak(device, torch.float32, 2048), None
    counts, synth, tok = synthetic_world(args, args.warmup + args.synthetic_steps)
    for size in step_time:
        cases = [
            ("simulated", world.tokenizer, world.cooc, batches, step_time[size][c]),
            ("synthetic 7000 codes", tok, counts, synth, None),
        ]
        for name, tokenizer, cooc, bs, seconds in cases:
            module = build_module(world.cfg, size, tokenizer, cooc).to(device)
            if seconds is None:
                runs = [raw_loop(module, bs, device, args.warmup)[:, c].mean() for _ in range(args.repeats)]
                seconds = median(runs)
            timed = bs[args.warmup :]
            flops = mean(flops_per_step(module, timed, device))
            tokens = np.mean([decoder_tokens(b) for b in timed])
            params = sum(p.numel() for p in module.model.parameters())
            achieved = flops / seconds
            row = dict(
                size=size,
                batches=name,
                params_M=params / 1e6,
                tokens_per_step=int(tokens),
                tok_s=tokens / seconds,
                gflop_step=flops / 1e9,
                six_n_t_gflop=6 * params * tokens / 1e9,
                achieved_gflop_s=achieved / 1e9,
                peak_gflop_s=peak / 1e9,
                util_pct=100 * achieved / peak,
            )
            if quoted:
                row["mfu_pct"] = 100 * achieved / quoted
            report("d", **row)


def section_optimizer(args, world, sizes, device, report) -> None:
    """(f) AdamW step alone: torch's default for the device vs ``foreach`` vs ``fused``."""
    clock, c = Clock(device), (WALL if device.type == "cuda" else CPU)
    for size in sizes:
        module = build_module(world.cfg, size, world.tokenizer, world.cooc).to(device)
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p)
        row: dict[str, Any] = {"size": size, "tensors": len(params)}
        for name, kwargs in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
            optimizer = torch.optim.AdamW(params, lr=1e-4, **kwargs)
            optimizer.step()  # state allocated
            times = []
            for _ in range(5 * args.repeats):
                start = clock()
                optimizer.step()
                times.append((clock() - start)[c])
            row[f"{name}_ms"] = 1e3 * median(times)
        report("f", **row)


def reference_carry_history(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(g) baseline: the per-position one-hot cumulative-sum form of ``carry_history`` (until 2026-12)."""
    from ehrgen.models.prompt_bart import CURRENT, FIRST_CONTENT_ID, VISIT_START_ID

    b, length = ids.shape
    visit = (ids == VISIT_START_ID).long().cumsum(1)
    n_visits = int(visit.max()) + 1
    content = ids >= FIRST_CONTENT_ID
    per_visit = torch.zeros(b, n_visits + 1, vocab_size, dtype=torch.bool)
    rows = torch.arange(b)[:, None].expand(b, length)
    per_visit[rows[content], visit[content], ids[content]] = True
    earlier = per_visit.cumsum(1, dtype=torch.int32).gt(0)
    earlier = torch.cat([earlier.new_zeros(b, 1, vocab_size), earlier[:, :-1]], 1)
    history = earlier[rows, visit].to(torch.int8)
    onehot = torch.zeros(b, length, vocab_size, dtype=torch.int16)
    onehot[rows[content], torch.arange(length).expand(b, length)[content], ids[content]] = 1
    count = onehot.cumsum(1, dtype=torch.int16)
    start = torch.where(ids == VISIT_START_ID, torch.arange(length), 0).cummax(1).values
    current = (count - count.gather(1, start[..., None].expand_as(count))) > 0
    return history.masked_fill_(current, CURRENT)


def section_carry(args, world, batches, device, report) -> None:
    """(g) the carry-over pathway's cost in a training step, and carry_history vs its baseline."""
    from omegaconf import OmegaConf

    from ehrgen.models.prompt_bart import FIRST_CONTENT_ID, carry_history

    warm, c = args.warmup, (WALL if device.type == "cuda" else CPU)
    for size in args.size:
        times: dict[bool, list[np.ndarray]] = {True: [], False: []}
        for _ in range(args.repeats):
            for carry in (True, False):
                cfg = OmegaConf.merge(world.cfg, {"model": {"net": {"carry": carry}}})
                module = build_module(cfg, size, world.tokenizer, world.cooc).to(device)
                times[carry].append(raw_loop(module, batches, device, warm).mean(0))
        ratios = [a[c] / b[c] for a, b in zip(times[True], times[False], strict=True)]
        report(
            "g",
            what=f"training step ({size})",
            baseline_ms=1e3 * float(np.median([t[c] for t in times[False]])),
            ehrgen_ms=1e3 * float(np.median([t[c] for t in times[True]])),
            ratio=median(ratios),
        )
    _, synthetic, _ = synthetic_world(args, 2)
    cases = [
        ("simulated batches", [b["decoder_input_ids"] for b in batches], FIRST_CONTENT_ID + world.n_codes),
        ("8 x 256, 7,000 codes", [b["decoder_input_ids"] for b in synthetic], FIRST_CONTENT_ID + MIMIC_CODES),
    ]
    clock = Clock(torch.device("cpu"))
    for what, ids_list, v in cases:
        for ids in ids_list:  # the two forms agree before they are timed
            assert torch.equal(carry_history(ids, v), reference_carry_history(ids, v))
        pair: dict[str, list[float]] = {"baseline": [], "ehrgen": []}
        for _ in range(5 * args.repeats):
            for name, fn in (("baseline", reference_carry_history), ("ehrgen", carry_history)):
                start = clock()
                for ids in ids_list:
                    fn(ids, v)
                pair[name].append((clock() - start)[CPU] / len(ids_list))
        report(
            "g",
            what=f"carry_history ({what})",
            baseline_ms=1e3 * median(pair["baseline"]),
            ehrgen_ms=1e3 * median(pair["ehrgen"]),
            ratio=median([b / a for a, b in zip(pair["baseline"], pair["ehrgen"], strict=True)]),
        )


# (e) variants: config overrides, gradient checkpointing, environment of the child process.
RSS_VARIANTS: dict[str, tuple[list[str], bool, dict[str, str]]] = {
    "default": ([], False, {}),
    "attention_dropout=0.1": (["model.net.attention_dropout=0.1"], False, {}),
    "gradient_checkpointing": ([], True, {}),
    "MALLOC_MMAP_THRESHOLD_=131072": ([], False, {"MALLOC_MMAP_THRESHOLD_": "131072"}),
}


def rss_child(args: argparse.Namespace) -> None:
    """(e) in a fresh process: base model, 8 x 256 MIMIC-scale batches, regulariser on, 2 steps."""
    overrides, checkpointing, _ = RSS_VARIANTS[args.rss_child]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"data.datamodule.max_length={args.max_length}", *overrides], Path(tmp))
        counts, batches, tok = mimic_like(
            MIMIC_CODES, MIMIC_FREQUENT_PAIRS, 2, args.batch_size, args.max_length
        )
        module = build_module(cfg, "base", tok, counts)
        if checkpointing:
            module.model.bart.gradient_checkpointing_enable()
        start = time.perf_counter()
        raw_loop(module, batches, torch.device("cpu"), warmup=0)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    print(json.dumps({"peak_rss_gib": peak, "seconds_2_steps": seconds}))


def section_rss(args, report) -> None:
    """(e) one child process per variant (only "default" without ``--rss-variants``)."""
    for variant in RSS_VARIANTS if args.rss_variants else ["default"]:
        cmd = [sys.executable, __file__, "--rss-child", variant, "--batch-size", str(args.batch_size)]
        cmd += ["--max-length", str(args.max_length), "--threads", str(args.threads)]
        env = {**os.environ, **RSS_VARIANTS[variant][2]}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        row = json.loads(out.strip().splitlines()[-1])
        report("e", size="base", variant=variant, batch=args.batch_size, length=args.max_length, **row)


def profile_step(args, world, size: str) -> None:
    """torch.profiler table of one raw-loop step (after two warmup steps)."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(args.device)
    batches = precollate(world.datamodule, 3)
    module = build_module(world.cfg, size, world.tokenizer, world.cooc).to(device)
    raw_loop(module, batches[:2], device, warmup=2)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        raw_loop(module, batches[2:], device, warmup=0)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows))


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", nargs="+", default=["tiny", "small"], help="model sizes for (a), (c), (d)")
    parser.add_argument("--cooc-size", default="small", help="model size for (b)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--n-patients", type=int, default=2000, help="simulated cohort size")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run (simulated batches)")
    parser.add_argument("--synthetic-steps", type=int, default=4, help="timed steps, 7,000-code batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per comparison")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="quoted peak (H100 SXM bf16 dense)")
    parser.add_argument("--sections", default="abcdefg")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (CPU default 1: see docs/benchmarks.md)"
    )
    parser.add_argument("--profile", metavar="SIZE", help="only print a torch.profiler table of one step")
    parser.add_argument("--profile-rows", type=int, default=30)
    parser.add_argument("--rss-variants", action="store_true", help="(e): also the memory-saving variants")
    parser.add_argument("--rss-child", choices=list(RSS_VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args)
        return
    import logging
    import warnings

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    torch.manual_seed(0)

    rows: list[tuple[str, dict]] = []

    def report(section: str, **row: Any) -> None:
        rows.append((section, row))
        cells = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        print(f"({section}) {cells}", flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        world = simulated_world(args, Path(tmp) / "run")
        if args.profile:
            profile_step(args, world, args.profile)
            return
        print(
            f"# device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
            f"max_length={args.max_length} simulated codes={world.n_codes} torch={torch.__version__}",
            flush=True,
        )
        step_time: dict[str, np.ndarray] = {}

        def elapsed(section: str) -> None:
            print(f"# ({section}) done at {time.perf_counter() - started:.0f} s", flush=True)

        if "a" in args.sections or "c" in args.sections or "d" in args.sections:
            step_time = section_overhead(args, world, args.size, device, report)
            elapsed("a")
        if "b" in args.sections:
            section_cooc(args, world, device, report)
            elapsed("b")
        batches = precollate(world.datamodule, args.warmup + args.steps)
        if "c" in args.sections:
            section_data(args, world, step_time, batches, report)
            elapsed("c")
        if "d" in args.sections:
            section_flops(args, world, step_time, batches, device, report)
            elapsed("d")
        if "f" in args.sections:
            section_optimizer(args, world, args.size, device, report)
            elapsed("f")
        if "g" in args.sections:
            section_carry(args, world, batches, device, report)
            elapsed("g")
        if "e" in args.sections and device.type == "cpu":
            section_rss(args, report)
            elapsed("e")
    print(f"# total {time.perf_counter() - started:.0f} s")
    print(markdown(rows))


def markdown(rows: list[tuple[str, dict]]) -> str:
    """One markdown table per section, for docs/benchmarks.md."""
    out = []
    for section in dict.fromkeys(s for s, _ in rows):
        part = [r for s, r in rows if s == section]
        keys = list(dict.fromkeys(k for r in part for k in r))
        out.append(f"\n({section})\n\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        for r in part:
            out.append(
                "| "
                + " | ".join(
                    f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys
                )
                + " |"
            )
    return "\n".join(out)


if __name__ == "__main__":
    main()
