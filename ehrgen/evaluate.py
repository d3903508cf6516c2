"""Compare a synthetic cohort with real data: fidelity, conditioning, validity, privacy, utility.

    python -m ehrgen.evaluate real=COHORT synthetic=COHORT [holdout=COHORT] out_dir=PATH

Writes ``out_dir/metrics.json`` (every metric with a bootstrap 95% CI), ``out_dir/report.html``
(self-contained) and ``out_dir/figures/*.png``; prints a short summary table.

The privacy nearest-neighbour searches can be computed beforehand in blocks of query rows
(:func:`neighbour_block`, one job array task each: ``python submitit_launch.py evaluate ...
blocks=N``) and read with ``privacy.neighbours_dir=DIR``, which then skips the search.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from ehrgen.config import CONFIG_DIR
from ehrgen.data.codes import EVENT_TYPES, event_type
from ehrgen.data.cohort import Cohort, atomic_directory, check_output, write_json_atomic
from ehrgen.errors import InputError, one_line_errors
from ehrgen.metrics.bootstrap import BootstrapConfig, bootstrap, metric_entry
from ehrgen.metrics.cohort_arrays import Level, patient_stats
from ehrgen.metrics.conditioning import classifier_accuracy, stratum_fidelity, stratum_name
from ehrgen.metrics.fidelity import LevelComparison
from ehrgen.metrics.inputs import EvalInputs, load_inputs
from ehrgen.metrics.timing import TimeComparison
from ehrgen.metrics.utility import tstr
from ehrgen.metrics.validity import per_patient_quantities, ratio_stat
from ehrgen.models.visit_times import GAP_EDGES_DAYS, STAY_EDGES_DAYS
from ehrgen.privacy import blocks as neighbour_blocks
from ehrgen.privacy.neighbors import Neighbours
from ehrgen.privacy.suite import PrivacyConfig, privacy_metrics
from ehrgen.report import html, plots

log = logging.getLogger(__name__)
METRICS_SCHEMA = 1
SUMMARY = (
    "fidelity/code/jsd",
    "fidelity/code/prevalence_r2",
    "fidelity/code/cooccurrence_r2",
    "fidelity/code/transition_r2",
    "time/gap/ks",
    "time/stay/ks",
    "time/readmit30/ratio",
    "conditioning/classifier/sex_accuracy/ratio",
    "validity/violation_rate_any",
    "validity/unknown_code_rate",
    "privacy/jaccard/copy_rate",
    "privacy/jaccard/copy_rate_excess",
    "privacy/jaccard/share_closer_to_train",
    "privacy/jaccard/nnaar",
    "privacy/jaccard/mia_advantage",
    "privacy/attribute/advantage",
    "utility/mean/auroc_ratio",
)


def _prefixed(prefix: str, entries: dict[str, dict]) -> dict[str, dict]:
    return {f"{prefix}/{k}": v for k, v in entries.items()}


def _fidelity(inp: EvalInputs, cfg: DictConfig, boot: BootstrapConfig, figs: dict, metrics: dict) -> None:
    vocab = inp.real.vocab
    for i, name in enumerate(cfg.fidelity.levels):
        if name not in ("code", "category"):
            raise InputError(f"fidelity.levels: unknown level {name!r}; expected code and/or category")
        level = Level.codes(vocab) if name == "code" else Level.categories(vocab)
        st_real = patient_stats(inp.real, level)
        kwargs = {
            "top_k": int(cfg.fidelity.top_k),
            "band_edges": tuple(cfg.fidelity.band_edges),
            "profile_min_patients": int(cfg.fidelity.profile_min_patients),
            "token_type": np.array([event_type(str(c)) for c in level.tokens]),
        }
        cmp = LevelComparison(st_real, patient_stats(inp.synthetic, level), level, **kwargs)
        sizes = {"real": inp.real.n_patients, "synthetic": inp.synthetic.n_patients}
        metrics.update(_prefixed(f"fidelity/{name}", bootstrap(cmp.stats, sizes, boot, stream=10 + i)))
        if cfg.fidelity.holdout_reference:
            ref = LevelComparison(
                st_real, patient_stats(inp.holdout, level), level, groups=("real", "holdout"), **kwargs
            )
            sizes = {"real": inp.real.n_patients, "holdout": inp.holdout.n_patients}
            res = bootstrap(ref.stats, sizes, boot, stream=20 + i)
            metrics.update(_prefixed(f"reference/fidelity/{name}", res))
        if name == "code" and cfg.report.enabled:
            p = cmp.point()
            n_real, n_real_visits = len(p["visits_real"]), int(np.sum(p["visits_real"]))
            figs["prevalence"] = plots.prevalence_scatter(p["prevalence_real"], p["prevalence_other"], n_real)
            figs["cooccurrence"] = plots.cooccurrence_scatter(p["pair_real"], p["pair_other"], n_real_visits)
            figs["counts"] = plots.count_histograms(
                {
                    "visits per patient": (p["visits_real"], p["visits_other"]),
                    "distinct codes per patient": (p["codes_real"], p["codes_other"]),
                }
            )
    _fidelity_per_type(inp, cfg, boot, figs, metrics)


def _fidelity_per_type(
    inp: EvalInputs, cfg: DictConfig, boot: BootstrapConfig, figs: dict, metrics: dict
) -> None:
    """``fidelity/<type>/...``: every code-level fidelity metric on each event type's codes alone,
    when the real cohort holds more than one type (a visit without codes of the type stays empty);
    the report gets each type's prevalence panel."""
    kinds = np.array([event_type(str(c)) for c in inp.real.vocab])
    present = [k for k in EVENT_TYPES if k in set(kinds[np.unique(inp.real.codes)])]
    if len(present) < 2:
        return
    kwargs = {
        "top_k": int(cfg.fidelity.top_k),
        "band_edges": tuple(cfg.fidelity.band_edges),
        "profile_min_patients": int(cfg.fidelity.profile_min_patients),
    }
    level = Level.codes(inp.real.vocab)
    for i, kind in enumerate(present):
        keep = kinds == kind
        real, synthetic = inp.real.restrict(keep), inp.synthetic.restrict(keep)
        cmp = LevelComparison(patient_stats(real, level), patient_stats(synthetic, level), level, **kwargs)
        sizes = {"real": real.n_patients, "synthetic": synthetic.n_patients}
        metrics.update(_prefixed(f"fidelity/{kind}", bootstrap(cmp.stats, sizes, boot, stream=40 + i)))
        if cfg.report.enabled:
            p = cmp.point()
            title = f"{kind.capitalize()} prevalence"
            figs[f"prevalence_{kind}"] = plots.prevalence_scatter(
                p["prevalence_real"], p["prevalence_other"], len(p["visits_real"]), title=title
            )


