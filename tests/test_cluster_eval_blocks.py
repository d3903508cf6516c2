"""``evaluate ... blocks=N``: the privacy nearest-neighbour search in blocks of query rows.

Blocks joined equal the single search bit for bit; evaluate reading them equals evaluate
searching; a bad block directory is a one-line InputError; the launcher runs the blocks as a job
array (cluster=debug here, the real SLURM at the end), resubmits only missing blocks and refuses
a changed config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import compose_config
from test_eval_cohorts import arrays_of, toy_cohort, toy_patients, write_cohort

from ehrgen.cluster import launch
from ehrgen.cluster.blocks import blocks_root
from ehrgen.errors import InputError
from ehrgen.evaluate import neighbour_block, run
from ehrgen.privacy import blocks as pblocks
from ehrgen.privacy import suite
from ehrgen.privacy.neighbors import concat, nearest

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("distance", "index", "reverse_distance", "reverse_index")
# privacy only, few replicates: the block tests are about the privacy section
PRIVACY_ONLY = ["bootstrap.n=8", "fidelity.enabled=false", "conditioning.enabled=false",
                "validity.enabled=false", "utility.enabled=false", "report.enabled=false",
                "privacy.workers=1", "privacy.max_records=60", "privacy.attribute_targets=25"]  # fmt: skip


def _same(a, b) -> None:
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), field


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("blocks")
    return {
        "root": root,
        "real": toy_cohort(root / "real", 90, 70, seed=3),
        "syn": write_cohort(root / "syn", {"train": toy_patients(110, 31, first_id=10**6)}),
        "syn2": write_cohort(root / "syn2", {"train": toy_patients(110, 32, first_id=10**6)}),
    }


def _cfg(tmp: Path, cohorts: dict, *extra: str, synthetic: str = "syn"):
    overrides = [f"real={cohorts['real']}", f"synthetic={cohorts[synthetic]}", f"out_dir={tmp / 'out'}"]
    return compose_config("evaluate", [*overrides, *PRIVACY_ONLY, *extra], tmp)


@pytest.fixture(scope="module")
def block_dir(cohorts: dict) -> Path:
    """3 blocks of the module's cohorts, written by ehrgen.evaluate.neighbour_block."""
    out = cohorts["root"] / "blocks3"
    cfg = _cfg(cohorts["root"], cohorts)
    metas = [neighbour_block(cfg, k, 3, out) for k in range(3)]
    assert [m["block"] for m in metas] == [0, 1, 2] and all(m["pairs"] > 0 for m in metas)
    return out


# ----------------------------------------------------------------------------- block API


@pytest.mark.parametrize("metric", ["jaccard", "cosine"])
def test_blocks_concatenate_to_the_single_search(metric: str, tmp_path: Path) -> None:
    syn, train, hold = arrays_of(
        tmp_path,
        {"s": toy_patients(97, 1), "t": toy_patients(80, 2, first_id=10**5), "h": toy_patients(45, 3)},
    )
    cfg = suite.PrivacyConfig(distances=(metric,), max_records=40, attribute_targets=13, workers=2, block=16)
    todo = suite.searches(syn, train, hold, cfg)
    names = {s.spec.name for s in todo}
    # S' is a proper subsample here, so every kind of search is present: plain, reverse, self, attribute
    assert {f"{metric}/s_train", f"{metric}/ssub_tsub", f"{metric}/tsub_tsub", "attribute/train"} <= names
    one_worker = suite.PrivacyConfig(
        distances=(metric,), max_records=40, attribute_targets=13, workers=1, block=7
    )
    for s in todo:
        whole = suite.run_search(s, cfg)
        for n_blocks in (3, 14):  # 14 blocks: some are empty for the 13 attribute targets
            parts = [
                suite.run_search(s, one_worker, pblocks.block_rows(k, s.n_query, n_blocks))
                for k in range(n_blocks)
            ]
            _same(concat(parts), whole)
    # and through the block files: written, verified, read back
    for k in range(3):
        pblocks.write_block(tmp_path / "b", k, 3, syn, train, hold, one_worker)
    read = pblocks.read_blocks(tmp_path / "b", syn, train, hold, cfg)
    computed = suite.compute_neighbours(todo, cfg)
    assert read.keys() == computed.keys() == names
    for name in names:
        _same(read[name], computed[name])
    assert not list((tmp_path / "b").glob(".*tmp*"))  # written through a temp name and renamed


