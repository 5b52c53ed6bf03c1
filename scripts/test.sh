#!/usr/bin/env bash
# The test command: makes sure the environments exist (quick when they do), then runs the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/pipe -k cancel
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venvs/models/bin/python -m ruff check .          # lint ([tool.ruff] in pyproject.toml)
.venvs/models/bin/python -m mypy                  # types of host/, rpcworker/, instantmesh/ ([tool.mypy])
exec .venvs/models/bin/python -m pytest -q "$@"
