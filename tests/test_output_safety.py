"""Outputs never destroy data: atomic writes, overwrite only of ehrgen's own output of the same
kind, never of an input, and temp folders of killed runs cleaned up."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ehrgen.data.cohort import OUTPUT_MARKER, atomic_directory, output_kind, remove_stale_temps
from ehrgen.errors import InputError
from ehrgen.prepare import ensure_cohort
from ehrgen.prepare import run as prepare
from tests.conftest import compose_config


def _write(out: Path, kind: str, **kw) -> None:
    with atomic_directory(out, kind=kind, **kw) as tmp:
        (tmp / "result.txt").write_text(kind)


def test_overwrite_replaces_only_ehrgen_output_of_the_same_kind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, "evaluation")
    assert output_kind(out) == "evaluation" and (out / OUTPUT_MARKER).is_file()
    with pytest.raises(InputError, match="already exists; pass overwrite=true"):
        _write(out, "evaluation")
    _write(out, "evaluation", overwrite=True)
    with pytest.raises(InputError, match="is a evaluation"):
        _write(out, "cohort", overwrite=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not written by ehrgen"):
        _write(foreign, "evaluation", overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        _write(a_file, "evaluation", overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty, "cohort")  # an empty folder holds nothing to lose: no overwrite needed
    assert (empty / "result.txt").read_text() == "cohort"


def test_output_may_not_be_or_contain_an_input(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "PATIENTS.csv").write_text("keep")
    for out in (raw, tmp_path):
        with pytest.raises(InputError, match="an input of this command"):
            _write(out, "cohort", overwrite=True, inputs=[raw / "PATIENTS.csv"])
    link = tmp_path / "link"
    link.symlink_to(raw)
    with pytest.raises(InputError, match="an input of this command"):
        _write(link, "cohort", overwrite=True, inputs=[raw])
    _write(raw / "cohort", "cohort", inputs=[raw])  # beside the inputs is fine
    assert (raw / "PATIENTS.csv").read_text() == "keep"


def test_stale_temp_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    out = tmp_path / "cohort"
    stale = tmp_path / f".cohort.tmp-{host}-{dead_pid}-1"
    alive = tmp_path / f".cohort.tmp-{host}-{os.getpid()}-2"
    other_host = tmp_path / f".cohort.tmp-elsewhere-{dead_pid}-3"
    for folder in (stale, alive, other_host):
        (folder / "data").mkdir(parents=True)
    assert remove_stale_temps(out) == [stale]
    _write(out, "cohort")
    assert not stale.exists() and alive.exists() and other_host.exists()
    shutil.rmtree(alive)


def test_prepare_refuses_to_replace_its_raw_data(mimic3_demo: Path, tmp_path: Path) -> None:
    """`prepare data.raw_dir=X data.cohort_dir=X overwrite=true` deleted the raw MIMIC files in X."""
    raw = tmp_path / "mimic"
    shutil.copytree(mimic3_demo, raw)
    before = sorted(p.name for p in raw.iterdir())
    for cohort_dir in (raw, tmp_path):
        cfg = compose_config(
            "prepare", ["data=mimic3", f"data.raw_dir={raw}", f"data.cohort_dir={cohort_dir}", "overwrite=true"],
            tmp_path,
        )  # fmt: skip
        with pytest.raises(InputError, match="an input of this command"):
            prepare(cfg)
        assert sorted(p.name for p in raw.iterdir()) == before


def test_train_cohort_dir_messages(tmp_path: Path) -> None:
    """A foreign cohort_dir is named without advising overwrite; an empty one is prepared into."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    cfg = compose_config("train", ["data.n_patients=30", f"data.cohort_dir={foreign}"], tmp_path)
    with pytest.raises(InputError, match="is not a cohort directory") as err:
        ensure_cohort(cfg)
    assert "overwrite" not in str(err.value)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cfg = compose_config("train", ["data.n_patients=30", f"data.cohort_dir={a_file}"], tmp_path)
    with pytest.raises(InputError, match="is not a cohort directory"):
        ensure_cohort(cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = compose_config("train", ["data.n_patients=30", f"data.cohort_dir={empty}"], tmp_path)
    assert ensure_cohort(cfg).n_patients > 0
