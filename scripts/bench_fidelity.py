"""Fidelity against a known truth: how close does a trained ehrgen get to the noise floor?

    python scripts/bench_fidelity.py --patients 20000 --models flat hierarchical --out bench/fidelity
    python scripts/bench_fidelity.py --event-types all --patients 5000 --models flat --out bench/fidelity-typed

The built-in simulator is the truth. Three samples are drawn from it with different seeds and
disjoint subject ids: a training cohort (its train split holds ``--patients`` patients) and two
independent truth cohorts A and B of ``--patients`` each. Each model is trained on the training
cohort with the repository's defaults (``ehrgen.train``; ``--max-epochs`` / ``--max-time`` /
``--train`` overrides), generates as many patients as the truth holds (``ehrgen.generate``,
defaults; ``--generate`` overrides), and every cohort is compared with truth A by ``ehrgen.evaluate`` itself (one
implementation of every metric):

* **floor**: truth B vs truth A, what two samples of the truth give each other;
* **train**: the training split vs truth A (the data a model learns from);
* **resample**: as many patients drawn with replacement from the training split, vs truth A: a
  *perfect learner*, a generator whose distribution is exactly its training data's. It is the
  best a model fitted to one finite training sample can expect: its sampling noise adds to the
  training sample's, so where two truth samples differ by ``2 s`` (the floor), it differs by
  ``3 s``, e.g. about 1.5x the floor for a JSD (a squared distance), and its top-k overlap sits
  below the floor's;
* **<model>**: the synthetic cohort vs truth A, with its ratio to the floor.

With ``--event-types all`` the simulator also writes procedures and prescriptions; every
code-level metric is then also reported per event type (each type's codes alone) and across types
(co-occurrence of pairs of two types).

Visit times (gaps, stays, 30-day readmissions, the gap given the previous visit's categories) are
scored the same way, truth B's times giving their floor.

Exact copies: share of a cohort's patients whose set of codes equals a training patient's
(``privacy/jaccard/copy_rate`` with the training split as real); the floor is truth A's own
collision rate with the training split. Everything lands in ``--out`` (cohorts, runs, synthetic
cohorts, evaluations, ``results.json``, ``results.md``); a stage whose output exists is reused, so
an interrupted benchmark resumes. Record runs in docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from ehrgen.config import compose
from ehrgen.data.cohort import Cohort

TRUTH_OFFSETS = {"train": 0, "truth_a": 10_000_000, "truth_b": 20_000_000}
TRUTH_SEEDS = {"train": 1, "truth_a": 2, "truth_b": 3}
RESAMPLE_SEED = 4
MIN_STRATUM = 500  # strata with fewer truth patients are not scored (too noisy to compare)

# (label, metrics.json key, kind): "lower" metrics are scored as a ratio to the floor, "higher"
# ones shown as values, "ratio" ones (synthetic / truth) as a relative difference.
ROWS: list[tuple[str, str, str]] = [
    ("code JSD (log2)", "fidelity/code/jsd", "lower"),
    ("category JSD (log2)", "fidelity/category/jsd", "lower"),
    ("top-100 overlap", "fidelity/code/top100_overlap", "higher"),
    ("prevalence R²", "fidelity/code/prevalence_r2", "higher"),
    ("within-visit co-occurrence R²", "fidelity/code/cooccurrence_r2", "higher"),
    ("category transition R² (t -> t+1)", "fidelity/category/transition_r2", "higher"),
    ("carry-over share (truth {real})", "fidelity/code/carry_over", "ratio"),
    ("visits per patient, mean (truth {real})", "fidelity/code/visits_per_patient_mean", "ratio"),
    ("codes per visit, mean (truth {real})", "fidelity/code/codes_per_visit_mean", "ratio"),
    ("KS visits per patient", "fidelity/code/ks_visits_per_patient", "lower"),
    ("KS codes per visit", "fidelity/code/ks_codes_per_visit", "lower"),
    ("per-code age profile gap, years", "fidelity/code/age_profile_gap", "lower"),
    ("per-code female share gap", "fidelity/code/female_profile_gap", "lower"),
    ("validity violations (patients)", "validity/violation_rate_any", "lower"),
    ("gap to the next admission, KS", "time/gap/ks", "lower"),
    ("gap, Wasserstein-1 (days)", "time/gap/w1_days", "lower"),
    ("gap KS per stratum, worst", "time/gap/stratum_ks_worst", "lower"),
    ("length of stay, KS", "time/stay/ks", "lower"),
    ("stay, Wasserstein-1 (days)", "time/stay/w1_days", "lower"),
    ("stay KS per stratum, worst", "time/stay/stratum_ks_worst", "lower"),
    ("30-day readmission share (truth {real})", "time/readmit30/synthetic", "ratio"),
    ("gap given the previous visit's categories R²", "time/gap_given_category_r2", "higher"),
]


# --event-types all: each type's codes scored alone (``fidelity/<type>/...``), and across types
TYPE_ROWS: list[tuple[str, str, str]] = [
    *(
        row
        for kind in ("diagnosis", "procedure", "medication")
        for row in (
            (f"{kind}: code JSD (log2)", f"fidelity/{kind}/jsd", "lower"),
            (f"{kind}: top-100 overlap", f"fidelity/{kind}/top100_overlap", "higher"),
            (f"{kind}: prevalence R²", f"fidelity/{kind}/prevalence_r2", "higher"),
            (f"{kind}: within-visit co-occurrence R²", f"fidelity/{kind}/cooccurrence_r2", "higher"),
            (
                f"{kind}: codes per visit, mean (truth {{real}})",
                f"fidelity/{kind}/codes_per_visit_mean",
                "ratio",
            ),
            (f"{kind}: carry-over share (truth {{real}})", f"fidelity/{kind}/carry_over", "ratio"),
        )
    ),
    (
        "cross-type co-occurrence R² (pairs of two types)",
        "fidelity/code/cooccurrence_cross_type_r2",
        "higher",
    ),
]


def _value(metrics: dict[str, Any], key: str) -> float:
    entry = metrics.get(key)
    return float("nan") if entry is None or entry["value"] is None else float(entry["value"])


def prepare(out: Path, name: str, n: int, event_types: str = "diagnosis") -> Path:
    from ehrgen.prepare import run

    path = out / "cohorts" / name
    if not (path / "metadata" / "cohort.json").is_file():
        cfg = compose(
            "prepare",
            [
                "data=simulated",
                f"data.n_patients={n}",
                f"data.seed={TRUTH_SEEDS[name]}",
                f"data.id_offset={TRUTH_OFFSETS[name]}",
                f"data.cohort_dir={path}",
                f"paths.cache_dir={out / 'cache'}",
                f"data.event_types={'null' if event_types == 'all' else '[diagnosis]'}",
            ],
        )
        run(cfg)
    return path


def resample(out: Path, train_cohort: Path, n: int) -> Path:
    """``n`` patients drawn with replacement from the training split: the perfect learner."""
    import numpy as np

    from ehrgen.sampling.writers import SyntheticCohortWriter

    path = out / "synthetic" / "resample"
    if not (path / "metadata" / "cohort.json").is_file():
        real = Cohort(train_cohort)
        patients = real.read("train").select("sex", "age", "visits")
        rows = np.random.default_rng(RESAMPLE_SEED).integers(0, patients.height, n)
        generation = {"resample": str(train_cohort), "split": "train", "seed": RESAMPLE_SEED}
        with SyntheticCohortWriter(path, id_offset=30_000_000, generation=generation) as writer:
            writer.add(patients[rows])
    return path


def train(out: Path, name: str, model: str, cohort: Path, overrides: list[str]) -> tuple[dict, float]:
    """Train ``model`` as run ``name``; return its summary and the training seconds."""
    from ehrgen.train import run

    run_dir = out / "runs" / name
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        cfg = compose(
            "train",
            [
                f"model={model}",
                f"data.cohort_dir={cohort}",
                f"paths.run_dir={run_dir}",
                f"paths.cache_dir={out / 'cache'}",
                "examples=0",
                "trainer.enable_progress_bar=false",
                *overrides,
            ],
        )
        started = time.perf_counter()
        summary = run(cfg)
        summary["train_seconds"] = time.perf_counter() - started
        summary_file.write_text(json.dumps(summary, indent=2))
    summary = json.loads(summary_file.read_text())
    return summary, float(summary.get("train_seconds", math.nan))


def generate(
    out: Path, name: str, ckpt: Path, n: int, overrides: list[str] | None = None
) -> tuple[Path, float]:
    from ehrgen.generate import run

    target = out / "synthetic" / name
    if not (target / "generation.json").is_file():
        base = [f"ckpt={ckpt}", f"n_patients={n}", f"out_dir={target}", "progress=false"]
        run(compose("generate", [*base, *(overrides or [])]))
    meta = json.loads((target / "generation.json").read_text())
    return target / "cohort", float(meta["seconds"])


def evaluate(
    out: Path, name: str, real: Path, other: Path, holdout: Path, splits: dict[str, str], privacy: bool
) -> dict:
    from ehrgen.evaluate import run

    target = out / "evaluations" / name
    if not (target / "metrics.json").is_file():
        enabled = ["privacy"] if privacy else ["fidelity", "conditioning", "timing", "validity"]
        overrides = [
            f"real={real}",
            f"synthetic={other}",
            f"holdout={holdout}",
            f"out_dir={target}",
            "bootstrap.n=0",
            "fidelity.holdout_reference=false",
            f"conditioning.min_stratum_patients={MIN_STRATUM}",
            "report.enabled=false",
            "privacy.distances=[jaccard]",
            "privacy.max_records=1000000",
            *(f"{stage}.enabled={stage in enabled}" for stage in ("fidelity", "conditioning", "timing", "validity", "privacy", "utility")),
            *(f"splits.{role}={value}" for role, value in splits.items()),
        ]  # fmt: skip
        run(compose("evaluate", overrides))
    return json.loads((target / "metrics.json").read_text())["metrics"]


def curve(
    out: Path, name: str, summary: dict, train_s: float, n: int, truth_a: Path, truth_b: Path, floor: dict
) -> list[dict[str, float]]:
    """Score every epoch's checkpoint of run ``name`` on ``n`` generated patients; plot vs training time."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = {"real": "null", "synthetic": "null", "holdout": "null"}
    ckpts = sorted(Path(summary["run_dir"], "checkpoints").glob("best-epoch*-step*.ckpt"))
    epochs = [int(re.search(r"epoch(\d+)", c.name).group(1)) for c in ckpts]
    total_epochs = max(epochs) + 1 if epochs else 1
    points = []
    for ckpt, epoch in zip(ckpts, epochs, strict=True):
        tag = f"{name}-curve-epoch{epoch:03d}"
        synthetic, _ = generate(out, tag, ckpt, n)
        m = evaluate(out, tag, truth_a, synthetic, truth_b, every, privacy=False)
        points.append({
            "epoch": epoch + 1,
            "train_minutes": train_s / 60 * (epoch + 1) / total_epochs,  # epochs take equal time
            "code_jsd_ratio": _value(m, "fidelity/code/jsd") / floor["metrics"]["fidelity/code/jsd"],
            "carry_over_ratio": _value(m, "fidelity/code/carry_over_ratio"),
            "visits_ratio": _value(m, "fidelity/code/visits_per_patient_mean_ratio"),
            "codes_per_visit_ratio": _value(m, "fidelity/code/codes_per_visit_mean_ratio"),
        })  # fmt: skip
    if points:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
        x = [p["train_minutes"] for p in points]
        a.plot(x, [p["code_jsd_ratio"] for p in points], marker="o")
        a.axhline(1.0, color="k", lw=0.8, ls="--")
        a.set(xlabel="training minutes", ylabel="code JSD / floor", title=f"{name}: code JSD")
        for key, label in (("carry_over_ratio", "carry-over"), ("visits_ratio", "visits / patient"),
                           ("codes_per_visit_ratio", "codes / visit")):  # fmt: skip
            b.plot(x, [p[key] for p in points], marker="o", label=label)
        b.axhline(1.0, color="k", lw=0.8, ls="--")
        b.set(xlabel="training minutes", ylabel="synthetic / truth", title=f"{name}: across visits")
        b.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"curve-{name}.png", dpi=100)
        plt.close(fig)
    return points


