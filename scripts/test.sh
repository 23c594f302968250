#!/usr/bin/env bash
# The project's test command (README quick start, command 2; .ci/run calls exactly this).
# From a fresh clone on a machine with only Python: creates .venv, installs the pinned dependencies,
# then runs the linter (ruff), the type checker (mypy) and the tests (pytest). Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