def test_nearest_rows_keep_whole_matrix_indices() -> None:
    rows = np.eye(6, dtype=np.float32)[[0, 1, 2, 0, 1, 5]]  # 3 duplicates 0, 4 duplicates 1
    m = sp.csr_matrix(rows)
    part = nearest(m, m, "jaccard", self_match=True, reverse=True, rows=(3, 5))
    np.testing.assert_array_equal(part.index[:, 0], [0, 1])  # row 3's duplicate is row 0, not itself
    np.testing.assert_array_equal(part.distance[:, 0], [0.0, 0.0])
    # nearest among query rows 3-4 (never the reference row itself), the lower index on ties
    assert part.reverse_index.tolist() == [3, 4, 3, 4, 3, 3]
    with pytest.raises(ValueError, match="rows=\\(4, 9\\)"):
        nearest(m, m, rows=(4, 9))


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_with_blocks_equals_evaluate_without(
    cohorts: dict, block_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    plain = run(_cfg(tmp_path, cohorts))["metrics"]

    def no_search(*args, **kwargs):
        raise AssertionError("searched although the neighbours were given")

    monkeypatch.setattr("ehrgen.privacy.suite.nearest", no_search)
    monkeypatch.setattr("ehrgen.privacy.attacks.attribute_neighbours", no_search)
    cfg = _cfg(tmp_path, cohorts, f"privacy.neighbours_dir={block_dir}", "overwrite=true")
    blocked = run(cfg)["metrics"]
    privacy = {k: v for k, v in plain.items() if k.startswith("privacy/")}
    assert len(privacy) > 20 and "privacy/attribute/advantage" in privacy
    assert blocked == plain  # every entry: value, CI, bias


def _error(cfg) -> str:
    with pytest.raises(InputError) as info:
        run(cfg)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_bad_block_directories_are_one_line_errors(cohorts: dict, block_dir: Path, tmp_path: Path) -> None:
    def variant(name: str) -> Path:
        path = tmp_path / name
        shutil.copytree(block_dir, path)
        return path

    def cfg(path: Path, *extra: str, synthetic: str = "syn"):
        return _cfg(tmp_path, cohorts, f"privacy.neighbours_dir={path}", *extra, synthetic=synthetic)

    assert _error(cfg(tmp_path / "none")).endswith("none: no such directory")
    (tmp_path / "empty").mkdir()
    assert "holds no neighbour blocks" in _error(cfg(tmp_path / "empty"))

    missing = variant("missing")
    (missing / "block-00001.npz").unlink()
    assert _error(cfg(missing)).endswith("1 of 3 blocks missing or misnamed (block 1)")

    # other inputs or settings than the blocks were computed for
    text = _error(cfg(block_dir, synthetic="syn2"))
    assert text.startswith(f"{block_dir / 'block-00000.npz'}: computed for other inputs or privacy settings")
    assert "computed for other inputs" in _error(cfg(block_dir, "privacy.max_records=50"))
    assert "computed for other inputs" in _error(cfg(block_dir, "seed=1"))

    mixed = variant("mixed")
    neighbour_block(_cfg(tmp_path, cohorts), 3, 4, mixed)
    assert "mixes blocks of 3 and 4-block splits" in _error(cfg(mixed))

    broken = variant("broken")
    data = (broken / "block-00002.npz").read_bytes()
    (broken / "block-00002.npz").write_bytes(data[: len(data) // 2])
    assert "block-00002.npz: not a readable neighbour block" in _error(cfg(broken))

    shapes = variant("shapes")  # right metadata, wrong rows
    with np.load(shapes / "block-00000.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["jaccard/s_train:index"] = arrays["jaccard/s_train:index"][:-1]
    with (shapes / "block-00000.npz").open("wb") as fh:
        np.savez(fh, **arrays)
    assert "jaccard/s_train:index has shape (35, 1), these cohorts give (36, 1)" in _error(cfg(shapes))

    # the blocks are checked before any metric is computed (fidelity would run first)
    assert "missing" in _error(cfg(missing, "fidelity.enabled=true"))


# ----------------------------------------------------------------------------- launcher


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = launch.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _plan(out: Path) -> dict:
    return json.loads((blocks_root(out) / "plan.json").read_text())


def test_launcher_debug_runs_blocks_then_evaluate_and_resubmits_only_missing(
    demo_cohort: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", f"real={demo_cohort}", f"synthetic={demo_cohort}", "splits.synthetic=[test]",
            "splits.holdout=[val]", "bootstrap.n=10", "report.enabled=false", "utility.enabled=false",
            "conditioning.min_stratum_patients=5", f"out_dir={out}", "blocks=3", "cluster=debug"]  # fmt: skip
    rc, text, _ = _cli(capsys, *args)
    assert rc == 0
    assert "submitted job array DEBUG: 3 task(s) for blocks 0-2" in text
    assert f"all 3 block(s) computed -> {tmp_path / '.eval.blocks'}" in text
    assert f"privacy.neighbours_dir={tmp_path / '.eval.blocks'} (no search in this job)" in text
    plan = _plan(out)
    assert plan["blocks"] == 3 and [s["blocks"] for s in plan["submissions"]] == [[0, 1, 2]]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["privacy"]["neighbours_dir"] == str(tmp_path / ".eval.blocks")

    # the same evaluation in one process, searching itself
    single = [a for a in args[1:] if a.split("=")[0] not in ("out_dir", "blocks", "cluster")]
    run(compose_config("evaluate", [*single, f"out_dir={tmp_path / 'single'}"], tmp_path))
    assert metrics["metrics"] == json.loads((tmp_path / "single" / "metrics.json").read_text())["metrics"]
    assert any(k.startswith("privacy/cosine/") for k in metrics["metrics"])

    # done: the same command submits nothing
    rc, text, _ = _cli(capsys, *args)
    assert rc == 0 and "is already evaluated" in text and "submitted" not in text

    # a lost block: only it is computed again (overwrite=true replaces out_dir, keeps matching blocks)
    root = blocks_root(out)
    (root / "block-00001.npz").unlink()
    kept = {k: (root / f"block-0000{k}.npz").stat().st_mtime_ns for k in (0, 2)}
    rc, text, _ = _cli(capsys, *args, "overwrite=true")
    assert rc == 0
    assert "submitted job array DEBUG: 1 task(s) for blocks 1 " in text
    assert [s["blocks"] for s in _plan(out)["submissions"]] == [[0, 1, 2], [1]]
    assert {k: (root / f"block-0000{k}.npz").stat().st_mtime_ns for k in (0, 2)} == kept
    assert json.loads((out / "metrics.json").read_text())["metrics"] == metrics["metrics"]

    # a broken block is reported and recomputed
    (root / "block-00002.npz").write_bytes(b"not a zip")
    rc, text, _ = _cli(capsys, *args, "overwrite=true")
    assert rc == 0 and re.search(r"block 2: not a readable neighbour block \(\w+\); computing it again", text)
    assert [s["blocks"] for s in _plan(out)["submissions"]][-1] == [2]

    # a config that changes the blocks is refused; one that does not (bootstrap.n) reuses them
    rc, _, err = _cli(capsys, *args, "seed=1")
    assert rc == 1 and err.count("\n") == 1
    assert err.strip().endswith(
        "(seed=0 in the plan, seed=1 now); use another out_dir or pass overwrite=true to discard its blocks"
    )
    rc, text, _ = _cli(
        capsys, *[a if a != "bootstrap.n=10" else "bootstrap.n=3" for a in args], "overwrite=true"
    )
    assert rc == 0 and "all 3 block(s) already computed" in text and "job array" not in text
    assert json.loads((out / "metrics.json").read_text())["bootstrap"]["n"] == 3


def test_dry_run_prints_blocks_and_pairs(tmp_path: Path, capsys) -> None:
    real = toy_cohort(tmp_path / "real", 40, 30, seed=5)
    syn = write_cohort(tmp_path / "syn", {"train": toy_patients(50, 6, first_id=10**6)})
    out = tmp_path / "eval"
    base = ["evaluate", f"real={real}", f"synthetic={syn}", f"out_dir={out}", "privacy.distances=[jaccard]",
            "slurm.partition=debug", "slurm.time=5", "--dry-run"]  # fmt: skip
    rc, text, _ = _cli(capsys, *base, "blocks=3", "pairs_per_s=70")
    assert rc == 0
    # m = min(40, 30) = 30 records per side, S' = 30 of the 50 synthetic, 30 attribute targets
    assert "10 searches over 50 synthetic, 40 real and 30 holdout patients:" in text
    assert "    jaccard/s_train: 50 x 40\n" in text and "    attribute/holdout: 30 x 50\n" in text
    assert "job array: 3 task(s) for blocks 0-2, at most 3 at a time" in text
    assert (
        f"block 1: synthetic rows [16, 33) and its share of every search -> {tmp_path}/.eval.blocks/block-00001.npz"
        in text
    )
    # pairs: 50*(40+30+30) + 30*30*5 + 2*30*50 = 12500; block 1: 17*100 + 10*30*5 + 2*10*50 = 4200
    assert (
        "work: 12,500 pairs to score, 4,200 per task at most; about 1.0 min per task at 70 pairs/s (given)"
        in text
    )
    assert "executor: cluster=slurm name=ehrgen-evaluate partition=debug time=5" in text
    assert text.rstrip().endswith("dry run: nothing submitted")
    assert not out.exists() and not (tmp_path / ".eval.blocks").exists()

    rc, text, _ = _cli(capsys, *base)  # no blocks: today's single job
    assert rc == 0 and "job: evaluate" in text and "job array" not in text and "pairs" not in text

    for bad, message in (
        ("blocks=0", "blocks=0: expected a positive integer"),
        ("blocks=51", "blocks=51 is more than the 50 synthetic patients"),
        ("privacy.enabled=false", "blocks=3 splits the privacy search, but privacy.enabled=false"),
        ("privacy.neighbours_dir=/x", "privacy.neighbours_dir is set by the launcher when blocks=N"),
        ("privacy.distances=[jacard]", "privacy.distances=['jacard']: expected some of jaccard, cosine"),
    ):
        extra = [bad] if bad.startswith("blocks") else ["blocks=3", bad]
        rc, _, err = _cli(capsys, *base, *extra)
        assert rc == 1 and err.count("\n") == 1 and message in err, err


# ----------------------------------------------------------------------------- real SLURM


@pytest.mark.slurm
@pytest.mark.slow
def test_blocks_as_slurm_job_array(slurm_cluster: dict, cohorts: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    overrides = [f"real={cohorts['real']}", f"synthetic={cohorts['syn']}", *PRIVACY_ONLY]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(REPO / "submitit_launch.py"), "evaluate", *overrides, f"out_dir={out}", "blocks=3",
         "slurm.partition=debug", "slurm.time=10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search(r"submitted job array (\d+): 3 task\(s\) for blocks 0-2", proc.stdout)
    assert match, proc.stdout
    plan = _plan(out)
    assert plan["submissions"][0]["tasks"] == {f"{match[1]}_{i}": i for i in range(3)}  # one array
    assert re.search(r"submitted job (\d+): evaluate", proc.stdout)
    run(compose_config("evaluate", [*overrides, f"out_dir={tmp_path / 'single'}"], tmp_path))
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())["metrics"]
    assert json.loads((out / "metrics.json").read_text())["metrics"] == single
