#!/usr/bin/env bash
# Builds (once) and prints the path of a Python 3.10 environment with upstream InstantMesh's pins
# (scripts/upstream-pins.txt: torch 2.1.0 from PyPI, diffusers 0.20.2, transformers 4.34.1, ...).
# It lives outside the checkout, under $INSTANTMESH_RPC_CACHE (default ~/.cache/instantmesh-rpc), in a
# directory named by the hash of the pins and the interpreter, so a fresh clone reuses it and a changed
# pin builds a new one. The project itself is NOT installed there: tests put the checkout on sys.path,
# and workers get only the worker packages (host.worker.environment's isolation rule).
# Environment overrides: UPSTREAM_PYTHON (default: pyenv's 3.10, else python3.10).
set -euo pipefail
cd "$(dirname "$0")/.."
PINS=scripts/upstream-pins.txt
CACHE="${INSTANTMESH_RPC_CACHE:-$HOME/.cache/instantmesh-rpc}"

find_py310() {
  if [ -n "${UPSTREAM_PYTHON:-}" ]; then echo "$UPSTREAM_PYTHON"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local v; v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)' | tail -n1 || true)
    if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python"; return; fi
  fi
  command -v python3.10 || { echo "upstream_env: Python 3.10 not found (set UPSTREAM_PYTHON)" >&2; exit 1; }
}

PY=$(find_py310)
KEY=$( { grep -v '^#' "$PINS"; "$PY" --version 2>&1; } | sha256sum | cut -c1-12)
ENV="$CACHE/models310-$KEY"
if [ -f "$ENV/.complete" ]; then echo "$ENV"; exit 0; fi
mkdir -p "$(dirname "$CACHE")" && { [ -d "$CACHE" ] || mkdir -m 700 "$CACHE"; }  # private, as rpcworker/wire/cache.py makes it
# Build beside the final name and rename at the end, so an interrupted build is never taken as complete.
TMP="$ENV.partial.$$"
rm -rf "$TMP"
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
echo "upstream_env: building $ENV with $("$PY" --version 2>&1) (downloads torch 2.1.0, a few GB)" >&2
"$PY" -m venv "$TMP" >&2
# Upstream's torch 2.1.0 is above this machine's constraint cap; the pins file is the whole constraint here.
PIP_CONSTRAINT= "$TMP/bin/python" -m pip install -q --upgrade "pip<24.1" setuptools wheel >&2
PIP_CONSTRAINT= "$TMP/bin/python" -m pip install -q -r "$PINS" >&2
"$TMP/bin/python" -m pip check >&2 || true
# A venv's scripts name their own path: rebuild the venv in place at its final name.
rm -rf "$ENV"
mv "$TMP" "$ENV"
trap - EXIT
"$PY" -m venv --upgrade "$ENV" >&2
echo "$(( $(date +%s) - start ))" > "$ENV/.build_seconds"
touch "$ENV/.complete"
echo "upstream_env: built in $(cat "$ENV/.build_seconds") s" >&2
echo "$ENV"
