"""Benchmark `ehrgen.prepare` against the approach it replaces, in the same run.

    python scripts/bench_prepare.py --sizes 50000 500000 --baseline-max 50000 --repeats 3
    python scripts/bench_prepare.py --event-types all --sizes 300000 3000000 --repeats 1

For each size the simulator writes a MIMIC-III-format raw dataset (untimed). Then, each in a
fresh subprocess so peak RSS is its own:

diagnoses only (default):
  - ehrgen:   `python -m ehrgen.prepare data=mimic3 data.raw_dir=RAW data.cohort_dir=OUT`
  - baseline: pandas read_csv of the three tables, a Python groupby into dicts, one JSON file
              (the approach of the system ehrgen replaces).
``--event-types all`` (the simulator also writes PROCEDURES_ICD and PRESCRIPTIONS):
  - ehrgen:   the same command, every event type, out of core (the default ``data.rows_per_part``)
  - baseline: the previous prepare, diagnoses only and in memory
              (``data.event_types=[diagnosis] data.rows_per_part=null``) on the same raw files.
The contenders alternate ``--repeats`` times (this machine is shared and noisy); each figure is
the median over the repeats. Reports wall time, CPU time, event rows/s and peak RSS, and the
baseline/ehrgen ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    forking parent across exec, which would charge the simulator's memory to both contenders."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_ehrgen(raw: Path, out: Path, overrides: tuple[str, ...] = ()) -> dict:
    # Library imports stay off the clock for both contenders (pandas is imported before the
    # baseline's clock too); pyarrow.compute is imported lazily by the first Parquet write.
    import pyarrow.compute  # noqa: F401
    from hydra import compose, initialize_config_dir

    from ehrgen.config import CONFIG_DIR
    from ehrgen.prepare import run

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "prepare",
            ["data=mimic3", f"data.raw_dir={raw}", f"data.cohort_dir={out}", "overwrite=true", *overrides],
        )
    start, cpu = time.perf_counter(), time.process_time()
    run(cfg)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure_baseline(raw: Path, out: Path) -> dict:
    import pandas as pd

    start, cpu = time.perf_counter(), time.process_time()
    patients = pd.read_csv(raw / "PATIENTS.csv")
    admissions = pd.read_csv(raw / "ADMISSIONS.csv")
    diagnoses = pd.read_csv(raw / "DIAGNOSES_ICD.csv")
    patients.columns = patients.columns.str.lower()
    admissions.columns = admissions.columns.str.lower()
    diagnoses.columns = diagnoses.columns.str.lower()
    dob = dict(zip(patients.subject_id, pd.to_datetime(patients.dob), strict=True))
    sex = dict(zip(patients.subject_id, patients.gender, strict=True))
    admit = dict(zip(admissions.hadm_id, pd.to_datetime(admissions.admittime), strict=True))
    cohort: dict = {}
    for row in diagnoses.sort_values(["subject_id", "hadm_id", "seq_num"]).itertuples():
        if not isinstance(row.icd9_code, str):
            continue
        visits = cohort.setdefault(int(row.subject_id), {}).setdefault(int(row.hadm_id), [])
        visits.append(row.icd9_code)
    records = []
    for sid, visits in cohort.items():
        order = sorted(visits, key=lambda h: admit[h])
        age = (admit[order[0]] - dob[sid]).days / 365.25
        records.append(
            {
                "subject_id": sid,
                "sex": sex[sid],
                "age": min(age, 90.0),
                "visits": [{"time": str(admit[h]), "codes": visits[h]} for h in order],
            }
        )
    with open(out, "w") as f:
        json.dump(records, f)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": _peak_rss_mb(),
    }


# --event-types all: the contenders are two ways of running ehrgen.prepare
TYPED_RUNS = {
    "ehrgen": (),
    "baseline": ("data.event_types=[diagnosis]", "data.rows_per_part=null"),
}


def _child(kind: str, raw: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--raw", str(raw), "--out", str(out)]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--baseline-max", type=int, default=50_000, help="largest size the baseline runs at")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per contender (median)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--event-types", choices=["diagnosis", "all"], default="diagnosis", help="what the raw tables hold"
    )
    parser.add_argument(
        "--child", choices=["ehrgen", "baseline", "typed-ehrgen", "typed-baseline"], help=argparse.SUPPRESS
    )
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child.startswith("typed-"):
            result = measure_ehrgen(args.raw, args.out, TYPED_RUNS[args.child.removeprefix("typed-")])
        else:
            fn = measure_ehrgen if args.child == "ehrgen" else measure_baseline
            result = fn(args.raw, args.out)
        print(json.dumps(result))
        return

    from ehrgen.data.sources.simulator import write_mimic3_csvs

    typed = args.event_types == "all"
    types = ("diagnosis", "procedure", "medication") if typed else ("diagnosis",)
    labels = {"baseline": "dx in memory", "ehrgen": "all, parts"} if typed else {}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            raw = Path(tmp) / f"raw-{n}"
            counts = write_mimic3_csvs(raw, n_patients=n, seed=0, event_types=types)
            n_dx = counts["DIAGNOSES_ICD"]
            n_events = n_dx + counts.get("PROCEDURES_ICD", 0) + counts.get("PRESCRIPTIONS", 0)
            result = {"patients": n, "rows": {"baseline": n_dx, "ehrgen": n_events}}
            kinds = ["ehrgen", "baseline"] if typed or n <= args.baseline_max else ["ehrgen"]
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for _ in range(args.repeats):
                for kind in kinds:
                    out = Path(tmp) / (
                        f"cohort-{n}-{kind}" if typed or kind == "ehrgen" else f"cohort-{n}.json"
                    )
                    runs[kind].append(_child(f"typed-{kind}" if typed else kind, raw, out))
                    shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(raw)
            result.update({kind: _median(r) for kind, r in runs.items()})
            rows.append(result)
            print(json.dumps(result), file=sys.stderr)

    header = (
        f"{'patients':>9} {'event rows':>11} {'impl':>12} {'wall s':>8} {'CPU s':>7} {'rows/s':>11} "
        f"{'peak RSS MB':>12} {'speed-up':>9} {'CPU ratio':>9} {'RSS ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        for impl in ("baseline", "ehrgen"):
            if impl not in r:
                continue
            m = r[impl]
            speed = cpu = rss = ""
            if impl == "ehrgen" and "baseline" in r:
                speed = f"{r['baseline']['seconds'] / m['seconds']:.1f}x"
                cpu = f"{r['baseline']['cpu_seconds'] / m['cpu_seconds']:.1f}x"
                rss = f"{r['baseline']['peak_rss_mb'] / m['peak_rss_mb']:.1f}x"
            n_rows = r["rows"][impl]
            print(
                f"{r['patients']:>9} {n_rows:>11} {labels.get(impl, impl):>12} {m['seconds']:>8.2f} "
                f"{m['cpu_seconds']:>7.2f} {n_rows / m['seconds']:>11,.0f} "
                f"{m['peak_rss_mb']:>12.0f} {speed:>9} {cpu:>9} {rss:>9}"
            )
    for small, large in zip(rows, rows[1:], strict=False):
        growth = large["ehrgen"]["peak_rss_mb"] / small["ehrgen"]["peak_rss_mb"]
        print(f"ehrgen peak RSS growth {small['patients']} -> {large['patients']} patients: {growth:.2f}x")


if __name__ == "__main__":
    main()