def strata_jsd(metrics: dict[str, Any]) -> dict[str, float]:
    """Code JSD per age band x sex stratum (only strata the evaluation scored)."""
    out = {}
    for key, entry in metrics.items():
        if key.startswith("conditioning/stratum/") and key.endswith("/jsd") and entry["value"] is not None:
            out[key.split("/")[2]] = float(entry["value"])
    return out


CALIBRATION_ROWS = (
    "stop_calibration",
    "first_stop_calibration",
    "visit_end_calibration",
    "carry_calibration",
    "age_first_visit_calibration",
    "age_later_visits_calibration",
)


def calibration(ckpt: Path, truth: Path) -> dict[str, float]:
    """Teacher-forced end, carry and age calibration on truth patients (``calibration_metrics``; 1 = calibrated)."""
    from ehrgen.model_metrics import calibration_metrics

    return calibration_metrics(str(ckpt), str(truth), ["train", "val", "test"], max_patients=5000)


def table(results: dict[str, Any]) -> str:
    floor, cols = results["floor"], [c for c in results["columns"] if c != "floor"]
    lines = [
        "| metric (vs truth A) | floor (truth B) | " + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    typed = any(k.startswith("fidelity/procedure/") for k in floor["metrics"])
    for label, key, kind in ROWS + (TYPE_ROWS if typed else []):
        real = floor["metrics"].get(
            key.replace("/carry_over", "/carry_over_real")
            .replace("_mean", "_mean_real")
            .replace("readmit30/synthetic", "readmit30/real")
        )
        label = label.format(real=f"{real:.3g}" if real is not None else "?")
        f = floor["metrics"].get(key, math.nan)
        cells = []
        for c in cols:
            v = results[c]["metrics"].get(key, math.nan)
            if kind == "lower" and f and not math.isnan(f) and f > 0:
                cells.append(f"{v:.4g} ({v / f:.1f}x)")
            elif kind == "ratio" and real:
                cells.append(f"{v:.3g} ({100 * (v / real - 1):+.1f} %)")
            else:
                cells.append(f"{v:.4g}")
        lines.append(f"| {label} | {f:.4g} | " + " | ".join(cells) + " |")
    for what in ("worst", "mean"):
        cells = []
        for c in cols:
            s = results[c]["strata"]
            ratios = [s[k] / floor["strata"][k] for k in s if floor["strata"].get(k)]
            if not ratios:
                cells.append("-")
            elif what == "worst":
                worst = max(s, key=lambda k: s[k] / floor["strata"].get(k, math.inf))
                cells.append(f"{s[worst]:.4g} ({max(ratios):.1f}x, {worst})")
            else:
                mean = sum(s.values()) / len(s)
                cells.append(f"{mean:.4g} ({sum(ratios) / len(ratios):.1f}x)")
        fs = floor["strata"]
        fv = (max(fs.values()) if what == "worst" else sum(fs.values()) / len(fs)) if fs else math.nan
        lines.append(f"| stratum code JSD, {what} (strata >= {MIN_STRATUM} patients) | {fv:.4g} | " + " | ".join(cells) + " |")  # fmt: skip
    cp = [f"{results[c]['copy_rate']:.4f}" for c in cols]
    lines.append(
        f"| exact copies of a training patient | {floor['copy_rate']:.4f} | " + " | ".join(cp) + " |"
    )
    for key in CALIBRATION_ROWS:
        cells = [
            f"{results[c]['calibration'][key]:.3f}" if key in results[c].get("calibration", {}) else "-"
            for c in cols
        ]
        lines.append(f"| {key} (teacher-forced, 1 = calibrated) | 1 | " + " | ".join(cells) + " |")
    times = [
        f"{results[c]['train_minutes']:.0f} min / {results[c]['generate_seconds']:.0f} s" if "train_minutes" in results[c] else "-"
        for c in cols
    ]  # fmt: skip
    lines.append("| training / generation time | | " + " | ".join(times) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=20_000, help="training-split and truth size")
    parser.add_argument(
        "--models", nargs="+", default=["flat", "hierarchical"], choices=["flat", "hierarchical"]
    )
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="trainer.max_epochs (default: the config's)"
    )
    parser.add_argument("--max-time", default=None, help="trainer.max_time, e.g. 00:01:00:00")
    parser.add_argument("--train", nargs="*", default=[], help="more ehrgen.train overrides")
    parser.add_argument("--generate", nargs="*", default=[], help="ehrgen.generate overrides")
    parser.add_argument("--out", type=Path, default=Path("bench/fidelity"))
    parser.add_argument(
        "--event-types", choices=["diagnosis", "all"], default="diagnosis",
        help="all: the simulator also writes procedures and prescriptions, scored per type (use its own --out)",
    )  # fmt: skip
    parser.add_argument(
        "--tag", default="", help="suffix of the model columns, for A/B runs in the same --out (e.g. -prompt)"
    )
    parser.add_argument(
        "--curve", type=int, default=0, metavar="PATIENTS",
        help="learning curve: keep every epoch's checkpoint and score each on this many generated patients",
    )  # fmt: skip
    args = parser.parse_args()
    out = args.out.absolute()
    n = args.patients

    # the training cohort's train split (80 %) holds about n patients
    train_cohort = prepare(out, "train", round(n / 0.8), args.event_types)
    truth_a, truth_b = (
        prepare(out, "truth_a", n, args.event_types),
        prepare(out, "truth_b", n, args.event_types),
    )
    print(
        f"train split: {Cohort(train_cohort).meta['counts']['patients']['train']} patients; truth: {n} each"
    )

    # columns of earlier invocations in the same --out are kept (A/B runs with --tag)
    old = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    results: dict[str, Any] = {
        **old,
        "patients": n,
        "columns": list(dict.fromkeys(["floor", "train", "resample", *old.get("columns", [])])),
    }
    every = {"real": "null", "synthetic": "null", "holdout": "null"}

    def score(name: str, other: Path, synthetic_splits: str = "null") -> dict[str, Any]:
        m = evaluate(
            out, name, truth_a, other, truth_b, {**every, "synthetic": synthetic_splits}, privacy=False
        )
        copy_splits = {"real": "[train]", "synthetic": synthetic_splits, "holdout": "[test]"}
        copies = evaluate(out, f"{name}-copies", train_cohort, other, train_cohort, copy_splits, privacy=True)
        return {
            "metrics": {k: _value(m, k) for k in m if k.startswith(("fidelity/", "validity/", "time/"))},
            "strata": strata_jsd(m),
            "copy_rate": _value(copies, "privacy/jaccard/copy_rate"),
        }

    results["floor"] = score("floor", truth_b)
    results["train"] = score("train", train_cohort, "[train]")
    results["resample"] = score("resample", resample(out, train_cohort, n))
    overrides = list(args.train)
    if args.max_epochs is not None:
        overrides.append(f"trainer.max_epochs={args.max_epochs}")
    if args.max_time is not None:
        overrides.append(f"+trainer.max_time={args.max_time}")
    if args.curve:
        overrides.append("callbacks.model_checkpoint.save_top_k=-1")  # every validated epoch stays
    for model in args.models:
        name = f"{model}{args.tag}"
        summary, train_s = train(out, name, model, train_cohort, overrides)
        ckpt = Path(summary["best_checkpoint"] or summary["last_checkpoint"])
        synthetic, gen_s = generate(out, name, ckpt, n, args.generate)
        results[name] = {
            **score(name, synthetic),
            "calibration": calibration(ckpt, truth_a),
            "train_minutes": train_s / 60,
            "generate_seconds": gen_s,
            "command": vars(args),
        }
        results["columns"] = list(dict.fromkeys([*results["columns"], name]))
        if args.curve:
            results[name]["curve"] = curve(
                out, name, summary, train_s, args.curve, truth_a, truth_b, results["floor"]
            )
    text = table(results)
    for c in results["columns"]:
        for p in results[c].get("curve", []):
            text += (
                f"\n{c} epoch {p['epoch']} ({p['train_minutes']:.0f} min): code JSD {p['code_jsd_ratio']:.2f}x floor, "
                f"carry-over {p['carry_over_ratio']:.2f}, visits {p['visits_ratio']:.2f}, codes/visit {p['codes_per_visit_ratio']:.2f}"
            )
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
