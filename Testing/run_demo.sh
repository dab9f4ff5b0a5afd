#!/usr/bin/env bash
# The demo: sets up .venv, builds the sample package if missing, segments a sample volume in a real MRML scene.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Testing/setup_venv.sh
.venv/bin/python Testing/demo.py "$@"
