"""Generate a synthetic cohort from a trained PromptBart checkpoint.

    python -m ehrgen.generate ckpt=PATH n_patients=N out_dir=PATH [formats=[cohort,mimic3,mimic4,meds]]

``out_dir/cohort`` is a cohort directory (the format ``prepare`` writes; every patient in the
``train`` split), ``out_dir/mimic3`` MIMIC-III CSVs, ``out_dir/mimic4`` MIMIC-IV ``hosp/`` CSVs and
``out_dir/meds`` a MEDS dataset, as chosen
by ``formats``; ``out_dir/generation.json`` records the options and counts. All of it is written
in a temporary sibling directory renamed into place at the end: an interrupted run leaves no
complete-looking output. Options: conf/generate.yaml.

Patient ``i`` of the N (0-based) gets subject_id ``id_offset + i`` and its own random streams keyed
by ``(seed, i)``: its record depends neither on ``batch_size`` nor on ``num_shards``, so shard
outputs concatenate into the single-process cohort.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ehrgen.config import CONFIG_DIR
from ehrgen.data.cohort import Cohort, atomic_directory, check_output, write_json_atomic
from ehrgen.data.corruption import content_mask
from ehrgen.data.datamodule import truncate_oldest
from ehrgen.data.vocab import (
    BOS,
    EOS,
    MASK,
    VISIT_END,
    VISIT_START,
    CodeVocab,
    HierarchicalTokenizer,
    tokenizer_from_dict,
)
from ehrgen.errors import InputError, one_line_errors
from ehrgen.models.visit_times import epoch_seconds
from ehrgen.module import CHECKPOINT_KEY, PromptBartModule
from ehrgen.options import number
from ehrgen.sampling.constraints import VisitConstraints
from ehrgen.sampling.demographics import DemographicsModel, requested_demographics
from ehrgen.sampling.exporters import EXPORTERS, FORMATS
from ehrgen.sampling.hierarchical import CodeExpander, GivenCodes
from ehrgen.sampling.sampler import Sampler, SamplingConfig, tokens_to_visits
from ehrgen.sampling.times import KnownTimes, sample_visit_times, with_times
from ehrgen.sampling.writers import SyntheticCohortWriter, synthetic_id_offset

log = logging.getLogger(__name__)
MODES = ("demographics", "conditional")
CONTEXT_KEY = "generation"  # what ehrgen.train stores beside the weights (demographics, ids, titles)
DEMOGRAPHICS_CHUNK = (
    65_536  # patients whose demographics are drawn together (fixed: part of the seed contract)
)
_DEMOGRAPHICS_STREAM = 0x64656D6F


# ----------------------------------------------------------------------------- checkpoint


@dataclass
class GenerationCheckpoint:
    """A trained module plus what generation reads beside the weights."""

    module: PromptBartModule
    tokenizer: CodeVocab | HierarchicalTokenizer
    context: dict[str, Any]  # demographics, synthetic_id_offset, code_descriptions, expansion (optional)


def load_checkpoint(path: str | Path) -> GenerationCheckpoint:
    """Load a checkpoint written by ``ehrgen.train`` (``weights_only``: no pickled code runs)."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise InputError(f"ckpt={path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for truncated / foreign files
        raise InputError(f"ckpt={path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    if not isinstance(raw, dict) or CHECKPOINT_KEY not in raw or "state_dict" not in raw:
        raise InputError(f"ckpt={path}: not an ehrgen PromptBart checkpoint (no '{CHECKPOINT_KEY}' section)")
    context = {
        k: raw[k]
        for k in (
            "demographics",
            "synthetic_id_offset",
            "max_real_subject_id",
            "code_descriptions",
            "expansion",
        )
        if k in raw
    }
    context.update(raw.get(CONTEXT_KEY) or {})
    try:
        module = PromptBartModule.load(path)
        tokenizer = tokenizer_from_dict(dict(raw[CHECKPOINT_KEY]["tokenizer"]))
    except InputError as err:
        raise InputError(f"ckpt={path}: {err}") from None
    except Exception as err:
        raise InputError(
            f"ckpt={path}: incompatible with this ehrgen ({type(err).__name__}: {err})"
        ) from None
    return GenerationCheckpoint(module.eval(), tokenizer, context)


# ----------------------------------------------------------------------------- one batch of patients


class PatientGenerator:
    """Prompts in, cohort rows (``sex, age, visits``) out: sampler + decoding (+ stage 2)."""

    def __init__(
        self,
        sampler: Sampler,
        tokenizer: CodeVocab | HierarchicalTokenizer,
        expander: CodeExpander | None = None,
    ) -> None:
        if isinstance(tokenizer, HierarchicalTokenizer) and expander is None:
            raise ValueError("a hierarchical model needs a CodeExpander for stage 2")
        self.sampler, self.tokenizer, self.expander = sampler, tokenizer, expander

    def __call__(
        self,
        age: np.ndarray,
        sex: np.ndarray,
        index: np.ndarray,
        encoder_ids: list[np.ndarray] | None = None,
        prefix: list[np.ndarray] | None = None,
        given: GivenCodes | None = None,
        known: KnownTimes | None = None,
    ) -> pl.DataFrame:
        """Rows for patients ``index``; ``given``: real codes behind hierarchical prefixes;
        ``known``: real times of the prefixes' visits."""
        tokens = self.sampler.sample(age, sex, index, encoder_ids, prefix)
        c = self.sampler.constraints
        if self.expander is not None:
            visits = self.expander.expand(tokens, age, sex, index, self.sampler.seed, c.validity, given)
        else:
            visits = tokens_to_visits(tokens, c.items, c.lo)
        if self.sampler.model.time_head is not None:
            times = sample_visit_times(
                self.sampler.model, tokens, age, sex, index, self.sampler.seed, encoder_ids, known
            )
            visits = with_times(visits, times)
        return pl.DataFrame(
            {
                "sex": pl.Series(np.asarray(sex, dtype=np.int8)),
                "age": pl.Series(np.asarray(age, dtype=np.float32)),
                "visits": pl.Series(visits),
            }
        )


def conditional_prompts(
    seqs: list[np.ndarray], keep_fraction: float, max_length: int
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Encoder inputs, forced decoder prefixes and dropped visits from real token sequences.

    The prefix is ``<s>`` and everything up to the ``floor(keep_fraction * n_codes)``-th code (the
    visit left open: the model may add codes to it); the encoder sees that prefix followed by one
    ``<mask> <\\v> </s>`` for the hidden rest, like a span-infilling corruption. Without any kept
    code both are the demographics-only ``<s>`` / ``<s> </s>``. Sequences are first truncated to
    ``max_length - 1`` tokens like in training (oldest visits dropped; their number is returned),
    so that even ``keep_fraction=1`` leaves the sampler room to close the visit and the patient.
    """
    encoder, prefix, dropped = [], [], np.zeros(len(seqs), dtype=np.int64)
    for i, seq in enumerate(seqs):
        full = np.asarray(seq, dtype=np.int64)
        ids = truncate_oldest(full, max_length - 1)
        dropped[i] = int((full == VISIT_START).sum() - (ids == VISIT_START).sum())
        pos = np.flatnonzero(content_mask(ids))
        k = int(math.floor(keep_fraction * len(pos)))
        if k == 0:
            prefix.append(np.array([BOS], dtype=np.int64))
            encoder.append(np.array([BOS, EOS], dtype=np.int64))
        else:
            head = ids[: pos[k - 1] + 1]
            prefix.append(head)
            encoder.append(np.concatenate([head, [MASK, VISIT_END, EOS]]))
    return encoder, prefix, dropped


def prefix_times(
    visits: pa.Array | pa.ChunkedArray, prefix: list[np.ndarray], dropped: np.ndarray
) -> KnownTimes:
    """Real admission and end times of the visits each conditional prefix keeps: visits
    ``dropped[i] ..`` of patient ``i``, as many as the prefix opens."""
    if isinstance(visits, pa.ChunkedArray):
        visits = visits.combine_chunks()
    n_known = np.array([int((np.asarray(p) == VISIT_START).sum()) for p in prefix], dtype=np.int64)
    first = visits.offsets.to_numpy()[:-1] - visits.offsets[0].as_py()
    within = np.arange(int(n_known.sum())) - np.repeat(np.cumsum(n_known) - n_known, n_known)
    src = np.repeat(first + np.asarray(dropped, dtype=np.int64), n_known) + within
    inner = visits.flatten()
    admit = epoch_seconds(pc.struct_field(inner, "time"))
    end = epoch_seconds(pc.struct_field(inner, "end"))
    return KnownTimes(admit[src], end[src], n_known)


def prediction_times(known: KnownTimes) -> pl.Series:
    """Per patient, the admission of the last real visit its prefix keeps (null when none)."""
    last = np.cumsum(known.n_known) - 1
    values = [
        int(round(float(known.admit_s[j]) * 1e6)) if k > 0 and np.isfinite(known.admit_s[j]) else None
        for k, j in zip(known.n_known.tolist(), last.tolist(), strict=True)
    ]
    return pl.Series("prediction_time", values, dtype=pl.Int64).cast(pl.Datetime("us"))


# ----------------------------------------------------------------------------- demographics


class DemographicsPlan:
    """Demographics of patient ``i`` of ``n``, reproducible per patient index.

    Drawn ``DEMOGRAPHICS_CHUNK`` patients at a time with a generator seeded by (seed, chunk), so
    any shard draws the same values for the same indices and memory stays bounded.
    """

    def __init__(self, n: int, seed: int, age: Any, sex: Any, csv: Any, model: DemographicsModel | None):
        self.seed, self.age, self.sex, self.model = int(seed), age, sex, model
        self.fixed: tuple[np.ndarray, np.ndarray] | None = None
        if csv is not None:
            self.fixed = requested_demographics(None, csv=csv)
            if n is not None and int(n) != len(self.fixed[0]):
                raise InputError(
                    f"n_patients={n} but {csv} asks for {len(self.fixed[0])} patients (sum of n)"
                )
            self.n = len(self.fixed[0])
        else:
            if n is None:
                raise InputError("n_patients is not set: expected the number of patients to generate")
            self.n = int(n)
            if self.n <= 0:
                raise InputError(f"n_patients must be > 0, got {n}")
            # validate the request (and the need for a model) before any generation
            requested_demographics(1, age=age, sex=sex, model=model, rng=np.random.default_rng(0))
        self._chunk: tuple[int, np.ndarray, np.ndarray] | None = None

    def _draw(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        if self._chunk is None or self._chunk[0] != c:
            size = min(DEMOGRAPHICS_CHUNK, self.n - c * DEMOGRAPHICS_CHUNK)
            rng = np.random.default_rng([self.seed, _DEMOGRAPHICS_STREAM, c])
            age, sex = requested_demographics(size, age=self.age, sex=self.sex, model=self.model, rng=rng)
            self._chunk = (c, age, sex)
        return self._chunk[1], self._chunk[2]

    def __call__(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fixed is not None:
            return self.fixed[0][index], self.fixed[1][index]
        age, sex = np.empty(len(index), np.float32), np.empty(len(index), np.int8)
        chunk = index // DEMOGRAPHICS_CHUNK
        for c in np.unique(chunk):
            sel = chunk == c
            a, s = self._draw(int(c))
            age[sel], sex[sel] = a[index[sel] % DEMOGRAPHICS_CHUNK], s[index[sel] % DEMOGRAPHICS_CHUNK]
        return age, sex


# ----------------------------------------------------------------------------- run


def _check_options(cfg: DictConfig) -> tuple[list[str], int, int]:
    raw = cfg.formats or []
    formats = [str(raw)] if isinstance(raw, str) else [str(f) for f in raw]  # formats=cohort works too
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"formats={formats}: expected a non-empty subset of {list(FORMATS)}")
    if cfg.mode not in MODES:
        raise InputError(f"mode={cfg.mode!r}; expected one of {', '.join(MODES)}")
    for key, kind in (
        ("n_patients", int),
        ("seed", int),
        ("shard_index", int),
        ("num_shards", int),
        ("batch_size", int),
        ("keep_fraction", float),
        ("id_offset", int),
    ):
        number(cfg, key, kind)
    k, shards = int(cfg.shard_index), int(cfg.num_shards)
    if shards < 1 or not 0 <= k < shards:
        raise InputError(f"shard_index={k}, num_shards={shards}: expected 0 <= shard_index < num_shards")
    if shards > 1 and set(formats) - {"cohort"}:
        raise InputError(
            "with num_shards > 1 write formats=[cohort] per shard and export mimic3/mimic4/meds from the merged "
            "cohort (each export numbers admissions from the same HADM_ID start)"
        )
    if int(cfg.batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.n_patients is not None and int(cfg.n_patients) <= 0:
        raise InputError(f"n_patients must be > 0, got {cfg.n_patients}")
    if not 0.0 <= float(cfg.keep_fraction) <= 1.0:
        raise InputError(f"keep_fraction must lie in [0, 1], got {cfg.keep_fraction}")
    check_output(cfg.out_dir, bool(cfg.overwrite), "generation", _inputs(cfg))
    return formats, k, shards


def _inputs(cfg: DictConfig) -> list[Any]:
    """Paths this command reads: out_dir may never replace one of them."""
    return [cfg.ckpt, cfg.get("cohort"), cfg.get("demographics_csv")]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device={name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={name}: CUDA is not available on this machine")
    return device


def _dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise InputError(f"dtype={name!r}; expected one of {', '.join(dtypes)}")
    return dtypes[name]


def _context_fallbacks(ckpt: GenerationCheckpoint, cohort: Cohort | None, cfg: DictConfig) -> dict[str, Any]:
    """Demographics model, id offset, descriptions, expander: from the checkpoint, else the cohort."""
    ctx = ckpt.context
    out: dict[str, Any] = {}
    if ctx.get("demographics") is not None:
        out["demographics"] = DemographicsModel.from_dict(dict(ctx["demographics"]))
    elif cohort is not None:
        out["demographics"] = DemographicsModel.from_cohort(cohort)
    else:
        out["demographics"] = None

    if cfg.id_offset is not None:
        out["id_offset"] = int(cfg.id_offset)
    else:
        max_real = ctx.get("max_real_subject_id")  # checkpoints before the small-cell rule
        if ctx.get("synthetic_id_offset") is not None:
            max_real = int(ctx["synthetic_id_offset"]) - 1
        if max_real is None and cohort is not None:
            max_real = cohort.scan().select("subject_id").max().collect().item()
        if max_real is None:
            raise InputError(
                "the checkpoint does not record the largest real subject_id: pass cohort=<training cohort> "
                "or id_offset=<first synthetic id> so synthetic ids never reuse real ones"
            )
        out["id_offset"] = synthetic_id_offset(int(max_real))

    if ctx.get("code_descriptions") is not None:
        out["descriptions"] = dict(ctx["code_descriptions"])
    elif cohort is not None:
        out["descriptions"] = cohort.codes().select("code", "description")
    else:
        out["descriptions"] = None

    out["expander"] = None
    if isinstance(ckpt.tokenizer, HierarchicalTokenizer):
        prior = float(cfg.hierarchical.prior)
        if ctx.get("expansion") is not None:
            out["expander"] = CodeExpander(ckpt.tokenizer, dict(ctx["expansion"]), prior)
        elif cohort is not None:
            out["expander"] = CodeExpander.from_cohort(cohort, ckpt.tokenizer, prior=prior)
        else:
            raise InputError(
                "hierarchical checkpoint without code-expansion statistics: pass cohort=<training cohort>"
            )
    return out


def build_generator(
    ckpt: GenerationCheckpoint, cfg: DictConfig, expander: CodeExpander | None
) -> PatientGenerator:
    """The sampler for ``cfg.sampling`` / ``cfg.constraints`` on the checkpoint's model."""
    model = ckpt.module.model
    tok = ckpt.tokenizer
    lo, hi = tok.content_range
    items = tok.categories if isinstance(tok, HierarchicalTokenizer) else tok.codes
    c = cfg.constraints
    max_length = model.max_length if c.max_length is None else min(int(c.max_length), model.max_length)
    constraints = VisitConstraints(
        items,
        lo,
        max_visits=int(c.max_visits),
        max_codes_per_visit=None if c.max_codes_per_visit is None else int(c.max_codes_per_visit),
        max_length=max_length,
        validity=bool(c.validity),
        item_ok=None if expander is None else expander.item_ok,
    )
    sampling = SamplingConfig.coerce(OmegaConf.to_container(cfg.sampling, resolve=True))
    if sampling.strategy == "beam" and cfg.mode != "conditional":
        raise InputError(
            "sampling.strategy=beam is for mode=conditional: from demographics alone it returns the same "
            "patient for every equal prompt"
        )
    return PatientGenerator(Sampler(model, constraints, sampling, int(cfg.seed)), tok, expander)


def _batches(start: int, end: int, size: int) -> Iterator[np.ndarray]:
    for lo in range(start, end, size):
        yield np.arange(lo, min(lo + size, end), dtype=np.int64)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Generate the configured cohort (or this shard of it); return a summary."""
    formats, shard, shards = _check_options(cfg)
    ckpt = load_checkpoint(cfg.ckpt)
    cohort = Cohort(str(cfg.cohort)) if cfg.cohort else None
    if cfg.mode == "conditional" and cohort is None:
        raise InputError(
            "mode=conditional needs cohort=<cohort directory> (and split=...) to take prefixes from"
        )
    ctx = _context_fallbacks(ckpt, cohort, cfg)
    device, dtype = _device(str(cfg.device)), _dtype(str(cfg.dtype))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    ckpt.module.to(device=device, dtype=dtype)
    generator = build_generator(ckpt, cfg, ctx["expander"])
    max_length = generator.sampler.constraints.max_length

    if cfg.mode == "conditional":
        source = cohort.scan(str(cfg.split)).select("sex", "age", "visits")  # type: ignore[union-attr]
        available = source.select(pl.len()).collect().item()
        n_total = available if cfg.n_patients is None else int(cfg.n_patients)
        if available == 0 or n_total > available:
            raise InputError(
                f"cohort {cohort.path} split {cfg.split!r} has {available} patients; asked for {n_total}"  # type: ignore[union-attr]
            )
        plan = None
    else:
        plan = DemographicsPlan(
            cfg.n_patients, int(cfg.seed), cfg.age, cfg.sex, cfg.demographics_csv, ctx["demographics"]
        )
        n_total = plan.n
    start, end = shard * n_total // shards, (shard + 1) * n_total // shards

    out_dir = Path(str(cfg.out_dir)).expanduser().absolute()
    generation = {
        "ckpt": str(Path(str(cfg.ckpt)).expanduser().absolute()),
        "mode": str(cfg.mode),
        "seed": int(cfg.seed),
        "n_patients_total": n_total,
        "first_index": start,
        "shard_index": shard,
        "num_shards": shards,
        "sampling": generator.sampler.cfg.to_dict(),
        "constraints": OmegaConf.to_container(cfg.constraints, resolve=True),
        "memorisation": ckpt.context.get("memorisation"),  # copy rate by training epoch
        "demographics": "conditional"
        if plan is None
        else (
            "csv"
            if cfg.demographics_csv
            else "fixed"
            if cfg.age is not None and cfg.sex is not None
            else "model"
        ),
    }
    started = time.perf_counter()
    with atomic_directory(out_dir, bool(cfg.overwrite), kind="generation", inputs=_inputs(cfg)) as tmp:
        writer = SyntheticCohortWriter(
            tmp / "cohort",
            id_offset=ctx["id_offset"],
            first_index=start,
            descriptions=ctx["descriptions"],
            generation=generation,
            shard_size=int(cfg.writer.shard_size),
            row_group_size=int(cfg.writer.row_group_size),
        )
        bar = tqdm(
            total=end - start, unit="patient", disable=not cfg.progress, file=sys.stderr, dynamic_ncols=True
        )
        with writer, bar, torch.inference_mode():
            for index in _batches(start, end, int(cfg.batch_size)):
                if plan is not None:
                    age, sex = plan(index)
                    frame = generator(age, sex, index)
                else:
                    rows = source.slice(int(index[0]), len(index)).collect()
                    visits = rows["visits"].to_arrow()
                    seqs = ckpt.tokenizer.encode_batch(visits)
                    enc, prefix, dropped = conditional_prompts(seqs, float(cfg.keep_fraction), max_length)
                    given = None
                    if isinstance(ckpt.tokenizer, HierarchicalTokenizer):  # keep the real codes too
                        lengths = np.array([len(p) for p in prefix], dtype=np.int64)
                        given = GivenCodes(ckpt.tokenizer.encode_codes_batch(visits), lengths, dropped)
                    age, sex = rows["age"].to_numpy(), rows["sex"].to_numpy()
                    known = prefix_times(visits, prefix, dropped)
                    frame = generator(age, sex, index, enc, prefix, given, known)
                    frame = frame.with_columns(prediction_times(known))
                writer.add(frame)
                bar.update(len(index))
        seconds = time.perf_counter() - started
        for fmt in formats:
            if fmt in EXPORTERS:
                EXPORTERS[fmt](tmp / "cohort", tmp / fmt, int(cfg.seed), bool(cfg.export.compress), False)
        meta = writer.meta or {}
        summary = {
            "out_dir": str(out_dir),
            "formats": formats,
            "n_patients": end - start,
            "first_subject_id": ctx["id_offset"] + start,
            "counts": meta.get("counts"),
            "drops": meta.get("drops"),
            "seconds": round(seconds, 3),
            "patients_per_s": round((end - start) / seconds, 2) if seconds > 0 else None,
            "generation": generation,
        }
        if "cohort" not in formats:
            shutil.rmtree(tmp / "cohort")
        write_json_atomic(tmp / "generation.json", summary)
    log.info("%d patients in %.1fs (%.1f/s) -> %s", end - start, seconds, (end - start) / seconds, out_dir)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(
        f"{summary['n_patients']} synthetic patients ({', '.join(summary['formats'])}) written to "
        f"{summary['out_dir']} in {summary['seconds']:.1f}s ({summary['patients_per_s']} patients/s)"
    )


if __name__ == "__main__":
    main()
