"""Where the Hydra configs live, for source checkouts, editable and non-editable installs."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def config_dir() -> str:
    """Absolute path of the ``conf/`` tree: packaged copy (wheel) first, else the repository's."""
    for candidate in (_HERE / "conf", _HERE.parent / "conf"):
        if (candidate / "train.yaml").is_file() or (candidate / "prepare.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"ehrgen's conf/ directory was not found next to {_HERE}")


CONFIG_DIR = config_dir()
