"""Percentile bootstrap over patients, as reweighting of per-patient sufficient statistics.

A statistic is a function ``stat(weights) -> {name: values}`` where ``weights`` maps each
resampled group (e.g. ``"real"``, ``"synthetic"``) to a ``[b, n_group]`` matrix and each value
array has ``b`` entries. Row ``[1, 1, ..., 1]`` is the point estimate; a replicate's row holds
how many times each patient was drawn (multinomial), which is exactly a resample with
replacement, so one call evaluates a whole chunk of replicates with a few sparse products.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

Stat = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class BootstrapConfig:
    """``n``: replicates (0 disables CIs); ``chunk``: replicates evaluated per call.

    ``method``: ``"percentile"`` (the replicate quantiles) or ``"basic"`` (reflected about the
    estimate, ``2 v - q``), which removes a constant bias of plug-in divergences to first order.
    """

    n: int = 200
    seed: int = 0
    level: float = 0.95
    chunk: int = 16
    method: str = "percentile"


def resample_weights(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """``[b, n]`` draw counts of ``b`` resamples with replacement of ``n`` patients."""
    if n == 0:
        return np.zeros((b, 0))
    draws = rng.integers(0, n, size=(b, n)) + (np.arange(b)[:, None] * n)
    return np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def metric_entry(
    value: float, replicates: np.ndarray, level: float = 0.95, method: str = "percentile"
) -> dict[str, float | int | None]:
    """``{"value", "ci_low", "ci_high", "bias", "n_boot"}``; None where undefined.

    ``bias`` is the bootstrap estimate mean(replicates) - value: large for statistics that
    depend on sample size (distinct partners, recall, divergences), whose percentile interval
    is then shifted away from the estimate.
    """
    finite = replicates[np.isfinite(replicates)]
    lo = hi = bias = None
    if finite.size >= 2 and np.isfinite(value):
        alpha = (1.0 - level) / 2.0
        q_lo, q_hi = (float(x) for x in np.quantile(finite, [alpha, 1.0 - alpha]))
        lo, hi = (q_lo, q_hi) if method == "percentile" else (2 * value - q_hi, 2 * value - q_lo)
        bias = float(finite.mean() - value)
    return {
        "value": float(value) if np.isfinite(value) else None,
        "ci_low": lo,
        "ci_high": hi,
        "bias": bias,
        "n_boot": int(finite.size),
    }


def bootstrap(
    stat: Stat, sizes: Mapping[str, int], cfg: BootstrapConfig, stream: int = 0
) -> dict[str, dict[str, float | int | None]]:
    """Point estimate and percentile CI of every value ``stat`` returns.

    ``stream`` separates the random streams of different statistics under the same seed, so
    adding a metric group never changes the CIs of another.
    """
    if cfg.method not in ("percentile", "basic"):
        raise ValueError(f"bootstrap method must be percentile or basic, got {cfg.method!r}")
    point = stat({g: np.ones((1, n)) for g, n in sizes.items()})
    reps: dict[str, list[np.ndarray]] = {k: [] for k in point}
    rng = np.random.default_rng([cfg.seed, stream])
    done = 0
    while done < cfg.n:
        b = min(cfg.chunk, cfg.n - done)
        weights = {g: resample_weights(rng, n, b) for g, n in sizes.items()}
        for k, v in stat(weights).items():
            reps[k].append(np.asarray(v, dtype=np.float64).reshape(b))
        done += b
    return {
        k: metric_entry(
            float(np.asarray(v, dtype=np.float64).reshape(-1)[0]),
            np.concatenate(reps[k]) if reps[k] else np.zeros(0),
            cfg.level,
            cfg.method,
        )
        for k, v in point.items()
    }
