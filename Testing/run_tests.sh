#!/usr/bin/env bash
# The test command: sets up .venv and .venv-triton (the serve tests' server Python), checks style with ruff, runs
# the pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Testing/setup_venv.sh
bash Testing/setup_triton.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
