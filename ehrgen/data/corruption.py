"""BART-style denoising corruptions of a token sequence (the encoder input), as in PromptEHR.

With probability ``p`` one task, drawn with ``task_weights``, corrupts the sequence; otherwise the
encoder sees the clean sequence. The decoder always reconstructs the full clean sequence (that is
the DataModule's job). Tasks act on *content* tokens (codes, categories, ``<unk>``); ``<s> </s>``
and visit markers stay, except that next-visit prediction removes whole visits.

- ``mask``: span infilling. Span lengths ~ Poisson(``poisson_lambda``) cover exactly
  ``round(mask_ratio * n_codes)`` codes (at least one); each span, or each piece of a span that
  straddles a visit boundary, becomes a single ``<mask>``. Zero-length spans (BART's pure
  ``<mask>`` insertions) are skipped, so no corruption makes the sequence longer than the clean one
  and ``max_length`` truncation of the clean sequence bounds the encoder input too.
- ``delete``: each code dropped with probability ``delete_p``.
- ``replace``: each code replaced, with probability ``replace_p``, by a uniform random content id.
- ``shuffle``: codes permuted within each visit.
- ``next_visit``: the encoder sees only the first k visits, k uniform in [0, n_visits - 1]; k = 0
  is the demographics-only prompt that generation starts from.

``prompt_p`` (default 0.5; 0 is PromptEHR's recipe) gives, before any task, that share of
patients the demographics-only encoder input ``<s> </s>`` whatever their length. Without it the
decoder rarely writes a multi-visit patient from an empty encoder, the condition
demographics-mode generation runs in:
``next_visit`` reaches k = 0 for 1 / n_visits of the patients it corrupts (every single-visit
patient, a third of three-visit ones), so across-visit structure is learned mostly while the
encoder holds the answer.

Every function takes a ``numpy.random.Generator``, so a seeded generator reproduces the output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ehrgen.config import coerce_options
from ehrgen.data.vocab import BOS, EOS, MASK, N_SPECIAL, UNK, VISIT_START
from ehrgen.errors import InputError

TASKS: tuple[str, ...] = ("mask", "delete", "replace", "shuffle", "next_visit")


@dataclass
class CorruptionConfig:
    """Options of :func:`corrupt`; the defaults follow PromptEHR / BART."""

    p: float = 0.5
    prompt_p: float = 0.5  # share given the demographics-only encoder input <s> </s> (before tasks)
    tasks: tuple[str, ...] = TASKS
    task_weights: tuple[float, ...] | None = None  # None: uniform over ``tasks``
    mask_ratio: float = 0.3
    poisson_lambda: float = 3.0
    delete_p: float = 0.15
    replace_p: float = 0.15

    def __post_init__(self) -> None:
        self.tasks = tuple(str(t) for t in self.tasks)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise InputError(f"corruption.tasks: unknown {unknown} or empty; expected a subset of {TASKS}")
        for name in ("p", "prompt_p", "mask_ratio", "delete_p", "replace_p"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise InputError(f"corruption.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.poisson_lambda <= 0:
            raise InputError(f"corruption.poisson_lambda must be > 0, got {self.poisson_lambda}")
        if self.task_weights is not None:
            w = np.asarray(tuple(self.task_weights), dtype=np.float64)
            if w.shape != (len(self.tasks),) or (w < 0).any() or w.sum() <= 0:
                raise InputError(
                    f"corruption.task_weights must be {len(self.tasks)} non-negative numbers, "
                    f"got {self.task_weights}"
                )
            self.task_weights = tuple(float(x) for x in w)

    @classmethod
    def coerce(cls, value: CorruptionConfig | Mapping[str, Any] | None) -> CorruptionConfig:
        """Accept a config, a (Hydra) mapping of its fields, or None (defaults)."""
        return coerce_options(cls, value, "corruption", tuple_fields=("tasks", "task_weights"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["task_weights"] = None if self.task_weights is None else list(self.task_weights)
        return d


def content_mask(ids: np.ndarray) -> np.ndarray:
    """True at code/category tokens (``<unk>`` stands for a code too)."""
    return (ids >= N_SPECIAL) | (ids == UNK)


# ----------------------------------------------------------------------------- tasks


def mask_spans(ids: np.ndarray, rng: np.random.Generator, ratio: float = 0.3, lam: float = 3.0) -> np.ndarray:
    """Replace Poisson-length spans of codes (exactly ``round(ratio * n)`` codes) by ``<mask>``."""
    pos = np.flatnonzero(content_mask(ids))
    n = len(pos)
    target = min(n, max(1, int(round(ratio * n))))
    if n == 0:
        return ids.copy()
    lengths = np.zeros(0, dtype=np.int64)
    while lengths.sum() < target:
        draw = rng.poisson(lam, size=target)
        lengths = np.concatenate([lengths, draw[draw > 0]])
    cum = np.cumsum(lengths)
    k = int(np.searchsorted(cum, target)) + 1
    lengths = lengths[:k]
    lengths[-1] -= cum[k - 1] - target
    # Stars and bars: order the n - target kept codes and the k spans uniformly at random;
    # span i then starts after (slot_i - i) kept codes and the codes of spans 0..i-1.
    slots = np.sort(np.argsort(rng.random(n - target + k))[:k])
    starts = slots - np.arange(k) + np.cumsum(lengths) - lengths
    edges = np.zeros(n + 1, dtype=np.int64)
    edges[starts] += 1
    edges[starts + lengths] -= 1
    masked = np.cumsum(edges[:n]) > 0
    # One <mask> per span piece: a piece begins at a span start or where the masked codes stop
    # being adjacent in the sequence (the span straddles a visit boundary).
    first = masked.copy()
    first[1:] &= ~(masked[:-1] & (np.diff(pos) == 1))
    first[starts] = True
    keep = np.ones(len(ids), dtype=bool)
    keep[pos[masked & ~first]] = False
    out = ids.copy()
    out[pos[first]] = MASK
    return out[keep]


def delete_tokens(ids: np.ndarray, rng: np.random.Generator, p: float = 0.15) -> np.ndarray:
    """Drop each code with probability ``p``."""
    drop = content_mask(ids) & (rng.random(len(ids)) < p)
    return ids[~drop]


def replace_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    content_range: tuple[int, int],
    p: float = 0.15,
    token_type: np.ndarray | None = None,
) -> np.ndarray:
    """Replace each code with probability ``p`` by a uniform id from ``content_range`` [lo, hi),
    of the code's own event type when ``token_type`` (one type id per token id) holds several:
    a procedure is replaced by a procedure, so the visit keeps its grammar."""
    lo, hi = content_range
    out = ids.copy()
    if hi <= lo:
        return out
    hit = np.flatnonzero(content_mask(ids) & (rng.random(len(ids)) < p))
    types = None if token_type is None else np.asarray(token_type)[lo:hi]
    if types is None or types.min() == types.max():
        out[hit] = rng.integers(lo, hi, size=len(hit))
        return out
    pool = np.argsort(types, kind="stable")  # content ids (minus lo) grouped by type
    start = np.searchsorted(types[pool], types[ids[hit] - lo], side="left")
    count = np.searchsorted(types[pool], types[ids[hit] - lo], side="right") - start
    out[hit] = lo + pool[start + (rng.random(len(hit)) * count).astype(np.int64)]
    return out


def shuffle_visits(
    ids: np.ndarray, rng: np.random.Generator, token_type: np.ndarray | None = None
) -> np.ndarray:
    """Permute the codes within each visit (within each event type's block when ``token_type``
    is given, so the visit keeps its diagnoses-procedures-medications order)."""
    pos = np.flatnonzero(content_mask(ids))
    visit = np.cumsum(ids == VISIT_START)[pos]
    block = np.zeros(len(pos), dtype=np.int64) if token_type is None else np.asarray(token_type)[ids[pos]]
    order = np.lexsort((rng.random(len(pos)), block, visit))
    out = ids.copy()
    out[pos] = ids[pos[order]]
    return out


def keep_first_visits(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Next-visit prediction: ``<s>`` + the first k visits + ``</s>``, k uniform in [0, n - 1]."""
    starts = np.flatnonzero(ids == VISIT_START)
    if len(starts) == 0:
        return ids.copy()
    k = int(rng.integers(0, len(starts)))
    return np.concatenate([ids[: starts[k]], [EOS]]).astype(ids.dtype)


