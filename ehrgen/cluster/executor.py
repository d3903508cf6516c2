"""Which submitit executor runs a command, with which resources.

``cluster=slurm|local|debug`` picks submitit's ``AutoExecutor(cluster=...)``; resources come from
``conf/cluster/slurm.yaml`` (every key, documented there), then ``conf/cluster/<cluster>.yaml``,
then ``slurm.<key>=<value>`` on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ehrgen.config import CONFIG_DIR
from ehrgen.errors import InputError

CLUSTERS = ("slurm", "local", "debug")
# Our key -> submitit's generic parameter (understood by the SLURM and local executors).
GENERIC = {
    "name": "name",
    "time": "timeout_min",
    "nodes": "nodes",
    "tasks_per_node": "tasks_per_node",
    "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node",
    "mem_gb": "mem_gb",
}
# Keys the local executor also honours; the debug executor runs in-process and honours none.
LOCAL_KEYS = ("name", "time", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "max_num_timeout")


def _cluster_defaults(cluster: str) -> dict[str, Any]:
    base = OmegaConf.load(Path(CONFIG_DIR) / "cluster" / "slurm.yaml")
    if cluster != "slurm":
        base = OmegaConf.merge(base, OmegaConf.load(Path(CONFIG_DIR) / "cluster" / f"{cluster}.yaml"))
    return OmegaConf.to_container(base, resolve=True)  # type: ignore[return-value]


@dataclass
class ExecutorSpec:
    """A cluster kind plus the resolved ``slurm.*`` keys (see conf/cluster/slurm.yaml)."""

    cluster: str
    params: dict[str, Any]

    @classmethod
    def from_cli(cls, cluster: str, keys: dict[str, str]) -> ExecutorSpec:
        """``keys``: ``{"partition": "debug", ...}`` as typed after ``slurm.`` on the command line."""
        if cluster not in CLUSTERS:
            raise InputError(f"cluster={cluster}: expected one of {', '.join(CLUSTERS)}")
        params = _cluster_defaults(cluster)
        unknown = sorted(set(keys) - set(params))
        if unknown:
            raise InputError(
                f"unknown executor key slurm.{unknown[0]}; expected one of "
                + ", ".join(f"slurm.{k}" for k in params)
            )
        try:
            given = OmegaConf.to_container(OmegaConf.from_dotlist([f"{k}={v}" for k, v in keys.items()]))
        except OmegaConfBaseException as err:
            raise InputError(f"cannot parse executor keys {keys}: {err}") from None
        params.update(given)  # type: ignore[arg-type]
        for key in ("time", "nodes", "cpus_per_task", "gpus_per_node", "array_parallelism"):
            value = params.get(key)
            if value is not None and (
                not isinstance(value, int) or value < (0 if key == "gpus_per_node" else 1)
            ):
                raise InputError(f"slurm.{key}={value!r}: expected a positive integer")
        return cls(cluster, params)

    def with_defaults(self, **defaults: Any) -> ExecutorSpec:
        """A copy where ``defaults`` fill keys that are unset (None)."""
        params = dict(self.params)
        for key, value in defaults.items():
            if params.get(key) is None:
                params[key] = value
        return ExecutorSpec(self.cluster, params)

    def submitit_parameters(self) -> dict[str, Any]:
        """Keyword arguments for ``AutoExecutor.update_parameters``."""
        p = {k: v for k, v in self.params.items() if v is not None}
        if self.cluster == "debug":
            return {}
        if self.cluster == "local":
            p = {k: v for k, v in p.items() if k in LOCAL_KEYS}
        out: dict[str, Any] = {}
        for key, value in p.items():
            if key == "max_num_timeout":
                continue  # an executor constructor argument (see make)
            if key == "gpus_per_node" and not value:
                continue  # never ask SLURM for --gpus-per-node=0 (fails on clusters without GRES)
            if key in GENERIC:
                out[GENERIC[key]] = value
            elif key in ("setup", "additional_parameters"):
                if value:
                    out[f"slurm_{key}"] = value
            else:
                out[f"slurm_{key}"] = value
        return out

    def make(self, folder: Path) -> submitit.Executor:
        """A configured submitit executor writing pickles and logs under ``folder`` (may hold %j)."""
        kwargs = {}
        if self.cluster in ("slurm", "local") and self.params.get("max_num_timeout") is not None:
            kwargs[f"{self.cluster}_max_num_timeout"] = int(self.params["max_num_timeout"])
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster, **kwargs)
        params = self.submitit_parameters()
        if params:
            executor.update_parameters(**params)
        return executor

    def describe(self) -> str:
        """One line for the dry run and the submission log."""
        shown = {k: v for k, v in self.params.items() if v not in (None, [], {})}
        if self.cluster != "slurm":
            shown = {k: v for k, v in shown.items() if k in LOCAL_KEYS} if self.cluster == "local" else {}
        text = " ".join(f"{k}={v}" for k, v in shown.items())
        return f"cluster={self.cluster}" + (f" {text}" if text else "")
