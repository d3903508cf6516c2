"""Report figures (matplotlib, Agg backend). Each function returns PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ehrgen.privacy.small_cells import MIN_CELL, reportable, suppress  # noqa: E402

MAX_POINTS = 20000


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _log_scatter(ax, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str) -> None:
    """Log-log scatter with the identity line; zeros sit on a floor below the smallest value."""
    if len(x) > MAX_POINTS:  # rendering cost; a seeded subsample shows the same cloud
        keep = np.random.default_rng(0).choice(len(x), MAX_POINTS, replace=False)
        x, y = x[keep], y[keep]
    pos = np.r_[x[x > 0], y[y > 0]]
    floor = pos.min() / 2 if pos.size else 1e-6
    xs, ys = np.where(x > 0, x, floor), np.where(y > 0, y, floor)
    ax.scatter(xs, ys, s=6, alpha=0.5, linewidths=0)
    lo, hi = floor, max(xs.max(initial=floor), ys.max(initial=floor)) * 1.5
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="identity")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="upper left", fontsize=8)


def _small_cell_note(ax, hidden: int, what: str) -> None:
    if hidden:
        ax.text(0.98, 0.02, f"{hidden} {what} held by < {MIN_CELL} real patients not shown",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7)  # fmt: skip


def prevalence_scatter(
    real: np.ndarray, synthetic: np.ndarray, n_real: int, title: str = "Code prevalence"
) -> bytes:
    """Per-code prevalence; codes that 1..10 real patients hold are not drawn (small-cell rule)."""
    shown = reportable(np.rint(np.asarray(real) * n_real))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    _log_scatter(ax, real[shown], synthetic[shown], "real prevalence", "synthetic prevalence")
    _small_cell_note(ax, int((~shown).sum()), "codes")
    ax.set_title(title)
    return _png(fig)


def cooccurrence_scatter(real: np.ndarray, synthetic: np.ndarray, n_real_visits: int) -> bytes:
    """Per-pair rate per visit; pairs in 1..10 real visits are not drawn (small-cell rule)."""
    shown = reportable(np.rint(np.asarray(real) * n_real_visits))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    _log_scatter(ax, real[shown], synthetic[shown], "real pairs per visit", "synthetic pairs per visit")
    _small_cell_note(ax, int((~shown).sum()), "pairs")
    ax.set_title("Within-visit co-occurrence")
    return _png(fig)


def count_histograms(panels: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One panel per ``title -> (real counts, synthetic counts)``, as shares of patients.

    The real histogram follows the small-cell rule: the last bin (``>= top``) starts where at
    least 11 real patients remain, and any other bin of 1..10 real patients is drawn as 0.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (title, (real, syn)) in zip(axes[0], panels.items(), strict=True):
        top = int(max(np.quantile(real, 0.99) if real.size else 1, np.quantile(syn, 0.99) if syn.size else 1))
        real_sorted = np.sort(np.asarray(real))
        if len(real_sorted) >= MIN_CELL:  # the tail bin must itself hold >= MIN_CELL real patients
            top = max(min(top, int(real_sorted[-MIN_CELL])), 1)
        edges = np.arange(0, top + 2) - 0.5
        hidden = 0
        for data, label in ((real, "real"), (syn, "synthetic")):
            counts = np.histogram(np.minimum(data, top), bins=edges)[0]
            if label == "real":
                hidden = int((~reportable(counts)).sum())
                counts = suppress(counts)
            ax.stairs(counts / max(len(data), 1), edges, lw=1.5, label=label)
        _small_cell_note(ax, hidden, "bins")
        ax.set(title=title, xlabel=f"count (last bin: >= {top})", ylabel="share of patients")
        ax.legend(fontsize=8)
    return _png(fig)


def stratum_heatmap(values: np.ndarray, strata: Sequence[str], metrics: Sequence[str]) -> bytes:
    """Strata (rows) x metrics (columns); NaN cells (too few patients) are blank."""
    fig, ax = plt.subplots(figsize=(1.4 * len(metrics) + 2.5, 0.45 * len(strata) + 1.8))
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(strata)), strata, fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title("Fidelity per age band x sex stratum")
    return _png(fig)


def dcr_histograms(to_train: np.ndarray, to_holdout: np.ndarray, distance: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 41)
    for data, label in ((to_train, "to train"), (to_holdout, "to holdout")):
        w = np.full(len(data), 1.0 / max(len(data), 1))
        ax.hist(data, bins=bins, weights=w, histtype="step", lw=1.5, label=label)
    ax.set(xlabel=f"{distance} distance to closest record", ylabel="share of synthetic records")
    ax.text(
        0.98,
        0.95,
        "equal-size train / holdout sets",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=7,
    )
    ax.set_title(f"Distance to closest record ({distance})")
    ax.legend(fontsize=8)
    return _png(fig)


def violation_bars(rates: Mapping[str, tuple[float, float]]) -> bytes:
    """``rule -> (real rate, synthetic rate)``."""
    names = list(rates)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 3.5))
    for off, label, idx in ((-0.2, "real", 0), (0.2, "synthetic", 1)):
        ax.bar(x + off, [np.nan_to_num(rates[n][idx]) for n in names], width=0.4, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="share of patients", title="Clinical validity rule violations")
    ax.legend(fontsize=8)
    return _png(fig)


def copy_rate_by_epoch(history: Sequence[Mapping[str, float]], stopped_epoch: int | None) -> bytes:
    """Training-time memorisation check: generated vs held-out exact-copy rates per epoch."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["copy_rate"] for h in history], marker="o", label="generated")
    held = [(h["epoch"], h["copy_rate_holdout"]) for h in history if "copy_rate_holdout" in h]
    if held:
        ax.plot(*zip(*held, strict=True), ls="--", label="held-out real (val split)")
    if stopped_epoch is not None:
        ax.axvline(stopped_epoch, color="grey", lw=1, ls=":", label="stopped; rolled back")
    ax.set(xlabel="epoch", ylabel="share identical to a training patient")
    ax.set_title("Exact copies of training patients during training")
    ax.legend(fontsize=8)
    return _png(fig)


def time_histograms(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """One panel per ``title -> (bin edges in days, real values, synthetic values)``: the share of
    visits per log-spaced bin. Real bins of 1..10 visits are drawn as 0 (small-cell rule)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (title, (edges, real, syn)) in zip(axes[0], panels.items(), strict=True):
        hidden = 0
        shown_edges = np.r_[edges[1] / 2, edges[1:]]  # the [0, 1 h) bin drawn on the log axis
        for data, label in ((real, "real"), (syn, "synthetic")):
            counts = np.histogram(np.clip(data, 0, edges[-1] * (1 - 1e-12)), bins=edges)[0]
            if label == "real":
                hidden = int((~reportable(counts)).sum())
                counts = suppress(counts)
            ax.stairs(counts / max(len(data), 1), shown_edges, lw=1.5, label=label)
        _small_cell_note(ax, hidden, "bins")
        ax.set(title=title, xscale="log", xlabel="days", ylabel="share of visits")
        ax.axvline(30.0, color="k", lw=0.6, ls=":") if "gap" in title else None
        ax.legend(fontsize=8)
    return _png(fig)
