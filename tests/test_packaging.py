"""The configs and the GEMs travel with the package: a non-editable wheel finds and uses them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_and_resolves_the_configs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
        check=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("ehrgen-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    probe = (
        "from ehrgen.config import CONFIG_DIR, compose; "
        "cfg = compose('train', ['model=hierarchical', 'data=mimic3', 'data.raw_dir=x']); "
        "print(CONFIG_DIR); print(cfg.model.level); "
        "import polars as pl; from ehrgen.data.gem import IcdMap; "
        "print(IcdMap(10).targets(pl.Series(['4019']))['targets'][0][0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == [str(tmp_path / "site" / "ehrgen" / "conf"), "category", "ICD10CM:I10"]
