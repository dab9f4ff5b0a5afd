#!/usr/bin/env bash
# Creates .venv-triton at the repository root when missing and installs Testing/requirements-triton.txt into it:
# the server's Python for the `serve` tests (see that file for why it is not .venv). The tests run this checkout's
# library in it from MonaiDeployer/ (python -m MonaiDeployerLib there), so nothing of the checkout is installed.
# On a fresh machine about a minute and 300 MB; after that, a check of a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-triton/bin/python ]; then
  python3 -m venv .venv-triton
fi
if ! .venv-triton/bin/python -m pip install --disable-pip-version-check -q -r Testing/requirements-triton.txt; then
  echo "error: installing Testing/requirements-triton.txt into .venv-triton failed" >&2
  exit 1
fi
