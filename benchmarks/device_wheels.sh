# Sourced by the GPU scripts: the wheels in .whl/ (packages the device image lacks, see docs/benchmarks.md)
# into /tmp/site, visible to this shell's Python and, through a .pth file, to the isolated workers it starts
# (the host gives a worker no PYTHONPATH of its own). Then this checkout on PYTHONPATH.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
  echo /tmp/site > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/zz-instantmesh-rpc-wheels.pth" || return 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 INSTANTMESH_RPC_PYTHON=python3
