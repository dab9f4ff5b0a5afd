#!/usr/bin/env bash
# Creates .venv at the repository root when missing and installs Testing/requirements.txt into it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -m pip install --disable-pip-version-check -q -r Testing/requirements.txt; then
  echo "error: installing Testing/requirements.txt into .venv failed" >&2
  exit 1
fi
