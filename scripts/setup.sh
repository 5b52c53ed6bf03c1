#!/usr/bin/env bash
# Creates the three environments the project uses, idempotently:
#   .venvs/host    - the application side (default python3): msgspec only, plus test/image/ray/rembg extras, mcp
#                    (the MCP SDK, for `python -m host mcp`) and web (gradio, for `python -m host web`)
#   .venvs/worker  - a Python 3.10 worker env with no torch (runs the mock backend in pipe tests)
#   .venvs/models  - the worker env with the models (torch, diffusers, transformers, ...); it also runs pytest,
#                    whose MCP tests use the SDK's client (the mcp extra) and whose preparation tests run rembg
#   .venvs/host39  - a Python 3.9 host env (Any6D's Python): scripts/test.sh runs the host's pipe and pool tests
#                    in it; left out, with a warning, where no Python 3.9 is found
# Workers never see the host's environment: the host stages rpcworker/ and instantmesh/ alone on the worker's
# PYTHONPATH (host/worker/environment.py), so the worker envs need only third-party packages; the editable install
# here gives tools `instantmesh_rpc` (host/) and `rpcworker` (setup.py); tests import the checkout from its root.
# The hosts find .venvs/models from the checkout's root (the working directory), never from where the host is
# installed. scripts/upstream_env.sh makes the
# Python 3.10 env with upstream's pins that scripts/test.sh also runs (cached under ~/.cache/instantmesh-rpc).
# Environment overrides:
#   HOST_PYTHON     interpreter for the host env        (default: python3)
#   WORKER_PYTHON   Python 3.10 for the mock worker env (default: pyenv's 3.10, else python3.10)
#   HOST39_PYTHON   Python 3.9 for the host39 env       (default: pyenv's 3.9, else python3.9)
#   MODELS_PYTHON   interpreter for the models env      (default: python3; CPU torch wheel is cp311 here)
#   TORCH_SPEC      torch requirement for the models env (default: torch==2.13.0, the local CPU wheel)
#   SETUP_NO_REMBG  set (to anything) to leave out the rembg extra (background removal of photos: rembg,
#                   onnxruntime and their scipy/scikit-image/numba) from the host, models and host39 envs; the tests
#                   that run rembg then skip (an env that already has rembg keeps it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENVS="$ROOT/.venvs"
mkdir -p "$VENVS"

# find_python MINOR OVERRIDE: the interpreter named by the variable OVERRIDE, else pyenv's newest MINOR, else
# pythonMINOR on PATH; prints nothing (and fails) when there is none.
find_python() {
  local minor=$1 override=${!2:-}
  if [ -n "$override" ]; then echo "$override"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local v; v=$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}(\.|\$)" | tail -n1 || true)
    if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python"; return; fi
  fi
  command -v "python$minor"
}

find_py310() {
  find_python 3.10 WORKER_PYTHON || { echo "setup: Python 3.10 not found (set WORKER_PYTHON)" >&2; exit 1; }
}

# make_env NAME PYTHON EXTRAS [PRE-INSTALL...]: creates the env if missing, then installs what changed
# since the last run (pip only adds what is missing, so a re-run is quick). The stamp keeps the extras, so a
# change of them (SETUP_NO_REMBG) installs again.
make_env() {
  local name=$1 py=$2 extras=$3; shift 3
  local env="$VENVS/$name" stamp="$VENVS/$name/.stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$extras" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt setup.py ] && [ "$stamp" -nt scripts/setup.sh ]; then
    echo "setup: $name env up to date ($env)"; return
  fi
  if [ ! -x "$env/bin/python" ]; then
    echo "setup: creating $name env with $("$py" --version 2>&1)"
    "$py" -m venv "$env"
    "$env/bin/python" -m pip install -q --upgrade pip setuptools wheel
  else
    echo "setup: updating $name env"
  fi
  if [ $# -gt 0 ]; then "$env/bin/python" -m pip install -q "$@"; fi
  "$env/bin/python" -m pip install -q -e ".[${extras}]"
  echo "$extras" >"$stamp"
}

REMBG=",rembg"  # the hosts remove photos' backgrounds with rembg, as upstream does (host/images/background.py)
if [ -n "${SETUP_NO_REMBG:-}" ]; then REMBG=""; echo "setup: SETUP_NO_REMBG set: the rembg extra is left out"; fi
make_env host "${HOST_PYTHON:-python3}" "images,test,ray,mcp,web$REMBG"
make_env worker "$(find_py310)" "worker-base,test"
# mcp, web: the suite runs here, and mypy reads host/faces against the SDK's and gradio's own types.
make_env models "${MODELS_PYTHON:-python3}" "worker,test,bench,mcp,web$REMBG" "${TORCH_SPEC:-torch==2.13.0}"
if PY39=$(find_python 3.9 HOST39_PYTHON); then
  make_env host39 "$PY39" "images,test$REMBG"
else
  echo "setup: Python 3.9 not found (set HOST39_PYTHON): scripts/test.sh will not run the host under 3.9" >&2
fi
# The batch report's 3D viewer: @google/model-viewer's UMD bundle (three.js inside) from the npm registry,
# vendored into host/report_assets/ (git-ignored; packaged with the host). The report test drives Debian's
# chromium with playwright-core from .venvs/report-node. Each step only warns when node/npm/apt are missing.
MODEL_VIEWER=${MODEL_VIEWER_SPEC:-@google/model-viewer@3.5.0}
if [ ! -f host/report_assets/model-viewer-umd.min.js ]; then
  if command -v npm >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$MODEL_VIEWER" >/dev/null && tar xzf ./*.tgz) &&
      mkdir -p host/report_assets && cp "$tmp/package/dist/model-viewer-umd.min.js" "$tmp/package/LICENSE" host/report_assets/ &&
      echo "setup: vendored $MODEL_VIEWER into host/report_assets/"
    rm -rf "$tmp"
  else
    echo "setup: npm not found: batch --report is unavailable until host/report_assets/ is vendored" >&2
  fi
fi
if command -v npm >/dev/null 2>&1 && [ ! -d "$VENVS/report-node/node_modules/playwright-core" ]; then
  npm install --silent --prefix "$VENVS/report-node" playwright-core@1.40.0 >/dev/null && echo "setup: playwright-core in $VENVS/report-node"
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 ||
    echo "setup: apt-get install chromium failed: the report test will skip" >&2
fi
echo "setup: done"
