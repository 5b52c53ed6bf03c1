#!/usr/bin/env bash
# The test command: makes sure the environments exist (quick when they do), then runs the
# whole suite; then, in a Python 3.10 env with upstream InstantMesh's pins (torch 2.1.0, diffusers 0.20.2,
# transformers 4.34.1, huggingface_hub 0.17.3; built once and cached outside the checkout by
# scripts/upstream_env.sh), the tests marked upstream: the model tests and an end-to-end views -> mesh run.
# Extra arguments go to the main pytest run only, e.g. scripts/test.sh tests/worker -k cancel
# SKIP_UPSTREAM=1 leaves out the upstream-pins part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venvs/models/bin/python -m ruff check .          # lint ([tool.ruff] in pyproject.toml)
.venvs/models/bin/python -m ruff format --check . # one formatter (ruff format, [tool.ruff])
.venvs/models/bin/python -m mypy                  # types of host/, rpcworker/, instantmesh/ ([tool.mypy])
.venvs/models/bin/lint-imports --no-logo          # who may import whom ([tool.importlinter], docs/architecture.md)
.venvs/models/bin/python -m pytest -q "$@"
if [ $# -eq 0 ] && [ -z "${SKIP_UPSTREAM:-}" ]; then
  UPSTREAM=$(bash scripts/upstream_env.sh)
  echo "test.sh: model tests with upstream's pins in $UPSTREAM"
  # Its own tiny cache: the cache is keyed by library versions, but a separate folder keeps CI runs apart.
  INSTANTMESH_RPC_TEST_MODELS_PYTHON="$UPSTREAM/bin/python" INSTANTMESH_RPC_TEST_WORKER_PYTHON="$UPSTREAM/bin/python" \
    "$UPSTREAM/bin/python" -m pytest -q -p no:cacheprovider -m upstream
fi