_TASK_FNS: dict[
    str,
    Callable[
        [np.ndarray, np.random.Generator, CorruptionConfig, tuple[int, int], np.ndarray | None], np.ndarray
    ],
] = {
    "mask": lambda ids, rng, cfg, cr, tt: mask_spans(ids, rng, cfg.mask_ratio, cfg.poisson_lambda),
    "delete": lambda ids, rng, cfg, cr, tt: delete_tokens(ids, rng, cfg.delete_p),
    "replace": lambda ids, rng, cfg, cr, tt: replace_tokens(ids, rng, cr, cfg.replace_p, tt),
    "shuffle": lambda ids, rng, cfg, cr, tt: shuffle_visits(ids, rng, tt),
    "next_visit": lambda ids, rng, cfg, cr, tt: keep_first_visits(ids, rng),
}


def apply_task(
    task: str,
    ids: np.ndarray,
    rng: np.random.Generator,
    cfg: CorruptionConfig,
    content_range: tuple[int, int],
    token_type: np.ndarray | None = None,
) -> np.ndarray:
    """Run one named task on a clean sequence (``token_type``: event type id per token id)."""
    if task not in _TASK_FNS:
        raise InputError(f"unknown corruption task {task!r}; expected one of {TASKS}")
    return _TASK_FNS[task](np.asarray(ids, dtype=np.int64), rng, cfg, content_range, token_type)


def corrupt_batch(
    seqs: list[np.ndarray],
    rng: np.random.Generator,
    cfg: CorruptionConfig,
    content_range: tuple[int, int],
    token_type: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Encoder inputs for clean sequences: with probability ``cfg.prompt_p`` the demographics-only
    prompt ``<s> </s>``, else with probability ``cfg.p`` one random task (replace and shuffle stay
    within each code's event type when ``token_type`` is given)."""
    n = len(seqs)
    # drawn only when on, so that prompt_p=0 leaves every seeded corruption as it was
    prompted = rng.random(n) < cfg.prompt_p if cfg.prompt_p > 0 else np.zeros(n, dtype=bool)
    applied = rng.random(n) < cfg.p
    if cfg.task_weights is None:
        tasks = rng.integers(0, len(cfg.tasks), size=n)
    else:
        weights = np.asarray(cfg.task_weights) / np.sum(cfg.task_weights)
        tasks = rng.choice(len(cfg.tasks), size=n, p=weights)
    prompt = np.array([BOS, EOS], dtype=np.int64)
    return [
        prompt.copy()
        if e
        else apply_task(cfg.tasks[t], s, rng, cfg, content_range, token_type)
        if a
        else np.asarray(s, dtype=np.int64)
        for s, e, a, t in zip(seqs, prompted.tolist(), applied.tolist(), tasks.tolist(), strict=True)
    ]


def corrupt(
    ids: np.ndarray, rng: np.random.Generator, cfg: CorruptionConfig, content_range: tuple[int, int]
) -> np.ndarray:
    """Encoder input for one clean sequence (see :func:`corrupt_batch`)."""
    return corrupt_batch([ids], rng, cfg, content_range)[0]