def _conditioning(inp: EvalInputs, cfg: DictConfig, boot: BootstrapConfig, figs: dict, metrics: dict) -> list:
    c = cfg.conditioning
    edges = [float(x) for x in c.age_edges]
    res, warnings = stratum_fidelity(
        inp.real,
        inp.synthetic,
        edges,
        int(c.min_stratum_patients),
        boot,
        top_k=int(cfg.fidelity.top_k),
        band_edges=tuple(cfg.fidelity.band_edges),
    )
    metrics.update(_prefixed("conditioning/stratum", res))
    targets = {"synthetic": inp.synthetic, "holdout": inp.holdout}
    acc, warn2 = classifier_accuracy(inp.real, targets, edges, boot, C=float(c.C), max_iter=int(c.max_iter))
    metrics.update(_prefixed("conditioning/classifier", acc))
    if cfg.report.enabled and res:
        present = {k.split("/")[0] for k in res}
        strata = [n for s in range(2 * (len(edges) + 1)) if (n := stratum_name(s, edges)) in present]
        cols = ["jsd", "prevalence_r2", "cooccurrence_r2", f"top{int(cfg.fidelity.top_k)}_overlap"]
        values = np.array(
            [
                [np.nan if res[f"{s}/{m}"]["value"] is None else res[f"{s}/{m}"]["value"] for m in cols]
                for s in strata
            ]
        )
        figs["strata"] = plots.stratum_heatmap(values, strata, cols)
    return warnings + warn2


