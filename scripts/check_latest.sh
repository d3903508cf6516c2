#!/usr/bin/env bash
# Does ehrgen still work with the newest versions its pyproject allows?
#
#   scripts/check_latest.sh            # newest allowed versions of every dependency
#   scripts/check_latest.sh --oldest   # the floors: each dependency at its lowest allowed version
#
# Installs ehrgen into a throwaway virtualenv, resolving every dependency afresh (newest, or the
# floors of pyproject.toml), prints the versions it got, and runs a fast subset of the suite with
# deprecation and future warnings as errors (pyproject's filterwarnings), so an announced break
# shows up before it lands. torch stays at the CPU build on this machine's disk (TORCH below): the
# newest torch on PyPI is a multi-GB CUDA build. Record the result in docs/benchmarks.md
# ("Dependency checks"). Needs the MIMIC-III demo like the suite does (EHRGEN_MIMIC3_DEMO).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
TORCH="${TORCH:-torch==2.13.0}"
MODE="${1:-latest}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python -m venv "$WORK/venv"
# shellcheck disable=SC1091
source "$WORK/venv/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "$MODE" = "--oldest" ]; then
  # Every ">=X" floor of the runtime dependencies becomes "==X" (the dev tools stay newest).
  python - "$WORK/floors.txt" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
pins = []
for dep in deps:
    m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][^,;\s]*)", dep)
    if m and m.group(1) != "torch":
        pins.append(f"{m.group(1)}=={m.group(2)}")
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
EOF
  echo "floors: $(tr '\n' ' ' < "$WORK/floors.txt")"
  pip install -q "$TORCH" -c "$WORK/floors.txt" -e "$REPO[dev]"
else
  pip install -q --upgrade --upgrade-strategy eager "$TORCH" -e "$REPO[dev]"
fi

python - <<'EOF'
from importlib.metadata import version
names = ["torch", "lightning", "transformers", "hydra-core", "omegaconf", "polars", "pyarrow",
         "numpy", "scipy", "torchmetrics", "wandb", "submitit", "hydra-submitit-launcher", "matplotlib"]
print("resolved: " + ", ".join(f"{n} {version(n)}" for n in names))
EOF

# The fast subset: every stage once (prepare, datamodule, model, train, generate, evaluate).
python -m pytest -q -p no:cacheprovider -m "not slurm and not slow" \
  tests/test_prepare.py tests/test_datamodule.py tests/test_prompt_bart.py tests/test_module.py \
  tests/test_train.py tests/test_generate.py tests/test_gen_sampler.py tests/test_eval_run.py \
  tests/test_output_safety.py tests/test_small_cells.py
