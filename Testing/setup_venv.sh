#!/usr/bin/env bash
# Creates .venv at the repository root when missing, installs Testing/requirements.txt into it, and installs this
# checkout into it as an editable install: .venv/bin/monaideployer and .venv/bin/python -m MonaiDeployerLib.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -m pip install --disable-pip-version-check -q -r Testing/requirements.txt; then
  echo "error: installing Testing/requirements.txt into .venv failed" >&2
  exit 1
fi
# --no-deps: requirements.txt gave every dependency. setuptools maps MonaiDeployerLib alone (pyproject.toml), so
# edits show without reinstalling and MonaiDeployer.py stays off sys.path. It runs every time: a second, and a
# changed pyproject.toml (a new entry point) takes effect. Without build isolation when .venv's setuptools can
# build it (torch needs setuptools, so requirements.txt gave one): nothing is downloaded. An older setuptools
# (a venv of Python 3.10 or 3.11 comes with 65): pip fetches a newer one for an isolated build.
isolation=""
if .venv/bin/python -c 'import sys, setuptools; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null
then
  isolation=--no-build-isolation
fi
if ! .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps $isolation -e .; then
  echo "error: installing this checkout into .venv (pip install -e .) failed" >&2
  exit 1
fi