def _timing(inp: EvalInputs, cfg: DictConfig, boot: BootstrapConfig, figs: dict, metrics: dict) -> list:
    c, t = cfg.conditioning, cfg.timing
    kwargs = {
        "age_edges": [float(x) for x in c.age_edges],
        "min_stratum_patients": int(c.min_stratum_patients),
        "top_k": int(t.top_k),
        "min_visits": int(t.min_visits),
    }
    cmp = TimeComparison(inp.real, inp.synthetic, **kwargs)
    if not (cmp.times[0].any_times and cmp.times[1].any_times):
        which = "real" if not cmp.times[0].any_times else "synthetic"
        return [f"the {which} cohort has no visit times (gaps or stays): time metrics are not computed"]
    sizes = {"real": inp.real.n_patients, "synthetic": inp.synthetic.n_patients}
    metrics.update(_prefixed("time", bootstrap(cmp.stats, sizes, boot, stream=60)))
    if cfg.fidelity.holdout_reference:
        ref = TimeComparison(inp.real, inp.holdout, groups=("real", "holdout"), **kwargs)
        if ref.times[1].any_times:
            sizes = {"real": inp.real.n_patients, "holdout": inp.holdout.n_patients}
            metrics.update(_prefixed("reference/time", bootstrap(ref.stats, sizes, boot, stream=61)))
    if cfg.report.enabled:
        real, syn = cmp.times
        panels = {
            "gap to the next admission": (
                GAP_EDGES_DAYS,
                real.gap[np.isfinite(real.gap)],
                syn.gap[np.isfinite(syn.gap)],
            ),
            "length of stay": (
                STAY_EDGES_DAYS,
                real.stay[np.isfinite(real.stay)],
                syn.stay[np.isfinite(syn.stay)],
            ),
        }
        figs["times"] = plots.time_histograms({k: v for k, v in panels.items() if len(v[1]) and len(v[2])})
    return []


def _validity(inp: EvalInputs, cfg: DictConfig, boot: BootstrapConfig, figs: dict, metrics: dict) -> None:
    for i, (prefix, arr) in enumerate((("validity", inp.synthetic), ("reference/validity", inp.real))):
        q = per_patient_quantities(arr, inp.known_codes)
        metrics.update(_prefixed(prefix, bootstrap(ratio_stat(q, "x"), {"x": arr.n_patients}, boot, 40 + i)))
    if cfg.report.enabled:
        rules = [k.rsplit("/", 1)[1] for k in metrics if k.startswith("validity/violation_rate/")]
        rates = {
            r: (
                metrics[f"reference/validity/violation_rate/{r}"]["value"],
                metrics[f"validity/violation_rate/{r}"]["value"],
            )
            for r in rules
        }
        figs["violations"] = plots.violation_bars({k: (a or 0.0, b or 0.0) for k, (a, b) in rates.items()})


def privacy_config(cfg: DictConfig) -> PrivacyConfig:
    """The privacy suite's settings from the evaluate config (``seed`` picks the subsamples)."""
    p = cfg.privacy
    return PrivacyConfig(
        distances=tuple(str(d) for d in p.distances),
        max_records=int(p.max_records),
        known_top_k=int(p.known_top_k),
        attribute_targets=int(p.attribute_targets),
        workers=int(p.workers),
        block=int(p.block),
        chunk=int(p.chunk),
        seed=int(cfg.seed),
    )


def _precomputed_neighbours(inp: EvalInputs, cfg: DictConfig) -> dict[str, Neighbours] | None:
    """``privacy.neighbours_dir``'s blocks, verified, before any metric is computed; None: search here."""
    directory = cfg.privacy.get("neighbours_dir")
    if not cfg.privacy.enabled or directory in (None, ""):
        return None
    path = Path(str(directory)).expanduser().absolute()
    neighbours = neighbour_blocks.read_blocks(path, inp.synthetic, inp.real, inp.holdout, privacy_config(cfg))
    log.info("privacy: nearest neighbours read from %s", path)
    return neighbours


