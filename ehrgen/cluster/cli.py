"""Command-line plumbing shared by the launcher's commands: arguments, values, configs, output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ehrgen.config import CONFIG_DIR
from ehrgen.errors import InputError

COMMANDS = ("generate", "merge", "train", "evaluate", "prepare")
# Options the launcher owns for each command (everything else goes to the command's config).
LAUNCHER_KEYS = {
    "generate": ("out_dir", "shards", "formats", "overwrite", "patients_per_s"),
    "merge": ("out_dir", "formats", "overwrite"),
    "evaluate": ("blocks", "pairs_per_s"),
}


class LaunchError(Exception):
    """A launch that cannot go on (a shard failed twice, a job failed): one line, like InputError."""


@dataclass
class Args:
    command: str
    overrides: list[str] = field(default_factory=list)  # for the command's Hydra config
    options: dict[str, str] = field(default_factory=dict)  # launcher-owned keys
    executor: dict[str, str] = field(default_factory=dict)  # slurm.<key> values
    cluster: str = "slurm"
    dry_run: bool = False
    wait: bool = True


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str]) -> Args:
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise InputError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    args = Args(command)
    owned = LAUNCHER_KEYS.get(command, ())
    for token in rest:
        key, sep, value = token.partition("=")
        if token == "--dry-run":
            args.dry_run = True
        elif token == "--no-wait":
            args.wait = False
        elif token.startswith("-"):
            raise InputError(f"unknown flag {token}; expected --dry-run or --no-wait")
        elif not sep:
            raise InputError(f"argument {token!r}: expected key=value (a Hydra override)")
        elif key == "cluster":
            args.cluster = value
        elif key.startswith("slurm."):
            args.executor[key.removeprefix("slurm.")] = value
        elif key in owned:
            args.options[key] = value
        else:
            args.overrides.append(token)
    return args


def parse_value(text: str) -> Any:
    """A command-line value parsed like Hydra/YAML would (``[a,b]``, ``true``, ``3``)."""
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]  # type: ignore[index]
    except OmegaConfBaseException as err:
        raise InputError(f"cannot parse value {text!r}: {err}") from None


def option_flag(args: Args, key: str) -> bool:
    parsed = parse_value(args.options.get(key, "false"))
    if not isinstance(parsed, bool):
        raise InputError(f"{key}={parsed!r}: expected true or false")
    return parsed


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """conf/<config_name>.yaml with ``overrides``, as ``python -m ehrgen.<config_name>`` would see it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except Exception as err:  # noqa: BLE001 - Hydra raises many types for bad overrides
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{config_name} overrides: {first}") from None
    finally:
        GlobalHydra.instance().clear()


def absolute(path: Any) -> Path:
    """``~`` expanded, relative to the current directory."""
    return Path(str(path)).expanduser().absolute()


def fix_paths(cfg: DictConfig, run_dir: Path) -> None:
    """Resolve ``paths.*`` at submission: jobs must not depend on the node's cwd or Hydra's runtime."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(absolute(cfg.paths.output_dir))
        cfg.paths.cache_dir = str(absolute(cfg.paths.cache_dir))
        cfg.paths.run_dir = str(run_dir)


def compact(ids: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    out, ids = [], sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)
