"""Where the Hydra configs live, for source checkouts, editable and non-editable installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def config_dir() -> str:
    """Absolute path of the ``conf/`` tree: packaged copy (wheel) first, else the repository's."""
    for candidate in (_HERE / "conf", _HERE.parent / "conf"):
        if (candidate / "train.yaml").is_file() or (candidate / "prepare.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"ehrgen's conf/ directory was not found next to {_HERE}")


CONFIG_DIR = config_dir()


def compose(config_name: str, overrides: list[str] | None = None):
    """Compose ``conf/<config_name>.yaml`` with overrides, inside or outside a running Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


def coerce_options(cls: type, value: Any, section: str, tuple_fields: tuple[str, ...] = ()) -> Any:
    """Build the options dataclass ``cls`` from itself, a (Hydra) mapping of its fields, or None.

    Unknown keys fail in one line naming ``section``; list values of ``tuple_fields`` become tuples.
    """
    from dataclasses import fields

    from ehrgen.errors import InputError

    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    known = {f.name for f in fields(cls)}
    extra = set(value) - known
    if extra:
        raise InputError(f"{section}: unknown option(s) {sorted(extra)}; expected {sorted(known)}")
    return cls(**{k: (tuple(v) if k in tuple_fields and v is not None else v) for k, v in value.items()})