def _privacy(
    inp: EvalInputs, cfg: DictConfig, boot: BootstrapConfig, figs: dict, metrics: dict,
    neighbours: dict[str, Neighbours] | None = None,
) -> list:  # fmt: skip
    pcfg = privacy_config(cfg)
    res, dists, warnings = privacy_metrics(inp.synthetic, inp.real, inp.holdout, pcfg, boot, neighbours)
    metrics.update(_prefixed("privacy", res))
    if cfg.report.enabled:
        for dist in pcfg.distances:
            figs[f"dcr_{dist}"] = plots.dcr_histograms(
                dists[f"{dist}/dcr_train"], dists[f"{dist}/dcr_holdout"], dist
            )
    return warnings


def _memorisation_figure(inp: EvalInputs, figs: dict) -> None:
    """Copy rate by training epoch, when the synthetic cohort's checkpoint recorded it
    (``ehrgen.train``'s CopyRateMonitor; the checkpoint carries it into ``generation``)."""
    generation = Cohort(inp.sources["synthetic"]["path"]).meta.get("generation") or {}
    memorisation = generation.get("memorisation") or {}
    if memorisation.get("history"):
        figs["copy_rate_by_epoch"] = plots.copy_rate_by_epoch(
            memorisation["history"], memorisation.get("stopped_epoch")
        )


def _model_metrics_fn(cfg: DictConfig):
    """Hook for checkpoint-based metrics (perplexity etc.), implemented in ehrgen.metrics.lm.

    Built before any work so a bad ``model_metrics`` target fails fast.
    """
    try:
        return hydra.utils.instantiate(cfg.model_metrics)
    except Exception as err:  # noqa: BLE001 - any import/instantiation failure is a config problem
        raise InputError(f"ckpt={cfg.ckpt} given but model_metrics could not be built ({err})") from None


def _model_metrics(fn, inp: EvalInputs, cfg: DictConfig, metrics: dict) -> None:
    res = fn(
        ckpt=str(cfg.ckpt), cohort=inp.sources["holdout"]["path"], splits=inp.sources["holdout"]["splits"]
    )
    for k, v in dict(res).items():
        metrics[f"model/{k}"] = dict(v) if isinstance(v, dict) else metric_entry(float(v), np.zeros(0))


def print_summary(metrics: dict[str, dict]) -> str:
    """The key metrics as a fixed-width table (also returned)."""
    lines = [f"{'metric':<46} {'value':>10}  95% CI"]
    for key in SUMMARY:
        if key in metrics:
            e = metrics[key]
            ci = f"[{html.fmt(e['ci_low'])}, {html.fmt(e['ci_high'])}]" if e["ci_low"] is not None else "-"
            lines.append(f"{key:<46} {html.fmt(e['value']):>10}  {ci}")
    text = "\n".join(lines)
    print(text)
    return text


def _load(cfg: DictConfig) -> EvalInputs:
    return load_inputs(
        cfg.real, cfg.synthetic, cfg.holdout, cfg.splits.real, cfg.splits.synthetic, cfg.splits.holdout
    )


def neighbour_block(cfg: DictConfig, block: int, n_blocks: int, directory: str | Path) -> dict[str, Any]:
    """Block ``block`` of ``n_blocks`` of the privacy searches into ``directory/block-NNNNN.npz``.

    Every block reads the same inputs as ``run(cfg)`` and runs query rows
    ``[block * n // n_blocks, (block + 1) * n // n_blocks)`` of each search; returns the block's
    metadata (rows, pairs scored, seconds, fingerprint of the inputs and settings).
    """
    if not 0 <= int(block) < int(n_blocks):
        raise InputError(f"block={block} of {n_blocks}: expected 0 <= block < n_blocks")
    pcfg = privacy_config(cfg)
    inp = _load(cfg)
    meta = neighbour_blocks.write_block(
        directory, int(block), int(n_blocks), inp.synthetic, inp.real, inp.holdout, pcfg
    )
    log.info("privacy block %d/%d: %d pairs in %.1f s", block, n_blocks, meta["pairs"], meta["seconds"])
    return meta


