#!/usr/bin/env bash
# The test command: sets up .venv, checks style with ruff, runs the pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Testing/setup_venv.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
