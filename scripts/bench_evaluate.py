"""Benchmark the privacy nearest-neighbour search against naive baselines, in the same run.

    python scripts/bench_evaluate.py --n 50000 --workers 2

Two cohorts of ``--n`` patients come from the built-in simulator (seeds 1 and 2, untimed); their
binary code-set vectors are the synthetic (query) and real (reference) sets. Each case runs in a
fresh subprocess so its peak RSS is its own (workers' peak reported separately):
  - ehrgen-jaccard / ehrgen-cosine: ``ehrgen.privacy.neighbors.nearest`` over all n x n pairs
    (with the reverse direction for Jaccard, as NNAA and membership inference use it);
  - ehrgen-jaccard-1worker: the same on one process;
  - dense-cdist: ``scipy.spatial.distance.cdist(metric="jaccard")`` on dense boolean rows for a
    query subsample against all references, extrapolated to n queries;
  - python-sets: a per-record Python loop over ``set`` intersections for a smaller subsample,
    extrapolated.
Prints a table (wall seconds, CPU seconds, pairs/s, peak RSS, speed-up over each baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def prepare(root: Path, n: int) -> tuple[Path, Path]:
    from hydra import compose, initialize_config_dir

    from ehrgen.config import CONFIG_DIR
    from ehrgen.prepare import run

    out = []
    for seed in (1, 2):
        path = root / f"sim{seed}-{n}"
        if not path.exists():
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                cfg = compose(
                    "prepare",
                    [
                        "data=simulated",
                        f"data.n_patients={n}",
                        f"data.seed={seed}",
                        f"data.cohort_dir={path}",
                        "data.split_fractions=[1.0,0.0,0.0]",
                    ],
                )
            run(cfg)
        out.append(path)
    return out[0], out[1]


def load_vectors(real: Path, synthetic: Path, n: int):
    from ehrgen.data.cohort import Cohort
    from ehrgen.metrics.cohort_arrays import encode, read_cohort, shared_vocabulary
    from ehrgen.privacy.vectors import binary_vectors, smooth_idf, tfidf_vectors

    raws = [read_cohort(Cohort(p), ["train"], name) for p, name in ((real, "real"), (synthetic, "synthetic"))]
    vocab = shared_vocabulary(*raws)
    r, s = (encode(x, vocab).subset(range(min(n, x.subject_id.size))) for x in raws)
    idf = smooth_idf(binary_vectors(r))
    return {
        "jaccard": (binary_vectors(s), binary_vectors(r)),
        "cosine": (tfidf_vectors(s, idf), tfidf_vectors(r, idf)),
    }


def run_case(case: str, real: Path, synthetic: Path, n: int, workers: int, sample: int) -> dict:
    import numpy as np

    vecs = load_vectors(real, synthetic, n)
    base_rss = _rss_mb(resource.RUSAGE_SELF)
    q, ref = vecs["cosine" if case == "ehrgen-cosine" else "jaccard"]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    if case.startswith("ehrgen"):
        from ehrgen.privacy.neighbors import nearest

        metric = "cosine" if case == "ehrgen-cosine" else "jaccard"
        w = 1 if case.endswith("1worker") else workers
        res = nearest(q, ref, metric, k=1, reverse=metric == "jaccard", workers=w)
        done = q.shape[0]
        checksum = float(res.distance[: sample or done, 0].sum()) / (sample or done) * done
    elif case == "dense-cdist":
        from scipy.spatial.distance import cdist

        rows = np.arange(sample)
        dense_ref = ref.toarray() > 0
        d = cdist(q[rows].toarray() > 0, dense_ref, "jaccard")
        done = sample
        checksum = float(np.nanmin(d, 1).sum())
    elif case == "python-sets":
        ref_sets = [set(ref.indices[ref.indptr[i] : ref.indptr[i + 1]].tolist()) for i in range(ref.shape[0])]
        best = []
        for i in range(sample):
            a = set(q.indices[q.indptr[i] : q.indptr[i + 1]].tolist())
            best.append(min(1.0 - len(a & b) / max(len(a | b), 1) for b in ref_sets))
        done = sample
        checksum = float(sum(best))
    else:
        raise SystemExit(f"unknown case {case}")
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    scale = q.shape[0] / done  # baselines ran on a query subsample
    return {
        "case": case,
        "queries_run": done,
        "wall_s": wall * scale,
        "cpu_s": cpu * scale,
        "extrapolated": scale > 1,
        "pairs": q.shape[0] * ref.shape[0],
        "peak_rss_mb": _rss_mb(resource.RUSAGE_SELF),
        "data_rss_mb": base_rss,
        "workers_peak_rss_mb": _rss_mb(resource.RUSAGE_CHILDREN),
        "checksum_per_query": checksum / done,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000, help="patients per cohort (queries = references = n)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cdist-sample", type=int, default=500, help="queries for the dense cdist baseline")
    ap.add_argument("--sets-sample", type=int, default=50, help="queries for the Python-set baseline")
    ap.add_argument("--work-dir", type=Path, default=None, help="keep the simulated cohorts here")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case
    ap.add_argument("--real", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--synthetic", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--sample", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.real, args.synthetic, args.n, args.workers, args.sample)))
        return

    root = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    root.mkdir(parents=True, exist_ok=True)
    real, synthetic = prepare(root, args.n)
    cases = [
        ("ehrgen-jaccard", args.cdist_sample),
        ("ehrgen-cosine", 0),
        ("ehrgen-jaccard-1worker", 0),
        ("dense-cdist", args.cdist_sample),
        ("python-sets", args.sets_sample),
    ]
    results = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for case, sample in cases:
        cmd = [sys.executable, __file__, "--case", case, "--real", str(real), "--synthetic", str(synthetic)]
        cmd += ["--n", str(args.n), "--workers", str(args.workers), "--sample", str(sample)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {case}: {results[-1]['wall_s']:.1f} s", file=sys.stderr)

    ours = results[0]["wall_s"]
    print(
        f"\nnearest neighbour, {args.n} synthetic x {args.n} real patients ({args.n**2:.2e} pairs), {os.cpu_count()} CPUs"
    )
    head = (
        f"{'case':<24}{'wall s':>10}{'cpu s':>10}{'Mpairs/s':>10}{'RSS in MB':>11}{'peak RSS MB':>13}"
        f"{'workers MB':>12}{'vs ehrgen':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        star = "*" if r["extrapolated"] else ""
        print(
            f"{r['case'] + star:<24}{r['wall_s']:>10.1f}{r['cpu_s']:>10.1f}{r['pairs'] / r['wall_s'] / 1e6:>10.1f}"
            f"{r['data_rss_mb']:>11.0f}{r['peak_rss_mb']:>13.0f}{r['workers_peak_rss_mb']:>12.0f}"
            f"{r['wall_s'] / ours:>10.1f}x"
        )
    print("* extrapolated from a query subsample to all queries")
    print(
        "RSS in: the case's process with the vectors loaded, before the search; workers: largest forked worker"
    )
    same = abs(results[0]["checksum_per_query"] - results[3]["checksum_per_query"])
    print(
        f"mean Jaccard DCR of the first {args.cdist_sample} queries: ehrgen {results[0]['checksum_per_query']:.6f}, "
        f"dense cdist {results[3]['checksum_per_query']:.6f} (|diff| {same:.1e})"
    )


if __name__ == "__main__":
    main()