def _inputs(cfg: DictConfig) -> list[Any]:
    """Paths this evaluation reads: out_dir may never replace one of them."""
    privacy = cfg.get("privacy") or {}
    return [cfg.real, cfg.synthetic, cfg.holdout, cfg.get("ckpt"), privacy.get("neighbours_dir")]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate and write the report; returns the metrics.json payload."""
    if cfg.out_dir in (None, "", "???"):
        raise InputError("out_dir=PATH is required (a new directory for metrics.json and report.html)")
    out_dir = check_output(cfg.out_dir, bool(cfg.overwrite), "evaluation", _inputs(cfg))
    if int(cfg.bootstrap.n) < 0 or int(cfg.bootstrap.chunk) < 1:
        raise InputError("bootstrap.n must be >= 0 and bootstrap.chunk >= 1")
    model_fn = _model_metrics_fn(cfg) if cfg.ckpt is not None else None
    t0 = time.perf_counter()
    inp = _load(cfg)
    if cfg.bootstrap.method not in ("percentile", "basic"):
        raise InputError(f"bootstrap.method must be percentile or basic, got {cfg.bootstrap.method!r}")
    boot = BootstrapConfig(
        n=int(cfg.bootstrap.n),
        seed=int(cfg.bootstrap.seed),
        level=float(cfg.bootstrap.level),
        chunk=int(cfg.bootstrap.chunk),
        method=str(cfg.bootstrap.method),
    )
    neighbours = _precomputed_neighbours(inp, cfg)
    metrics: dict[str, dict] = {}
    figs: dict[str, bytes] = {}
    warnings = list(inp.warnings)
    timings: dict[str, float] = {}
    stages = [
        ("fidelity", lambda: _fidelity(inp, cfg, boot, figs, metrics)),
        ("conditioning", lambda: _conditioning(inp, cfg, boot, figs, metrics)),
        ("timing", lambda: _timing(inp, cfg, boot, figs, metrics)),
        ("validity", lambda: _validity(inp, cfg, boot, figs, metrics)),
        ("privacy", lambda: _privacy(inp, cfg, boot, figs, metrics, neighbours)),
        ("utility", lambda: _utility(inp, cfg, boot, metrics)),
    ]
    for name, stage in stages:
        if not cfg[name].enabled:
            continue
        t = time.perf_counter()
        warnings += stage() or []
        timings[name] = round(time.perf_counter() - t, 3)
        log.info("%s metrics done in %.1f s", name, timings[name])
    if model_fn is not None:
        _model_metrics(model_fn, inp, cfg, metrics)
    if cfg.report.enabled:
        _memorisation_figure(inp, figs)
    undefined = sorted(k for k, v in metrics.items() if v["value"] is None)
    if undefined:
        warnings.append(
            f"{len(undefined)} metric(s) undefined on these inputs (value null): {', '.join(undefined[:8])}"
        )
    payload = {
        "schema_version": METRICS_SCHEMA,
        "inputs": inp.sources,
        "bootstrap": {"n": boot.n, "seed": boot.seed, "level": boot.level, "method": boot.method},
        "config": OmegaConf.to_container(cfg, resolve=False),
        "warnings": warnings,
        "timings_s": {**timings, "total": round(time.perf_counter() - t0, 3)},
        "metrics": metrics,
    }
    with atomic_directory(out_dir, bool(cfg.overwrite), kind="evaluation", inputs=_inputs(cfg)) as tmp:
        if cfg.report.enabled:
            (tmp / "figures").mkdir()
            for name, png in figs.items():
                (tmp / "figures" / f"{name}.png").write_bytes(png)
            (tmp / "report.html").write_text(html.render(payload, figs))
        write_json_atomic(tmp / "metrics.json", _finite(payload))
    for w in warnings:
        log.warning(w)
    print_summary(metrics)
    print(
        f"wrote {out_dir / 'metrics.json'}"
        + (f" and {out_dir / 'report.html'}" if cfg.report.enabled else "")
    )
    return payload


def _utility(inp: EvalInputs, cfg: DictConfig, boot: BootstrapConfig, metrics: dict) -> list:
    u = cfg.utility
    res, warnings = tstr(
        inp.real,
        inp.synthetic,
        inp.holdout,
        [str(t) for t in u.targets],
        boot,
        min_class=int(u.min_class),
        C=float(u.C),
        max_iter=int(u.max_iter),
    )
    metrics.update(_prefixed("utility", res))
    return warnings


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: map them to null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
