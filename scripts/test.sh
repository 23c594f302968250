#!/usr/bin/env bash
# The project's test command (README quick start, command 2; .ci/run calls exactly this).
# From a fresh clone on a machine with only Python: creates .venv, installs the pinned dependencies,
# then runs the linter (ruff), the type checker (mypy) and the tests (pytest). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements.txt requirements-dev.txt setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  touch "$stamp"
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=offline HF_HUB_DISABLE_TELEMETRY=1
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
