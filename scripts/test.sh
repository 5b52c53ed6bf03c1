#!/usr/bin/env bash
# The test command: makes sure the environments exist (quick when they do), then runs the
# whole suite; then, in a Python 3.10 env with upstream InstantMesh's pins (torch 2.1.0, diffusers 0.20.2,
# transformers 4.34.1, huggingface_hub 0.17.3; built once and cached outside the checkout by
# scripts/upstream_env.sh), the tests marked upstream: the model tests and an end-to-end views -> mesh run.
# Between the two, a Python 3.9 host (.venvs/host39, Any6D's Python) runs HOST39_TESTS with the mock worker
# still on .venvs/worker's 3.10, after mypy reads host/ and the wire as Python 3.9 code.
# Extra arguments go to the main pytest run only, e.g. scripts/test.sh tests/worker -k cancel
# SKIP_UPSTREAM=1 leaves out the upstream-pins part, SKIP_HOST39=1 the Python 3.9 part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venvs/models/bin/python -m ruff check .          # lint ([tool.ruff] in pyproject.toml)
.venvs/models/bin/python -m ruff format --check . # one formatter (ruff format, [tool.ruff])
.venvs/models/bin/python -m mypy                  # types of host/, rpcworker/, instantmesh/ ([tool.mypy])
.venvs/models/bin/lint-imports --no-logo          # who may import whom ([tool.importlinter], docs/architecture.md)
.venvs/models/bin/python -m pytest -q "$@"
# The host's API (generate_views_many, map), the pool, the pipes and the batch CLI, with a 3.9 host (the CLI tests'
# subprocesses too). These files are linted as 3.9 code ([tool.ruff.per-file-target-version]).
HOST39_TESTS=(
  tests/wire tests/host/test_host_environment.py tests/host/worker tests/host/api/test_cancellation.py tests/host/scale/test_pool.py
  tests/host/scale/test_options.py tests/host/cli/test_batch.py tests/worker/test_batching_pipes.py
  tests/host/api/test_preparation.py tests/host/api/test_progress.py tests/host/images/test_background.py
  tests/worker/test_mesh_lane_pipes.py tests/worker/test_texture_map_pipes.py
  tests/faults/test_names.py tests/faults/test_own_outputs.py
  tests/host/api/test_back_pressure.py tests/host/scale/test_pool_busy.py
)
if [ $# -eq 0 ] && [ -z "${SKIP_HOST39:-}" ]; then
  if [ -x .venvs/host39/bin/python ]; then
    echo "test.sh: the host under $(.venvs/host39/bin/python --version)"
    # What 3.9's standard library lacks (zip(strict=), X | Y at run time...); the main mypy run checks the rest
    # (its generics and ignores are tuned to its own mypy and numpy, newer than 3.9 gets).
    .venvs/host39/bin/python -m mypy --python-version 3.9 --disable-error-code type-arg --no-warn-unused-ignores \
      host rpcworker/wire
    INSTANTMESH_RPC_TEST_HOST_PYTHON="$PWD/.venvs/host39/bin/python" \
      .venvs/host39/bin/python -m pytest -q -p no:cacheprovider "${HOST39_TESTS[@]}"
  else
    echo "test.sh: .venvs/host39 missing (no Python 3.9 found by scripts/setup.sh): the host is not tested under 3.9" >&2
  fi
fi
if [ $# -eq 0 ] && [ -z "${SKIP_UPSTREAM:-}" ]; then
  UPSTREAM=$(bash scripts/upstream_env.sh)
  echo "test.sh: model tests with upstream's pins in $UPSTREAM"
  # Its own tiny cache: the cache is keyed by library versions, but a separate folder keeps CI runs apart.
  INSTANTMESH_RPC_TEST_MODELS_PYTHON="$UPSTREAM/bin/python" INSTANTMESH_RPC_TEST_WORKER_PYTHON="$UPSTREAM/bin/python" \
    "$UPSTREAM/bin/python" -m pytest -q -p no:cacheprovider -m upstream
fi
